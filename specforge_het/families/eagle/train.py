"""EAGLE-1/2 training objective: feature regression + soft cross-entropy through the frozen lm_head.

For a sequence of tokens t_0..t_{T-1} with base features h_0..h_{T-1} (final-norm outputs), the drafter
sees pairs (h_i, t_{i+1}) at position i and predicts h_{i+1}. Loss, on assistant positions only:
    v_w * SmoothL1(pred, h_{i+1}) + p_w * D(softmax(lm_head(h_{i+1})), softmax(head(pred)))
where lm_head is the base's and head the drafter's (the base's, or its own over a possibly reduced vocabulary), and
D the `algorithm.loss` of the menu (algorithms/losses.py; EAGLE's soft cross-entropy by default).
Uniform feature noise (width noise_std) is added to the input features while training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...algorithms import Algorithm, register
from ...algorithms.losses import distribution_loss, masked_mean, top1_hits
from ...algorithms.unroll import packed, row_layout, target_mask
from .model import build_drafter


def eagle2_loss(drafter, batch: dict, alg, training: bool = True) -> tuple[torch.Tensor, dict]:
    ids, hidden = batch["input_ids"], batch["hidden"]
    dtype = drafter.fc.weight.dtype
    hidden = hidden.to(dtype)
    inp_h, inp_ids, target_h = hidden[:, :-1], ids[:, 1:], hidden[:, 1:]
    rows = inp_h.shape[1]
    m = target_mask(batch, 1, rows).to(dtype)
    if training and alg.noise_std > 0:
        inp_h = inp_h + (torch.rand_like(inp_h) - 0.5) * alg.noise_std
    # Packed rows: positions restart and attention stays inside each conversation (through the ttt_state).
    positions, state = row_layout(packed(batch), rows, ids.shape[0], ids.device)
    pred = drafter(inp_h, inp_ids, positions, ttt_state=state or None)
    with torch.no_grad():
        # Over the draft vocabulary; positions whose base top token lies outside it teach the head nothing.
        target_logits, in_vocab = drafter.target_logits(target_h)
    pred_logits = drafter.logits(pred)
    ploss = masked_mean(distribution_loss(alg.loss)(target_logits, pred_logits), m * in_vocab.to(dtype))
    vloss = masked_mean(F.smooth_l1_loss(pred.float(), target_h.float(), reduction="none").mean(-1), m)
    loss = alg.v_w * vloss + alg.p_w * ploss
    with torch.no_grad():
        acc = masked_mean(top1_hits(pred_logits, target_logits, in_vocab).to(dtype), m)
    return loss, {"vloss": vloss.detach(), "ploss": ploss.detach(), "acc": acc}


def build(base, modeling, feature_layers, meta, draft_vocab):
    return build_drafter(base, modeling.draft_layers, modeling.draft_config_overrides, meta=meta,
                         family=modeling.draft_family, hidden_size=modeling.draft_hidden_size,
                         own_embedding=modeling.embedding == "own", own_lm_head=modeling.lm_head == "own",
                         draft_vocab=draft_vocab, fc_bias=modeling.fc_bias)


register(Algorithm("eagle2", eagle2_loss, build, modeling_keys=("fc_bias",), algorithm_keys=("v_w", "p_w", "noise_std"),
                   packs=True, architecture="eagle_drafter"))
