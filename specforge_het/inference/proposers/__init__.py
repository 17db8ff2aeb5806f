"""Proposers: what drafts. Each drafting method is one class in its own file here, registered by name.

The decode loop (inference/engine.py) is propose → verify → accept → commit. A proposer owns the drafter's state
for one batch decode (its KV cache, which slots are real, the last feature) and exposes four calls:

    start(hidden, ids, root, positions, valid, base_cache)
                                                 after the base's prefill: the prompt's base features [B, T, ·],
                                                 its ids, the first token the base produced [B], the prompt's
                                                 position ids and real-slot mask [B, T], the base's KV cache
    propose(root, root_pos, sampling, gen)       → a DraftTree per row rooted at `root` (chains are trees with one
                                                 child per node; a block drafter's proposal is a chain or a tree)
    commit(hidden, next_tokens, lens)            the base's features at the accepted path's nodes [B, L, ·], the
                                                 token that follows each of them [B, L] (accepted children, then
                                                 the bonus token), and each row's accepted length [B]
    keep(rows)                                   finished rows leave the batch: keep only `rows`

plus `feature_layers` (the base blocks whose outputs it reads; None = the last hidden state) and `max_nodes` (the
most nodes a proposal verifies: headroom of the base's KV cache). Verification never depends on the proposer, so any
proposer is lossless. Plugins wrap a proposer (plugins/async_draft.py) or the base (plugins/offload.py).
A drafter names its proposer with the class attribute `PROPOSER` (default "tree"). The generic tree proposer lives
here (eagle_tree.py); a drafter family with its own (block drafters) registers it from its folder — loaded by the
time one of its drafters exists, so this registry never imports a family.
"""
from __future__ import annotations

from typing import Optional, Protocol

import torch

from ...registry import Registry
from ..accept import Sampling


class Proposer(Protocol):
    feature_layers: Optional[list]
    max_nodes: int

    def start(self, hidden: torch.Tensor, ids: torch.Tensor, root: torch.Tensor, positions: torch.Tensor,
              valid: torch.Tensor, base_cache) -> None: ...

    def propose(self, root: torch.Tensor, root_pos: torch.Tensor, sampling: Sampling, gen): ...

    def commit(self, hidden: torch.Tensor, next_tokens: torch.Tensor, lens: torch.Tensor) -> None: ...

    def keep(self, rows: torch.Tensor) -> None: ...


PROPOSERS: Registry[type] = Registry("proposer", loaders=(f"{__name__}.eagle_tree",))


def register_proposer(name: str):
    def deco(cls):
        cls.NAME = name
        return PROPOSERS.register(name, cls)
    return deco


def build_proposer(drafter, depth: int, top_k: int, total_tokens: int, best_first: bool = False) -> Proposer:
    """The proposer the drafter names, for one decode, with the strategy's shape: chain (top_k 1, total_tokens =
    depth), EAGLE-2 tree, or budget tree (best_first)."""
    name = getattr(drafter, "PROPOSER", "tree")
    cls = PROPOSERS.get(name, where=f"drafter {type(drafter).__name__}")
    return cls(drafter, depth=depth, top_k=top_k, total_tokens=total_tokens, best_first=best_first)
