"""What one speculative iteration costs in base steps, eager against compiled and CUDA graphs, per strategy and batch.

    python -m specforge_het.bench.iteration_cost [--bench.bases demo,1b] [--bench.modes eager,static,compiled,graphs]
        [--bench.batch_sizes 1,4]
        [--bench.new_tokens 48] [--bench.prompts 4] [--bench.device cpu|cuda] [--bench.dtype float32|bfloat16]
        [--bench.json out.json]

Bases: `demo` (the project's demo Llama, output/demo_base: run the README's main job first) and `1b` (a random
Llama-3.2-1B-shaped base, bench.forced_acceptance's). Each gets a random EAGLE-2 drafter and forced acceptance (every
verify step accepts the path to its tree's deepest node), so chain / tree / budget iterations run at full depth
whatever the weights. Per (base, mode, batch size): the base-only decode of the same prompts (its median step is the
base step), then each strategy; `iter/step` = median iteration time ÷ median base step (τ ÷ iter/step ≈ the speedup).
Modes (each on the same weights; the drafter is copied for the compiled ones):
  eager     growing HF caches, eager forwards (the default path)
  static    inference.static_cache: pre-allocated caches with in-place compaction (slot_cache.py), eager
  compiled  inference.compile: torch.compile with dynamic shapes over growing caches
  graphs    both: static caches, static graphs per shape bucket; on CUDA captured as CUDA graphs (reduce-overhead)
Compiled modes are warmed up (compiled, captured) before anything is timed. Medians, not means: single slow calls (a
recompilation, the OS) do not move them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional
import copy
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from . import comma_choices
from ..inference.compiled import compile_for_decoding
from ..inference.engine import base_decode_batch, speculative_decode_batch
from ..families.eagle.model import build_drafter
from .forced_acceptance import STRATEGIES, random_base
from ._options import parse_options

log = logging.getLogger(__name__)

BASES = ("demo", "1b")
MODES = ("eager", "static", "compiled", "graphs")
DEMO_BASE = Path("output/demo_base")


def load(name: str, device: str, dtype: torch.dtype):
    """(base, random EAGLE-2 drafter, vocabulary size) for a bench base."""
    if name == "1b":
        base = random_base(16, device, dtype, sharpen=10.0)
    else:
        from ..config.schema import BaseSection
        from ..modeling.base import load_base

        if not (DEMO_BASE / "config.json").is_file():
            raise SystemExit(f"bench.iteration_cost: {DEMO_BASE} is missing; run the README's main job first "
                             "(bash demo/run_pipeline.sh), or use --bench.bases 1b")
        base = load_base(BaseSection(model_name_or_path=str(DEMO_BASE), dtype=str(dtype).removeprefix("torch."),
                                     device=device))
    torch.manual_seed(1)
    drafter = build_drafter(base).to(device=device, dtype=dtype).eval()
    return base, drafter, base.vocab_size


def in_mode(base, drafter, mode: str):
    """(base, drafter) set up for a mode: the same model weights; compiled modes get their own drafter copy (its
    compiled forward is an instance attribute) and their own compiled wrapper of the base."""
    static = mode in ("static", "graphs")
    base = dataclasses.replace(base, compiled=None, static_cache=static)
    if mode in ("compiled", "graphs"):
        drafter = copy.deepcopy(drafter)
        compile_for_decoding(base, drafter)
    return base, drafter


def median_step(runs) -> float:
    return statistics.median(s for r in runs for s in r.iteration_seconds)


def measure(base, drafter, prompts: list[list[int]], batch_size: int, new_tokens: int) -> list[dict]:
    batches = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    # Warm-up: compiled modes run everything once first (every shape bucket gets compiled / captured outside the
    # timed runs); eager ones a short run.
    compiled = base.compiled is not None
    warm_batches, warm_tokens = (batches, new_tokens) if compiled else (batches[:1], 8)
    for b in warm_batches:
        base_decode_batch(base, b, warm_tokens, set())
    t0 = time.perf_counter()
    base_runs = [r for b in batches for r in base_decode_batch(base, b, new_tokens, set())]
    base_step, base_wall = median_step(base_runs), time.perf_counter() - t0
    rows = []
    for name, params in STRATEGIES.items():
        for b in warm_batches:
            speculative_decode_batch(base, drafter, b, warm_tokens, set(), **params, force_accept=True)
        t0 = time.perf_counter()
        runs = [r for b in batches for r in speculative_decode_batch(base, drafter, b, new_tokens, set(), **params,
                                                                     force_accept=True)]
        wall = time.perf_counter() - t0
        iteration = median_step(runs)
        tau = sum(r.emitted for r in runs) / max(1, sum(r.steps for r in runs))
        rows.append({"strategy": name, "batch_size": batch_size, "base_step_ms": 1e3 * base_step,
                     "iteration_ms": 1e3 * iteration, "iter_over_base_step": iteration / base_step, "tau": tau,
                     "speedup": base_wall / wall})
    return rows


@dataclass
class Options:
    bases: str = field(default="demo,1b", metadata={"help": "comma-separated, of: " + ", ".join(BASES)})
    modes: str = field(default="eager,compiled", metadata={"help": "comma-separated, of: " + ", ".join(MODES)})
    batch_sizes: str = field(default="1,4", metadata={"help": "comma-separated"})
    new_tokens: int = 48
    prompts: int = 4
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    json: Optional[str] = field(default=None, metadata={"help": "also write the rows here"})


def main(argv=None) -> list[dict]:
    args = parse_options(Options, argv, "bench.iteration_cost", __doc__)
    bases = comma_choices(args.bases, BASES, "bench.iteration_cost: --bench.bases")
    modes = comma_choices(args.modes, MODES, "bench.iteration_cost: --bench.modes")
    dtype = getattr(torch, args.dtype)
    rows = []
    for name in bases:
        base, drafter, vocab = load(name, args.device, dtype)
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(10, vocab - 10, (int(n),), generator=g).tolist()
                   for n in torch.randint(32, 128, (args.prompts,), generator=g)]
        for mode in modes:
            run_base, run_drafter = in_mode(base, drafter, mode)
            for bs in (int(b) for b in args.batch_sizes.split(",")):
                t0 = time.perf_counter()
                cost = measure(run_base, run_drafter, prompts, bs, args.new_tokens)
                log.info(f"{name} {mode} batch {bs}: {time.perf_counter() - t0:.0f} s with warm-ups")
                for row in cost:
                    rows.append({"base": name, "mode": mode, **row})
                    r = rows[-1]
                    log.info(f"  {name} {mode} batch {bs} {r['strategy']}: iter/step {r['iter_over_base_step']:.2f}")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    log.info(f"\nforced acceptance, {args.prompts} prompts × {args.new_tokens} new tokens, {args.dtype}, {where}")
    log.info(f"{'base':<5} {'mode':<9} {'batch':>5} {'strategy':<7} {'base step ms':>12} {'iter ms':>8} "
             f"{'iter/step':>9} {'tau':>5} {'speedup':>7}")
    for r in rows:
        log.info(f"{r['base']:<5} {r['mode']:<9} {r['batch_size']:>5} {r['strategy']:<7} {r['base_step_ms']:>12.2f} "
                 f"{r['iteration_ms']:>8.2f} {r['iter_over_base_step']:>9.2f} {r['tau']:>5.2f} {r['speedup']:>6.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": where, "dtype": args.dtype, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    from ..utils.logs import setup_logging

    setup_logging()
    main()
