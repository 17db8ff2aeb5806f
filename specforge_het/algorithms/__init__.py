"""The algorithm catalog: what each drafter family trains, as data checked before any model loads.

Every family (specforge_het/families/NAME/) registers one `Algorithm` here; this package holds only what the
families share for training — the catalog, the loss menu (losses.py, head_loss.py) and teacher-forced unrolling
(unroll.py). Lookups load the families by name (registry.py), so this package imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..config.errors import ConfigError
from ..config.options import declared_options
from ..registry import Registry


@dataclass
class Algorithm:
    name: str
    loss: Callable  # (drafter, batch, algorithm_cfg, training[, sp]) → (loss, metrics)
    build: Callable  # (base, modeling_cfg, feature_layers, meta, draft_vocab) → drafter
    # (num_base_layers, configured aux ids) → base block ids the drafter reads; None = the last hidden state only.
    feature_layers: Callable[[int, list], Optional[list]] = lambda n, configured: None
    # The family-declared keys (config/options.py) this algorithm reads: modeling switches its drafter honours and
    # loss options; and the preset that sets them (named when another algorithm is given one of them).
    modeling_keys: tuple = ()
    algorithm_keys: tuple = ()
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
        check_options(algorithm, {"modeling": modeling})
        return build(base, modeling, *args)

    algorithm.build = checked_build
    return ALGORITHMS.register(algorithm.name, algorithm)


def get_algorithm(name: str) -> Algorithm:
    return ALGORITHMS.get(name, where="algorithm.name")


def reads(algorithm: Algorithm) -> set[str]:
    """The family-declared keys `algorithm` reads, as section.key."""
    return {f"modeling.{k}" for k in algorithm.modeling_keys} | {f"algorithm.{k}" for k in algorithm.algorithm_keys}


def specific_keys() -> dict[str, str]:
    """Every key a family declares for [modeling] / [algorithm] → the preset(s) of the algorithms that read it."""
    presets: dict[str, set] = {}
    for _, algorithm in ALGORITHMS.items():
        for key in reads(algorithm):  # the switch preset sets its modeling switches; loss options go with the name
            switch = key.startswith("modeling.") and algorithm.switch_preset
            preset = algorithm.switch_preset if switch else algorithm.name
            presets.setdefault(key, set()).add(f"--@{preset}")
    return {f"{o.section}.{o.key}": " or ".join(sorted(presets.get(f"{o.section}.{o.key}", ())))
            for o in declared_options() if o.section in ("modeling", "algorithm")}


def check_options(algorithm: Algorithm, sections: dict) -> None:
    """A family's key set away from its default on an algorithm that does not read it would do nothing, silently.
    `sections`: {"modeling": ..., "algorithm": ...}, the config sections to check (either may be left out)."""
    own = reads(algorithm)
    ignored = [f"{o.section}.{o.key}" for o in declared_options() if o.section in sections
               and f"{o.section}.{o.key}" not in own and getattr(sections[o.section], o.key) != o.default]
    if ignored:
        presets = specific_keys()
        users = " / ".join(sorted({presets[k] for k in ignored if presets[k]}))
        raise ConfigError(f"{', '.join(ignored)}: not read by the {algorithm.name} algorithm (it would be ignored); "
                          f"unset {'it' if len(ignored) == 1 else 'them'}" + (f", or use {users}" if users else ""))


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
