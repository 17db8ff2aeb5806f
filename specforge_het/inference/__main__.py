"""inference: speculative decoding with a trained drafter next to base-only decoding, with τ, tokens/s and
speedup measured side by side in one run; greedy outputs are checked token-for-token against transformers.

    python -m specforge_het.inference [--@preset ...] [--inference.drafter_path DIR] [--inference.strategy both]
    python -m specforge_het.inference ... --inference.temperature 0.8 --inference.top_p 0.95   # sampling

Sampling uses recursive rejection sampling, which keeps the output distribution exactly the base's; that is
proven statistically in tests/test_sampling.py, since sampled outputs cannot be compared token by token.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from ..algorithms.unroll import simulated_acceptance, simulated_tau
from ..config import RunConfig, run_entry, save_resolved_config
from ..config.schema import ConfigError
from ..data.conversations import prompt_ids, read_conversations
from ..modeling.base import load_base
from ..modeling.drafter_base import load_drafter
from ..utils.io import atomic_write_json
from .engine import Sampling, base_decode, hf_greedy, speculative_decode

STRATEGIES = ("chain", "tree", "budget")
GROUPS = {"both": ("chain", "tree"), "all": STRATEGIES}


def strategy_params(cfg: RunConfig, name: str) -> dict:
    inf = cfg.inference
    if name == "chain":
        return {"depth": inf.depth, "top_k": 1, "total_tokens": inf.depth}
    if name == "budget":  # SpecExec-style: best-first over the whole pool, `budget` nodes verified per step
        return {"depth": inf.budget_rounds, "top_k": inf.top_k, "total_tokens": inf.budget, "best_first": True}
    return {"depth": inf.depth, "top_k": inf.top_k, "total_tokens": inf.total_tokens}


def load_prompts(cfg: RunConfig, tokenizer) -> list[list[int]]:
    path = cfg.inference.prompts or cfg.data.conversations
    convs, _ = read_conversations(path)
    convs = convs[cfg.inference.prompt_offset: cfg.inference.prompt_offset + cfg.inference.num_prompts]
    if not convs:
        raise ConfigError(f"inference.prompts: no prompts in {path} after offset {cfg.inference.prompt_offset}")
    return [prompt_ids(tokenizer, c) for c in convs]


def eos_ids(base) -> set[int]:
    eos = base.model.generation_config.eos_token_id
    if eos is None:
        eos = base.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def summarise(name: str, params: dict, runs: list, base_runs: list, identical: int) -> dict:
    steps = sum(r.steps for r in runs)
    spec_secs, base_secs = sum(r.seconds for r in runs), sum(b.seconds for b in base_runs)
    base_steps = sum(b.steps for b in base_runs)
    base_step_s = sum(sum(b.iteration_seconds) for b in base_runs) / max(1, base_steps)
    iter_s = sum(sum(r.iteration_seconds) for r in runs) / max(1, steps)
    tok_s = sum(r.new_tokens for r in runs) / spec_secs if spec_secs else 0.0
    base_tok_s = sum(b.new_tokens for b in base_runs) / base_secs if base_secs else 0.0
    return {
        "strategy": name, **params,
        "tau": sum(r.emitted for r in runs) / max(1, steps),  # pooled over all verify steps
        "verify_steps": steps,
        "tokens_per_s": tok_s,
        "base_tokens_per_s": base_tok_s,
        "speedup": tok_s / base_tok_s if base_tok_s else 0.0,
        "iteration_over_base_step": iter_s / base_step_s if base_step_s else 0.0,
        "identical": identical, "prompts": len(runs),
        "accept_histogram": dict(sorted(Counter(a for r in runs for a in r.accepted).items())),
    }


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
    strategies = GROUPS.get(inf.strategy, (inf.strategy,))
    for s in strategies:
        if s not in STRATEGIES:
            raise ConfigError(f"inference.strategy: expected chain, tree, budget, both (chain + tree) or all, "
                              f"got {inf.strategy!r}")
    try:
        sampling = Sampling(inf.temperature, inf.top_p, inf.seed)
    except ValueError as e:
        raise ConfigError(f"inference: {e}") from None
    check = inf.check_lossless and sampling.greedy
    base = load_base(cfg.base)
    drafter = load_drafter(inf.drafter_path, device=base.device, dtype=base.dtype)
    drafter.attach_base(base.embed_tokens, base.lm_head).check_base(base).eval()
    prompts = load_prompts(cfg, base.tokenizer)
    eos = eos_ids(base)
    out_dir = Path(inf.output_dir)
    save_resolved_config(cfg, out_dir, "inference", presets)

    # Warm-up (first calls pay for allocation and kernel selection), then every decoder on every prompt.
    base_decode(base, prompts[0], 4, eos, sampling)
    speculative_decode(base, drafter, prompts[0], 4, eos, **strategy_params(cfg, strategies[0]), sampling=sampling)
    base_runs, references = [], []
    for p in tqdm(prompts, desc="base-only decoding"):
        base_runs.append(base_decode(base, p, inf.max_new_tokens, eos, sampling))
        references.append(hf_greedy(base, p, inf.max_new_tokens, eos) if check else None)
    report = {"base": cfg.base.model_name_or_path, "drafter": inf.drafter_path, "max_new_tokens": inf.max_new_tokens,
              "prompts": len(prompts), "temperature": inf.temperature, "top_p": inf.top_p, "strategies": []}
    all_ok = True
    for s in strategies:
        params = strategy_params(cfg, s)
        runs = [speculative_decode(base, drafter, p, inf.max_new_tokens, eos, **params, sampling=sampling)
                for p in tqdm(prompts, desc=f"speculative ({s})")]
        identical = sum(r.tokens == ref for r, ref in zip(runs, references)) if check else -1
        # The base-only loop must itself match transformers' generate, or the comparison means nothing.
        base_identical = sum(b.tokens == ref for b, ref in zip(base_runs, references)) if check else -1
        row = summarise(s, params, runs, base_runs, identical)
        row["base_loop_identical_to_generate"] = base_identical
        if s == "chain" and sampling.greedy:  # the in-training estimate, on the same prompts, for comparison
            row["tau_simulated"] = simulated_chain_tau(base, drafter, base_runs, prompts, params["depth"])
        report["strategies"].append(row)
        all_ok &= not check or (identical == len(prompts) == base_identical)
    report["lossless"] = all_ok if check else None
    atomic_write_json(out_dir / "report.json", report)
    print_report(report)
    if check and not all_ok:
        print("inference: LOSSLESS CHECK FAILED — speculative output differs from base greedy output", file=sys.stderr)
        raise SystemExit(1)
    return report


def print_report(report: dict) -> None:
    mode = "greedy" if not report["temperature"] else f"sampling T={report['temperature']} top-p={report['top_p']}"
    print(f"\nspeculative decoding ({mode}) on {report['prompts']} prompts, {report['max_new_tokens']} new tokens "
          f"max (base {report['base']}, drafter {report['drafter']})")
    print(f"{'strategy':<8} {'depth':>5} {'top_k':>5} {'nodes':>5} {'tau':>6} {'tok/s':>8} {'base tok/s':>10} "
          f"{'speedup':>7} {'iter/step':>9} {'identical':>9} {'sim tau':>7}")
    for r in report["strategies"]:
        ident = f"{r['identical']}/{r['prompts']}" if r["identical"] >= 0 else "skipped"
        print(f"{r['strategy']:<8} {r['depth']:>5} {r['top_k']:>5} {r['total_tokens']:>5} {r['tau']:>6.2f} "
              f"{r['tokens_per_s']:>8.1f} {r['base_tokens_per_s']:>10.1f} {r['speedup']:>6.2f}x "
              f"{r['iteration_over_base_step']:>9.2f} {ident:>9} "
              + (f"{r['tau_simulated']:>7.2f}" if "tau_simulated" in r else f"{'-':>7}"))
    if report["lossless"] is not None:
        print(f"lossless check (token-identical to transformers greedy generate): "
              f"{'PASS' if report['lossless'] else 'FAIL'}")


if __name__ == "__main__":
    run_entry("inference", __doc__.strip().splitlines()[0], run)
