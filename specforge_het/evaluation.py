"""In-training evaluation of a drafter on held-out data, with no server: the algorithm's loss and accuracies, and
the *simulated τ* — the acceptance length chain drafting of depth k would get, from teacher-forced unrolled
drafting (algorithms/unroll.py). Written as JSON and as a PNG of acceptance per draft position.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from .algorithms.unroll import simulated_acceptance, simulated_tau
from .utils.io import atomic_write, atomic_write_text


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
