"""Loss pieces the algorithms share: masked means, soft cross-entropy to the base, top-1 agreement."""
from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def soft_ce(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-position CE(softmax(target), log_softmax(logits)) in float32; no gradient flows into the target."""
    return -(target_logits.detach().float().softmax(-1) * logits.float().log_softmax(-1)).sum(-1)


def top1_hits(logits: torch.Tensor, target_logits: torch.Tensor, in_vocab: torch.Tensor) -> torch.Tensor:
    """Where the drafter's top token is the base's (a base token outside the draft vocabulary is a miss)."""
    return (logits.argmax(-1) == target_logits.argmax(-1)) & in_vocab
