"""Exporters and converters.

An exporter is one serving target (`export.to`), one file each (to_ours.py, to_vllm.py, to_sglang.py): `write` puts
the files in place; `verify` (optional) proves them with the target's own loader and returns a one-line report.
A converter turns one drafter architecture into one target's format (config + tensors); each drafter family
registers its own (families/NAME/export.py), and an exporter writes what it finds for (target, architecture) —
refusing any other drafter with one line naming what it does write.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from safetensors.torch import save_file

from ..config.errors import ConfigError
from ..registry import Registry
from ..utils.io import atomic_write, atomic_write_json


@dataclass(frozen=True)
class Converter:
    """One drafter architecture in one target's format."""
    target: str  # the exporter's name
    architecture: str  # the drafter's (modeling/architectures.py)
    format: str  # what it becomes, in words (named in --help and in refusals)
    # (drafter, dtype, base model, speculative steps) → (config.json dict, tensors by name)
    convert: Callable[..., tuple[dict, dict]]
    # The engine's draft classes this format loads as (config.json's `architectures`), the engine module holding
    # each, and whether our static reading of the engine's sources covers it (SGLang's EAGLE layouts).
    engine_architectures: tuple = ()
    static_check: bool = True
    # (config, base, out folder, steps, topk, draft tokens) → README.md text; None = the exporter's default.
    readme: Optional[Callable[..., str]] = None
    # Plain-LM formats (target hf): (drafter, base) → the folder whose tokenizer goes beside the draft.
    # Every engine format: the --speculative-config fields the engine needs besides model / steps (a method other
    # than the format's own name, switches such as vLLM's parallel_drafting or use_heterogeneous_vocab).
    tokenizer_from: Optional[Callable[..., str]] = None
    serving_fields: dict = field(default_factory=dict)


CONVERTERS: Registry[Converter] = Registry("converter")


def register_converter(converter: Converter) -> Converter:
    return CONVERTERS.register(f"{converter.target}/{converter.architecture}", converter)


def converters_for(target: str) -> dict[str, Converter]:
    """architecture → converter, for one target."""
    return {c.architecture: c for _, c in CONVERTERS.items() if c.target == target}


def converter_for(target: str, drafter) -> Converter:
    return converters_for(target)[drafter.ARCHITECTURE]


def write_converted(target: str, drafter, out: Path, dtype, base: str, steps: int) -> tuple[Converter, dict]:
    """What every engine exporter does first: refuse a drafter it cannot hold, convert it, and write
    model.safetensors + config.json into `out` → (the converter, the config written)."""
    EXPORTERS.get(target).check(drafter)
    converter = converter_for(target, drafter)
    config, weights = converter.convert(drafter, dtype, base, steps)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))
    atomic_write_json(out / "config.json", config)
    return converter, config


@dataclass(frozen=True)
class Exporter:
    name: str
    description: str
    # Whether it writes every architecture (our own format), or only those with a converter for it.
    every_architecture: bool
    # (drafter, out, dtype, base model, export config) → the folder written
    write: Callable[..., Path]
    verify: Optional[Callable[[Path, str], str]] = None

    @property
    def supports(self) -> Optional[dict[str, str]]:
        """drafter architecture → what it becomes in this target; None = every architecture."""
        if self.every_architecture:
            return None
        return {arch: c.format for arch, c in sorted(converters_for(self.name).items())}

    def check(self, drafter) -> None:
        arch = getattr(drafter, "ARCHITECTURE", type(drafter).__name__)
        if self.supports is not None and arch not in self.supports:
            what = ", ".join(f"{a} ({f})" for a, f in self.supports.items())
            raise ConfigError(f"export.to {self.name}: writes {what}; this is a "
                              f"{drafter.meta.get('algorithm', arch)} drafter ({arch})")


# Exporter modules are imported on first use (so that `export --help` stays cheap); the converters they write
# come from the families, loaded on the first converter lookup.
EXPORTERS: Registry[Exporter] = Registry("export format", loaders=tuple(
    f"{__package__}.{m}" for m in ("to_ours", "to_sglang", "to_vllm", "to_hf")))


def register_exporter(exporter: Exporter) -> Exporter:
    return EXPORTERS.register(exporter.name, exporter)


PLANNED: dict[str, str] = {}  # formats named in the docs but not built yet: refused as such


def get_exporter(name: str) -> Exporter:
    if name in PLANNED:
        raise ConfigError(f"export.to {name!r} ({PLANNED[name]}) is not implemented in this release; "
                          f"available: {', '.join(EXPORTERS.names())}")
    return EXPORTERS.get(name, where="export.to")
