"""The drafting strategies a run may ask for (`inference.strategy`), the proposal shape each one takes, and the
base's end-of-sequence ids: what every decoding application (benchmark, server, router training) reads."""
from __future__ import annotations

from ..config.errors import ConfigError
from ..config.schema import RunConfig

STRATEGIES = ("chain", "tree", "budget")
GROUPS = {"both": ("chain", "tree"), "all": STRATEGIES}


def resolve_strategies(name: str) -> tuple[str, ...]:
    strategies = GROUPS.get(name, (name,))
    for s in strategies:
        if s not in STRATEGIES:
            raise ConfigError(f"inference.strategy: expected chain, tree, budget, both (chain + tree) or all, "
                              f"got {name!r}")
    return strategies


def strategy_params(cfg: RunConfig, name: str) -> dict:
    inf = cfg.inference
    if name == "chain":
        return {"depth": inf.depth, "top_k": 1, "total_tokens": inf.depth}
    if name == "budget":  # SpecExec-style: best-first over the whole pool, `budget` nodes verified per step
        return {"depth": inf.budget_rounds, "top_k": inf.top_k, "total_tokens": inf.budget, "best_first": True}
    return {"depth": inf.depth, "top_k": inf.top_k, "total_tokens": inf.total_tokens}


def eos_ids(base) -> set[int]:
    eos = base.model.generation_config.eos_token_id
    if eos is None:
        eos = base.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}
