"""What every drafter shares: the base's embedding and lm_head (shared and frozen, or its own), a reduced draft
vocabulary (d2t / t2d), compatibility checks against a base, the draft family's decoder stack, and checkpoint I/O.

Checkpoint layout (our format): `model.safetensors` + `drafter_config.json`, whose `architecture` field names the
drafter class (`ARCHITECTURES`); `load_drafter(path)` reads any of them. No pickle, no trust_remote_code.
"""
from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config.schema import ConfigError
from ..utils.io import atomic_write, atomic_write_json, sha256_file
from . import ttt_attention
from .draft_config import hf_config_from_dict

FORMAT = "specforge_het.drafter"
FORMAT_VERSION = 1
CONFIG_NAME = "drafter_config.json"
WEIGHTS_NAME = "model.safetensors"
ARCHITECTURES: dict[str, type] = {}
BASE_KEYS = ("base_hidden_size", "base_vocab_size", "base_embed_dim", "own_embedding", "own_lm_head",
             "draft_vocab_size")


def register_architecture(name: str):
    def deco(cls):
        cls.ARCHITECTURE = name
        ARCHITECTURES[name] = cls
        return cls
    return deco


def causal_mask(q_len: int, dtype: torch.dtype, device, past_len: int = 0) -> torch.Tensor:
    """Additive [1, 1, q, past+q] causal mask (0 = attend, finfo.min = blocked)."""
    mask = torch.full((q_len, past_len + q_len), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask = torch.triu(mask, diagonal=past_len + 1)
    return mask[None, None]


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [B, q, k] (True = attend) → additive float [B, 1, q, k]."""
    out = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    out.masked_fill_(~visible, torch.finfo(dtype).min)
    return out[:, None]


def padded_causal_mask(valid: torch.Tensor, prefix_valid: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Causal attention over left- or inner-padded rows: query i sees valid keys ≤ i (and always itself, so a
    padding query has a finite row). valid [B, T], prefix_valid [B, P] or None → additive [B, 1, T, P + T]."""
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    new = (causal[None] & valid[:, None, :]) | torch.eye(t, dtype=torch.bool, device=valid.device)[None]
    if prefix_valid is not None:
        new = torch.cat([prefix_valid[:, None, :].expand(-1, t, -1), new], dim=2)
    return additive_mask(new, dtype)


def family_stack(hf_config):
    """The draft family's decoder model without its (vocab-sized) embedding, with our attention function
    (plain SDPA, or the unrolled training-time-test attention when a `ttt_state` is passed)."""
    from transformers import AutoModel

    cfg = copy.deepcopy(hf_config)
    cfg.vocab_size = 2
    cfg.tie_word_embeddings = False
    cfg.pad_token_id = None
    cfg._attn_implementation = ttt_attention.NAME
    skeleton = AutoModel.from_config(cfg)
    for layer in skeleton.layers:  # the layers keep a reference to the config they were built with
        layer.self_attn.config._attn_implementation = ttt_attention.NAME
    return skeleton


def rope_kwargs(rotary_emb) -> dict:
    """Gemma-3-style rotary modules take the layer type; every draft layer is full attention."""
    return {"layer_type": "full_attention"} if "layer_type" in inspect.signature(rotary_emb.forward).parameters else {}


def require_own_parts_for_width(kind: str, width: int, base_hidden_size: int, base_embed_dim: Optional[int],
                                own_embedding: bool, own_lm_head: bool) -> None:
    """A drafter whose layers run at `width` can share the base's embedding / lm_head only at the base's widths."""
    embed_width = base_embed_dim or base_hidden_size
    if not own_embedding and embed_width != width:
        raise ConfigError(f"{kind} at draft width {width} ≠ base embedding width {embed_width}"
                          " needs its own embedding: set modeling.embedding: own")
    if not own_lm_head and width != base_hidden_size:
        raise ConfigError(f"{kind} at draft width {width} ≠ base width {base_hidden_size} needs its own lm_head: "
                          "set modeling.lm_head: own")


class DrafterBase(nn.Module):
    ARCHITECTURE = "?"
    EXTRA_KEYS: tuple = ()  # constructor arguments of the subclass saved in drafter_config.json

    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None,
                 base_embed_dim: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = False,
                 draft_vocab_size: Optional[int] = None, meta: Optional[dict] = None, head_in_features: int = 0,
                 embed_dim: int = 0):
        super().__init__()
        self.hf_config = hf_config
        self.meta = dict(meta or {})
        self.base_hidden_size = base_hidden_size
        self.base_vocab_size = base_vocab_size
        self.base_embed_dim = base_embed_dim or base_hidden_size
        if (own_embedding or own_lm_head) and not base_vocab_size:
            raise ConfigError("a drafter with its own embedding or lm_head needs the base vocabulary size")
        if draft_vocab_size is not None and not own_lm_head:
            raise ConfigError("modeling.draft_vocab_size needs the drafter's own lm_head (modeling.lm_head: own)")
        if draft_vocab_size is not None and not 0 < draft_vocab_size <= base_vocab_size:
            raise ConfigError(f"modeling.draft_vocab_size: expected 1..{base_vocab_size} (the base vocabulary), "
                              f"got {draft_vocab_size}")
        self.own_embedding, self.own_lm_head = own_embedding, own_lm_head
        self.embed = nn.Embedding(base_vocab_size, embed_dim) if own_embedding else None
        self.draft_vocab_size = draft_vocab_size or (base_vocab_size if own_lm_head else None)
        self.lm_head = nn.Linear(head_in_features, self.draft_vocab_size, bias=False) if own_lm_head else None
        if draft_vocab_size is not None:
            self.register_buffer("d2t", torch.zeros(draft_vocab_size, dtype=torch.long))
            self.register_buffer("t2d", torch.ones(base_vocab_size, dtype=torch.bool))
        else:
            self.d2t = self.t2d = None
        object.__setattr__(self, "base_embed_tokens", None)
        object.__setattr__(self, "base_lm_head", None)

    # Which base features the drafter reads: None = the last hidden state; a list = those blocks' outputs.
    feature_layers: Optional[list] = None
    token_only = False  # True for drafters that read no base features (the classic draft model)

    def prefill(self, hidden, prompt_ids: torch.Tensor, next_tokens: torch.Tensor, positions: torch.Tensor, cache,
                valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first drafter call of a generation: rows 0..n−1 of the prompt (base features h_t, tokens t+1).
        valid [B, n] marks real (not padding) rows of a left-padded batch. → (outputs [B, n, ·], which of the
        cache slots this call wrote are real [B, slots])."""
        if valid is None:
            valid = torch.ones(next_tokens.shape, dtype=torch.bool, device=next_tokens.device)
        mask = padded_causal_mask(valid, None, self.compute_dtype)
        return self(hidden, next_tokens, positions, attention_mask=mask, past_key_values=cache), valid

    def new_cache(self, base_cache):
        """The drafter's KV cache for one decode (a drafter sharing cache layers with the base overrides this)."""
        from transformers import DynamicCache

        return DynamicCache()

    def decoder_layers(self) -> list[nn.Module]:
        """The draft decoder layers, in order (what modeling.init_from_base_layer / lora_rank act on)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose decoder layers")

    @property
    def compute_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def reduced_vocab(self) -> bool:
        return self.d2t is not None

    def attach_base(self, embed_tokens: nn.Module, lm_head: nn.Module) -> "DrafterBase":
        """Share the base's frozen embedding and lm_head (kept out of parameters() and state_dict()).
        The base lm_head also gives the training targets when the drafter has its own head."""
        object.__setattr__(self, "base_embed_tokens", embed_tokens)
        object.__setattr__(self, "base_lm_head", lm_head)
        return self

    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        embed = self.embed if self.own_embedding else self.base_embed_tokens
        if embed is None:
            raise RuntimeError("drafter has no base attached: call attach_base(embed_tokens, lm_head) first")
        return embed(input_ids)

    def check_base(self, base) -> "DrafterBase":
        """Fail clearly when this drafter was trained for another base (width, vocabulary, tokenizer, layers)."""
        where = self.meta.get("base_model_name_or_path", "its training base")
        if base.hidden_size != self.base_hidden_size:
            raise ConfigError(f"drafter expects base hidden_size {self.base_hidden_size} (trained on {where}), "
                              f"but the base has {base.hidden_size}")
        if self.base_vocab_size is not None and base.vocab_size != self.base_vocab_size:
            raise ConfigError(f"drafter expects a base vocabulary of {self.base_vocab_size} tokens (trained on "
                              f"{where}), but the base has {base.vocab_size}: the tokenizers differ")
        fp = self.meta.get("tokenizer_fingerprint")
        if fp and base.tokenizer is not None:
            from .base import tokenizer_fingerprint

            if tokenizer_fingerprint(base.tokenizer) != fp:
                raise ConfigError(f"drafter was trained with another tokenizer than this base's ({where}): token "
                                  "ids would mean different things; train a drafter for this base")
        if self.feature_layers:
            base.check_layer_ids(self.feature_layers, "drafter feature layers")
        return self

    def set_draft_vocab(self, used: torch.Tensor) -> None:
        """Restrict the own lm_head to the sorted target ids `used` (see REFERENCE: d2t[i] = used[i] − i)."""
        used = used.to(torch.long).sort().values
        if used.numel() != self.draft_vocab_size:
            raise ValueError(f"draft vocabulary has {used.numel()} ids, expected {self.draft_vocab_size}")
        self.d2t.copy_(used - torch.arange(used.numel(), device=used.device))
        self.t2d.zero_()
        self.t2d[used] = True

    @torch.no_grad()
    def init_lm_head_from_base(self) -> None:
        """Start an own lm_head at the base's rows (for the draft vocabulary) when the widths allow."""
        if self.lm_head is None or self.base_lm_head is None:
            return
        w = self.base_lm_head.weight
        if w.shape[1] != self.lm_head.in_features:
            return
        rows = self.draft_to_target(torch.arange(self.draft_vocab_size, device=w.device))
        self.lm_head.weight.copy_(w[rows].to(self.lm_head.weight.dtype))

    def draft_to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids] if self.reduced_vocab else draft_ids

    @torch.no_grad()
    def target_logits(self, base_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training targets: the base's logits of its own (last-layer) features, restricted to the draft vocabulary,
        and whether the base's top token is in that vocabulary (positions where it is not cannot be learned)."""
        full = self.base_lm_head(base_features.to(self.base_lm_head.weight.dtype))
        if not self.reduced_vocab:
            return full, torch.ones(full.shape[:-1], dtype=torch.bool, device=full.device)
        return full[..., self.t2d], self.t2d[full.argmax(-1)]

    # ----- checkpoint I/O -----
    def config_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": self.ARCHITECTURE,
            "base_hidden_size": self.base_hidden_size,
            "base_vocab_size": self.base_vocab_size,
            "base_embed_dim": self.base_embed_dim,
            "own_embedding": self.own_embedding,
            "own_lm_head": self.own_lm_head,
            "draft_vocab_size": self.draft_vocab_size if self.reduced_vocab else None,
            **{k: getattr(self, k) for k in self.EXTRA_KEYS},
            "draft_config": self.hf_config.to_dict(),
            **self.meta,
        }

    def save_pretrained(self, out_dir: str | Path, dtype: Optional[torch.dtype] = None,
                        state: Optional[dict] = None) -> Path:
        """Weights (safetensors) + drafter_config.json. `state`: weights to write instead of this module's own
        (e.g. gathered from ZeRO-3 shards, whose own parameters are empty); checked against the module's keys first."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        own = {k: v for k, v in self.state_dict().items() if "rotary_emb." not in k}
        if state is not None:
            state = {k: v for k, v in state.items() if "rotary_emb." not in k}
            if state.keys() != own.keys():
                raise ValueError(f"weights to save do not match the drafter: missing "
                                 f"{sorted(own.keys() - state.keys())[:6]}"
                                 f", unexpected {sorted(state.keys() - own.keys())[:6]}")
            own = state
        if "lora" in self.meta:  # LoRA-trained layers: saved merged, adapters beside them (see lora.py)
            from .lora import has_adapters, merge_adapters, save_adapters, scaling_of

            if has_adapters(own):
                own, adapters = merge_adapters(own, scaling_of(self))
                save_adapters(adapters, out)
        ties = tied_keys(self.state_dict())  # e.g. a classic draft LM's lm_head tied to its embedding: saved once
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
                 for k, v in own.items() if k not in ties}
        check_finite(state, out / WEIGHTS_NAME)
        atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        # The weights' content hash, checked at every load: flipped bytes never load silently.
        atomic_write_json(out / CONFIG_NAME, {**self.config_dict(), "weights_sha256": sha256_file(out / WEIGHTS_NAME)})
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu", dtype: Optional[torch.dtype] = None) -> "DrafterBase":
        return load_drafter(path, device, dtype, expect=None if cls is DrafterBase else cls)


def base_meta(base, meta: Optional[dict]) -> dict:
    """Run metadata plus the base tokenizer's fingerprint (checked again whenever the drafter meets a base)."""
    from .base import tokenizer_fingerprint

    meta = dict(meta or {})
    meta.setdefault("base_num_layers", base.num_layers)  # what the engines' layer-capture rules are checked against
    if base.tokenizer is not None:
        meta.setdefault("tokenizer_fingerprint", tokenizer_fingerprint(base.tokenizer))
    return meta


