"""A draft layer started from one of the base's decoder layers, optionally trained through LoRA adapters (peft).

`init_from_base_layers(drafter, base, first)`: draft layer i starts as a copy of base block `first + i` (every
weight whose name and shape agree: same family and width; EAGLE-2's layer 0 has no input norm, EAGLE-3's
attention reads 2·H, so those keys stay fresh and are reported). `add_lora(...)` then freezes those layers and
trains rank-r adapters on their linear projections (peft's LoRA), besides the drafter's own fc / heads.

Saved drafters hold merged weights (W = W0 + (alpha/r)·B·A) under the plain names, so inference and the SGLang /
vLLM exports see an ordinary drafter; the adapters are written beside them (`lora_adapters.safetensors`) so a
checkpoint resumes exactly: W0 is rebuilt from the base, A and B are read back.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config.errors import ConfigError
from ..utils.extras import require
from ..utils.io import atomic_write
from .safetensors_io import read_safetensors

ADAPTERS_NAME = "lora_adapters.safetensors"
_A, _B, _W0 = ".lora_A.default.", ".lora_B.default.", ".base_layer."


@torch.no_grad()
def init_from_base_layers(drafter, base, first: int) -> list[str]:
    """Copy base blocks first, first+1, ... into the draft layers where names and shapes agree → skipped keys."""
    from .base import decoder_parts

    blocks, _ = decoder_parts(base.model)
    layers = drafter.decoder_layers()
    n = len(layers)
    if not 0 <= first <= len(blocks) - n:
        raise ConfigError(f"modeling.init_from_base_layer: expected 0..{len(blocks) - n} (the base has {len(blocks)} "
                          f"blocks, the drafter {n} layer(s)), got {first}")
    skipped, copied = [], 0
    prefix = {id(m): name for name, m in drafter.named_modules()}
    for i, layer in enumerate(layers):
        src = blocks[first + i].state_dict()
        for name, param in layer.state_dict().items():
            if name in src and src[name].shape == param.shape:
                param.copy_(src[name].to(param.dtype))
                copied += 1
            else:
                skipped.append(f"{prefix[id(layer)]}.{name}")
    if not copied:
        raise ConfigError(f"modeling.init_from_base_layer: no weight of base block {first} fits the draft layer "
                          "(another family or width?); leave modeling.draft_family / draft_hidden_size unset")
    return skipped


def add_lora(drafter, rank: int, alpha: float, targets, fresh=()) -> None:
    """Freeze the draft layers and give their `targets` linear projections rank-`rank` LoRA adapters. `fresh`:
    weights not copied from the base (a frozen random projection under an adapter would never learn)."""
    require("peft")
    from peft import LoraConfig, inject_adapter_in_model
    if rank <= 0:
        raise ConfigError(f"modeling.lora_rank: expected a positive rank, got {rank}")
    layers = drafter.decoder_layers()
    names = {name.rsplit(".", 1)[-1] for layer in layers for name, m in layer.named_modules()
             if isinstance(m, torch.nn.Linear)}
    unknown = sorted(set(targets) - names)
    if unknown:
        raise ConfigError(f"modeling.lora_targets: {unknown} are not linear layers of the draft layer; it has "
                          f"{', '.join(sorted(names))}")
    frozen_random = sorted(k for k in fresh if k.endswith(".weight") and k.split(".")[-2] in targets)
    if frozen_random:
        raise ConfigError(f"modeling.lora_targets: {', '.join(frozen_random)} did not come from the base layer (other "
                          "shape, e.g. EAGLE-3's 2·H attention input), so it cannot be frozen under an adapter; "
                          "remove those projections from modeling.lora_targets")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none")
    for layer in layers:
        layer.requires_grad_(False)
        inject_adapter_in_model(config, layer)
    drafter.meta["lora"] = {"rank": rank, "alpha": alpha, "targets": list(targets)}


def has_adapters(state: dict) -> bool:
    return any(_A in k for k in state)


def merge_adapters(state: dict, scaling: float) -> tuple[dict, dict]:
    """A state dict with LoRA-wrapped layers → (plain state with W0 + scaling·B·A under the layers' own names,
    the adapter tensors A and B)."""
    plain, adapters = {}, {}
    for k, v in state.items():
        if _A in k or _B in k:
            adapters[k] = v
        elif _W0 in k:
            prefix, leaf = k.split(_W0)
            if leaf == "weight":
                a, b = state[f"{prefix}{_A}weight"], state[f"{prefix}{_B}weight"]
                v = (v.float() + scaling * (b.float() @ a.float())).to(v.dtype)
            plain[f"{prefix}.{leaf}"] = v
        else:
            plain[k] = v
    return plain, adapters


def scaling_of(drafter) -> float:
    lora = drafter.meta["lora"]
    return lora["alpha"] / lora["rank"]


def save_adapters(adapters: dict, out_dir: Path) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in adapters.items()}
    atomic_write(Path(out_dir) / ADAPTERS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def resume_state(drafter, folder: Path, merged: dict) -> dict:
    """The LoRA-wrapped drafter's full state from a checkpoint: W0 as rebuilt from the base (frozen, so unchanged
    by training), A and B from the adapters file, everything else from the merged weights."""
    path = Path(folder) / ADAPTERS_NAME
    if not path.is_file():
        raise ConfigError(f"{folder}: no {ADAPTERS_NAME}: this checkpoint was not trained with LoRA adapters; "
                          "resume it without modeling.lora_rank, or start a new training.output_dir")
    adapters, own = read_safetensors(path), drafter.state_dict()
    state = {}
    for k, v in own.items():
        if _W0 in k:
            state[k] = v
        elif _A in k or _B in k:
            if k not in adapters:
                raise ConfigError(f"{path}: missing adapter {k} (was it trained with other modeling.lora_targets?)")
            state[k] = adapters[k]
        elif k in merged:
            state[k] = merged[k]
    check, _ = merge_adapters(state, scaling_of(drafter))
    for k, w in check.items():
        if k in merged and not torch.allclose(w.float(), merged[k].float(), atol=1e-4, rtol=1e-3):
            raise ConfigError(f"{folder}: {k} is not the base layer plus its adapters: the checkpoint was trained "
                              "from another base layer (modeling.init_from_base_layer) or another base")
    return state
