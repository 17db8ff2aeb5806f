"""Exporters: one per serving target (`export.to`), one file each, registered by name.

An exporter declares which drafter architectures it writes (`supports`: architecture → the target's format for it)
and refuses any other with one line naming what it does write. `write` puts the
files in place; `verify` (optional) proves them with the target's own loader and returns a one-line report.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..config.schema import ConfigError, closest

# Modules that register an exporter (imported on first use, so that `export --help` stays cheap).
MODULES = ("to_ours", "to_sglang", "to_vllm")


@dataclass(frozen=True)
class Exporter:
    name: str
    description: str
    # drafter architecture (modeling.drafter_base.ARCHITECTURES) → what that drafter becomes in this target;
    # None = every architecture
    supports: Optional[dict[str, str]]
    # (drafter, out, dtype, base model, export config) → the folder written
    write: Callable[..., Path]
    verify: Optional[Callable[[Path, str], str]] = None

    def check(self, drafter) -> None:
        arch = getattr(drafter, "ARCHITECTURE", type(drafter).__name__)
        if self.supports is not None and arch not in self.supports:
            what = ", ".join(f"{a} ({f})" for a, f in self.supports.items())
            raise ConfigError(f"export.to {self.name}: writes {what}; this is a "
                              f"{drafter.meta.get('algorithm', arch)} drafter ({arch})")


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(exporter: Exporter) -> Exporter:
    EXPORTERS[exporter.name] = exporter
    return exporter


def _load_all() -> None:
    for mod in MODULES:
        importlib.import_module(f"{__package__}.{mod}")


PLANNED = {"hf": "a plain HF folder"}  # named in the docs, not built yet: refused as such


def get_exporter(name: str) -> Exporter:
    _load_all()
    if name in PLANNED:
        raise ConfigError(f"export.to {name!r} ({PLANNED[name]}) is not implemented in this release; "
                          f"available: {', '.join(EXPORTERS)}")
    if name not in EXPORTERS:
        raise ConfigError(f"export.to: unknown format {name!r}; {closest(name, list(EXPORTERS) + list(PLANNED))}")
    return EXPORTERS[name]
