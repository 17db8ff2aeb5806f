"""Unrolled drafting over whole sequences (teacher-forced tokens, the drafter's own features), shared by
EAGLE-3's training-time test and by the simulated-τ evaluation of every feature-based drafter (evaluation.py).

Row t of unroll step i stands for the draft token at depth i+1 after position t+1: its input token is x_{t+1+i},
its input feature is the base's at row t (step 0) or the drafter's own step-(i−1) output, its position is t+i,
and it attends like that draft token would at inference (see modeling/ttt_attention.py).
"""
from __future__ import annotations

import torch

from ..config.errors import ConfigError
from ..data.packing import segments_of
from ..modeling.sequence_parallel import NAME as SEQUENCE_PARALLEL
from ..modeling.ttt_attention import SEGMENTS


def shifted(x: torch.Tensor, k: int, rows: int) -> torch.Tensor:
    """Rows t = 0..rows−1 of x[:, t+k] (zero past the end)."""
    out = x[:, k:k + rows]
    if out.shape[1] < rows:
        pad = torch.zeros((x.shape[0], rows - out.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device)
        out = torch.cat([out, pad], dim=1)
    return out


def packed(batch: dict) -> dict | None:
    """The packing fields of a batch (data.packing: several conversations per row), or None."""
    return {k: batch[k] for k in ("segment_ids", "position_ids")} if "segment_ids" in batch else None


def same_segment(segment_ids: torch.Tensor, shift: int, rows: int) -> torch.Tensor:
    """[B, rows] bool: position t + shift lies in t's conversation (a target that does not cross a boundary)."""
    here = segment_ids[:, :rows]
    return (here == shifted(segment_ids, shift, rows)) & (here != 0)


def row_layout(packing: dict | None, rows: int, batch_size: int, device) -> tuple[torch.Tensor, dict]:
    """Positions of rows 0..rows−1 and the ttt_state entries that keep packed conversations apart (none unpacked)."""
    if packing:
        return packing["position_ids"][:, :rows], {SEGMENTS: segments_of(packing["segment_ids"][:, :rows])}
    return torch.arange(rows, device=device).unsqueeze(0).expand(batch_size, -1), {}


def target_mask(batch: dict, shift: int, rows: int) -> torch.Tensor:
    """Rows t whose target at t + shift is trained: loss-masked there and, in packed rows, in t's conversation."""
    mask = shifted(batch["loss_mask"], shift, rows)
    if "segment_ids" in batch:
        mask = mask * same_segment(batch["segment_ids"], shift, rows).to(mask.dtype)
    return mask


def on_tokens(drafter) -> bool:
    """Whether teacher-forced unrolling is one plain forward of the drafter's LM: token-only drafters, and
    drafters that read base features only as a shortcut for what their own shared blocks would compute."""
    return drafter.token_only or getattr(drafter, "unrolls_on_tokens", False)


def unroll(drafter, features: torch.Tensor, input_ids: torch.Tensor, steps: int, packing: dict | None = None,
           sp=None):
    """Yields (step i, outputs [B, L−1, ·]) for i = 0..steps−1, each step fed the previous step's outputs.
    `packing` (from `packed(batch)`): rows holding several conversations — positions restart and attention stays
    inside each one. `sp` (a modeling.sequence_parallel.SequenceParallel): this rank's rows `sp.rows(L−1)` only,
    attending over the whole sequence through the group."""
    rows = input_ids.shape[1] - 1
    if on_tokens(drafter):  # no features: teacher-forced step i at row t is the plain forward at token t+1+i
        if sp is not None:
            raise ConfigError("training.sequence_parallel: drafters unrolled on tokens alone (no base features) "
                              "run their plain forward; use 1")
        full = drafter.token_states(input_ids, packing)
        for i in range(steps):
            yield i, shifted(full, 1 + i, rows)
        return
    start, count = sp.rows(rows) if sp is not None else (0, rows)
    base_pos, state = row_layout(packing, rows, input_ids.shape[0], input_ids.device)
    if sp is not None:  # my rows (zero past the end: the last rank's padding, after every real row)
        base_pos, state = shifted(base_pos, start, count), {**state, SEQUENCE_PARALLEL: sp}
    hidden = shifted(features, start, count)
    for i in range(steps):
        out = drafter(hidden, shifted(input_ids, start + 1 + i, count), base_pos + i, from_base=i == 0,
                      ttt_state=state)
        yield i, out
        hidden = out


def drafter_features(drafter, batch: dict) -> torch.Tensor:
    """The base features a drafter reads: the fused aux layers (EAGLE-3) or the last hidden state."""
    if drafter.feature_layers and not on_tokens(drafter):
        if "aux_hidden" not in batch:
            raise ConfigError("this drafter reads base layers "
                              f"{drafter.feature_layers} but the batch has no aux features: make the dataset with "
                              "data.aux_layer_ids set to them (the eagle3 preset does), or train online")
        return batch["aux_hidden"]
    return batch["hidden"]
