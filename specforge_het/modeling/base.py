"""Loading the frozen base model and reading what the drafter needs from it.

Generic over `AutoModelForCausalLM`, no per-family wrapper: the embedding and lm_head come from HF's own
accessors (`get_input_embeddings` / `get_output_embeddings`), the decoder from `get_decoder()`, its block list
and final norm by attribute name (`DECODER_PARTS` lists the few families that name them differently).
Intermediate layers are captured with forward hooks on the blocks (only the requested ones are kept in memory);
the last feature is the decoder's output after the final norm, i.e. the lm_head input EAGLE regresses on.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.schema import BaseSection, ConfigError
from ..utils.hf_compat import cache_kw
from .gguf import is_gguf_source, load_gguf

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, where: str = "dtype") -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"{where}: expected one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"base.device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"base.device is {name!r} but no CUDA device is available")
    return dev


def check_model_path(path: str, what: str) -> None:
    """Local paths must exist; anything that looks like a hub id (org/name) is left to HF (and its offline mode)."""
    p = Path(path)
    # "org/name" whose "org" is no local folder is a hub id; everything else is a local path.
    looks_local = p.exists() or p.is_absolute() or path.startswith(".") or path.count("/") != 1 or p.parent.is_dir()
    if looks_local and not (p / "config.json").is_file():
        hint = " (build the demo base with `python -m specforge_het.demo_base`)" if "demo_base" in path else (
            " (convert a GGUF once with `python -m specforge_het.convert`, e.g. --@smollm2)" if "smollm2" in path
            else "")
        raise ConfigError(f"{what}: no model at {path!r} (expected a folder with config.json){hint}")


# model_type → (attribute of the decoder holding the blocks, attribute holding the final norm), where a family
# does not use the common names (`layers` / `norm`); anything else is found by `decoder_parts`' search.
DECODER_PARTS = {
    "gpt2": ("h", "ln_f"),
    "gpt_neox": ("layers", "final_layer_norm"),
    "phi": ("layers", "final_layernorm"),
    "falcon": ("h", "ln_f"),
    "bloom": ("h", "ln_f"),
    "gptj": ("h", "ln_f"),
}
_BLOCK_NAMES = ("layers", "h", "blocks", "block")
_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "final_norm")


def decoder_parts(model) -> tuple[torch.nn.ModuleList, torch.nn.Module | None]:
    """(decoder blocks, final norm) of any HF causal LM."""
    decoder = model.get_decoder()
    model_type = model.config.get_text_config().model_type
    names = [DECODER_PARTS[model_type]] if model_type in DECODER_PARTS else [(b, n) for b in _BLOCK_NAMES
                                                                            for n in _NORM_NAMES]
    blocks = next((getattr(decoder, b) for b, _ in names
                   if isinstance(getattr(decoder, b, None), torch.nn.ModuleList)), None)
    if blocks is None:
        raise ConfigError(f"base model_type {model_type!r}: cannot find its decoder blocks (looked for "
                          f"{', '.join(_BLOCK_NAMES)} on {type(decoder).__name__}); add it to DECODER_PARTS")
    norm = next((getattr(decoder, n) for _, n in names if isinstance(getattr(decoder, n, None), torch.nn.Module)), None)
    return blocks, norm


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the token → id map: two tokenizers that encode identically share it."""
    import hashlib

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256("\n".join(f"{i}\t{t}" for t, i in vocab).encode()).hexdigest()[:16]


def base_identity(base, path: str | None = None) -> dict:
    """What makes a base's outputs what they are, cheaply: its config file's hash, its tokenizer's fingerprint,
    the names and sizes of its weight files (hashing many GB of weights would cost minutes) and its dtype."""
    import hashlib

    root = Path(path or getattr(base.model, "name_or_path", "") or ".")
    config = root / "config.json"
    weights = sorted([p.name, p.stat().st_size] for p in root.glob("*.safetensors")) if root.is_dir() else []
    if root.is_file():  # a GGUF file
        weights = [[root.name, root.stat().st_size]]
    return {"config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
            "weights": weights, "tokenizer": tokenizer_fingerprint(base.tokenizer),
            "dtype": next(n for n, d in DTYPES.items() if d == base.dtype)}


