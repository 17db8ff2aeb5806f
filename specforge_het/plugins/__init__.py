"""Inference plugins, one module each, registering a `Plugin` (its order, what it changes, where it may run) and
selected with `plugins.enabled` (or a preset under configs/plugins/): offload (layer streaming), subspec (quantized
substitute drafter), async_draft (SSD-style pre-drafting), router (a drafter per prompt). None of them touches
verification, so decoding stays lossless.

`build_speculator(cfg, base)` applies them and returns a `Speculator`: call it like `speculative_decode_batch`
without the base and drafter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..config.schema import ConfigError, RunConfig
from ..registry import Registry
from .loading import load_drafter_for


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
    f"{__name__}.{m}" for m in ("subspec", "routing", "offload", "async_draft")))


def register_plugin(plugin: Plugin) -> Plugin:
    return PLUGINS.register(plugin.name, plugin)


@dataclass
class Speculator:
    """The base, the drafter(s) and the plugins' decoding options, as one decoding function."""

    base: object
    drafter: object  # the drafter (the router's first one when routing)
    route: Callable | None = None  # prompts → drafter index per prompt
    drafters: list = field(default_factory=list)
    async_branches: int = 0
    offloader: object = None
    stats: dict = field(default_factory=dict)

    def __call__(self, prompts: list[list[int]], max_new_tokens: int, eos: set[int], **params):
        if self.route is None:
            return self._decode(self.drafter, prompts, max_new_tokens, eos, params)
        choice = self.route(prompts)
        out = [None] * len(prompts)
        for k, drafter in enumerate(self.drafters):
            idx = [i for i, c in enumerate(choice) if c == k]
            self.stats.setdefault("routed", [0] * len(self.drafters))[k] += len(idx)
            if idx:
                for i, r in zip(idx, self._decode(drafter, [prompts[i] for i in idx], max_new_tokens, eos, params)):
                    out[i] = r
        return out

    def name(self, drafter_path: str) -> str:
        """What drafts, for reports: the drafter path, or the plugin that replaced it, plus the plugins on top."""
        meta = getattr(self.drafter, "meta", {})
        if meta.get("algorithm") == "subspec":
            what = f"subspec {meta['quant_bits']}-bit ({meta['quant_backend']}, {meta['kept_blocks']} blocks kept"
            what += ", KV shared)" if meta.get("shared_kv") else ")"
        elif self.route is not None:
            what = "router over " + ", ".join(str(getattr(d, "meta", {}).get("algorithm", "?")) for d in self.drafters)
        else:
            what = drafter_path
        if self.offloader is not None:
            what += f" + offload ({self.offloader.stats.offloaded_blocks} blocks)"
        if self.async_branches:
            what += f" + async drafting ({self.async_branches} branches)"
        return what

    def take_stats(self) -> dict:
        """Plugin counters since the last call (async hit rate, routing choices, offload traffic), for a report row."""
        out = {}
        if "async" in self.stats:
            a = self.stats.pop("async")
            out["async_hit_rate"] = round(a.hit_rate, 3)
            out["async_predrafted_per_step"] = round(a.drafted / max(a.steps, 1), 2)
        if "routed" in self.stats:
            out["routed_counts"] = self.stats.pop("routed")
        if self.offloader is not None:
            s = self.offloader.stats
            out["offload"] = {"fetches": s.fetches, "prefetched": s.prefetched, "bytes_moved": s.bytes_moved,
                              "offloaded_bytes": s.offloaded_bytes}
        return out

    def _decode(self, drafter, prompts, max_new_tokens, eos, params):
        from ..inference.engine import speculative_decode_batch

        if not self.async_branches:
            return speculative_decode_batch(self.base, drafter, prompts, max_new_tokens, eos, **params)
        from .async_draft import AsyncDrafting, AsyncStats

        stats = self.stats.setdefault("async", AsyncStats())
        return [speculative_decode_batch(self.base, drafter, [p], max_new_tokens, eos, **params,
                                         drafting=AsyncDrafting(self.async_branches, stats))[0] for p in prompts]


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
    spec = None if providers else Speculator(base, load_drafter_for(base, cfg.inference.drafter_path))
    for name in enabled:
        spec = PLUGINS.get(name).apply(spec, cfg, base, enabled)
    return spec