def build_for_base(cls, base, hf_config, meta: Optional[dict], own_embedding: bool, own_lm_head: bool,
                   draft_vocab: Optional[torch.Tensor], **extra) -> DrafterBase:
    """A fresh drafter of class `cls` for a FrozenBase: reduced vocabulary set, base attached, own embedding and
    lm_head started from the base's weights where the shapes allow. `draft_vocab` implies an own lm_head."""
    own_lm_head = own_lm_head or draft_vocab is not None
    drafter = cls(hf_config, base.hidden_size, base.vocab_size, base.embed_tokens.weight.shape[1], own_embedding,
                  own_lm_head, None if draft_vocab is None else int(draft_vocab.numel()), meta=base_meta(base, meta),
                  **extra)
    if draft_vocab is not None:
        drafter.set_draft_vocab(draft_vocab)
    drafter = drafter.to(base.device).attach_base(base.embed_tokens, base.lm_head)
    drafter.init_lm_head_from_base()
    if own_embedding and drafter.embed.weight.shape == base.embed_tokens.weight.shape:
        with torch.no_grad():
            drafter.embed.weight.copy_(base.embed_tokens.weight)
    return drafter


def read_drafter_config(path: Path) -> dict:
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise ConfigError(f"no drafter checkpoint at {path} (missing {CONFIG_NAME})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{cfg_path} is not valid JSON: {e}") from None
    if cfg.get("format") != FORMAT:
        raise ConfigError(f"{cfg_path}: field 'format' is {cfg.get('format')!r}, expected {FORMAT!r}")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise ConfigError(f"{cfg_path}: format_version {cfg['format_version']} is newer than this "
                          f"specforge_het understands ({FORMAT_VERSION}); upgrade specforge_het")
    if "base_hidden_size" not in cfg or "draft_config" not in cfg:
        raise ConfigError(f"{cfg_path}: missing field 'base_hidden_size' or 'draft_config'")
    return cfg


