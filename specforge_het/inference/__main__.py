"""inference: speculative decoding with a trained drafter next to base-only decoding, with τ, tokens/s and
speedup measured side by side in one run; greedy outputs are checked token-for-token against transformers.

    python -m specforge_het.inference [--@preset ...] [--inference.drafter_path DIR] [--inference.strategy both]
    python -m specforge_het.inference ... --inference.temperature 0.8 --inference.top_p 0.95   # sampling
    python -m specforge_het.inference ... --inference.batch_size 4 --inference.strategy all     # batched

Sampling uses recursive rejection sampling, which keeps the output distribution exactly the base's; that is
proven statistically in tests/test_sampling.py, since sampled outputs cannot be compared token by token.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..evaluation import simulated_acceptance, simulated_tau
from ..config.cli import run_entry, save_resolved_config
from ..config.schema import RunConfig
from ..utils.io import atomic_write_json
from .divergence import check_outputs
from .engine import base_decode_batch, hf_greedy
from .prompts import load_prompts  # noqa: F401  (re-exported)
from .measure import PeakMemory, decode_batches, format_table, load_pair, summarise, write_acceptance_png
from .strategies import eos_ids, resolve_strategies, strategy_params

log = logging.getLogger(__name__)


@torch.no_grad()
def simulated_chain_tau(base, drafter, base_runs: list, prompts: list[list[int]], depth: int) -> float:
    """The τ the in-training evaluation predicts for chain drafting of `depth`, computed on these prompts with the
    base's own greedy outputs as data (teacher-forced unroll; algorithms/unroll.py)."""
    accepted, eligible = torch.zeros(depth, dtype=torch.long), torch.zeros(depth, dtype=torch.long)
    for run_, prompt in zip(base_runs, prompts):
        ids = torch.tensor([run_.tokens], device=base.device)
        mask = torch.zeros_like(ids)
        mask[:, len(prompt):] = 1
        batch = base.add_features({"input_ids": ids, "loss_mask": mask}, drafter.feature_layers or ())
        a, e = simulated_acceptance(drafter, batch, depth)
        accepted += a
        eligible += e
    return simulated_tau(accepted, eligible)[0]


def run(cfg: RunConfig, presets: list[str]) -> dict:
    inf = cfg.inference
    strategies = resolve_strategies(inf.strategy)
    base, speculate, sampling = load_pair(cfg)
    drafter = speculate.drafter
    check = inf.check_lossless and sampling.greedy
    prompts = load_prompts(cfg, base.tokenizer)
    eos = eos_ids(base)
    out_dir = Path(inf.output_dir)
    save_resolved_config(cfg, out_dir, "inference", presets)

    # Warm-up (first calls pay for allocation and kernel selection), then every decoder on every prompt. Compiled,
    # every strategy's shapes are compiled here, outside the timed runs; over static caches the capacity bucket
    # counts max_new_tokens, so the warm-up decodes as many (other batches may still fall in another bucket).
    warm = prompts[: inf.batch_size]
    warm_tokens = (inf.max_new_tokens if inf.static_cache else 16) if inf.compile else 4
    base_decode_batch(base, warm, warm_tokens, eos, sampling)
    for s in strategies if inf.compile else strategies[:1]:
        speculate(warm, warm_tokens, eos, **strategy_params(cfg, s), sampling=sampling)
    with PeakMemory(base.device) as base_mem:
        base_runs = decode_batches(lambda ps: base_decode_batch(base, ps, inf.max_new_tokens, eos, sampling),
                                   prompts, inf.batch_size, "base-only decoding")
    references = [hf_greedy(base, p, inf.max_new_tokens, eos) for p in prompts] if check else None
    lens = [len(p) for p in prompts]
    # The base-only loop must itself match transformers' generate, or the comparison means nothing. With the verify
    # head in float32 the base-only loop (same head) is the reference: generate rounds its logits to the base dtype.
    base_check = check_outputs(base, [b.tokens for b in base_runs], references, lens, [1], inf.near_tie_ulps) \
        if check else None
    spec_refs = [b.tokens for b in base_runs] if base.head_dtype is not None else references
    report = {"base": cfg.base.model_name_or_path, "drafter": speculate.name(inf.drafter_path),
              "max_new_tokens": inf.max_new_tokens, "base_dtype": str(base.dtype).removeprefix("torch."),
              "verify_precision": inf.verify_precision,
              "prompts": len(prompts), "batch_size": inf.batch_size, "temperature": inf.temperature,
              "top_p": inf.top_p, "base_peak_memory_mib": base_mem.mib, "memory_kind": base_mem.kind,
              "strategies": []}
    if base_check is not None:
        report["base_loop_vs_generate"] = base_check
    all_ok = base_check is None or base_check["passed"]
    for s in strategies:
        params = strategy_params(cfg, s)
        with PeakMemory(base.device) as mem:
            runs = decode_batches(lambda ps: speculate(ps, inf.max_new_tokens, eos, **params, sampling=sampling),
                                  prompts, inf.batch_size, f"speculative ({s})")
        spec_check = check_outputs(base, [r.tokens for r in runs], spec_refs, lens,
                                   [1, 2, params["depth"] + 1, params["total_tokens"] + 1], inf.near_tie_ulps) \
            if check else None
        row = summarise(s, params, runs, base_runs, spec_check["identical"] if check else -1, mem)
        if check:
            row.update({k: spec_check[k] for k in ("near_ties", "mismatches", "verdict", "divergences")})
            row["base_loop_identical_to_generate"] = base_check["identical"]
            all_ok &= spec_check["passed"]
        if s == "chain" and sampling.greedy:  # the in-training estimate, on the same prompts, for comparison
            row["tau_simulated"] = simulated_chain_tau(base, drafter, base_runs, prompts, params["depth"])
        row.update(speculate.take_stats())
        report["strategies"].append(row)
    report["lossless"] = all_ok if check else None
    atomic_write_json(out_dir / "report.json", report)
    write_acceptance_png(report["strategies"], out_dir / "acceptance.png",
                         f"{report['drafter']} on {len(prompts)} prompts (batch {inf.batch_size})")
    print_report(report)
    if check and not all_ok:
        log.error("inference: LOSSLESS CHECK FAILED — speculative output differs from the base's greedy output where "
              "the base's choice is not a near-tie (see report.json: divergences)")
        raise SystemExit(1)
    return report


def print_report(report: dict) -> None:
    mode = "greedy" if not report["temperature"] else f"sampling T={report['temperature']} top-p={report['top_p']}"
    log.info(f"\nspeculative decoding ({mode}) on {report['prompts']} prompts, batch {report['batch_size']}, "
          f"{report['max_new_tokens']} new tokens max (base {report['base']}, drafter {report['drafter']})")
    log.info(format_table(report["strategies"]))
    if report["lossless"] is not None:
        base_check = report["base_loop_vs_generate"]
        log.info(f"base-only loop vs transformers greedy generate: {base_check['verdict']}")
        for r in report["strategies"]:
            log.info(f"lossless check, {r['strategy']}: {r['verdict']}")
        log.info(f"lossless check: {'PASS' if report['lossless'] else 'FAIL'} (a near-tie: the base's two best logits "
              f"within rounding of its dtype, {report['base_dtype']})")


if __name__ == "__main__":
    run_entry("inference", __doc__.strip().splitlines()[0], run)
