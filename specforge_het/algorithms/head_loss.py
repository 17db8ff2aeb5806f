"""The vocabulary end of a drafter's loss, at bounded memory: the teacher computed once per batch, the drafter's
logits and the distribution loss fused and chunked over rows.

A TTT unroll of k steps over L rows and a V-token vocabulary used to hold, per step, the teacher's logits, the
drafter's logits and the loss's softmax/log-softmax for backward: ~3·k·L·V floats. Here:
- `teacher_once`: the base's target logits over the draft vocabulary for every row, computed once per batch (step i's
  target at row t is the row t+1+i of the same tensor), in row chunks so the full-vocabulary logits of a reduced
  vocabulary exist one chunk at a time. Memory L·V_draft (the base's dtype), once instead of once per step.
- `fused_head_loss`: Σ weight · D(teacher, head(features)) over rows, where the head's logits exist one chunk of rows
  at a time: each chunk's gradient with respect to the features (and a trainable head) is computed in the forward
  pass and only scaled in backward, so nothing of size rows × V is kept for backward (the idea of Liger's fused
  linear cross-entropy, here for every loss of the menu). Rows with no weight and no metric are skipped.
Peak for the loss: L·V_draft (teacher) + a few chunk·V buffers, whatever k is.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

# Rows per chunk: ~16 M logits (64 MiB in float32) per buffer at most, and at least 16 rows.
CHUNK_LOGITS = 1 << 24


def chunk_rows(vocab: int) -> int:
    return max(16, CHUNK_LOGITS // max(vocab, 1))


@torch.no_grad()
def teacher_once(drafter, last: torch.Tensor, rows_per_chunk: Optional[int] = None) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """drafter.target_logits over every row of `last` [B, L, H], one chunk of rows at a time →
    (teacher logits [B, L, V_draft] in the base head's dtype, base top token in the draft vocabulary [B, L])."""
    flat = last.reshape(-1, last.shape[-1])  # every row of the batch, `step` at a time
    step = rows_per_chunk or chunk_rows(drafter.base_lm_head.weight.shape[0])
    teacher = in_vocab = None
    for s in range(0, flat.shape[0], step):
        logits, inside = drafter.target_logits(flat[s:s + step])
        if teacher is None:  # written in place: the teacher is held once, never concatenated
            teacher = logits.new_empty(flat.shape[0], logits.shape[-1])
            in_vocab = inside.new_empty(flat.shape[0])
        teacher[s:s + step], in_vocab[s:s + step] = logits, inside
    return teacher.view(*last.shape[:2], -1), in_vocab.view(last.shape[:2])


class _FusedHeadLoss(torch.autograd.Function):
    """(features [B, N, H], weight [V, H], bias [V] or None, teacher [B, N, V], loss_weight [B, N],
    metric_mask [B, N]) → (Σ loss_weight · D, top-1 hits [B, N] bool; rows outside both masks report False)."""

    @staticmethod
    def forward(ctx, features, weight, bias, teacher, loss_weight, metric_mask, divergence, step):
        grad_features = torch.zeros_like(features) if features.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        grad_bias = (torch.zeros_like(bias, dtype=torch.float32)
                     if bias is not None and bias.requires_grad else None)
        total = torch.zeros((), dtype=torch.float32, device=features.device)
        hits = torch.zeros(features.shape[:2], dtype=torch.bool, device=features.device)
        w = weight.detach().requires_grad_(grad_weight is not None)
        b_ = None if bias is None else bias.detach().requires_grad_(grad_bias is not None)
        # The rows that matter, over the whole batch, `step` at a time (only these rows' teacher is copied).
        rows, cols = ((loss_weight != 0) | metric_mask.bool()).nonzero(as_tuple=True)
        for s in range(0, rows.numel(), step):
            r, c = rows[s:s + step], cols[s:s + step]
            f = features[r, c].detach().requires_grad_(grad_features is not None)
            with torch.enable_grad():
                logits = F.linear(f.to(w.dtype), w, b_)
                target = teacher[r, c]
                loss = (divergence(target, logits) * loss_weight[r, c]).sum()
            hits[r, c] = logits.detach().argmax(-1) == target.argmax(-1)
            wants = [t for t in (f, w, b_) if t is not None and t.requires_grad]
            if wants:
                grads = iter(torch.autograd.grad(loss, wants))
                if f.requires_grad:
                    grad_features[r, c] = next(grads).to(grad_features.dtype)
                if w.requires_grad:
                    grad_weight += next(grads).float()
                if b_ is not None and b_.requires_grad:
                    grad_bias += next(grads).float()
            total += loss.detach().float()
        ctx.save_for_backward(*(g for g in (grad_features, grad_weight, grad_bias) if g is not None))
        ctx.has = (grad_features is not None, grad_weight is not None, grad_bias is not None)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(hits)
        return total, hits

    @staticmethod
    def backward(ctx, grad_total, _grad_hits):
        saved = iter(ctx.saved_tensors)
        grad_f, grad_w, grad_b = (next(saved) if has else None for has in ctx.has)
        return (None if grad_f is None else grad_f * grad_total.to(grad_f.dtype),
                None if grad_w is None else (grad_w * grad_total).to(ctx.dtypes[0]),
                None if grad_b is None else (grad_b * grad_total).to(ctx.dtypes[1]),
                None, None, None, None, None)


def fused_head_loss(features: torch.Tensor, head: torch.nn.Module, teacher: torch.Tensor, loss_weight: torch.Tensor,
                    metric_mask: torch.Tensor, divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    rows_per_chunk: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_rows loss_weight · divergence(teacher, head(features)) and where head's top token is the teacher's, with the
    logits never held for more than one chunk of rows. features [B, N, H], teacher [B, N, V] (no gradient),
    loss_weight [B, N] float, metric_mask [B, N] (rows whose hits are wanted) → (loss sum, hits [B, N] bool)."""
    step = rows_per_chunk or chunk_rows(head.weight.shape[0])
    return _FusedHeadLoss.apply(features, head.weight, head.bias, teacher.detach(), loss_weight.detach(),
                                metric_mask, divergence, step)


def ttt_step_terms(drafter, out: torch.Tensor, teacher: torch.Tensor, in_vocab: torch.Tensor,
                   step_mask: torch.Tensor, i: int, n: int, divergence) -> tuple[torch.Tensor, ...]:
    """One step of a training-time-test unroll (EAGLE-3, P-EAGLE) over its first `n` rows: step i at row t is
    scored against the teacher's row t + 1 + i. step_mask [B, ≥n]: the rows trained at this step. Returns the sums a
    step's loss and metrics are made of — (loss sum, weight sum, top-1 hits, rows trained) — the weight being the
    mask where the base's top token is in the draft vocabulary; summed as they are so sequence parallelism can
    all-reduce them before dividing."""
    m = step_mask[:, :n].to(drafter.fc.weight.dtype)
    inside = in_vocab[:, 1 + i:1 + i + n]
    weight = m * inside.to(m.dtype)
    loss_sum, hits = fused_head_loss(drafter.head_input(out[:, :n]), drafter.head, teacher[:, 1 + i:1 + i + n],
                                     weight, m, divergence)
    return loss_sum, weight.sum(), (hits & inside).to(m.dtype).sum(), m.sum()
