"""Import official EAGLE checkpoints (and SGLang-layout exports) into our drafter format. Each family reads its own
layout (an `OfficialImporter` registered from families/NAME/export.py); this module reads the files.

EAGLE-1/2 (yuhuili layout): `config.json` (a Llama config) + `fc.weight` [H, 2H], `fc.bias`, `layers.N.*` (no input
norm on layer 0), optional `embed_tokens.weight` (dropped: our EAGLE-1/2 drafters share the base's).
EAGLE-3: `midlayer.*`, `fc.weight` [H, k·T], `norm.weight`, `lm_head.weight`, optional `d2t`/`t2d`/
`embed_tokens.weight`;
feature layers from `eagle_config.eagle_aux_hidden_state_layer_ids` (or `export.feature_layers`).
Weights from `model.safetensors` or `pytorch_model.bin` (read with `torch.load(weights_only=True)`: tensors only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..config.errors import ConfigError
from ..modeling.safetensors_io import read_safetensors
from ..registry import Registry


def read_weights(path: Path) -> dict:
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors")
    for name in ("pytorch_model.bin", "model.bin"):
        if (path / name).is_file():
            try:
                state = torch.load(path / name, map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises several types for non-tensor pickles
                raise ConfigError(f"{path / name}: not a weights-only checkpoint ({type(e).__name__}: {e})") from None
            return state.get("state_dict", state) if isinstance(state, dict) else state
    raise ConfigError(f"{path}: no model.safetensors or pytorch_model.bin")


@dataclass(frozen=True)
class OfficialImporter:
    """One drafter family's reading of official checkpoints (registered from its folder: families/NAME/export.py)."""
    claims: Callable[[dict], bool]  # tensors by name (any `model.` prefix removed) → is this layout mine?
    # (path, config.json dict, tensors, meta, feature layers or None) → the drafter, weights loaded
    load: Callable[..., object]


OFFICIAL_IMPORTERS: Registry[OfficialImporter] = Registry("official checkpoint layout")


def load_official(path: str | Path, feature_layers: Optional[list] = None):
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: neither our drafter format (drafter_config.json) nor an EAGLE checkpoint "
                          "(config.json)")
    cfg = json.loads((path / "config.json").read_text())
    cfg.setdefault("model_type", "llama")
    for key in ("torch_dtype", "dtype"):  # weights load into float32 modules; cast later with export.dtype
        cfg.pop(key, None)
    state = {k.removeprefix("model."): v for k, v in read_weights(path).items()}
    meta = {"imported_from": str(path)}
    for name, importer in OFFICIAL_IMPORTERS.items():
        if importer.claims(state):
            return importer.load(path, cfg, state, {"algorithm": name, **meta}, feature_layers)
    raise ConfigError(f"{path}: tensors in no known EAGLE layout (known: {', '.join(OFFICIAL_IMPORTERS.names())}); "
                      f"found {', '.join(sorted(state)[:6])}")
