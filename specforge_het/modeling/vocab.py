"""Draft vocabulary reduction: the top-N most frequent loss-masked target tokens of a training dataset.

Stored as REFERENCE describes (and SGLang / EAGLE-3 read): `used` sorted ascending, `d2t[i] = used[i] − i`
(int64 [N]), `t2d` a bool mask over the target vocabulary; draft id j ↦ target id j + d2t[j].
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..config.schema import ConfigError


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
