"""Classic draft model: an independent small causal LM, fine-tuned on the data, optionally distilled from the base.

    loss = (1 − α) · CE(next data token) + α · D(softmax(base logits), softmax(draft logits))

on assistant positions, α = algorithm.distill_alpha (0 = plain fine-tuning, 1 = pure distillation), D =
`algorithm.loss` (soft CE by default; algorithms/losses.py). The base is only read through its last-layer features
(its logits = lm_head(features)), so offline datasets work unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...algorithms import Algorithm, register
from ...algorithms.losses import distribution_loss, masked_mean
from ...algorithms.unroll import packed, target_mask
from ...config.errors import ConfigError
from .cross_vocab import build_cross_vocab_drafter
from .model import build_classic_drafter, own_tokenizer


def classic_draft_loss(drafter, batch: dict, alg, training: bool = True) -> tuple[torch.Tensor, dict]:
    if not drafter.SAME_TOKENIZER:
        return cross_vocab_loss(drafter, batch, alg)
    ids, last = batch["input_ids"], batch["hidden"]
    logits = drafter.token_logits(ids[:, :-1], packed(batch)).float()
    m = target_mask(batch, 1, ids.shape[1] - 1).float()
    ce = masked_mean(F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none"), m)
    with torch.no_grad():
        base_logits = drafter.base_lm_head(last[:, :-1].to(drafter.base_lm_head.weight.dtype)).float()
    kd = masked_mean(distribution_loss(alg.loss)(base_logits, logits), m)
    a = alg.distill_alpha
    loss = (1 - a) * ce + a * kd
    with torch.no_grad():
        acc = masked_mean((logits.argmax(-1) == base_logits.argmax(-1)).float(), m)
    return loss, {"ce": ce.detach(), "kd": kd.detach(), "acc": acc}


def cross_vocab_loss(drafter, batch: dict, alg) -> tuple[torch.Tensor, dict]:
    """A draft LM with its own tokenizer (cross_vocab.py), trained on the vocabulary intersection: the base's and
    the draft's distributions both restricted to the shared tokens (renormalised there), D between them, and CE on
    the data's next token where it is a shared one. Positions whose next token the draft cannot name teach D only."""
    ids, last = batch["input_ids"], batch["hidden"]
    draft_ids, target_ids = drafter.intersection()
    logits = drafter.draft_logits(drafter.token_states(ids[:, :-1], packed(batch)))[..., draft_ids].float()
    with torch.no_grad():
        head = drafter.base_lm_head  # only its rows of the shared tokens: a fraction of a large vocabulary
        bias = head.bias[target_ids] if head.bias is not None else None
        base_logits = F.linear(last[:, :-1].to(head.weight.dtype), head.weight[target_ids], bias).float()
    slot = torch.full((drafter.base_vocab_size,), -1, dtype=torch.long, device=ids.device)
    slot[target_ids] = torch.arange(len(target_ids), device=ids.device)  # base id → its column here
    nxt = slot[ids[:, 1:]]
    m = target_mask(batch, 1, ids.shape[1] - 1).float()
    shared = m * (nxt >= 0).float()
    ce = masked_mean(F.cross_entropy(logits.transpose(1, 2), nxt.clamp_min(0), reduction="none"), shared)
    kd = masked_mean(distribution_loss(alg.loss)(base_logits, logits), m)
    a = alg.distill_alpha
    with torch.no_grad():
        acc = masked_mean((logits.argmax(-1) == base_logits.argmax(-1)).float(), m)
    return (1 - a) * ce + a * kd, {"ce": ce.detach(), "kd": kd.detach(), "acc": acc}


def build(base, modeling, feature_layers, meta, draft_vocab):
    if draft_vocab is not None:
        raise ConfigError("classic_draft: a draft LM keeps the full vocabulary; unset modeling.draft_vocab_size")
    if modeling.draft_model_path:
        tokenizer = own_tokenizer(modeling.draft_model_path, base)
        if tokenizer is not None:  # another tokenizer than the base's: the token-level intersection
            return build_cross_vocab_drafter(base, modeling, tokenizer, meta)
    return build_classic_drafter(base, modeling, meta)


register(Algorithm("classic_draft", classic_draft_loss, build, packs=True, architecture="classic_drafter"))
