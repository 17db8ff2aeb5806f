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


def commit_paths(cache: DynamicCache, length: int, paths: torch.Tensor) -> None:
    """Keep the committed `length` slots and, after them, per sequence, the tree slots length + paths [B, W] in
    that order; drop the rest. Only the tree's region is copied (in place, over its own first W slots): the
    committed prefix, most of the cache, is not moved."""
    width = paths.shape[1]
    for layer in cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)
            idx = paths[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[-1])
            t[..., length: length + width, :] = t[..., length:, :].gather(2, idx)
            setattr(layer, name, t[..., : length + width, :])


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
