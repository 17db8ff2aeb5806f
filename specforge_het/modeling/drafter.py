"""The EAGLE-1/2 drafter: `fc(cat(embed(token_{i+1}), h_i))` → decoder layer(s) → predicted h_{i+1}.

Heterogeneous by construction: the decoder layers are the HF classes of any decoder family (by default the
base's own), built from that family's config (`draft_config.py`) with `num_hidden_layers = draft_layers`, at any
width H_draft. `fc` maps [embedding, base feature] into H_draft; when H_draft ≠ H_base, `out_proj` maps the
draft output back to the base width, because EAGLE-1/2 regresses the base's features and feeds its own
predictions back as the next step's feature.

Embedding and lm_head are the base's, frozen and shared, by default: they are attached, not registered, so the
drafter's parameters, optimizer and checkpoints never contain them. Optionally the drafter owns (and trains) its
embedding (at H_draft) and/or its lm_head; an own lm_head may cover a reduced draft vocabulary (`vocab.py`), with
`d2t` / `t2d` buffers mapping draft ids to target ids (draft id j ↦ target id j + d2t[j]).

Checkpoint layout (our format): `model.safetensors` (fc.*, layers.N.*, [out_proj, embed, lm_head, d2t, t2d])
+ `drafter_config.json`.
"""
from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config.schema import ConfigError
from ..utils.io import atomic_write, atomic_write_json
from .draft_config import draft_hf_config, hf_config_from_dict

FORMAT = "specforge_het.drafter"
FORMAT_VERSION = 1
CONFIG_NAME = "drafter_config.json"
WEIGHTS_NAME = "model.safetensors"


def causal_mask(q_len: int, dtype: torch.dtype, device, past_len: int = 0) -> torch.Tensor:
    """Additive [1, 1, q, past+q] causal mask (0 = attend, finfo.min = blocked)."""
    mask = torch.full((q_len, past_len + q_len), torch.finfo(dtype).min, dtype=dtype, device=device)
    mask = torch.triu(mask, diagonal=past_len + 1)
    return mask[None, None]


