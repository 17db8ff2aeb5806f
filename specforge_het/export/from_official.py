"""Import official EAGLE checkpoints (and SGLang-layout exports) into our drafter format.

EAGLE-1/2 (yuhuili layout): `config.json` (a Llama config) + `fc.weight` [H, 2H], `fc.bias`, `layers.N.*` (no input
norm on layer 0), optional `embed_tokens.weight` (dropped: our EAGLE-1/2 drafters share the base's).
EAGLE-3: `midlayer.*`, `fc.weight` [H, k·T], `norm.weight`, `lm_head.weight`, optional `d2t`/`t2d`/
`embed_tokens.weight`;
feature layers from `eagle_config.eagle_aux_hidden_state_layer_ids` (or `export.feature_layers`).
Weights from `model.safetensors` or `pytorch_model.bin` (read with `torch.load(weights_only=True)`: tensors only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from ..config.schema import ConfigError
from ..modeling.draft_config import hf_config_from_dict
from ..modeling.checkpoint import load_checked_state, read_safetensors


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


def load_official(path: str | Path, feature_layers: Optional[list] = None):
    from ..modeling.drafter import EagleDrafter
    from ..modeling.eagle3 import Eagle3Drafter

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: neither our drafter format (drafter_config.json) nor an EAGLE checkpoint "
                          "(config.json)")
    cfg = json.loads((path / "config.json").read_text())
    cfg.setdefault("model_type", "llama")
    for key in ("torch_dtype", "dtype"):  # weights load into float32 modules; cast later with export.dtype
        cfg.pop(key, None)
    state = {k.removeprefix("model."): v for k, v in read_weights(path).items()}
    eagle3 = any(k.startswith("midlayer.") for k in state)
    meta = {"algorithm": "eagle3" if eagle3 else "eagle2", "imported_from": str(path)}
    if eagle3:
        hf = hf_config_from_dict({**cfg, "num_hidden_layers": 1})
        target = cfg.get("target_hidden_size") or cfg["hidden_size"]
        layers = feature_layers or (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
        if not layers:
            raise ConfigError(f"{path}: config has no eagle_config.eagle_aux_hidden_state_layer_ids; pass the base "
                              "layers the draft was trained on with --export.feature_layers")
        reduced = "d2t" in state and state["d2t"].numel() < cfg["vocab_size"]
        own_embed = "embed_tokens.weight" in state
        if "embed_tokens.weight" in state:
            state["embed.weight"] = state.pop("embed_tokens.weight")
        for k in [k for k in state if k.startswith("fc_norm.")]:  # EAGLE-3.1 per-feature norms (SGLang's names)
            state[k.replace("fc_norm.", "fc_norms.", 1)] = state.pop(k)
        if not reduced:
            state.pop("d2t", None), state.pop("t2d", None)
        else:
            state["t2d"] = state["t2d"].bool()
            state["d2t"] = state["d2t"].long()
        model = Eagle3Drafter(hf, target, cfg["vocab_size"], target, own_embedding=own_embed,
                              own_lm_head="lm_head.weight" in state,
                              draft_vocab_size=state["lm_head.weight"].shape[0] if reduced else None, meta=meta,
                              feature_layers=list(layers), fc_norm=bool(cfg.get("fc_norm") or cfg.get("use_aux_norm")),
                              norm_output=bool(cfg.get("norm_output")))
        return load_checked_state(model, state, path)
    n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
    hf = hf_config_from_dict({**cfg, "num_hidden_layers": n_layers})
    state.pop("embed_tokens.weight", None)
    state.pop("lm_head.weight", None)
    model = EagleDrafter(hf, cfg["hidden_size"], cfg["vocab_size"], cfg["hidden_size"], meta=meta,
                         first_layer_input_norm="layers.0.input_layernorm.weight" in state, fc_bias="fc.bias" in state)
    return load_checked_state(model, state, path)
