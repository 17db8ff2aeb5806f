"""P-EAGLE training: EAGLE-3's training-time-test layout with mask slots in place of the drafter's own outputs.

Over each sequence the drafter runs `parallel_depth` steps. Step 0 at row t is an ordinary EAGLE-3 step (the base's
fused features at t, token x_{t+1}, position t); step i ≥ 1 at row t is the i-th mask slot after it (mask_hidden,
the mask token, position t + i). Step i at row t attends to the step-0 keys of rows ≤ t and to steps 1..i of row t
(modeling/ttt_attention.py) — exactly the keys slot i + 1 of a P-EAGLE forward after position t sees at inference —
and predicts the base's distribution for x_{t+2+i} (softmax of the base's logits at row t+1+i, restricted to the
draft vocabulary). loss = Σ_i ttt_decay**i · D_i on assistant positions whose base top token is in the draft
vocabulary; D is `algorithm.loss` of the menu. The teacher is computed once per batch and the head's logits are
fused into the loss in row chunks (algorithms/head_loss.py). Simulated τ unrolls the same steps.
"""
from __future__ import annotations

import torch

from ...algorithms import Algorithm, register
from ...algorithms.head_loss import teacher_once, ttt_step_terms
from ...algorithms.losses import distribution_loss
from ...algorithms.unroll import drafter_features, packed, row_layout, target_mask
from ...evaluation import chain_acceptance
from ...modeling.feature_layers import default_feature_layers
from ..block_common.model import default_mask_token
from .model import build_peagle_drafter


def parallel_unroll(drafter, features: torch.Tensor, input_ids: torch.Tensor, steps: int,
                    packing: dict | None = None):
    """Yields (step i, outputs [B, L−1, H]) for i = 0..steps−1 (the module docstring's layout)."""
    rows = input_ids.shape[1] - 1
    bsz = input_ids.shape[0]
    positions, state = row_layout(packing, rows, bsz, input_ids.device)
    yield 0, drafter(features[:, :rows], input_ids[:, 1:], positions, ttt_state=state)
    mask_features = drafter.mask_features(bsz, rows)
    mask_ids = drafter.mask_ids(bsz, rows, input_ids.device)
    for i in range(1, steps):
        yield i, drafter(mask_features, mask_ids, positions + i, ttt_state=state)


def peagle_loss(drafter, batch: dict, alg, training: bool = True) -> tuple[torch.Tensor, dict]:
    ids, last = batch["input_ids"], batch["hidden"]
    rows = ids.shape[1] - 1
    teacher, in_vocab = teacher_once(drafter, last)
    total = torch.zeros((), device=ids.device)
    metrics, divergence = {}, distribution_loss(alg.loss)
    for i, out in parallel_unroll(drafter, drafter_features(drafter, batch), ids, alg.parallel_depth,
                                  packed(batch)):
        n = teacher.shape[1] - 1 - i  # rows whose step-i target (row t + 1 + i) exists
        if n <= 0:
            break
        loss_sum, weight_sum, hit_count, trained = ttt_step_terms(drafter, out, teacher, in_vocab,
                                                                  target_mask(batch, 1 + i, rows), i, n, divergence)
        total = total + alg.ttt_decay ** i * loss_sum / weight_sum.clamp_min(1.0)
        metrics[f"acc_{i}"] = hit_count / trained.clamp_min(1.0)
        metrics[f"ploss_{i}"] = loss_sum.detach() / weight_sum.clamp_min(1.0)
    metrics["acc"] = metrics["acc_0"]
    return total, metrics


@torch.no_grad()
def simulated_acceptance(drafter, batch: dict, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """evaluation's greedy-chain counting over P-EAGLE's own steps: the chain's drafts all come from one forward,
    none reads another."""
    steps = parallel_unroll(drafter, drafter_features(drafter, batch), batch["input_ids"], depth)
    return chain_acceptance(drafter, batch, depth, steps)


def feature_layers(num_layers: int, configured: list) -> list:
    return list(configured) if configured else default_feature_layers(num_layers)


def build(base, modeling, layers, meta, draft_vocab):
    mask = default_mask_token(base) if modeling.mask_token_id is None else modeling.mask_token_id
    return build_peagle_drafter(base, layers, mask, modeling.draft_config_overrides, meta=meta,
                                family=modeling.draft_family, hidden_size=modeling.draft_hidden_size,
                                own_embedding=modeling.embedding == "own",
                                own_lm_head=modeling.lm_head != "shared" or draft_vocab is not None,
                                draft_vocab=draft_vocab, draft_layers=modeling.draft_layers)


register(Algorithm("peagle", peagle_loss, build, feature_layers, modeling_keys=("mask_token_id",),
                   algorithm_keys=("parallel_depth",), packs=True, architecture="peagle_drafter",
                   simulate=simulated_acceptance))