@dataclass
class FrozenBase:
    """The base model, frozen and in eval mode, plus its tokenizer."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    # inference.verify_precision: the final norm and lm_head of every decode/verify forward in this dtype (float32
    # over a bf16/fp16 base); None = the model's own dtype, exactly as HF computes them.
    head_dtype: torch.dtype | None = None
    # inference.compile: the model's forward through torch.compile (see compile()); None = eager.
    compiled: torch.nn.Module | None = None
    # inference.static_cache: decode with pre-allocated KV caches of fixed shapes (inference/slot_cache.py).
    static_cache: bool = False

    def compile(self, mode: str | None = None) -> None:
        """Run decode and verify forwards through torch.compile. With a growing cache: dynamic shapes, so the cache
        and every tree size share one graph. With the static cache: one graph per (batch, step width, capacity)
        bucket, and `mode` "reduce-overhead" captures each as a CUDA graph. Base features then come from the
        model's own recorded hidden states."""
        if self.compiled is None:
            self.compiled = torch.compile(self.model, dynamic=not self.static_cache, mode=mode)

    @property
    def config(self):
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.model.config.get_text_config().hidden_size

    @property
    def sliding_window(self) -> int | None:
        """The smallest attention window of any layer, or None when every layer attends to everything."""
        cfg = self.model.config.get_text_config()
        window = getattr(cfg, "sliding_window", None)
        if not window or getattr(cfg, "use_sliding_window", True) is False:
            return None
        types = getattr(cfg, "layer_types", None)
        return window if types is None or "sliding_attention" in types else None

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[0]

    @property
    def embed_tokens(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    @torch.no_grad()
    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, feature_layers=None):
        """One base forward → (features, logits). Features: the last hidden state after the final norm, or with
        `feature_layers` the outputs of those decoder blocks concatenated on the feature axis (EAGLE-3)."""
        if self.head_dtype is not None and self.head_dtype != self.dtype:
            return self._forward_precise_head(input_ids, attention_mask, position_ids, past_key_values, feature_layers)
        # Compiled: decode and verify steps (the prefill, once per sequence and into an empty cache, stays eager:
        # another graph for no gain). hidden_states[k + 1] is block k's output, except the last block's (the final
        # norm's output replaces it), which only forward hooks can read.
        if (self.compiled is not None and self.num_layers - 1 not in (feature_layers or ())
                and past_key_values is not None and past_key_values.get_seq_length() > 0):
            out = self.compiled(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                **cache_kw(past_key_values), use_cache=True, output_hidden_states=True)
            if feature_layers:
                return torch.cat([out.hidden_states[k + 1] for k in feature_layers], dim=-1), out.logits
            return out.hidden_states[-1], out.logits
        with self._capturing(feature_layers or ()) as captured:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **cache_kw(past_key_values),
                use_cache=past_key_values is not None,
                output_hidden_states=not feature_layers,
            )
        if feature_layers:
            return torch.cat([captured[k] for k in feature_layers], dim=-1), out.logits
        return out.hidden_states[-1], out.logits

    def _forward_precise_head(self, input_ids, attention_mask, position_ids, past_key_values, feature_layers):
        """`forward` with the final norm and lm_head recomputed in head_dtype from the decoder's pre-norm output
        (the blocks still run in the model's dtype). Features stay what the drafter was trained on."""
        blocks, norm = decoder_parts(self.model)
        if norm is None:
            raise ConfigError("inference.verify_precision: this base has no final norm module to recompute")
        if getattr(self, "_precise_head", None) is None:  # fp32 copies, made once
            import copy

            head = self.lm_head
            object.__setattr__(self, "_precise_head", (copy.deepcopy(norm).to(self.head_dtype),
                                                       head.weight.to(self.head_dtype),
                                                       None if head.bias is None else head.bias.to(self.head_dtype)))
        norm_hi, weight, bias = self._precise_head
        pre_norm = {}
        hook = norm.register_forward_pre_hook(lambda module, args: pre_norm.__setitem__("x", args[0]))
        try:
            with self._capturing(feature_layers or ()) as captured:
                out = self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                               position_ids=position_ids, **cache_kw(past_key_values),
                                               use_cache=past_key_values is not None)
        finally:
            hook.remove()
        logits = torch.nn.functional.linear(norm_hi(pre_norm["x"].to(self.head_dtype)), weight, bias)
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        if cap:  # Gemma-2 style soft-capping, as the model's own head applies it
            logits = torch.tanh(logits / cap) * cap
        if feature_layers:
            return torch.cat([captured[k] for k in feature_layers], dim=-1), logits
        return out.last_hidden_state, logits

    @contextlib.contextmanager
    def _capturing(self, layer_ids):
        """Forward hooks on decoder blocks `layer_ids`, filling a dict block id → output while active."""
        blocks, _ = decoder_parts(self.model)
        captured: dict[int, torch.Tensor] = {}

        def hook(k):
            def fn(module, args, output):
                captured[k] = output[0] if isinstance(output, tuple) else output
            return fn

        handles = [blocks[k].register_forward_hook(hook(k)) for k in sorted(set(layer_ids))]
        try:
            yield captured
        finally:
            for h in handles:
                h.remove()

    @property
    def num_layers(self) -> int:
        return self.model.config.get_text_config().num_hidden_layers

    def check_layer_ids(self, layer_ids, where: str) -> list[int]:
        n = self.num_layers
        bad = [k for k in layer_ids if not isinstance(k, int) or not 0 <= k < n]
        if bad:
            raise ConfigError(f"{where}: layer ids {bad} out of range; the base has {n} decoder layers (0..{n - 1})")
        return list(layer_ids)

    def add_features(self, batch: dict, aux_layer_ids=()) -> dict:
        """Fill a token batch with the base's features in place (online training, evaluation): `hidden`
        (the last hidden state) and, with `aux_layer_ids`, `aux_hidden`. A batch that has them is left alone."""
        if "hidden" not in batch:
            mask, positions = batch.get("attention_mask"), None
            if "segment_ids" in batch:  # packed rows (data.packing): each conversation attends only to itself
                mask, positions = self.packed_attention(batch["segment_ids"]), batch["position_ids"]
            batch["hidden"], aux = self.capture(batch["input_ids"], mask, aux_layer_ids, positions)
            if aux is not None:
                batch["aux_hidden"] = aux
        return batch

    def packed_attention(self, segment_ids: torch.Tensor):
        """The base's attention mask for packed rows: a block-diagonal causal 4D mask, or None under
        flash_attention_2, which finds the conversations from the restarting position_ids itself."""
        if getattr(self.model.config, "_attn_implementation", None) == "flash_attention_2":
            return None
        from .masks import packed_causal_mask

        return packed_causal_mask(segment_ids, self.dtype)

    @torch.no_grad()
    def capture(self, input_ids, attention_mask=None, aux_layer_ids=(), position_ids=None):
        """Hidden states without the lm_head: (last hidden after the final norm [B,T,H],
        the outputs of decoder blocks `aux_layer_ids` concatenated on the feature axis [B,T,k*H] or None).
        attention_mask: [B, T] (1 = token) or an additive 4D mask; position_ids: None = 0..T−1."""
        extra = {"position_ids": position_ids} if position_ids is not None else {}
        with self._capturing(aux_layer_ids) as captured:
            out = self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                           **extra)
        aux = torch.cat([captured[k] for k in aux_layer_ids], dim=-1) if aux_layer_ids else None
        return out.last_hidden_state, aux


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_base(section: BaseSection, device: torch.device | None = None) -> FrozenBase:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .gqa_attention import use_grouped_sdpa

    dtype = resolve_dtype(section.dtype, "base.dtype")
    device = device or resolve_device(section.device)
    path = section.model_name_or_path
    if is_gguf_source(path, section.gguf_file):
        model, tokenizer = load_gguf(path, section.gguf_file, dtype, section.trust_remote_code)
        model.to(device)
        use_grouped_sdpa(model)
        return FrozenBase(model=freeze(model), tokenizer=tokenizer, device=device, dtype=dtype)
    check_model_path(path, "base.model_name_or_path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=section.trust_remote_code)
    except Exception as e:  # tokenizers / transformers raise many types for a broken tokenizer file
        raise ConfigError(f"base.model_name_or_path {path}: its tokenizer cannot be loaded "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=section.trust_remote_code)
    except Exception as e:  # a corrupt weight file, an unknown architecture, a missing shard
        raise ConfigError(f"base.model_name_or_path {path}: the model cannot be loaded "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    model.to(device)
    use_grouped_sdpa(model)  # verify forwards (many queries, a mask) attend without copying the KV heads on CPU
    return FrozenBase(model=freeze(model), tokenizer=tokenizer, device=device, dtype=dtype)
