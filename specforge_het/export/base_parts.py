"""What an export needs from the base it will be served with, read from the base's own folder (no model load):
its architectures (the speculators `verifier` block) and its output head (for engines that expect the draft to
carry one even though it uses the target's)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def base_architectures(base: str) -> list[str]:
    """The base's `architectures` from its config.json; [] when it is not a local folder (a hub id)."""
    cfg = Path(base) / "config.json"
    if not cfg.is_file():
        return []
    return list(json.loads(cfg.read_text()).get("architectures") or [])


def base_head_weight(base: str) -> torch.Tensor | None:
    """The base's lm_head weight [V, H] from its safetensors — its embedding when the two are tied — or None when the
    base is not a local folder."""
    from safetensors import safe_open

    folder = Path(base)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    found: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), "pt") as sf:
            for key in sf.keys():
                if key == "lm_head.weight" or key.endswith("embed_tokens.weight"):
                    found[key] = f
    key = "lm_head.weight" if "lm_head.weight" in found else next(iter(sorted(found)), None)
    if key is None:
        return None
    with safe_open(str(found[key]), "pt") as sf:
        return sf.get_tensor(key)
