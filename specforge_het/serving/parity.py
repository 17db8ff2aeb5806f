"""Acceptance parity between an engine and our reference decoder: the same drafter, prompts and chain depth decoded
by both, each step's draft positions counted the way vLLM counts them (`spec_decode_num_accepted_tokens_per_pos`:
position i counts a step when ≥ i+1 draft tokens were accepted, over `num_drafts` steps).

Tolerances (what a difference can come from, and no more):
- greedy (T = 0): both decoders compute the same fp32 drafter on the same base states, so a step accepts the same
  tokens in both unless a drafter argmax is a near-tie that the two kernels round differently, or the last step
  of a request drafts past max_tokens in one engine and not the other. Each position's rate may differ by
  2 steps (of all steps) plus 2 %, τ by the same.
- sampling (T > 0): the two runs draw different samples, so each rate is an estimate of the same acceptance
  probability, and they may differ by 4.5 standard errors of the difference. The steps of one request are not
  independent draws (a sampled text that falls into a repetitive stretch accepts draft after draft), so the standard
  error is the cluster-robust one of a ratio of sums over requests, m/(m−1) · Σ_j (a_j − r·n_j)² / (Σ_j n_j)²
  (a_j accepted at the position and n_j steps in request j), never less than the binomial one. Our requests are
  seeded apart (reference_chain): with one seed for all, every request replayed the same uniforms at the same steps
  and accepted at the same steps (on the serving test base: exactly 2 first drafts in each of 36 requests).
"""
from __future__ import annotations

import dataclasses
import math
import time

from ..inference.engine import Sampling, speculative_decode_batch


def reference_chain(base, drafter, prompts: list[list[int]], max_new_tokens: int, eos: set[int], depth: int,
                    sampling: Sampling) -> dict:
    """Our decoder, one request at a time, chain of `depth`: outputs and vLLM-style acceptance counters.
    Sampled requests draw from their own seeds (sampling.seed + request index), independent as the engine's are:
    one seed for all would replay one random stream in every request — the same uniforms at the same steps — and
    make the pooled rate as noisy as a single request's."""
    outputs, steps, accepted, per_pos, seconds, per_request = [], 0, 0, [0] * depth, 0.0, []
    for j, p in enumerate(prompts):
        t0 = time.perf_counter()
        own = dataclasses.replace(sampling, seed=sampling.seed + j)
        r = speculative_decode_batch(base, drafter, [p], max_new_tokens, eos, depth, 1, depth, own)[0]
        seconds += time.perf_counter() - t0
        outputs.append(r.tokens[len(p):])
        steps += r.steps
        accepted += sum(r.accepted)
        mine = [sum(a > i for a in r.accepted) for i in range(depth)]
        per_pos = [x + y for x, y in zip(per_pos, mine)]
        per_request.append({"num_drafts": r.steps, "accepted_per_pos": mine})
    return {"outputs": outputs, "metrics": {"num_drafts": steps, "num_draft_tokens": steps * depth,
                                            "num_accepted_tokens": accepted, "accepted_per_pos": per_pos,
                                            "per_request": per_request},
            "seconds": seconds, "new_tokens": sum(len(o) for o in outputs)}


def acceptance(metrics: dict) -> dict:
    """τ (emitted tokens per step, the bonus token included) and the per-position acceptance rates."""
    n = max(1, metrics["num_drafts"])
    return {"tau": 1 + metrics["num_accepted_tokens"] / n, "rates": [a / n for a in metrics["accepted_per_pos"]],
            "steps": metrics["num_drafts"]}


def rate_variance(metrics: dict, position: int) -> float:
    """The variance of one run's acceptance rate at `position`: cluster-robust over its requests when it has
    per-request counts (see the module docstring), never below the binomial variance of its pooled steps."""
    n = max(1, metrics["num_drafts"])
    rate = metrics["accepted_per_pos"][position] / n
    binomial = max(rate * (1 - rate), 1e-12) / n
    requests = [r for r in metrics.get("per_request", []) if r["num_drafts"]]
    if len(requests) < 2:
        return binomial
    spread = sum((r["accepted_per_pos"][position] - rate * r["num_drafts"]) ** 2 for r in requests)
    return max(binomial, len(requests) / (len(requests) - 1) * spread / n ** 2)


def compare(ours: dict, engine: dict, greedy: bool) -> dict:
    """→ {"passed", "tau_ours", "tau_engine", "worst": (position, difference, allowed)}."""
    a, b = acceptance(ours), acceptance(engine)
    checks = []
    for i, (x, y) in enumerate(zip(a["rates"], b["rates"])):
        if greedy:
            allowed = 2 / max(1, min(a["steps"], b["steps"])) + 0.02
        else:
            allowed = 4.5 * math.sqrt(rate_variance(ours, i) + rate_variance(engine, i))
        checks.append((i, abs(x - y), allowed))
    tau_ok = not greedy or abs(a["tau"] - b["tau"]) <= 0.02 * a["tau"] + 2 / max(1, a["steps"])
    worst = max(checks, key=lambda c: c[1] - c[2]) if checks else (None, 0.0, 0.0)
    return {"passed": tau_ok and all(d <= allowed for _, d, allowed in checks) and len(a["rates"]) == len(b["rates"]),
            "tau_ours": a["tau"], "tau_engine": b["tau"], "rates_ours": a["rates"], "rates_engine": b["rates"],
            "steps_ours": a["steps"], "steps_engine": b["steps"], "worst": worst}
