"""Acceptance parity between an engine and our reference decoder: the same drafter, prompts and chain depth decoded
by both, each step's draft positions counted the way vLLM counts them (`spec_decode_num_accepted_tokens_per_pos`:
position i counts a step when ≥ i+1 draft tokens were accepted, over `num_drafts` steps).

Tolerances (what a difference can come from, and no more):
- greedy (T = 0): both decoders compute the same fp32 drafter on the same base states, so a step accepts the same
  tokens in both unless a drafter argmax is a near-tie that the two kernels round differently, or the last step
  of a request drafts past max_tokens in one engine and not the other. Each position's rate may differ by
  2 steps (of all steps) plus 2 %, τ by the same.
- sampling (T > 0): the two runs draw different samples, so each rate is a binomial estimate of the same
  acceptance probability: they may differ by 4.5 standard deviations of the difference (a false alarm about
  once in 150,000 per position).
"""
from __future__ import annotations

import math
import time

from ..inference.engine import Sampling, speculative_decode_batch


def reference_chain(base, drafter, prompts: list[list[int]], max_new_tokens: int, eos: set[int], depth: int,
                    sampling: Sampling) -> dict:
    """Our decoder, one request at a time, chain of `depth`: outputs and vLLM-style acceptance counters."""
    outputs, steps, accepted, per_pos, seconds = [], 0, 0, [0] * depth, 0.0
    for p in prompts:
        t0 = time.perf_counter()
        r = speculative_decode_batch(base, drafter, [p], max_new_tokens, eos, depth, 1, depth, sampling)[0]
        seconds += time.perf_counter() - t0
        outputs.append(r.tokens[len(p):])
        steps += r.steps
        accepted += sum(r.accepted)
        for a in r.accepted:
            for i in range(min(a, depth)):
                per_pos[i] += 1
    return {"outputs": outputs, "metrics": {"num_drafts": steps, "num_draft_tokens": steps * depth,
                                            "num_accepted_tokens": accepted, "accepted_per_pos": per_pos},
            "seconds": seconds, "new_tokens": sum(len(o) for o in outputs)}


def acceptance(metrics: dict) -> dict:
    """τ (emitted tokens per step, the bonus token included) and the per-position acceptance rates."""
    n = max(1, metrics["num_drafts"])
    return {"tau": 1 + metrics["num_accepted_tokens"] / n, "rates": [a / n for a in metrics["accepted_per_pos"]],
            "steps": metrics["num_drafts"]}


def compare(ours: dict, engine: dict, greedy: bool) -> dict:
    """→ {"passed", "tau_ours", "tau_engine", "worst": (position, difference, allowed)}."""
    a, b = acceptance(ours), acceptance(engine)
    checks = []
    for i, (x, y) in enumerate(zip(a["rates"], b["rates"])):
        if greedy:
            allowed = 2 / max(1, min(a["steps"], b["steps"])) + 0.02
        else:
            p = (x * a["steps"] + y * b["steps"]) / max(1, a["steps"] + b["steps"])
            allowed = 4.5 * math.sqrt(max(p * (1 - p), 1e-12) * (1 / max(1, a["steps"]) + 1 / max(1, b["steps"])))
        checks.append((i, abs(x - y), allowed))
    tau_ok = not greedy or abs(a["tau"] - b["tau"]) <= 0.02 * a["tau"] + 2 / max(1, a["steps"])
    worst = max(checks, key=lambda c: c[1] - c[2]) if checks else (None, 0.0, 0.0)
    return {"passed": tau_ok and all(d <= allowed for _, d, allowed in checks) and len(a["rates"]) == len(b["rates"]),
            "tau_ours": a["tau"], "tau_engine": b["tau"], "rates_ours": a["rates"], "rates_engine": b["rates"],
            "steps_ours": a["steps"], "steps_engine": b["steps"], "worst": worst}