def load_drafter(path: str | Path, device="cpu", dtype: Optional[torch.dtype] = None, expect=None) -> DrafterBase:
    """Any drafter checkpoint of our format, by path."""
    from . import classic, dflash, drafter, dspark, eagle3  # noqa: F401  (register their architectures)

    path = Path(path)
    cfg = read_drafter_config(path)
    arch = cfg.get("architecture", "eagle_drafter")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{path / CONFIG_NAME}: unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[arch]
    if expect is not None and not issubclass(cls, expect):
        raise ConfigError(f"{path}: holds a {arch} drafter, not a {expect.ARCHITECTURE}")
    keys = BASE_KEYS + cls.EXTRA_KEYS
    meta = {k: v for k, v in cfg.items()
            if k not in ("format", "format_version", "architecture", "draft_config", "weights_sha256") + keys}
    model = cls(hf_config_from_dict(cfg["draft_config"]), meta=meta,
                **{k: cfg[k] for k in keys if cfg.get(k) is not None})
    weights = path / WEIGHTS_NAME
    state = read_safetensors(weights, cfg.get("weights_sha256"))
    model = load_checked_state(model, state, weights)
    # dtype None keeps the checkpoint's own floating dtype (the modules were built in float32).
    dtype = dtype or next((v.dtype for v in state.values() if v.is_floating_point()), None)
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def read_safetensors(path: Path, sha256: Optional[str] = None) -> dict:
    """A safetensors file's tensors, with one clear error naming the file when it is missing, truncated or corrupt
    (or, given the hash its writer recorded, when its bytes changed)."""
    if not path.is_file():
        raise ConfigError(f"no weights at {path}")
    if sha256 is not None and sha256_file(path) != sha256:
        raise ConfigError(f"{path} is corrupt: its sha256 differs from the one recorded when it was written")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a bad header or a short file
        raise ConfigError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None


