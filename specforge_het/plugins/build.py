"""`build_speculator`: the drafter (or the one a plugin provides) with the enabled plugins applied, in their order."""
from __future__ import annotations

from ..config.errors import ConfigError
from ..config.options import declared_options
from ..config.schema import RunConfig
from .loading import load_drafter_for
from .registry import PLUGINS
from .speculator import Speculator


def check_enabled(names) -> list[str]:
    """The enabled plugins in the order they apply (unknown names: one line naming the closest)."""
    plugins = {n: PLUGINS.get(n, where="plugins.enabled") for n in names}
    return sorted(plugins, key=lambda n: plugins[n].order)


def check_plugin_options(plugins, enabled) -> None:
    """A plugin's key set away from its default while that plugin is not enabled would do nothing, silently."""
    ignored = [o for o in declared_options() if o.section == "plugins" and o.owner not in enabled
               and getattr(plugins, o.key) != o.default]
    if ignored:
        owners = sorted({o.owner for o in ignored})
        raise ConfigError(f"{', '.join(f'plugins.{o.key}' for o in ignored)}: read only by the "
                          f"{' / '.join(owners)} plugin{'s' if len(owners) > 1 else ''}, not enabled (plugins.enabled "
                          f"= {list(enabled)}); enable it or unset {'it' if len(ignored) == 1 else 'them'}")


def refused_in_server(names) -> list[str]:
    return [n for n in check_enabled(names) if not PLUGINS.get(n).in_server]


def build_speculator(cfg: RunConfig, base) -> Speculator:
    """The drafter of inference.drafter_path (or the one a plugin provides), with the enabled plugins applied to it
    and to the base, in their order."""
    enabled = check_enabled(cfg.plugins.enabled)
    providers = [n for n in enabled if PLUGINS.get(n).provides_drafter]
    if len(providers) > 1:
        raise ConfigError(f"plugins.enabled: {' and '.join(providers)} both choose the drafter; enable one of them")
    check_plugin_options(cfg.plugins, enabled)
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
