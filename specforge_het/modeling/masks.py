"""Additive attention masks for the draft layers (0 = attend, finfo.min = blocked), built from boolean visibility."""
from __future__ import annotations

import torch


def causal_mask(q_len: int, dtype: torch.dtype, device, past_len: int = 0) -> torch.Tensor:
    """Additive [1, 1, q, past+q] causal mask (0 = attend, finfo.min = blocked)."""
    mask = torch.full((q_len, past_len + q_len), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask = torch.triu(mask, diagonal=past_len + 1)
    return mask[None, None]


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [B, q, k] (True = attend) → additive float [B, 1, q, k]."""
    out = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    out.masked_fill_(~visible, torch.finfo(dtype).min)
    return out[:, None]


def packed_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Causal attention inside each packed conversation: segment_ids [B, T] (1, 2, … per conversation, 0 =
    padding) → additive [B, 1, T, T]; query t sees keys ≤ t of its own conversation (a padding query itself)."""
    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] != 0)
    return additive_mask((causal[None] & same) | torch.eye(t, dtype=torch.bool, device=segment_ids.device)[None], dtype)


def padded_causal_mask(valid: torch.Tensor, prefix_valid: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Causal attention over left- or inner-padded rows: query i sees valid keys ≤ i (and always itself, so a
    padding query has a finite row). valid [B, T], prefix_valid [B, P] or None → additive [B, 1, T, P + T]."""
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    new = (causal[None] & valid[:, None, :]) | torch.eye(t, dtype=torch.bool, device=valid.device)[None]
    if prefix_valid is not None:
        new = torch.cat([prefix_valid[:, None, :].expand(-1, t, -1), new], dim=2)
    return additive_mask(new, dtype)
