"""Sequence packing: several conversations per training row, so a batch holds tokens instead of padding.

Bins: LPT (longest first) into rows of `capacity` tokens — each sample, longest first, goes to the least-filled
open row if it fits there, or opens a new one (the multipack heuristic). Each packed row keeps its conversations
apart: `segment_ids` (1, 2, … per conversation; 0 = padding, added by the collator) and `position_ids` restarting
at 0 per conversation. The drafter's attention stays inside a segment (modeling/ttt_attention.py runs causal
attention per segment) and no target crosses a boundary (`algorithms/unroll.same_segment`), so a packed batch gives
the loss of the same conversations unpacked (tests/test_packing.py).
"""
from __future__ import annotations

import heapq
import logging

import torch

from ..config.errors import ConfigError

log = logging.getLogger(__name__)


def lpt_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of total length ≤ capacity (LPT / first-fit by least load)."""
    if any(n > capacity for n in lengths):
        raise ConfigError(f"data.packing: a sample of {max(lengths)} tokens does not fit a packed row of "
                          f"{capacity} (data.max_length); rerun data_gen with the same max_length")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    loads: list[tuple[int, int]] = []  # heap of (load, bin index): the least-filled row on top
    for i in order:
        if loads and loads[0][0] + lengths[i] <= capacity:  # fits the least-filled row (else it fits none)
            load, b = heapq.heappop(loads)
        else:
            bins.append([])
            load, b = 0, len(bins) - 1
        bins[b].append(i)
        heapq.heappush(loads, (load + lengths[i], b))
    return [sorted(b) for b in bins]


class PackedDataset(torch.utils.data.Dataset):
    """Rows of several samples of `dataset`, concatenated, with segment_ids and position_ids."""

    def __init__(self, dataset, capacity: int):
        self.dataset = dataset
        lengths = sample_lengths(dataset)
        self.bins = lpt_bins(lengths, capacity)
        self.tokens, self.capacity = sum(lengths), capacity
        log.info(f"packing: {len(lengths)} samples into {len(self.bins)} rows of ≤ {capacity} tokens "
                 f"({self.tokens / (len(self.bins) * capacity):.1%} filled)")

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, i: int) -> dict:
        samples = [self.dataset[j] for j in self.bins[i]]
        row = {key: torch.cat([s[key] for s in samples]) for key in samples[0]}
        row["segment_ids"] = torch.cat([torch.full((len(s["input_ids"]),), k + 1, dtype=torch.long)
                                        for k, s in enumerate(samples)])
        row["position_ids"] = torch.cat([torch.arange(len(s["input_ids"])) for s in samples])
        return row


def sample_lengths(dataset) -> list[int]:
    """Token count of every sample, without reading hidden states where the dataset allows."""
    if hasattr(dataset, "token_arrays"):
        return [int(ids.numel()) for ids, _ in dataset.token_arrays()]
    if hasattr(dataset, "indices") and hasattr(dataset.dataset, "token_arrays"):  # a Subset (the train split)
        every = [int(ids.numel()) for ids, _ in dataset.dataset.token_arrays()]
        return [every[i] for i in dataset.indices]
    return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]


def segments_of(segment_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """segment_ids [B, L] → per row, the [start, end) spans of its conversations (padding, id 0, included in none)."""
    spans = []
    for row in segment_ids.tolist():
        out, start = [], 0
        for t in range(1, len(row) + 1):
            if t == len(row) or row[t] != row[start]:
                if row[start] != 0:
                    out.append((start, t))
                start = t
        spans.append(out)
    return spans


def padding_fraction(batch_lengths: list[list[int]]) -> float:
    """Share of a padded batch's token slots that are padding, over batches given as their rows' lengths."""
    slots = sum(len(rows) * max(rows) for rows in batch_lengths if rows)
    return 1.0 - sum(sum(rows) for rows in batch_lengths) / slots if slots else 0.0
