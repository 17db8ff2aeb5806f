"""Inference plugins, one module each, registering a `Plugin` (its order, what it changes, where it may run) and
selected with `plugins.enabled` (or a preset under configs/plugins/): offload (layer streaming), subspec (quantized
substitute drafter), async_draft (SSD-style pre-drafting), router (a drafter per prompt). None of them touches
verification, so decoding stays lossless.

`build_speculator(cfg, base)` applies them and returns a `Speculator`: call it like `speculative_decode_batch`
without the base and drafter.
"""
from __future__ import annotations

from ..utils.lazy import lazy_names

# Names are resolved on first use, so that importing plugins.options (the plugins' typed keys, read by the schema)
# loads no plugin code.
_WHERE = {"PLUGINS": "registry", "Plugin": "registry", "register_plugin": "registry", "Speculator": "speculator",
          "load_drafter_for": "loading", "build_speculator": "build", "check_enabled": "build",
          "refused_in_server": "build", "with_proposer": "build"}

__all__ = sorted(_WHERE)
__getattr__ = lazy_names(__name__, _WHERE)
