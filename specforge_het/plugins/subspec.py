"""SubSpec-style quantized draft substitution: a training-free drafter that *is* the base, with its decoder blocks
from `keep_first_n` on replaced by low-bit substitutes (4-bit group-wise by default; HQQ when installed).

Everything else is shared with the base, tensor for tensor: the embedding, the final norm, the lm_head, the norms
inside substituted blocks, and the first `keep_first_n` blocks whole (with layer offloading these are exactly the
blocks the base keeps on the accelerator, so the drafter needs no extra memory for them, while the offloaded
ones are drafted by substitutes that fit beside them). It drafts like a classic draft model (token only), so deep
trees (depth ~32, top-k ~6: the `subspec` preset) are cheap relative to a streamed base verify.

Not done: SubSpec also shares the kept blocks' KV cache with the base; here the drafter keeps its own cache.
"""
from __future__ import annotations

import copy

import torch

from ..config.schema import ConfigError
from ..modeling.base import decoder_parts
from ..modeling.classic import ClassicDrafter
from .quantize import quantize_linears, resolve_backend


class SubstituteDrafter(ClassicDrafter):
    """A ClassicDrafter over a shallow clone of the base model (see module doc). Built, never saved."""

    def save_pretrained(self, *args, **kwargs):
        raise ConfigError("a SubSpec substitute drafter is rebuilt from the base on every run (plugins: [subspec]); "
                          "there is nothing to save")


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
                          backend: str = "auto") -> SubstituteDrafter:
    backend = resolve_backend(backend)
    lm, replaced = substitute_lm(base.model, keep_first_n, bits, group_size, backend)
    from ..modeling.drafter_base import base_meta

    meta = base_meta(base, {"algorithm": "subspec", "quant_bits": bits, "quant_group_size": group_size,
                            "quant_backend": backend, "kept_blocks": keep_first_n, "quantized_linears": replaced})
    # base_vocab_size=None: the LM's head is the base's own, nothing to slice off.
    drafter = SubstituteDrafter(lm.config, base.hidden_size, None, meta=meta, lm=lm)
    return drafter.attach_base(base.embed_tokens, base.lm_head).eval()


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
