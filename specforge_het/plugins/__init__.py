"""Inference plugins, one module each, registered by name and selected with `plugins.enabled` (or a preset under
configs/plugins/): offload (layer streaming), subspec (quantized substitute drafter), async_draft (SSD-style
pre-drafting), router (a drafter per prompt). None of them touches verification, so decoding stays lossless.

`build_speculator(cfg, base)` applies them and returns a `Speculator`: call it like `speculative_decode_batch`
without the base and drafter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..config.schema import ConfigError, RunConfig, closest

# Applied in this order whatever the order in plugins.enabled: the substitute drafter is cloned from the base
# before offloading hooks exist, and the router and asynchronous drafting wrap whatever drafter results.
ORDER = ("subspec", "router", "offload", "async_draft")
DESCRIPTIONS = {
    "offload": "base blocks from plugins.keep_first_n_layers_on_gpu on live in CPU memory, streamed in with prefetch",
    "subspec": "training-free drafter: the base with low-bit substitute blocks (plugins.quant_bits, HQQ if installed)",
    "async_draft": "pre-draft the next tree for likely verification outcomes while the base verifies",
    "router": "pick one of plugins.router_drafters per prompt with a classifier trained on recorded acceptance",
}


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
    for n in names:
        if n not in DESCRIPTIONS:
            raise ConfigError(f"plugins.enabled: unknown plugin {n!r}; {closest(n, DESCRIPTIONS)}")
    return [n for n in ORDER if n in names]


def load_drafter_for(base, path: str):
    from ..modeling.checkpoint import load_drafter

    drafter = load_drafter(path, device=base.device, dtype=base.dtype)
    return drafter.attach_base(base.embed_tokens, base.lm_head).check_base(base).eval()


def build_speculator(cfg: RunConfig, base) -> Speculator:
    """The drafter of inference.drafter_path (or the plugins' own), with the enabled plugins applied to it and to
    the base."""
    p = cfg.plugins
    enabled = check_enabled(p.enabled)
    if "subspec" in enabled and "router" in enabled:
        raise ConfigError("plugins.enabled: subspec and router both choose the drafter; enable one of them")
    if "subspec" in enabled:
        from .subspec import build_subspec_drafter

        keep = p.subspec_keep_first_n_layers
        if keep is None:
            keep = p.keep_first_n_layers_on_gpu if "offload" in enabled else 0
        spec = Speculator(base, build_subspec_drafter(base, keep, p.quant_bits, p.quant_group_size, p.quant_backend,
                                                     share_kv=p.subspec_share_kv and "async_draft" not in enabled))
    elif "router" in enabled:
        from .router import load_router

        drafters = [load_drafter_for(base, d) for d in p.router_drafters]
        router = load_router(p.router_path, base, p.router_drafters)
        spec = Speculator(base, drafters[0], route=router.choose, drafters=drafters)
    else:
        spec = Speculator(base, load_drafter_for(base, cfg.inference.drafter_path))
    if "offload" in enabled:
        from .offload import offload_base

        spec.offloader = offload_base(base, p.keep_first_n_layers_on_gpu, p.offload_prefetch)
    if "async_draft" in enabled:
        from .async_draft import check_token_only

        for drafter in spec.drafters or [spec.drafter]:
            check_token_only(drafter)
        spec.async_branches = p.async_branches
    return spec
