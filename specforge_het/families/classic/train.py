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
from ...modeling.head import apply_head
from .cross_vocab import build_cross_vocab_drafter
from .model import build_classic_drafter, own_tokenizer


def classic_draft_loss(drafter, batch: dict, alg, training: bool = True) -> tuple[torch.Tensor, dict]:
    if not drafter.SAME_TOKENIZER:
        return cross_vocab_loss(drafter, batch, alg)
    ids, last = batch["input_ids"], batch["hidden"]
    logits = drafter.token_logits(ids[:, :-1], packed(batch)).float()
    m = target_mask(batch, 1, ids.shape[1] - 1).float()
    with torch.no_grad():
        base_logits = apply_head(drafter.base_lm_head, last[:, :-1]).float()
    return distil(logits, base_logits, ids[:, 1:], m, m, alg)


def distil(logits, base_logits, targets, ce_mask, kd_mask, alg) -> tuple[torch.Tensor, dict]:
    """(1 − α) · CE(targets) + α · D(base ‖ draft), α = algorithm.distill_alpha, and the top-1 agreement with the
    base, over the masked positions."""
    ce = masked_mean(F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"), ce_mask)
    kd = masked_mean(distribution_loss(alg.loss)(base_logits, logits), kd_mask)
    with torch.no_grad():
        acc = masked_mean((logits.argmax(-1) == base_logits.argmax(-1)).float(), kd_mask)
    a = alg.distill_alpha
    return (1 - a) * ce + a * kd, {"ce": ce.detach(), "kd": kd.detach(), "acc": acc}


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
    loss, stats = distil(logits, base_logits, nxt.clamp_min(0), shared, m, alg)
    if alg.sequence_weight > 0:
        seq = sequence_level_ce(drafter, batch)
        loss, stats["seq_ce"] = loss + alg.sequence_weight * seq, seq.detach()
    return loss, stats


def sequence_level_ce(drafter, batch: dict) -> torch.Tensor:
    """Sequence-level distillation: CE of the draft LM on the batch's (base-written) text in the draft's own
    tokenization, on the trained (assistant) spans — what the draft reads when it drafts text (string_proposer.py)."""
    if packed(batch) is not None:
        raise ConfigError("algorithm.sequence_weight: sequence-level distillation re-encodes whole rows; set "
                          "data.packing false")
    ids, mask = retokenized(batch, *drafter.string_tokenizers)
    ids, mask = ids.to(batch["input_ids"].device), mask.to(batch["input_ids"].device)
    states = drafter.lm.model(input_ids=ids[:, :-1], use_cache=False).last_hidden_state
    logits = drafter.draft_logits(states).float()
    return masked_mean(F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none"), mask[:, 1:])


def retokenized(batch: dict, base_tok, draft_tok) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's real tokens as text, re-encoded by the draft's tokenizer: every run of equal loss mask is decoded
    and re-encoded on its own, so trained (assistant) spans stay trained. → right-padded ids [B, T'] and mask."""
    rows = []
    for ids, trained, real in zip(batch["input_ids"].tolist(), batch["loss_mask"].tolist(),
                                  batch["attention_mask"].tolist()):
        n, start, out, out_mask = sum(real), 0, [], []
        for i in range(1, n + 1):
            if i == n or (trained[i] > 0) != (trained[start] > 0):
                piece = draft_tok.encode(base_tok.decode(ids[start:i]), add_special_tokens=False)
                out += piece
                out_mask += [float(trained[start] > 0)] * len(piece)
                start = i
        rows.append((out, out_mask))
    width = max(2, max(len(r) for r, _ in rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width)
    for j, (r, m) in enumerate(rows):
        ids[j, : len(r)], mask[j, : len(m)] = torch.tensor(r, dtype=torch.long), torch.tensor(m)
    return ids, mask


def build(base, modeling, feature_layers, meta, draft_vocab):
    if draft_vocab is not None:
        raise ConfigError("classic_draft: a draft LM keeps the full vocabulary; unset modeling.draft_vocab_size")
    if modeling.draft_model_path:
        tokenizer = own_tokenizer(modeling.draft_model_path, base)
        if tokenizer is not None:  # another tokenizer than the base's: the token-level intersection
            return build_cross_vocab_drafter(base, modeling, tokenizer, meta)
    return build_classic_drafter(base, modeling, meta)


register(Algorithm("classic_draft", classic_draft_loss, build, modeling_keys=("draft_model_path",),
                   algorithm_keys=("distill_alpha", "sequence_weight"), packs=True, architecture="classic_drafter"))
