"""Algorithm registry: one module per algorithm, each registering an `Algorithm` under its name.

An algorithm says which base features its drafter reads, how to build the drafter, and its training loss.
Adding an algorithm = adding one file here that calls `register` (and a preset under configs/ selecting it).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Optional

from ..config.schema import ConfigError, closest


@dataclass
class Algorithm:
    name: str
    loss: Callable  # (drafter, batch, algorithm_cfg, training) → (loss, metrics)
    build: Callable  # (base, modeling_cfg, feature_layers, meta, draft_vocab) → drafter
    # (num_base_layers, configured aux ids) → base block ids the drafter reads; None = the last hidden state only.
    feature_layers: Callable[[int, list], Optional[list]] = lambda n, configured: None


_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def get_algorithm(name: str) -> Algorithm:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"algorithm.name: unknown algorithm {name!r}; {closest(name, _REGISTRY)}")
    return _REGISTRY[name]


def refuse_eagle3_flags(modeling, algorithm: str) -> None:
    """The EAGLE-3.1 flags change an EAGLE-3 drafter; set on another algorithm they would do nothing, silently."""
    flags = [f"modeling.{k}" for k in ("fc_norm", "norm_output") if getattr(modeling, k)]
    if flags:
        raise ConfigError(f"{', '.join(flags)}: EAGLE-3.1 flags of the eagle3 algorithm; algorithm.name is "
                          f"{algorithm} — unset them, or use --@eagle3_1")


def get_loss(name: str) -> Callable:
    return get_algorithm(name).loss
