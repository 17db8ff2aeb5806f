"""EAGLE-3 training objective: the training-time test (TTT).

The drafter is unrolled `ttt_length` steps over each sequence (algorithms/unroll.py): step 0 reads the fused base
features, step i the drafter's own step-(i−1) outputs, so training sees what inference feeds it. Step i at row t
predicts the base's distribution for token x_{t+2+i} (softmax of the base's logits at row t+1+i, restricted to the
draft vocabulary); loss = Σ_i decay**i · D_i on assistant positions whose base top token is in the draft vocab. D is
`algorithm.loss` of the menu (algorithms/losses.py; soft cross-entropy by default). No feature regression. Attention
in the unroll is linear in sequence length (modeling/ttt_attention.py); the teacher is computed once per batch and the
head's logits are fused into the loss in row chunks (algorithms/head_loss.py), so the loss's memory does not grow
with the number of steps.
"""
from __future__ import annotations

import torch

from ...algorithms import Algorithm, register
from ...algorithms.head_loss import teacher_once, ttt_step_terms
from ...algorithms.losses import distribution_loss, masked_mean, top1_hits
from ...algorithms.unroll import drafter_features, packed, shifted, target_mask, unroll
from ...config.errors import ConfigError
from ...modeling.feature_layers import default_feature_layers
from .model import build_eagle3_drafter


def eagle3_loss(drafter, batch: dict, alg, training: bool = True, sp=None) -> tuple[torch.Tensor, dict]:
    """The TTT loss with the teacher computed once and the head's logits fused into the loss (head_loss.py): the
    same value and gradients as `eagle3_loss_per_step`, without k × rows × vocabulary activations.
    `sp` (sequence parallelism, modeling/sequence_parallel.py): this rank computes its rows' share of the batch's
    loss, scaled so that data parallel's gradient average is the whole batch's gradient; metrics are the group's."""
    if partitioned(drafter.head.weight):  # ZeRO-3 gathers the head's weight only inside its own forward
        if sp is not None:
            raise ConfigError("training.sequence_parallel does not combine with DeepSpeed ZeRO-3 (use FSDP2)")
        return eagle3_loss_per_step(drafter, batch, alg, training)
    ids, last = batch["input_ids"], batch["hidden"]
    rows = ids.shape[1] - 1
    if sp is None:
        start, count = 0, rows
    else:  # my rows' teacher: targets reach `ttt_length` rows past my last row
        start, count = sp.rows(rows)
        last = shifted(last, start, count + alg.ttt_length)
    teacher, in_vocab = teacher_once(drafter, last)
    total = torch.zeros((), device=ids.device)
    metrics, divergence = {}, distribution_loss(alg.loss)
    for i, out in unroll(drafter, drafter_features(drafter, batch), ids, alg.ttt_length, packed(batch), sp):
        n = min(count, teacher.shape[1] - 1 - i)  # rows whose step-i target (row t + 1 + i) exists
        step_mask = shifted(target_mask(batch, 1 + i, rows), start, count)
        loss_sum, *stats = ttt_step_terms(drafter, out, teacher, in_vocab, step_mask, i, n, divergence)
        stats.append(loss_sum.detach())
        weight_sum, hit_count, trained, group_loss = stats if sp is None else sp.sum(*stats)  # one all-reduce
        ploss = loss_sum / weight_sum.clamp_min(1.0)  # masked_mean over the full rows (the group's, under sp)
        total = total + alg.ttt_decay ** i * ploss
        metrics[f"acc_{i}"] = hit_count / trained.clamp_min(1.0)
        metrics[f"ploss_{i}"] = group_loss / weight_sum.clamp_min(1.0)
    metrics["acc"] = metrics["acc_0"]
    # Data parallel averages gradients over every process: × group size makes the group's average the sum of shares.
    return (total, metrics) if sp is None else (total * sp.size, metrics)


def eagle3_loss_per_step(drafter, batch: dict, alg, training: bool = True) -> tuple[torch.Tensor, dict]:
    """The plain TTT loss: each step's teacher and logits over every row, kept for backward (the reference the
    fused loss is tested against; used when the head is partitioned by ZeRO-3)."""
    ids, last = batch["input_ids"], batch["hidden"]
    rows = ids.shape[1] - 1
    dtype = drafter.fc.weight.dtype
    total = torch.zeros((), device=ids.device)
    metrics, divergence = {}, distribution_loss(alg.loss)
    for i, out in unroll(drafter, drafter_features(drafter, batch), ids, alg.ttt_length, packed(batch)):
        target_logits, in_vocab = drafter.target_logits(shifted(last, 1 + i, rows))
        logits = drafter.logits(out)
        m = target_mask(batch, 1 + i, rows).to(dtype)
        ploss = masked_mean(divergence(target_logits, logits), m * in_vocab.to(dtype))
        total = total + alg.ttt_decay ** i * ploss
        with torch.no_grad():
            metrics[f"acc_{i}"] = masked_mean(top1_hits(logits, target_logits, in_vocab).to(dtype), m)
            metrics[f"ploss_{i}"] = ploss.detach()
    metrics["acc"] = metrics["acc_0"]
    return total, metrics


def partitioned(weight: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 parameter (an empty placeholder outside its module's forward)."""
    return getattr(weight, "ds_id", None) is not None


def feature_layers(num_layers: int, configured: list) -> list:
    return list(configured) if configured else default_feature_layers(num_layers)


def build(base, modeling, layers, meta, draft_vocab):
    return build_eagle3_drafter(base, layers, modeling.draft_config_overrides, meta=meta, family=modeling.draft_family,
                                hidden_size=modeling.draft_hidden_size, own_embedding=modeling.embedding == "own",
                                own_lm_head=modeling.lm_head != "shared" or draft_vocab is not None,
                                draft_vocab=draft_vocab, draft_layers=modeling.draft_layers,
                                fc_norm=modeling.fc_norm, norm_output=modeling.norm_output)


register(Algorithm("eagle3", eagle3_loss, build, feature_layers, modeling_keys=("fc_norm", "norm_output"),
                   algorithm_keys=("ttt_length",), switch_preset="eagle3_1", packs=True, sequence_parallel=True,
                   architecture="eagle3_drafter"))
