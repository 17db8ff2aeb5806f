"""SubSpec-style quantized draft substitution: a training-free drafter that *is* the base, with its decoder blocks
from `keep_first_n` on replaced by low-bit substitutes (4-bit group-wise by default; HQQ when installed).

Everything else is shared with the base, tensor for tensor: the embedding, the final norm, the lm_head, the norms
inside substituted blocks, and the first `keep_first_n` blocks whole (with layer offloading these are exactly the
blocks the base keeps on the accelerator, so the drafter needs no extra memory for them, while the offloaded
ones are drafted by substitutes that fit beside them). It drafts like a classic draft model (token only), so deep
trees (depth ~32, top-k ~6: the `subspec` preset) are cheap relative to a streamed base verify.

With kept blocks (N ≥ 1) and batch 1 the kept blocks' KV cache is shared with the base as well
(`SharedSubstituteDrafter`): the drafter's cache layers for blocks 0..N−1 read the base's committed entries in place
and hold only the drafter's own lead token and tree nodes; for tokens the base has verified, the drafter runs
only the substituted blocks, on the base's own block-(N−1) outputs (captured during the verify), since the
shared blocks would compute exactly those. So the kept blocks cost the drafter no cache memory and no recompute.
"""
from __future__ import annotations

import copy

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..config.errors import ConfigError
from .registry import Plugin, register_plugin
from .speculator import Speculator
from ..modeling.base import decoder_parts
from ..families.classic.model import ClassicDrafter
from ..modeling.compat import base_meta
from ..modeling.masks import causal_mask
from .quantize import quantize_linears, resolve_backend
from ..utils.hf_compat import cache_kw


class SubstituteDrafter(ClassicDrafter):
    """A ClassicDrafter over a shallow clone of the base model (see module doc). Built, never saved."""

    def save_pretrained(self, *args, **kwargs):
        raise ConfigError("a SubSpec substitute drafter is rebuilt from the base on every run (plugins: [subspec]); "
                          "there is nothing to save")