class EagleDrafter(nn.Module):
    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None,
                 base_embed_dim: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = False,
                 draft_vocab_size: Optional[int] = None, meta: Optional[dict] = None):
        super().__init__()
        from transformers import AutoModel

        self.hf_config = hf_config
        self.meta = dict(meta or {})
        self.base_hidden_size = base_hidden_size
        self.base_vocab_size = base_vocab_size
        width = hf_config.hidden_size
        if (own_embedding or own_lm_head) and not base_vocab_size:
            raise ConfigError("a drafter with its own embedding or lm_head needs the base vocabulary size")
        if draft_vocab_size is not None and not own_lm_head:
            raise ConfigError("modeling.draft_vocab_size needs the drafter's own lm_head (modeling.lm_head: own)")
        if draft_vocab_size is not None and not 0 < draft_vocab_size <= base_vocab_size:
            raise ConfigError(f"modeling.draft_vocab_size: expected 1..{base_vocab_size} (the base vocabulary), "
                              f"got {draft_vocab_size}")
        self.own_embedding, self.own_lm_head = own_embedding, own_lm_head
        self.embed = nn.Embedding(base_vocab_size, width) if own_embedding else None
        emb_dim = width if own_embedding else (base_embed_dim or base_hidden_size)
        self.fc = nn.Linear(emb_dim + base_hidden_size, width, bias=True)
        # Build the family's decoder stack without its (vocab-sized) embedding: we share the base's.
        skeleton_cfg = copy.deepcopy(hf_config)
        skeleton_cfg.vocab_size = 2
        skeleton_cfg.tie_word_embeddings = False
        skeleton_cfg.pad_token_id = None
        skeleton = AutoModel.from_config(skeleton_cfg)
        self.layers = skeleton.layers
        self.rotary_emb = skeleton.rotary_emb
        # Gemma-3-style rotary modules take the layer type; every draft layer is full attention.
        self._rope_kwargs = ({"layer_type": "full_attention"}
                             if "layer_type" in inspect.signature(self.rotary_emb.forward).parameters else {})
        self.out_proj = nn.Linear(width, base_hidden_size, bias=False) if width != base_hidden_size else None
        self.draft_vocab_size = draft_vocab_size or (base_vocab_size if own_lm_head else None)
        self.lm_head = nn.Linear(base_hidden_size, self.draft_vocab_size, bias=False) if own_lm_head else None
        if draft_vocab_size is not None:
            self.register_buffer("d2t", torch.zeros(draft_vocab_size, dtype=torch.long))
            self.register_buffer("t2d", torch.ones(base_vocab_size, dtype=torch.bool))
        else:
            self.d2t = self.t2d = None
        object.__setattr__(self, "base_embed_tokens", None)
        object.__setattr__(self, "base_lm_head", None)

    @property
    def reduced_vocab(self) -> bool:
        return self.d2t is not None

    def attach_base(self, embed_tokens: nn.Module, lm_head: nn.Module) -> "EagleDrafter":
        """Share the base's frozen embedding and lm_head (kept out of parameters() and state_dict()).
        The base lm_head also gives the training targets when the drafter has its own head."""
        object.__setattr__(self, "base_embed_tokens", embed_tokens)
        object.__setattr__(self, "base_lm_head", lm_head)
        return self

    def check_base(self, base) -> "EagleDrafter":
        """Fail clearly when this drafter was trained for another base (width, vocabulary, tokenizer)."""
        where = self.meta.get("base_model_name_or_path", "its training base")
        if base.hidden_size != self.base_hidden_size:
            raise ConfigError(f"drafter expects base hidden_size {self.base_hidden_size} (trained on {where}), "
                              f"but the base has {base.hidden_size}")
        if self.base_vocab_size is not None and base.vocab_size != self.base_vocab_size:
            raise ConfigError(f"drafter expects a base vocabulary of {self.base_vocab_size} tokens (trained on "
                              f"{where}), but the base has {base.vocab_size}: the tokenizers differ")
        fp = self.meta.get("tokenizer_fingerprint")
        if fp and base.tokenizer is not None:
            from .base import tokenizer_fingerprint

            if tokenizer_fingerprint(base.tokenizer) != fp:
                raise ConfigError(f"drafter was trained with another tokenizer than this base's ({where}): token "
                                  "ids would mean different things; train a drafter for this base")
        return self

    def set_draft_vocab(self, used: torch.Tensor) -> None:
        """Restrict the own lm_head to the sorted target ids `used` (see REFERENCE: d2t[i] = used[i] − i)."""
        used = used.to(torch.long).sort().values
        if used.numel() != self.draft_vocab_size:
            raise ValueError(f"draft vocabulary has {used.numel()} ids, expected {self.draft_vocab_size}")
        self.d2t.copy_(used - torch.arange(used.numel(), device=used.device))
        self.t2d.zero_()
        self.t2d[used] = True

    @torch.no_grad()
    def init_lm_head_from_base(self) -> None:
        """Start an own lm_head at the base's rows (for the draft vocabulary): training refines, not relearns."""
        if self.lm_head is None or self.base_lm_head is None:
            return
        w = self.base_lm_head.weight
        rows = self.draft_to_target(torch.arange(self.draft_vocab_size, device=w.device))
        self.lm_head.weight.copy_(w[rows].to(self.lm_head.weight.dtype))

    def draft_to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids] if self.reduced_vocab else draft_ids

    def forward(self, hidden: torch.Tensor, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None) -> torch.Tensor:
        """hidden [B,T,H_base] base features h_i, input_ids [B,T] tokens t_{i+1} → predicted h_{i+1} [B,T,H_base].

        attention_mask: additive 4D [B|1, 1, T, past+T]; None means plain causal over (cache + T).
        """
        embed = self.embed if self.own_embedding else self.base_embed_tokens
        if embed is None:
            raise RuntimeError("drafter has no base attached: call attach_base(embed_tokens, lm_head) first")
        emb = embed(input_ids).to(self.fc.weight.dtype)
        x = self.fc(torch.cat([emb, hidden.to(self.fc.weight.dtype)], dim=-1))
        if attention_mask is None:
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            attention_mask = causal_mask(x.shape[1], x.dtype, x.device, past)
        pos_emb = self.rotary_emb(x, position_ids, **self._rope_kwargs)
        for layer in self.layers:
            out = layer(x, attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=past_key_values, use_cache=past_key_values is not None,
                        position_embeddings=pos_emb)
            x = out[0] if isinstance(out, tuple) else out
        return self.out_proj(x) if self.out_proj is not None else x

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits of (base-width) features."""
        head = self.lm_head if self.own_lm_head else self.base_lm_head
        return head(features.to(head.weight.dtype))

    @torch.no_grad()
    def target_logits(self, base_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training targets: the base's logits of its own features, restricted to the draft vocabulary, and
        whether the base's top token is in that vocabulary (positions where it is not cannot be learned)."""
        full = self.base_lm_head(base_features.to(self.base_lm_head.weight.dtype))
        if not self.reduced_vocab:
            return full, torch.ones(full.shape[:-1], dtype=torch.bool, device=full.device)
        return full[..., self.t2d], self.t2d[full.argmax(-1)]

    # ----- checkpoint I/O -----
    def config_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": "eagle_drafter",
            "base_hidden_size": self.base_hidden_size,
            "base_vocab_size": self.base_vocab_size,
            "base_embed_dim": self.fc.in_features - self.base_hidden_size if not self.own_embedding else None,
            "own_embedding": self.own_embedding,
            "own_lm_head": self.own_lm_head,
            "draft_vocab_size": self.draft_vocab_size if self.reduced_vocab else None,
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
        structural = ("base_hidden_size", "base_vocab_size", "base_embed_dim", "own_embedding", "own_lm_head",
                      "draft_vocab_size")
        meta = {k: v for k, v in cfg.items()
                if k not in ("format", "format_version", "architecture", "draft_config") + structural}
        if "base_hidden_size" not in cfg or "draft_config" not in cfg:
            raise ConfigError(f"{cfg_path}: missing field 'base_hidden_size' or 'draft_config'")
        model = cls(hf_config_from_dict(cfg["draft_config"]), meta=meta,
                    **{k: cfg[k] for k in structural if cfg.get(k) is not None})
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


