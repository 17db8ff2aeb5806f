"""synthesize: training prompts written by the base itself (Magpie-style), deduplicated, filtered and checked against
held-out benchmark prompts; the conversation file that self-distillation (`data_gen --@self_distill`) answers.

    python -m specforge_het.synthesize --@smollm2 [--synth.num_prompts 2000] [--synth.time_budget_s 900]

Resumable: a killed run continues after its last whole batch; a finished file from the same base and settings is
reused; one made from other inputs is refused in one line.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .config.cli import run_entry, save_resolved_config
from .config.schema import RunConfig
from .data.synthesize import synthesize
from .modeling.base import load_base
from .utils.precision import resolve_auto_dtype


def run(cfg: RunConfig, presets: list[str]) -> Path:
    dtype = resolve_auto_dtype(cfg.synth.dtype, cfg.base.dtype, 576, 1536, "synthesize: bf16 base")
    base = load_base(dataclasses.replace(cfg.base, dtype=dtype))
    job = synthesize(base, cfg)
    save_resolved_config(cfg, Path(cfg.synth.out).parent, "synthesize", presets)
    return job.out


if __name__ == "__main__":
    run_entry("synthesize", __doc__.strip().splitlines()[0], run)
