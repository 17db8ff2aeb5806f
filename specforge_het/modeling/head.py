"""A head (an lm_head, the base's or a drafter's own) applied to features of any leading shape at matrix speed."""
from __future__ import annotations

import torch
from torch import nn


def apply_head(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """head(features) over rows flattened to 2-D first. torch.matmul folds a 3-D input into one matrix only when its
    leading dimensions are contiguous or the weight requires grad; a slice of a longer sequence ([B, D, H] out of
    [B, L, H]) through a frozen head (the base's, shared) instead runs a batched matmul over the weight expanded and
    copied on every call: 28M elements for SmolLM2's 49k × 576 head, ~120 ms where a whole base step takes ~25 ms."""
    rows = features.to(head.weight.dtype).reshape(-1, features.shape[-1])
    return head(rows).view(*features.shape[:-1], -1)
