"""The feature-based tree proposer: EAGLE-1/2/3 drafters, classic draft models and SubSpec substitutes.

Chains, EAGLE-2 dynamic trees and SpecExec-style budget trees are all `expand_tree` (inference/tree.py) with
another shape. The drafter keeps a KV cache over the committed sequence: the prompt's (feature, next token) pairs at
the start, then each step's accepted path; the tree's own entries are cropped after every proposal.
"""
from __future__ import annotations

import torch

from ...modeling.masks import padded_causal_mask
from ..accept import take
from ..kv_cache import crop_cache, select_rows
from ..slot_cache import SlotCache, kept_valid, started
from ..tree import expand_tree
from . import register_proposer


@register_proposer("tree")
class TreeProposer:
    def __init__(self, drafter, depth: int, top_k: int, total_tokens: int, best_first: bool = False):
        self.drafter = drafter
        self.depth, self.top_k, self.total_tokens, self.best_first = depth, top_k, total_tokens, best_first
        self.feature_layers = drafter.feature_layers
        self.max_nodes = total_tokens
        # Per decode: the drafter's cache, which of its slots are real [B, P], its output at the last committed
        # position [B, H] (it predicts the next root's children), and the last proposal's root positions.
        self.cache = self.valid = self.last_feat = self.root_pos = None

    def start(self, hidden, ids, root, positions, valid, base_cache) -> None:
        """Drafter prefill: pairs (h_j, t_{j+1}) for j = 0..n−1, t_n being the root. A static base cache gets a
        static drafter cache of the same capacity; its scratch holds a whole expansion or an accepted path."""
        if isinstance(base_cache, SlotCache):
            self.cache = SlotCache(base_cache.capacity + 1, max(  # + 1: a classic drafter's extra first slot
                (self.depth - 1) * self.top_k, self.depth + 1))
        else:
            self.cache = self.drafter.new_cache(base_cache)  # SubSpec shares the base's cache layers
        feats, written = self.drafter.prefill(hidden, ids, torch.cat([ids[:, 1:], root[:, None]], 1), positions,
                                              self.cache, valid=valid)
        self.valid = started(self.cache, written)
        self.last_feat = feats[:, -1]

    def propose(self, root, root_pos, sampling, gen):
        self.root_pos = root_pos
        tree = expand_tree(self.drafter, root, self.last_feat, self.cache, self.valid, root_pos, self.depth,
                           self.top_k, self.total_tokens, self.best_first, sampling, gen)
        crop_cache(self.cache, self.valid.shape[1], contiguous=getattr(self.drafter, "compiled_forward", False))
        return tree

    def commit(self, hidden, next_tokens, lens) -> None:
        """The drafter consumes the accepted path: pairs (h_path[i], next token) at positions root_pos + i."""
        width = next_tokens.shape[1]
        dev = next_tokens.device
        step_valid = torch.arange(width, device=dev)[None] < lens[:, None]
        step_pos = self.root_pos[:, None] + torch.arange(width, device=dev)[None]
        feats = self.drafter(hidden, next_tokens, step_pos, past_key_values=self.cache,
                             attention_mask=padded_causal_mask(step_valid, self.valid, self.drafter.compute_dtype))
        if isinstance(self.cache, SlotCache):  # the path's entries move from the scratch to each row's next slots
            self.cache.commit(torch.arange(width, device=dev).expand_as(step_valid), step_valid)
        else:
            self.valid = torch.cat([self.valid, step_valid], 1)
        self.last_feat = take(feats, (lens - 1)[:, None])[:, 0]

    def keep(self, rows) -> None:
        select_rows(self.cache, rows)
        self.last_feat = self.last_feat[rows]
        self.valid = kept_valid(self.cache, self.valid, rows)

    def restore(self, cache, valid, last_feat) -> None:
        """Replace the state with one drafted ahead (asynchronous drafting's hit)."""
        self.cache, self.valid, self.last_feat = cache, valid, last_feat
