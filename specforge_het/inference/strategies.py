"""The drafting strategies a run may ask for (`inference.strategy`), the proposal shape each one takes, and the
base's end-of-sequence ids: what every decoding application (benchmark, server, router training) reads."""
from __future__ import annotations

from ..config.errors import ConfigError
from ..config.schema import RunConfig
from ..config.shapes import parse_shape

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


def shape_plan(cfg: RunConfig) -> list[tuple[str, dict]]:
    """What a benchmark decodes: benchmark.shapes when set (each its own row), else inference.strategy's strategies
    with inference.depth / top_k / total_tokens → [(label, decoder parameters)]."""
    if cfg.benchmark.shapes:
        return [(str(text), parse_shape(text)[1]) for text in cfg.benchmark.shapes]
    return [(s, strategy_params(cfg, s)) for s in resolve_strategies(cfg.inference.strategy)]


def eos_ids(base) -> set[int]:
    eos = base.model.generation_config.eos_token_id
    if eos is None:
        eos = base.tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}
