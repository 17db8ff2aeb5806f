"""Algorithm registry: one module per algorithm, each registering an `Algorithm` under its name.

An algorithm says which base features its drafter reads, how to build the drafter, and its training loss.
Adding an algorithm = adding one file here that calls `register` (and a preset under configs/ selecting it).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Optional

from ..config.schema import ConfigError, closest


@dataclass
class Algorithm:
    name: str
    loss: Callable  # (drafter, batch, algorithm_cfg, training[, sp]) → (loss, metrics)
    build: Callable  # (base, modeling_cfg, feature_layers, meta, draft_vocab) → drafter
    # (num_base_layers, configured aux ids) → base block ids the drafter reads; None = the last hidden state only.
    feature_layers: Callable[[int, list], Optional[list]] = lambda n, configured: None
    # The algorithm-specific modeling switches (SPECIFIC_SWITCHES) this algorithm's drafter honours.
    modeling_keys: tuple = ()
    # Whether its loss keeps packed conversations apart (data.packing: segment_ids / position_ids in the batch).
    packs: bool = False
    # Whether its loss takes `sp=` and trains only this process's rows of each sequence (training.sequence_parallel).
    sequence_parallel: bool = False


_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    build = algorithm.build

    def checked_build(base, modeling, *args):
        check_modeling_switches(algorithm, modeling)
        return build(base, modeling, *args)

    algorithm.build = checked_build
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


# Modeling switches only some drafters have → the preset that sets them (named in the error).
SPECIFIC_SWITCHES = {"fc_norm": "--@eagle3_1", "norm_output": "--@eagle3_1", "block_size": "--@dflash or --@dspark",
                     "mask_token_id": "--@dflash or --@dspark", "markov_rank": "--@dspark",
                     "confidence_cut": "--@dspark"}


def check_modeling_switches(algorithm: Algorithm, modeling) -> None:
    """A switch set away from its default on an algorithm whose drafter ignores it would do nothing, silently."""
    defaults = {f.name: f.default for f in dataclasses.fields(modeling)}
    ignored = [k for k in SPECIFIC_SWITCHES if k not in algorithm.modeling_keys and getattr(modeling, k) != defaults[k]]
    if ignored:
        raise ConfigError(f"{', '.join(f'modeling.{k}' for k in ignored)}: not a switch of the {algorithm.name} "
                          f"drafter (it would be ignored); unset {'it' if len(ignored) == 1 else 'them'}, or use "
                          f"{' / '.join(sorted({SPECIFIC_SWITCHES[k] for k in ignored}))}")


def get_loss(name: str) -> Callable:
    return get_algorithm(name).loss


def check_packing(algorithm: Algorithm, data) -> None:
    """data.packing where it cannot be honoured would train across conversation boundaries: refuse it."""
    if not data.packing:
        return
    if not algorithm.packs:
        packers = sorted(name for name, a in _REGISTRY.items() if a.packs)
        raise ConfigError(f"data.packing: not supported by the {algorithm.name} algorithm yet (supported: "
                          f"{', '.join(packers)}); unset it")
