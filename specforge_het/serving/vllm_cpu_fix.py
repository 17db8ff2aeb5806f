"""A fix for vLLM's CPU build at T > 0 with speculative decoding, as a vLLM general plugin (opt-in).

vLLM 0.32's CPU build replaces the Triton kernel that spreads each request's temperature over its draft tokens
(`vllm.v1.sample.rejection_sampler.expand_kernel`) with a C++ kernel that takes int64 tensors only. Its wrapper
(`vllm/utils/cpu_triton_utils.py`, `_expand_kernel_impl`) passes an int64 *copy* of the float output buffer, so the
buffer the rejection sampler divides the target logits by is never written: at T > 0 vLLM accepts drafts by whatever
that memory holds (none, or far more than theory allows). Greedy decoding never reads it. GPU builds run the Triton
kernel and are not affected.

With this package installed where vLLM runs, set SPECFORGE_HET_VLLM_CPU_FIX=1: vLLM loads general plugins in every
process it starts (engine core, workers) before it registers its CPU kernels, and `register` makes the kernel it
registers the exact torch version below. Nothing else in the engine changes.

    SPECFORGE_HET_VLLM_CPU_FIX=1 vllm serve BASE --speculative-config '{"method": "eagle3", ...}'

This module imports only torch and (lazily) vLLM: the serving tier's worker imports it in vLLM's own environment.
"""
from __future__ import annotations

import os

ENV_VAR = "SPECFORGE_HET_VLLM_CPU_FIX"


def exact_expand(output, input_val, cu_num_tokens, replace_from, replace_to, MAX_NUM_TOKENS=None):
    """What vLLM's Triton expand_kernel computes, in torch, for any dtype: x[b] over each of request b's draft
    tokens, replace_from → replace_to. Its parameters are the CPU wrapper's, in the kernel's order."""
    import torch

    counts = torch.diff(cu_num_tokens.long(), prepend=cu_num_tokens.new_zeros(1).long())
    values = torch.where(input_val == replace_from, torch.full_like(input_val, replace_to), input_val)
    output.copy_(values.repeat_interleave(counts)[: output.shape[0]].to(output.dtype))


def use_exact_expand(exact: bool = True) -> bool:
    """Make the CPU expand kernel vLLM registers the exact one (or its own again). Registers it now as well, so an
    engine already past its own registration uses it too. False where vLLM runs Triton (nothing to fix)."""
    from vllm.triton_utils import HAS_TRITON

    if HAS_TRITON:
        return False
    from vllm.triton_utils.dispatcher import register_kernels
    from vllm.utils import cpu_triton_utils as cpu_tl

    if not hasattr(cpu_tl, "_vllm_expand_kernel_impl"):
        cpu_tl._vllm_expand_kernel_impl = cpu_tl._expand_kernel_impl
    cpu_tl._expand_kernel_impl = exact_expand if exact else cpu_tl._vllm_expand_kernel_impl
    register_kernels({"vllm.v1.sample.rejection_sampler.expand_kernel": cpu_tl._expand_kernel_impl})
    return True


def register() -> None:
    """The `vllm.general_plugins` entry point: with SPECFORGE_HET_VLLM_CPU_FIX=1 on a CPU build, the exact expand."""
    if os.environ.get(ENV_VAR) != "1":
        return
    from vllm.platforms import current_platform

    if current_platform.device_type == "cpu":
        use_exact_expand(True)
