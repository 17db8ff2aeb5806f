"""Edits of HF DynamicCaches that speculative decoding needs: keep per-row slots (tree compaction), drop rows
(finished sequences), crop (a drafter's tree entries after a round). Dropping rows and cropping also accept the
static SlotCache (slot_cache.py), which does both its own way."""
from __future__ import annotations

import torch
from transformers import DynamicCache


def full_cache(base=None, length: int = 0) -> DynamicCache:
    """A cache of plain full-attention layers. HF would give sliding-window families (Mistral, Gemma) rolling
    layers that drop old entries and count positions themselves, which tree compaction cannot edit; full layers
    are exact as long as the sequence stays inside the window, which is checked here."""
    window = base.sliding_window if base is not None else None
    if window is not None and length > window:
        raise ValueError(f"prompt + max_new_tokens = {length} exceeds the base's sliding window ({window}); "
                         "speculative decoding here is exact only within the window")
    return DynamicCache()


def gather_cache(cache: DynamicCache, keep: torch.Tensor) -> None:
    """Keep, per sequence, the cache slots keep [B, M] (in that order) in every layer of a DynamicCache."""
    for layer in cache.layers:
        idx = keep[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
        layer.keys = layer.keys.gather(2, idx)
        layer.values = layer.values.gather(2, idx)


def select_rows(cache: DynamicCache, rows: torch.Tensor) -> None:
    """Keep only the sequences `rows` of a batched DynamicCache (finished ones leave the batch)."""
    if hasattr(cache, "select_rows"):  # a SlotCache
        cache.select_rows(rows)
        return
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, rows)
        layer.values = layer.values.index_select(0, rows)


def crop_cache(cache: DynamicCache, length: int, contiguous: bool = False) -> None:
    """Drop every slot from `length` on (the drafter's tree entries after a round). `contiguous`: copy the kept
    slots into their own storage (a compiled drafter's graphs are specialised on strides; a view's would change).
    A SlotCache keeps its committed slots and empties its scratch (where every slot from `length` on lives)."""
    if hasattr(cache, "discard"):
        cache.discard()
        return
    for layer in cache.layers:
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]
        if contiguous:
            layer.keys, layer.values = layer.keys.contiguous(), layer.values.contiguous()
