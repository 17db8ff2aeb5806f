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
A drafter names its proposer with the class attribute `PROPOSER` (default "tree").
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Optional, Protocol

import torch

from ...config.schema import ConfigError, closest
from ..accept import Sampling


class Proposer(Protocol):
    feature_layers: Optional[list]
    max_nodes: int

    def start(self, hidden: torch.Tensor, ids: torch.Tensor, root: torch.Tensor, positions: torch.Tensor,
              valid: torch.Tensor, base_cache) -> None: ...

    def propose(self, root: torch.Tensor, root_pos: torch.Tensor, sampling: Sampling, gen): ...

    def commit(self, hidden: torch.Tensor, next_tokens: torch.Tensor, lens: torch.Tensor) -> None: ...

    def keep(self, rows: torch.Tensor) -> None: ...


PROPOSERS: dict[str, type] = {}


def register_proposer(name: str):
    def deco(cls):
        cls.NAME = name
        PROPOSERS[name] = cls
        return cls
    return deco


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def build_proposer(drafter, depth: int, top_k: int, total_tokens: int, best_first: bool = False) -> Proposer:
    """The proposer the drafter names, for one decode, with the strategy's shape: chain (top_k 1, total_tokens =
    depth), EAGLE-2 tree, or budget tree (best_first)."""
    _load_all()
    name = getattr(drafter, "PROPOSER", "tree")
    if name not in PROPOSERS:
        raise ConfigError(f"drafter {type(drafter).__name__} names proposer {name!r}; {closest(name, PROPOSERS)}")
    return PROPOSERS[name](drafter, depth=depth, top_k=top_k, total_tokens=total_tokens, best_first=best_first)
