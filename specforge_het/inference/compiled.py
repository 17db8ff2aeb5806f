"""inference.compile: the base's decode/verify forward and the drafter's forward through torch.compile.

On CPU inductor turns each forward into generated C++ with far less per-call overhead than eager HF (measured on the
demo base: a decode step 6.6 → 3.0 ms, AVX2, 2 threads); on a GPU the same graphs get fused Triton kernels.
- Growing caches (the default): shapes are dynamic (the cache grows every step, trees and batches differ), so one
  graph serves them all.
- With inference.static_cache (slot_cache.py): every step of a batch has the same shapes, so graphs are static, one
  per (batch size, step width, capacity) bucket; on CUDA they are captured as CUDA graphs (`mode="reduce-overhead"`),
  which replay a whole forward with one launch.
The first calls of each shape pay the compilation. Tokens are the eager path's (tests/test_compiled.py,
tests/test_static_cache.py).
"""
from __future__ import annotations

import torch

from ..config.errors import ConfigError


def compile_for_decoding(base, drafter=None) -> None:
    """Compile the base's forward and, when given, the drafter's (idempotent)."""
    # Dynamic graphs specialise on what dynamic shapes cannot cover (batch or query length 1 against more, an empty
    # cache, masks given or not): a handful per function, more than dynamo's default limit of 8 over a server's life.
    # Static graphs: one per (batch size, step width, capacity bucket, scratch fill) — hundreds over strategies.
    static = base.static_cache
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256 if static else 64)
    mode = "reduce-overhead" if static and base.device.type == "cuda" else None
    base.compile(mode)
    if drafter is not None and not getattr(drafter, "compiled_forward", False):
        # An instance attribute: the weights stay the module's.
        drafter.forward = torch.compile(drafter.forward, dynamic=not static, mode=mode)
        drafter.compiled_forward = True


def check_compilable(enabled_plugins: list[str], verify_precision: str, option: str = "inference.compile") -> None:
    """inference.compile (or inference.static_cache) where it cannot apply as is: say so in one line."""
    if enabled_plugins:
        raise ConfigError(f"{option}: not with plugins ({', '.join(enabled_plugins)}: they move weights, share or "
                          "swap drafters and caches between calls); unset one of them")
    if verify_precision != "model":
        raise ConfigError(f"{option}: not with inference.verify_precision float32 (that path recomputes the "
                          "head outside the model's forward); unset one of them")
