"""export: convert a trained drafter checkpoint into a serving format.

    python -m specforge_het.export --export.checkpoint DIR --export.to specforge_het --export.out DIR [--export.dtype bfloat16]

Formats in this release:
  specforge_het  our own: model.safetensors + drafter_config.json (+ resolved config), loadable with
                 `load_drafter(path)` — no trust_remote_code, no pickle.
The SGLang / vLLM layouts are separate exporters (see the export issue); they are refused here by name.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import RunConfig, run_entry, save_resolved_config
from .config.schema import ConfigError, closest
from .modeling.base import resolve_dtype
from .modeling.drafter_base import load_drafter

FORMATS = ("specforge_het",)
PLANNED = {"sglang": "the SGLang EAGLE/EAGLE-3 layout", "vllm": "the vLLM speculators layout",
           "hf": "a plain HF folder"}


def export_specforge_het(checkpoint: str, out: str, dtype_name: str | None) -> Path:
    drafter = load_drafter(checkpoint)
    dtype = resolve_dtype(dtype_name, "export.dtype") if dtype_name else None
    out_path = drafter.save_pretrained(out, dtype=dtype)
    # Validate what we wrote by reading it back: every key present, same shapes.
    again = load_drafter(out_path)
    want = {k: v.shape for k, v in drafter.state_dict().items() if "rotary_emb." not in k}
    got = {k: v.shape for k, v in again.state_dict().items() if "rotary_emb." not in k}
    if want != got:
        raise RuntimeError(f"export to {out_path} did not round-trip: keys/shapes differ")
    return out_path


def run(cfg: RunConfig, presets: list[str]) -> Path:
    ex = cfg.export
    if ex.to in PLANNED:
        raise ConfigError(f"export.to {ex.to!r} ({PLANNED[ex.to]}) is not implemented in this release; "
                          f"available: {', '.join(FORMATS)}")
    if ex.to not in FORMATS:
        raise ConfigError(f"export.to: unknown format {ex.to!r}; {closest(ex.to, FORMATS + tuple(PLANNED))}")
    if Path(ex.out).resolve() == Path(ex.checkpoint).resolve():
        raise ConfigError("export.out must differ from export.checkpoint")
    out = export_specforge_het(ex.checkpoint, ex.out, ex.dtype)
    save_resolved_config(cfg, out, "export", presets)
    meta = json.loads((out / "drafter_config.json").read_text())
    print(f"export: {ex.checkpoint} → {out} ({ex.to}, algorithm {meta.get('algorithm')}, "
          f"base {meta.get('base_model_name_or_path')})")
    return out


if __name__ == "__main__":
    run_entry("export", __doc__.strip().splitlines()[0], run)
