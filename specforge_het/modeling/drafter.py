"""The EAGLE-1/2 drafter: `fc(cat(embed(token_{i+1}), h_i))` → decoder layer(s) → predicted h_{i+1}.

The decoder layers are the HF classes of the draft family (by default the base's own family),
built from that family's config with `num_hidden_layers = draft_layers`. The embedding and the
lm_head are the base's, frozen and shared: they are attached, not registered, so the drafter's
parameters, optimizer and checkpoints never contain them.

Checkpoint layout (our format): `model.safetensors` (fc.*, layers.N.*) + `drafter_config.json`.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config.schema import ConfigError
from ..utils.io import atomic_write, atomic_write_json

FORMAT = "specforge_het.drafter"
FORMAT_VERSION = 1
CONFIG_NAME = "drafter_config.json"
WEIGHTS_NAME = "model.safetensors"


def draft_hf_config(base_config, draft_layers: int, overrides: Optional[dict] = None):
    """The HF config of the draft decoder: the base's text config, one (or N) layers, user overrides on top."""
    cfg = copy.deepcopy(base_config.get_text_config())
    cfg.num_hidden_layers = draft_layers
    for key, value in (overrides or {}).items():
        if not hasattr(cfg, key):
            raise ConfigError(f"modeling.draft_config_overrides: {type(cfg).__name__} has no field {key!r}")
        setattr(cfg, key, value)
    cfg.use_cache = True
    cfg._attn_implementation = "sdpa"
    return cfg


def _hf_config_from_dict(d: dict):
    from transformers import CONFIG_MAPPING

    model_type = d.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"drafter config: unknown draft model_type {model_type!r}")
    cfg = CONFIG_MAPPING[model_type].from_dict(d)
    cfg._attn_implementation = "sdpa"
    return cfg


def causal_mask(q_len: int, dtype: torch.dtype, device, past_len: int = 0) -> torch.Tensor:
    """Additive [1, 1, q, past+q] causal mask (0 = attend, finfo.min = blocked)."""
    mask = torch.full((q_len, past_len + q_len), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask = torch.triu(mask, diagonal=past_len + 1)
    return mask[None, None]


class EagleDrafter(nn.Module):
    def __init__(self, hf_config, base_hidden_size: int, meta: Optional[dict] = None):
        super().__init__()
        from transformers import AutoModel

        self.hf_config = hf_config
        self.meta = dict(meta or {})
        hidden = hf_config.hidden_size
        if hidden != base_hidden_size:
            raise ConfigError(
                f"EAGLE-2 drafter width {hidden} differs from the base width {base_hidden_size}; "
                "heterogeneous widths need the projection drafters of a later release"
            )
        self.base_hidden_size = base_hidden_size
        self.fc = nn.Linear(2 * base_hidden_size, hidden, bias=True)
        # Build the family's decoder stack without its (vocab-sized) embedding: we share the base's.
        skeleton_cfg = copy.deepcopy(hf_config)
        skeleton_cfg.vocab_size = 2
        skeleton_cfg.tie_word_embeddings = False
        skeleton = AutoModel.from_config(skeleton_cfg)
        self.layers = skeleton.layers
        self.rotary_emb = skeleton.rotary_emb
        object.__setattr__(self, "embed_tokens", None)
        object.__setattr__(self, "lm_head", None)

    def attach_base(self, embed_tokens: nn.Module, lm_head: nn.Module) -> "EagleDrafter":
        """Share the base's frozen embedding and lm_head (kept out of parameters() and state_dict())."""
        object.__setattr__(self, "embed_tokens", embed_tokens)
        object.__setattr__(self, "lm_head", lm_head)
        return self

    def forward(self, hidden: torch.Tensor, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None) -> torch.Tensor:
        """hidden [B,T,H] base features h_i, input_ids [B,T] tokens t_{i+1} → predicted h_{i+1} [B,T,H].

        attention_mask: additive 4D [B|1, 1, T, past+T]; None means plain causal over (cache + T).
        """
        if self.embed_tokens is None:
            raise RuntimeError("drafter has no base attached: call attach_base(embed_tokens, lm_head) first")
        emb = self.embed_tokens(input_ids).to(self.fc.weight.dtype)
        x = self.fc(torch.cat([emb, hidden.to(self.fc.weight.dtype)], dim=-1))
        if attention_mask is None:
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            attention_mask = causal_mask(x.shape[1], x.dtype, x.device, past)
        pos_emb = self.rotary_emb(x, position_ids)
        for layer in self.layers:
            out = layer(x, attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=past_key_values, use_cache=past_key_values is not None,
                        position_embeddings=pos_emb)
            x = out[0] if isinstance(out, tuple) else out
        return x

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.lm_head(features.to(self.lm_head.weight.dtype))

    # ----- checkpoint I/O -----
    def config_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": "eagle_drafter",
            "base_hidden_size": self.base_hidden_size,
            "draft_config": self.hf_config.to_dict(),
            **self.meta,
        }

    def save_pretrained(self, out_dir: str | Path, dtype: Optional[torch.dtype] = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if dtype is not None else v).detach().contiguous().cpu()
                 for k, v in self.state_dict().items() if not k.startswith("rotary_emb.")}
        atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        atomic_write_json(out / CONFIG_NAME, self.config_dict())
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu", dtype: Optional[torch.dtype] = None) -> "EagleDrafter":
        path = Path(path)
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
        meta = {k: v for k, v in cfg.items()
                if k not in ("format", "format_version", "architecture", "base_hidden_size", "draft_config")}
        model = cls(_hf_config_from_dict(cfg["draft_config"]), cfg["base_hidden_size"], meta=meta)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise ConfigError(f"no drafter weights at {weights}")
        state = load_file(str(weights))
        expected = {k for k in model.state_dict() if not k.startswith("rotary_emb.")}
        missing, unexpected = expected - state.keys(), state.keys() - expected
        if missing or unexpected:
            raise ConfigError(f"{weights}: missing keys {sorted(missing)[:5]}, unexpected keys {sorted(unexpected)[:5]}")
        for k, v in state.items():
            want = model.state_dict()[k].shape
            if v.shape != want:
                raise ConfigError(f"{weights}: key {k} has shape {tuple(v.shape)}, expected {tuple(want)}")
        model.load_state_dict(state, strict=False)
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def build_drafter(base, draft_layers: int = 1, overrides: Optional[dict] = None, meta: Optional[dict] = None) -> EagleDrafter:
    """A fresh drafter for a FrozenBase, attached to its embedding and lm_head."""
    cfg = draft_hf_config(base.config, draft_layers, overrides)
    drafter = EagleDrafter(cfg, base.hidden_size, meta=meta)
    return drafter.to(base.device).attach_base(base.embed_tokens, base.lm_head)
