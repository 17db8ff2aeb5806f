"""Inference plugins, one module each, registering a `Plugin` (its order, what it changes, where it may run) and
selected with `plugins.enabled` (or a preset under configs/plugins/): offload (layer streaming), subspec (quantized
substitute drafter), async_draft (SSD-style pre-drafting), router (a drafter per prompt). None of them touches
verification, so decoding stays lossless.

`build_speculator(cfg, base)` applies them and returns a `Speculator`: call it like `speculative_decode_batch`
without the base and drafter.
"""
from __future__ import annotations

from ..config.schema import ConfigError, RunConfig
from .loading import load_drafter_for
from .registry import PLUGINS, Plugin, register_plugin
from .speculator import Speculator

__all__ = ["PLUGINS", "Plugin", "Speculator", "build_speculator", "check_enabled", "load_drafter_for",
           "refused_in_server", "register_plugin"]


def check_enabled(names) -> list[str]:
    """The enabled plugins in the order they apply (unknown names: one line naming the closest)."""
    plugins = {n: PLUGINS.get(n, where="plugins.enabled") for n in names}
    return sorted(plugins, key=lambda n: plugins[n].order)


def refused_in_server(names) -> list[str]:
    return [n for n in check_enabled(names) if not PLUGINS.get(n).in_server]


def build_speculator(cfg: RunConfig, base) -> Speculator:
    """The drafter of inference.drafter_path (or the one a plugin provides), with the enabled plugins applied to it
    and to the base, in their order."""
    enabled = check_enabled(cfg.plugins.enabled)
    providers = [n for n in enabled if PLUGINS.get(n).provides_drafter]
    if len(providers) > 1:
        raise ConfigError(f"plugins.enabled: {' and '.join(providers)} both choose the drafter; enable one of them")
    spec = None if providers else Speculator(base, with_proposer(load_drafter_for(base, cfg.inference.drafter_path),
                                                                 cfg.inference.proposer, base))
    for name in enabled:
        spec = PLUGINS.get(name).apply(spec, cfg, base, enabled)
    return spec


def with_proposer(drafter, name, base):
    """The drafter drafting with inference.proposer (None: its own). A proposer may prepare the drafter for itself
    (`prepare(drafter, base)`, e.g. string-level drafting loads both tokenizers) or refuse it in one line."""
    if not name:
        return drafter
    from ..inference.proposers import PROPOSERS

    cls = PROPOSERS.get(name, where="inference.proposer")
    drafter = cls.prepare(drafter, base) if hasattr(cls, "prepare") else drafter
    drafter.PROPOSER = name
    return drafter
