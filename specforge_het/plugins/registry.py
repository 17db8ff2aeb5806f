"""The plugin registry: each plugin module registers one `Plugin` — its order, what it changes, where it may run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..registry import Registry


@dataclass(frozen=True)
class Plugin:
    name: str
    # Applied in ascending order whatever the order in plugins.enabled (subspec 0, router 1, offload 2, async_draft 3):
    # the substitute drafter is cloned from the base before offloading hooks exist, and the router and asynchronous
    # drafting wrap whatever drafter results.
    order: int
    description: str
    # (speculator — None for a plugin that provides the drafter —, run config, base, enabled names) → speculator
    apply: Callable
    provides_drafter: bool = False  # it chooses the drafter itself (at most one such plugin per run)
    batched: bool = True  # decodes batches (False: one sequence at a time)
    in_server: bool = True  # allowed in the OpenAI server, which runs one drafter synchronously
    compilable: bool = False  # usable with inference.compile / inference.static_cache


PLUGINS: Registry[Plugin] = Registry("plugin", loaders=tuple(
    f"{__package__}.{m}" for m in ("subspec", "routing", "offload", "async_draft")))


def register_plugin(plugin: Plugin) -> Plugin:
    return PLUGINS.register(plugin.name, plugin)
