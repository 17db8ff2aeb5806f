"""The algorithm catalog: what each drafter family trains, as data checked before any model loads.

Every family (specforge_het/families/NAME/) registers one `Algorithm` here; this package holds only what the
families share for training — the catalog, the loss menu (losses.py, head_loss.py) and teacher-forced unrolling
(unroll.py). Lookups load the families by name (registry.py), so this package imports none of them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

from ..config.errors import ConfigError
from ..registry import Registry


@dataclass
class Algorithm:
    name: str
    loss: Callable  # (drafter, batch, algorithm_cfg, training[, sp]) → (loss, metrics)
    build: Callable  # (base, modeling_cfg, feature_layers, meta, draft_vocab) → drafter
    # (num_base_layers, configured aux ids) → base block ids the drafter reads; None = the last hidden state only.
    feature_layers: Callable[[int, list], Optional[list]] = lambda n, configured: None
    # The algorithm-specific modeling switches this algorithm's drafter honours, and the preset that sets them
    # (named when another algorithm is given one of them).
    modeling_keys: tuple = ()
    switch_preset: str = ""
    # Whether its loss keeps packed conversations apart (data.packing: segment_ids / position_ids in the batch).
    packs: bool = False
    # Whether its loss takes `sp=` and trains only this process's rows of each sequence (training.sequence_parallel).
    sequence_parallel: bool = False
    # The drafter architecture it trains (modeling/architectures.py), and its own simulated-acceptance rule
    # (drafter, batch, depth) → (accepted, eligible) where teacher-forced unrolling does not fit (block drafters);
    # None = the unrolled chain of evaluation.py.
    architecture: str = ""
    simulate: Optional[Callable] = None


ALGORITHMS: Registry[Algorithm] = Registry("algorithm")


def register(algorithm: Algorithm) -> Algorithm:
    build = algorithm.build

    def checked_build(base, modeling, *args):
        check_modeling_switches(algorithm, modeling)
        return build(base, modeling, *args)

    algorithm.build = checked_build
    return ALGORITHMS.register(algorithm.name, algorithm)


def get_algorithm(name: str) -> Algorithm:
    return ALGORITHMS.get(name, where="algorithm.name")


def specific_switches() -> dict[str, str]:
    """Modeling switches only some drafters have → the preset(s) that set them (named in the error)."""
    presets: dict[str, set] = {}
    for _, algorithm in ALGORITHMS.items():
        for key in algorithm.modeling_keys:
            presets.setdefault(key, set()).add(f"--@{algorithm.switch_preset or algorithm.name}")
    return {key: " or ".join(sorted(names)) for key, names in presets.items()}


def check_modeling_switches(algorithm: Algorithm, modeling) -> None:
    """A switch set away from its default on an algorithm whose drafter ignores it would do nothing, silently."""
    defaults = {f.name: f.default for f in dataclasses.fields(modeling)}
    switches = specific_switches()
    ignored = [k for k in switches if k not in algorithm.modeling_keys and getattr(modeling, k) != defaults[k]]
    if ignored:
        raise ConfigError(f"{', '.join(f'modeling.{k}' for k in ignored)}: not a switch of the {algorithm.name} "
                          f"drafter (it would be ignored); unset {'it' if len(ignored) == 1 else 'them'}, or use "
                          f"{' / '.join(sorted({switches[k] for k in ignored}))}")


def get_loss(name: str) -> Callable:
    return get_algorithm(name).loss


def check_packing(algorithm: Algorithm, data) -> None:
    """data.packing where it cannot be honoured would train across conversation boundaries: refuse it."""
    if not data.packing:
        return
    if not algorithm.packs:
        packers = ALGORITHMS.where(lambda a: a.packs)
        raise ConfigError(f"data.packing: not supported by the {algorithm.name} algorithm yet (supported: "
                          f"{', '.join(packers)}); unset it")