def check_finite(state: dict, where) -> None:
    """Refuse weights holding NaN or ±inf (a diverged run, or corrupted bytes that still parse)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ConfigError(f"{where}: non-finite values (NaN or inf) in {', '.join(sorted(bad)[:6])}"
                          + (f" and {len(bad) - 6} more" if len(bad) > 6 else ""))


def tied_keys(state: dict) -> dict[str, str]:
    """Keys whose tensor is the same storage as an earlier key's (tied weights) → that earlier key."""
    first, ties = {}, {}
    for k, v in state.items():
        if v.numel() == 0:
            continue
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if ident in first:
            ties[k] = first[ident]
        else:
            first[ident] = k
    return ties


def load_checked_state(model: DrafterBase, state: dict, where) -> DrafterBase:
    """Load `state` into `model` after checking every key is expected and present, with the expected shape.
    A key the model ties to another (saved once) is filled from that other key."""
    own = {k: v for k, v in model.state_dict().items() if "rotary_emb." not in k}
    state = dict(state)
    for dup, src in tied_keys(own).items():
        if dup not in state and src in state:
            state[dup] = state[src]
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unexpected:
        raise ConfigError(f"{where}: missing keys {sorted(missing)[:6]}, unexpected keys {sorted(unexpected)[:6]}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ConfigError(f"{where}: key {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    check_finite(state, where)
    model.load_state_dict(state, strict=False)
    return model
