"""Our drafter checkpoint format: `model.safetensors` + `drafter_config.json`, whose `architecture` field names the
drafter class (the registry of architectures.py, filled by each family); `load_drafter(path)` reads any of them.
No pickle, no trust_remote_code; the weights' sha256 is recorded at save and checked at every load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from ..config.errors import ConfigError
from ..utils.io import atomic_write, atomic_write_json, sha256_file
from .architectures import ARCHITECTURES
from .draft_config import hf_config_from_dict
from .lora import has_adapters, merge_adapters, save_adapters, scaling_of
from .safetensors_io import check_finite, read_safetensors, tied_keys

FORMAT = "specforge_het.drafter"
FORMAT_VERSION = 1
CONFIG_NAME = "drafter_config.json"
WEIGHTS_NAME = "model.safetensors"
# Constructor arguments every drafter saves (a class adds its own as EXTRA_KEYS).
BASE_KEYS = ("base_hidden_size", "base_vocab_size", "base_embed_dim", "own_embedding", "own_lm_head",
             "draft_vocab_size")


class CheckpointMixin:
    """save_pretrained / from_pretrained / config_dict for a drafter module (see the module docstring)."""

    ARCHITECTURE = "?"
    EXTRA_KEYS: tuple = ()  # constructor arguments of the subclass saved in drafter_config.json

    def config_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": self.ARCHITECTURE,
            "base_hidden_size": self.base_hidden_size,
            "base_vocab_size": self.base_vocab_size,
            "base_embed_dim": self.base_embed_dim,
            "own_embedding": self.own_embedding,
            "own_lm_head": self.own_lm_head,
            "draft_vocab_size": self.draft_vocab_size if self.reduced_vocab else None,
            **{k: getattr(self, k) for k in self.EXTRA_KEYS},
            "draft_config": self.hf_config.to_dict(),
            **self.meta,
        }

    def save_pretrained(self, out_dir: str | Path, dtype: Optional[torch.dtype] = None,
                        state: Optional[dict] = None) -> Path:
        """Weights (safetensors) + drafter_config.json. `state`: weights to write instead of this module's own
        (e.g. gathered from ZeRO-3 shards, whose own parameters are empty); checked against the module's keys first."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        own = {k: v for k, v in self.state_dict().items() if "rotary_emb." not in k}
        if state is not None:
            state = {k: v for k, v in state.items() if "rotary_emb." not in k}
            if state.keys() != own.keys():
                raise ValueError(f"weights to save do not match the drafter: missing "
                                 f"{sorted(own.keys() - state.keys())[:6]}"
                                 f", unexpected {sorted(state.keys() - own.keys())[:6]}")
            own = state
        if "lora" in self.meta:  # LoRA-trained layers: saved merged, adapters beside them (see lora.py)
            if has_adapters(own):
                own, adapters = merge_adapters(own, scaling_of(self))
                save_adapters(adapters, out)
        ties = tied_keys(self.state_dict())  # e.g. a classic draft LM's lm_head tied to its embedding: saved once
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
                 for k, v in own.items() if k not in ties}
        check_finite(state, out / WEIGHTS_NAME)
        atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        # The weights' content hash, checked at every load: flipped bytes never load silently.
        atomic_write_json(out / CONFIG_NAME, {**self.config_dict(), "weights_sha256": sha256_file(out / WEIGHTS_NAME)})
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu", dtype: Optional[torch.dtype] = None):
        """This class's checkpoint at `path` (the common base class loads any architecture)."""
        return load_drafter(path, device, dtype, expect=cls if ARCHITECTURES.find(cls.ARCHITECTURE) is cls else None)


def read_drafter_config(path: Path) -> dict:
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise ConfigError(f"no drafter checkpoint at {path} (missing {CONFIG_NAME})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{cfg_path} is not valid JSON: {e}") from None
    if cfg.get("format") != FORMAT:
        raise ConfigError(f"{cfg_path}: field 'format' is {cfg.get('format')!r}, expected {FORMAT!r}")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise ConfigError(f"{cfg_path}: format_version {cfg['format_version']} is newer than this "
                          f"specforge_het understands ({FORMAT_VERSION}); upgrade specforge_het")
    if "base_hidden_size" not in cfg or "draft_config" not in cfg:
        raise ConfigError(f"{cfg_path}: missing field 'base_hidden_size' or 'draft_config'")
    return cfg


def load_drafter(path: str | Path, device="cpu", dtype: Optional[torch.dtype] = None, expect=None):
    """Any drafter checkpoint of our format, by path."""
    path = Path(path)
    cfg = read_drafter_config(path)
    # Checkpoints written before the field existed hold the first architecture (EAGLE-1/2's).
    arch = cfg.get("architecture", "eagle_drafter")
    cls = ARCHITECTURES.get(arch, where=f"{path / CONFIG_NAME}: field 'architecture'")
    if expect is not None and not issubclass(cls, expect):
        raise ConfigError(f"{path}: holds a {arch} drafter, not a {expect.ARCHITECTURE}")
    keys = BASE_KEYS + cls.EXTRA_KEYS
    meta = {k: v for k, v in cfg.items()
            if k not in ("format", "format_version", "architecture", "draft_config", "weights_sha256") + keys}
    model = cls(hf_config_from_dict(cfg["draft_config"]), meta=meta,
                **{k: cfg[k] for k in keys if cfg.get(k) is not None})
    weights = path / WEIGHTS_NAME
    state = read_safetensors(weights, cfg.get("weights_sha256"))
    model = load_checked_state(model, state, weights)
    model.checkpoint_dir = str(path)  # where files saved beside the weights live (a draft's own tokenizer)
    # dtype None keeps the checkpoint's own floating dtype (the modules were built in float32).
    dtype = dtype or next((v.dtype for v in state.values() if v.is_floating_point()), None)
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def load_checked_state(model, state: dict, where):
    """Load `state` into `model` after checking every key is expected and present, with the expected shape.
    A key the model ties to another (saved once) is filled from that other key."""
    own = {k: v for k, v in model.state_dict().items() if "rotary_emb." not in k}
    state = dict(state)
    for dup, src in tied_keys(own).items():
        if dup not in state and src in state:
            state[dup] = state[src]
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unexpected:
        raise ConfigError(f"{where}: missing keys {sorted(missing)[:6]}, unexpected keys {sorted(unexpected)[:6]}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ConfigError(f"{where}: key {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    check_finite(state, where)
    if any(hasattr(v, "full_tensor") for v in own.values()):  # FSDP2-sharded (DTensor) parameters: each process
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # keeps its own shard of the full tensors (a collective: every process loads the same file)
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
        return model
    model.load_state_dict(state, strict=False)
    return model


def warm_start(drafter, path: Path) -> None:
    """Load a trained checkpoint's weights (and draft vocabulary) into the freshly built `drafter`: same
    architecture, same keys and shapes, or one line saying which differs."""
    arch = read_drafter_config(path).get("architecture", "eagle_drafter")
    if arch != drafter.ARCHITECTURE:
        raise ConfigError(f"modeling.init_from_drafter: {path} holds a {arch} drafter; this run trains a "
                          f"{drafter.ARCHITECTURE}")
    load_checked_state(drafter, read_safetensors(path / WEIGHTS_NAME), f"modeling.init_from_drafter: {path}")
    drafter.meta["init_from_drafter"] = str(path)
