"""Evaluation of a drafter on held-out data, with no server: the algorithm's loss and accuracies, and the
*simulated τ* — the acceptance length chain drafting of depth k would get, from teacher-forced unrolled drafting
(algorithms/unroll.py) or the family's own rule. Training reports it (JSON + a PNG of acceptance per draft position)
and inference compares it with the decoder's τ: the one place simulated acceptance is computed.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from .algorithms import ALGORITHMS
from .algorithms.unroll import drafter_features, shifted, unroll
from .modeling.head import apply_head
from .utils.io import atomic_write, atomic_write_text


def simulation_rule(drafter):
    """The simulated-acceptance rule of the family that trains this drafter's architecture, or None (unrolled)."""
    arch = getattr(drafter, "ARCHITECTURE", None)
    return next((a.simulate for _, a in ALGORITHMS.items() if a.simulate is not None and a.architecture == arch), None)


@torch.no_grad()
def simulated_acceptance(drafter, batch: dict, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain drafting of `depth` simulated over the batch, as counts per draft position i < depth: (accepted,
    eligible). A draft token is accepted when it is the base's greedy choice. Position i is *eligible* at a row when
    the chain got there (positions < i accepted) and the teacher-forced input tokens equal what inference would have
    fed (the data followed the base's greedy choice so far). accepted/eligible estimates P(accept i | reached i);
    on the base's own greedy outputs every reached position is eligible and the estimate is exact.
    Rows: loss-masked, with the whole chain inside the sequence. A family with its own rule (`Algorithm.simulate`:
    block drafters draft from anchors) is measured by that rule instead.
    """
    rule = simulation_rule(drafter)
    if rule is not None:
        return rule(drafter, batch, depth)
    return chain_acceptance(drafter, batch, depth, unroll(drafter, drafter_features(drafter, batch),
                                                          batch["input_ids"], depth))


def chain_acceptance(drafter, batch: dict, depth: int, steps) -> tuple[torch.Tensor, torch.Tensor]:
    """simulated_acceptance's counting over unrolled draft steps: `steps` yields (i, outputs [B, L−1, ·]) for
    i = 0..depth−1, row t of step i standing for the draft at depth i+1 after position t+1 (algorithms/unroll.py's
    `unroll`, or a family's own unroll of the same layout)."""
    ids, last, mask = batch["input_ids"], batch["hidden"], batch["loss_mask"]
    rows = ids.shape[1] - 1
    t = torch.arange(rows, device=ids.device)
    eligible_now = shifted(mask, 1, rows).bool() & (t + 1 + depth < ids.shape[1])[None]
    accepted, eligible = torch.zeros(depth, dtype=torch.long), torch.zeros(depth, dtype=torch.long)
    for i, out in steps:
        greedy = apply_head(drafter.base_lm_head, shifted(last, 1 + i, rows)).argmax(-1)
        drafted = drafter.draft_to_target(drafter.logits(out).argmax(-1))
        hit = eligible_now & (drafted == greedy)
        eligible[i], accepted[i] = int(eligible_now.sum()), int(hit.sum())
        eligible_now = hit & (shifted(ids, 2 + i, rows) == greedy)
    return accepted, eligible


def simulated_tau(accepted: torch.Tensor, eligible: torch.Tensor) -> tuple[float, list[float]]:
    """τ = 1 + Σ_i P(≥ i+1 accepted), with P(≥ i+1) = Π_{j ≤ i} accepted_j / eligible_j (pooled counts)."""
    rates = accepted.double() / eligible.clamp_min(1).double()
    reach = torch.cumprod(rates, 0)
    return 1.0 + float(reach.sum()), reach.tolist()


@torch.no_grad()
def evaluate_drafter(drafter, batches, loss_fn, algorithm_cfg, depth: int, base=None, aux_layer_ids=()) -> dict:
    """Mean loss metrics over `batches`, per-depth acceptance rates and the simulated τ (pooled over positions)."""
    was_training = drafter.training
    drafter.eval()
    sums, n_batches = defaultdict(float), 0
    accepted, eligible = torch.zeros(depth, dtype=torch.long), torch.zeros(depth, dtype=torch.long)
    for batch in batches:
        if "hidden" not in batch:  # online: the base's features on the fly
            base.add_features(batch, aux_layer_ids)
        batch = {k: v.to(next(drafter.parameters()).device) for k, v in batch.items()}
        loss, metrics = loss_fn(drafter, batch, algorithm_cfg, training=False)
        sums["loss"] += float(loss)
        for k, v in metrics.items():
            sums[k] += float(v)
        n_batches += 1
        a, e = simulated_acceptance(drafter, batch, depth)
        accepted += a
        eligible += e
    drafter.train(was_training)
    sums, n_batches, accepted, eligible = _summed_over_processes(sums, n_batches, accepted, eligible,
                                                                 next(drafter.parameters()).device)
    out = {f"eval_{k}": v / max(n_batches, 1) for k, v in sums.items()}
    tau, reach = simulated_tau(accepted, eligible)
    out.update({f"eval_accept_d{i + 1}": r for i, r in enumerate(reach)})  # P(≥ i+1 draft tokens accepted)
    out["eval_tau_sim"] = tau
    out["eval_positions"] = int(eligible[0])
    return out


def _summed_over_processes(sums: dict, n_batches: int, accepted, eligible, device):
    """Under multi-process training each rank evaluates its own shard of the held-out split: the metrics are the
    sums over every rank (all-reduce), not rank 0's shard alone."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return sums, n_batches, accepted, eligible
    keys = sorted(sums)
    vec = torch.tensor([sums[k] for k in keys] + [float(n_batches)], dtype=torch.float64, device=device)
    counts = torch.stack([accepted, eligible]).to(device)
    dist.all_reduce(vec)
    dist.all_reduce(counts)
    return dict(zip(keys, vec[:-1].tolist())), int(vec[-1]), counts[0].cpu(), counts[1].cpu()


def write_eval_report(history: list[dict], out_dir: Path, depth: int) -> None:
    """eval.json (every evaluation) + eval.png (acceptance per draft position of the last one, τ over steps)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "eval.json", json.dumps(history, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the JSON is the record; the plot is a convenience
        return
    last = history[-1]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.bar(range(1, depth + 1), [last[f"eval_accept_d{i}"] for i in range(1, depth + 1)])
    a.set(xlabel="draft position", ylabel="P(accepted)", title=f"simulated τ = {last['eval_tau_sim']:.2f}",
          ylim=(0, 1))
    b.plot([h["step"] for h in history], [h["eval_tau_sim"] for h in history], marker="o")
    b.set(xlabel="training step", ylabel="simulated τ", title=f"chain depth {depth}")
    fig.tight_layout()
    atomic_write(out_dir / "eval.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
