"""inference.compile: the base's decode/verify forward and the drafter's forward through torch.compile.

On CPU inductor turns each forward into generated C++ with far less per-call overhead than eager HF (measured on the
demo base: a decode step 6.6 → 3.0 ms, AVX2, 2 threads); on a GPU the same graphs get fused Triton kernels. Shapes are
dynamic (the cache grows every step, trees and batches differ), so one graph serves them all; the first calls pay
the compilation. Tokens are the eager path's (tests/test_compiled.py). Not here yet: a static pre-allocated KV cache
and CUDA graphs (`mode="reduce-overhead"` needs fixed shapes per bucket).
"""
from __future__ import annotations

import torch

from ..config.schema import ConfigError


def compile_for_decoding(base, drafter=None) -> None:
    """Compile the base's forward and, when given, the drafter's (idempotent)."""
    # Graphs specialise on what dynamic shapes cannot cover (batch or query length 1 against more, an empty cache,
    # masks given or not): a handful per function, more than dynamo's default limit of 8 over a server's life.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    base.compile()
    if drafter is not None and not getattr(drafter, "compiled_forward", False):
        drafter.forward = torch.compile(drafter.forward, dynamic=True)  # an instance attribute: weights unchanged
        drafter.compiled_forward = True


def check_compilable(enabled_plugins: list[str], verify_precision: str) -> None:
    """inference.compile where it cannot apply as is: say so in one line."""
    if enabled_plugins:
        raise ConfigError(f"inference.compile: not with plugins ({', '.join(enabled_plugins)}: they move weights or "
                          "swap drafters between calls); unset one of them")
    if verify_precision != "model":
        raise ConfigError("inference.compile: not with inference.verify_precision float32 (that path recomputes the "
                          "head outside the model's forward); unset one of them")
