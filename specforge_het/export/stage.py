"""The export stage (`python -m specforge_het.export`, documented in export/__init__.py): load a checkpoint (ours or
an official EAGLE one), write it in the chosen format, prove it with the target's own loader where it can."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config.cli import save_resolved_config
from ..config.schema import RunConfig
from ..config.errors import ConfigError
from ..modeling.base import resolve_dtype
from ..modeling.checkpoint import CONFIG_NAME, load_drafter
from .registry import get_exporter
from .to_ours import export_specforge_het  # noqa: F401  (public: tests and benchmarks call it)

log = logging.getLogger(__name__)


def load_any(checkpoint: str, feature_layers=None):
    """Our format, or an official EAGLE / SGLang-layout checkpoint (imported)."""
    if (Path(checkpoint) / CONFIG_NAME).is_file():
        return load_drafter(checkpoint)
    from .from_official import load_official

    return load_official(checkpoint, feature_layers)


def run(cfg: RunConfig, presets: list[str]) -> Path:
    ex = cfg.export
    exporter = get_exporter(ex.to)
    if Path(ex.out).resolve() == Path(ex.checkpoint).resolve():
        raise ConfigError("export.out must differ from export.checkpoint")
    drafter = load_any(ex.checkpoint, ex.feature_layers)
    exporter.check(drafter)
    dtype = resolve_dtype(ex.dtype, "export.dtype") if ex.dtype else None
    base = ex.base_model or drafter.meta.get("base_model_name_or_path") or "BASE_MODEL"
    if ex.to in ("sglang", "vllm"):
        from .capture import base_num_layers, check_capture

        check_capture(getattr(drafter, "feature_layers", None), base_num_layers(drafter, base), ex.to)
    out = exporter.write(drafter, Path(ex.out), dtype, base, ex)
    if exporter.verify is not None:
        log.info(f"export: {ex.to} check: {exporter.verify(out, base)}")
    save_resolved_config(cfg, out, "export", presets)
    log.info(f"export: {ex.checkpoint} → {out} ({ex.to}, algorithm {drafter.meta.get('algorithm')}, base {base})")
    return out