def build_drafter(base, draft_layers: int = 1, overrides: Optional[dict] = None, meta: Optional[dict] = None,
                  family: Optional[str] = None, hidden_size: Optional[int] = None, own_embedding: bool = False,
                  own_lm_head: bool = False, draft_vocab: Optional[torch.Tensor] = None) -> EagleDrafter:
    """A fresh drafter for a FrozenBase, attached to its embedding and lm_head. `draft_vocab`: the sorted target
    ids of a reduced draft vocabulary (implies an own lm_head)."""
    from .base import tokenizer_fingerprint

    cfg = draft_hf_config(base.config, draft_layers, family, hidden_size, overrides)
    meta = dict(meta or {})
    if base.tokenizer is not None:
        meta.setdefault("tokenizer_fingerprint", tokenizer_fingerprint(base.tokenizer))
    own_lm_head = own_lm_head or draft_vocab is not None
    drafter = EagleDrafter(cfg, base.hidden_size, base.vocab_size, base.embed_tokens.weight.shape[1], own_embedding,
                           own_lm_head, None if draft_vocab is None else int(draft_vocab.numel()), meta=meta)
    if draft_vocab is not None:
        drafter.set_draft_vocab(draft_vocab)
    drafter = drafter.to(base.device).attach_base(base.embed_tokens, base.lm_head)
    drafter.init_lm_head_from_base()
    if own_embedding and drafter.embed.weight.shape == base.embed_tokens.weight.shape:
        with torch.no_grad():
            drafter.embed.weight.copy_(base.embed_tokens.weight)
    return drafter