class SharedPrefixLayer(DynamicLayer):
    """A kept block's draft cache layer: the base cache's committed entries of that block (read in place, never
    copied into this layer), followed by the drafter's own entries. `keys`/`values` look like a DynamicLayer's, so
    HF attention, crop and gather work unchanged; what is written beyond the base's length is the drafter's."""

    def __init__(self, base_cache, idx: int):
        self._base_cache, self._idx = base_cache, idx
        self._own = {"keys": None, "values": None}
        super().__init__()  # sets keys / values to None through the properties below

    def _base(self, name: str):
        layer = self._base_cache.layers[self._idx]
        return getattr(layer, name)

    def _get(self, name: str):
        base, own = self._base(name), self._own[name]
        return base if own is None or own.shape[-2] == 0 else torch.cat([base, own], dim=-2)

    def _set(self, name: str, value) -> None:
        if value is None or value.dim() < 4:  # reset / lazy initialisation
            self._own[name] = None
            return
        self._own[name] = value[..., self._base(name).shape[-2]:, :]

    keys = property(lambda self: self._get("keys"), lambda self, v: self._set("keys", v))
    values = property(lambda self: self._get("values"), lambda self, v: self._set("values", v))

    def update(self, key_states, value_states, *args, **kwargs):
        """Append to the drafter's own part only (DynamicLayer's update would rebuild base + own twice)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        for name, new in (("keys", key_states), ("values", value_states)):
            own = self._own[name]
            self._own[name] = new if own is None else torch.cat([own, new], dim=-2)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        own = self._own["keys"]
        return self._base("keys").shape[-2] + (0 if own is None else own.shape[-2])

    def drop_own(self) -> None:
        self._own = {"keys": None, "values": None}


class SharedSubstituteDrafter(SubstituteDrafter):
    """The substitute drafter sharing its kept blocks 0..N−1 (and their KV cache) with the base; batch 1.
    Reads the base's block-(N−1) outputs for verified tokens, so to the engine it is a feature-reading drafter."""

    token_only = False
    unrolls_on_tokens = True  # the features only stand for what the shared blocks compute (algorithms/unroll.py)

    def __init__(self, *args, keep_first_n: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep = keep_first_n
        self.feature_layers = [keep_first_n - 1]
        blocks, _ = decoder_parts(self.lm)
        self.kept, self.substituted = list(blocks)[:keep_first_n], list(blocks)[keep_first_n:]

    def new_cache(self, base_cache):
        cache = DynamicCache()
        cache.layers = [SharedPrefixLayer(base_cache, i) for i in range(self.keep)]
        cache.layers += [DynamicLayer() for _ in self.substituted]
        return cache

    def _run(self, blocks, x, positions, mask, cache):
        pos_emb = self.lm.model.rotary_emb(x, positions)
        for block in blocks:
            out = block(x, attention_mask=mask, position_ids=positions, **cache_kw(cache), use_cache=True,
                        position_embeddings=pos_emb)
            x = out[0] if isinstance(out, tuple) else out
        return x

    def _verified_then_lead(self, features, lead_token, positions, cache):
        """features [1, m, H]: base block-(N−1) outputs of verified tokens not yet in the substituted blocks' cache,
        at true positions positions[:, :m]; lead_token [1, 1] (the newest token, not verified yet) at positions[:, m].
        → final hidden states of those m + 1 tokens."""
        for layer in cache.layers[: self.keep]:
            layer.drop_own()  # the previous lead is verified now: the base's own entries hold it
        past = cache.layers[0].get_seq_length()
        dtype = self.lm.dtype
        lead = self._run(self.kept, self.lm.model.embed_tokens(lead_token), positions[:, -1:],
                         torch.zeros(1, 1, 1, past + 1, dtype=dtype, device=lead_token.device), cache)
        x = torch.cat([features.to(dtype), lead], dim=1)
        sub_past = cache.layers[self.keep].get_seq_length()
        x = self._run(self.substituted, x, positions, causal_mask(x.shape[1], dtype, x.device, sub_past), cache)
        return self.lm.model.norm(x)

    def prefill(self, hidden, prompt_ids, next_tokens, positions, cache, valid=None):
        if prompt_ids.shape[0] != 1 or (valid is not None and not bool(valid.all())):
            raise ConfigError("SubSpec with shared KV cache decodes one unpadded sequence at a time "
                              "(inference.batch_size 1), or set plugins.subspec_share_kv false")
        pos = torch.cat([positions, positions[:, -1:] + 1], dim=1)
        out = self._verified_then_lead(hidden, next_tokens[:, -1:], pos, cache)
        return out[:, 1:], torch.ones(1, pos.shape[1], dtype=torch.bool, device=pos.device)

    def forward(self, hidden, input_ids, position_ids, attention_mask=None, past_key_values=None,
                from_base: bool = True, ttt_state=None):
        if not from_base:  # tree nodes: every block, the kept ones over the base's entries + this drafter's own
            return super().forward(hidden, input_ids, position_ids, attention_mask, past_key_values, from_base)
        # The accepted path: hidden = base block-(N−1) outputs of [root, p1..pj], input_ids = [p1..pj, bonus].
        # The root went through the substituted blocks as the lead of the last step; p1..pj go now, from the
        # base's features; the bonus is the new lead.
        pos = position_ids + 1  # rows read token t+1: true positions of p1..pj, bonus
        out = self._verified_then_lead(hidden[:, 1:], input_ids[:, -1:], pos, past_key_values)
        return out


def substitute_lm(model: torch.nn.Module, keep_first_n: int, bits: int, group_size: int, backend: str):
    """A clone of an HF causal LM whose tensors are all the original's, except that blocks keep_first_n.. have
    their linear layers quantized. Module objects (and the config) are new, so the clone's settings and hooks
    never touch the base."""
    blocks, _ = decoder_parts(model)
    if not 0 <= keep_first_n < len(blocks):
        raise ConfigError(f"plugins.subspec_keep_first_n_layers: expected 0..{len(blocks) - 1} (the base has "
                          f"{len(blocks)} blocks; at least one is substituted), got {keep_first_n}")
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}  # share every tensor
    clone = copy.deepcopy(model, memo)
    for module in clone.modules():  # hooks (e.g. the base's offloading) stay with the base's own modules
        module._forward_pre_hooks.clear()
        module._forward_hooks.clear()
    clone_blocks, _ = decoder_parts(clone)
    replaced = sum(quantize_linears(block, bits, group_size, backend) for block in list(clone_blocks)[keep_first_n:])
    return clone.eval(), replaced


def build_subspec_drafter(base, keep_first_n: int = 0, bits: int = 4, group_size: int = 64,
                          backend: str = "auto", share_kv: bool = False) -> SubstituteDrafter:
    """share_kv (needs keep_first_n ≥ 1): the kept blocks' KV cache and verified-token compute come from the base."""
    backend = resolve_backend(backend)
    lm, replaced = substitute_lm(base.model, keep_first_n, bits, group_size, backend)
    share_kv = share_kv and keep_first_n > 0
    meta = base_meta(base, {"algorithm": "subspec", "quant_bits": bits, "quant_group_size": group_size,
                            "quant_backend": backend, "kept_blocks": keep_first_n, "quantized_linears": replaced,
                            "shared_kv": share_kv})
    # base_vocab_size=None: the LM's head is the base's own, nothing to slice off.
    if share_kv:
        drafter = SharedSubstituteDrafter(lm.config, base.hidden_size, None, meta=meta, lm=lm,
                                          keep_first_n=keep_first_n)
    else:
        drafter = SubstituteDrafter(lm.config, base.hidden_size, None, meta=meta, lm=lm)
    return drafter.attach_base(base.embed_tokens, base.lm_head).eval()


def apply(spec, cfg, base, enabled):
    p = cfg.plugins
    keep = p.subspec_keep_first_n_layers
    if keep is None:
        keep = p.keep_first_n_layers_on_gpu if "offload" in enabled else 0
    return Speculator(base, build_subspec_drafter(base, keep, p.quant_bits, p.quant_group_size, p.quant_backend,
                                                  share_kv=p.subspec_share_kv and "async_draft" not in enabled))


register_plugin(Plugin(
    "subspec", 0,
    "training-free drafter: the base with low-bit substitute blocks (plugins.quant_bits, HQQ if installed)", apply,
    provides_drafter=True))
