"""A `Speculator`: the base, the drafter(s) and the plugins' decoding options, called like speculative_decode_batch
without the base and drafter (plugins/__init__.py builds it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..inference.engine import speculative_decode_batch
from .async_draft import AsyncDrafting, AsyncStats


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
        if not self.async_branches:
            return speculative_decode_batch(self.base, drafter, prompts, max_new_tokens, eos, **params)
        stats = self.stats.setdefault("async", AsyncStats())
        return [speculative_decode_batch(self.base, drafter, [p], max_new_tokens, eos, **params,
                                         drafting=AsyncDrafting(self.async_branches, stats))[0] for p in prompts]
