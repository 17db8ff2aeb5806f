"""Algorithm registry: one module per algorithm, each registering a loss under its name."""
from __future__ import annotations

from typing import Callable

from ..config.schema import ConfigError, closest

_REGISTRY: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


def get_loss(name: str) -> Callable:
    from . import eagle2  # noqa: F401  (registers itself)

    if name not in _REGISTRY:
        raise ConfigError(f"algorithm.name: unknown algorithm {name!r}; {closest(name, _REGISTRY)}")
    return _REGISTRY[name]
