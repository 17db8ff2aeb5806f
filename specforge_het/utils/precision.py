"""Whether bf16 pays on this machine, decided by measurement, never by a CPU model name: AVX2-only CPUs run bf16
matmuls ~20× slower than fp32, AVX512-BF16 / AMX CPUs and GPUs faster."""
from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger(__name__)


def bf16_pays(hidden: int, inner: int, what: str) -> bool:
    """One timed round of a [512, hidden] × [hidden, inner] matmul in fp32 and under bf16 autocast (CPU)."""
    a, b = torch.randn(512, hidden), torch.randn(hidden, inner)

    def seconds(bf16: bool, reps: int) -> float:
        """The fastest of three timed rounds: another process on the same cores only ever adds time."""
        best = float("inf")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            (a @ b).sum()  # warm-up
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(reps):
                    (a @ b).sum()
                best = min(best, (time.perf_counter() - t0) / reps)
        return best

    fp32, bf16 = seconds(False, 4), seconds(True, 2)
    pays = bf16 < 0.8 * fp32
    log.info(f"{what} {'on' if pays else 'off'} (probe: bf16 {bf16 * 1e3:.1f} ms vs fp32 {fp32 * 1e3:.1f} ms per "
             f"matmul; CPU capability {torch.backends.cpu.get_cpu_capability()})")
    return pays


def resolve_auto_dtype(name: str | None, fallback: str, hidden: int, inner: int, what: str) -> str:
    """`auto` → bfloat16 where the probe says it pays (always on CUDA), else float32; None → fallback."""
    if name is None:
        return fallback
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "bfloat16"
    return "bfloat16" if bf16_pays(hidden, inner, what) else "float32"
