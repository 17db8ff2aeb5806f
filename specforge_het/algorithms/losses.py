"""Loss pieces the algorithms share: masked means, the distribution-matching menu, top-1 agreement.

The menu (`algorithm.loss`), each per position between the base's distribution p (the target, no gradient) and the
drafter's q, both over the same (possibly reduced) vocabulary, computed in float32:
    forward_kl  CE(p, q) = KL(p‖q) + H(p)   — the soft cross-entropy EAGLE trains with (same gradient as KL(p‖q))
    reverse_kl  KL(q‖p)                      — mode-seeking: q concentrates on p's likely tokens
    jsd         ½ KL(p‖m) + ½ KL(q‖m), m = ½(p + q)
    tv          ½ Σ |p − q| = 1 − Σ min(p, q) — one minus the acceptance rate of a draft sampled from q
    lk          −log Σ min(p, q)              — the negative log of that acceptance rate (an LK-style loss: it
                                               weights positions by 1 / acceptance, so hard positions count more)
Every one is 0 exactly when q = p; tv and lk target the quantity speculative sampling accepts.
"""
from __future__ import annotations

from typing import Callable

import torch

# Σ min(p, q) is floored here before the log: a drafter that puts (numerically) no mass where the base does would
# otherwise give an infinite loss; 1e-6 keeps its gradient finite (at most 1e6 × that of tv).
LK_FLOOR = 1e-6


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def soft_ce(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-position CE(softmax(target), log_softmax(logits)) in float32; no gradient flows into the target."""
    return -(target_logits.detach().float().softmax(-1) * logits.float().log_softmax(-1)).sum(-1)


def reverse_kl(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    log_p, log_q = target_logits.detach().float().log_softmax(-1), logits.float().log_softmax(-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def jsd(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    log_p, log_q = target_logits.detach().float().log_softmax(-1), logits.float().log_softmax(-1)
    log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0))
    return 0.5 * ((log_p.exp() * (log_p - log_m)).sum(-1) + (log_q.exp() * (log_q - log_m)).sum(-1))


def acceptance_mass(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Σ_x min(p(x), q(x)) per position: the probability a draft sampled from q is accepted against p."""
    p, q = target_logits.detach().float().softmax(-1), logits.float().softmax(-1)
    return torch.minimum(p, q).sum(-1)


def total_variation(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return 1.0 - acceptance_mass(target_logits, logits)


def lk(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return -acceptance_mass(target_logits, logits).clamp_min(LK_FLOOR).log()


DISTRIBUTION_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "forward_kl": soft_ce, "reverse_kl": reverse_kl, "jsd": jsd, "tv": total_variation, "lk": lk}


def distribution_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(target_logits, logits) → per-position loss [..., ] for `algorithm.loss` (validated by the config schema)."""
    return DISTRIBUTION_LOSSES[name]


def top1_hits(logits: torch.Tensor, target_logits: torch.Tensor, in_vocab: torch.Tensor) -> torch.Tensor:
    """Where the drafter's top token is the base's (a base token outside the draft vocabulary is a miss)."""
    return (logits.argmax(-1) == target_logits.argmax(-1)) & in_vocab
