"""Draft vocabulary reduction: the top-N most frequent loss-masked target tokens of a training dataset.

Stored as REFERENCE describes (and SGLang / EAGLE-3 read): `used` sorted ascending, `d2t[i] = used[i] − i`
(int64 [N]), `t2d` a bool mask over the target vocabulary; draft id j ↦ target id j + d2t[j].

`DraftVocabMixin` gives a drafter module (holding `d2t`/`t2d` buffers, `lm_head`, `base_lm_head`) the reduced-vocabulary
operations: set the map, map draft ids to target ids, and restrict the base's training targets to the draft vocabulary.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..config.errors import ConfigError
from .head import apply_head


def target_token_counts(dataset, vocab_size: int) -> torch.Tensor:
    """How often each target id is a training target (a token at a loss-masked position), over the dataset."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    arrays = dataset.token_arrays() if hasattr(dataset, "token_arrays") else (
        (s["input_ids"], s["loss_mask"]) for s in (dataset[i] for i in range(len(dataset))))
    for ids, mask in tqdm(arrays, desc="draft vocab: counting target tokens", leave=False):
        targets = ids[mask.bool()]
        if targets.numel() and int(targets.max()) >= vocab_size:
            raise ConfigError(f"dataset holds token id {int(targets.max())} but the base vocabulary has {vocab_size} "
                              "tokens: the dataset was made with another tokenizer")
        counts += torch.bincount(targets, minlength=vocab_size)
    return counts


def top_tokens(counts: torch.Tensor, n: int) -> tuple[torch.Tensor, float]:
    """The n most frequent ids (ties → lower id; padded with the lowest unseen ids when fewer were seen), sorted,
    and the share of all target occurrences they cover."""
    if not 0 < n <= counts.numel():
        raise ConfigError(f"modeling.draft_vocab_size: expected 1..{counts.numel()} (the base vocabulary), got {n}")
    # Stable sort on -count keeps ascending ids among equal counts.
    order = torch.sort(-counts, stable=True).indices
    used = order[:n].sort().values
    total = int(counts.sum())
    coverage = float(counts[used].sum()) / total if total else 0.0
    return used, coverage


def d2t_t2d(used: torch.Tensor, target_vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    used = used.to(torch.long).sort().values
    d2t = used - torch.arange(used.numel())
    t2d = torch.zeros(target_vocab, dtype=torch.bool)
    t2d[used] = True
    return d2t, t2d


class DraftVocabMixin:
    """The reduced draft vocabulary of a drafter whose own lm_head covers `draft_vocab_size` target ids."""

    @property
    def reduced_vocab(self) -> bool:
        return self.d2t is not None

    def set_draft_vocab(self, used: torch.Tensor) -> None:
        """Restrict the own lm_head to the sorted target ids `used` (see REFERENCE: d2t[i] = used[i] − i)."""
        used = used.to(torch.long).sort().values
        if used.numel() != self.draft_vocab_size:
            raise ValueError(f"draft vocabulary has {used.numel()} ids, expected {self.draft_vocab_size}")
        self.d2t.copy_(used - torch.arange(used.numel(), device=used.device))
        self.t2d.zero_()
        self.t2d[used] = True

    def draft_to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids] if self.reduced_vocab else draft_ids

    @torch.no_grad()
    def init_lm_head_from_base(self) -> None:
        """Start an own lm_head at the base's rows (for the draft vocabulary) when the widths allow."""
        if self.lm_head is None or self.base_lm_head is None:
            return
        w = self.base_lm_head.weight
        if w.shape[1] != self.lm_head.in_features:
            return
        rows = self.draft_to_target(torch.arange(self.draft_vocab_size, device=w.device))
        self.lm_head.weight.copy_(w[rows].to(self.lm_head.weight.dtype))

    @torch.no_grad()
    def target_logits(self, base_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training targets: the base's logits of its own (last-layer) features, restricted to the draft vocabulary,
        and whether the base's top token is in that vocabulary (positions where it is not cannot be learned)."""
        full = apply_head(self.base_lm_head, base_features)
        if not self.reduced_vocab:
            return full, torch.ones(full.shape[:-1], dtype=torch.bool, device=full.device)
        return full[..., self.t2d], self.t2d[full.argmax(-1)]
