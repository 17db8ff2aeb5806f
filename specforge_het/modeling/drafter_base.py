"""What every drafter module is: a small decoder over base features and tokens, with the base's embedding and
lm_head (shared and frozen, or its own), and the two hooks the decode loop calls (`prefill`, `new_cache`).

The rest lives beside it, one concern per module:
- `vocab.DraftVocabMixin`: the reduced draft vocabulary (d2t / t2d) and the training targets restricted to it;
- `checkpoint.CheckpointMixin`: our checkpoint format (save_pretrained / from_pretrained, `load_drafter`);
- `compat`: whether a drafter fits a base (`check_base`), and the metadata that check reads;
- `family`: the draft family's decoder stack; `masks`: attention masks.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config.errors import ConfigError
from .architectures import register_architecture
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointMixin, load_drafter
from .compat import base_meta, check_drafter_base, require_own_parts_for_width
from .family import family_stack, rope_kwargs
from .masks import additive_mask, causal_mask, padded_causal_mask
from .vocab import DraftVocabMixin

# Re-exported: the names callers have always imported from here (tests, plugins and users' scripts).
__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "DrafterBase", "additive_mask", "base_meta", "build_for_base",
           "causal_mask", "family_stack", "load_drafter", "padded_causal_mask", "register_architecture",
           "require_own_parts_for_width", "rope_kwargs"]


class DrafterBase(DraftVocabMixin, CheckpointMixin, nn.Module):
    # Which base features the drafter reads: None = the last hidden state; a list = those blocks' outputs.
    feature_layers: Optional[list] = None
    token_only = False  # True for drafters that read no base features (the classic draft model)

    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None,
                 base_embed_dim: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = False,
                 draft_vocab_size: Optional[int] = None, meta: Optional[dict] = None, head_in_features: int = 0,
                 embed_dim: int = 0):
        super().__init__()
        self.hf_config = hf_config
        self.meta = dict(meta or {})
        self.base_hidden_size = base_hidden_size
        self.base_vocab_size = base_vocab_size
        self.base_embed_dim = base_embed_dim or base_hidden_size
        if (own_embedding or own_lm_head) and not base_vocab_size:
            raise ConfigError("a drafter with its own embedding or lm_head needs the base vocabulary size")
        if draft_vocab_size is not None and not own_lm_head:
            raise ConfigError("modeling.draft_vocab_size needs the drafter's own lm_head (modeling.lm_head: own)")
        if draft_vocab_size is not None and not 0 < draft_vocab_size <= base_vocab_size:
            raise ConfigError(f"modeling.draft_vocab_size: expected 1..{base_vocab_size} (the base vocabulary), "
                              f"got {draft_vocab_size}")
        self.own_embedding, self.own_lm_head = own_embedding, own_lm_head
        self.embed = nn.Embedding(base_vocab_size, embed_dim) if own_embedding else None
        self.draft_vocab_size = draft_vocab_size or (base_vocab_size if own_lm_head else None)
        self.lm_head = nn.Linear(head_in_features, self.draft_vocab_size, bias=False) if own_lm_head else None
        if draft_vocab_size is not None:
            self.register_buffer("d2t", torch.zeros(draft_vocab_size, dtype=torch.long))
            self.register_buffer("t2d", torch.ones(base_vocab_size, dtype=torch.bool))
        else:
            self.d2t = self.t2d = None
        object.__setattr__(self, "base_embed_tokens", None)
        object.__setattr__(self, "base_lm_head", None)

    # ----- the decode loop's hooks -----
    def prefill(self, hidden, prompt_ids: torch.Tensor, next_tokens: torch.Tensor, positions: torch.Tensor, cache,
                valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first drafter call of a generation: rows 0..n−1 of the prompt (base features h_t, tokens t+1).
        valid [B, n] marks real (not padding) rows of a left-padded batch. → (outputs [B, n, ·], which of the
        cache slots this call wrote are real [B, slots])."""
        if valid is None:
            valid = torch.ones(next_tokens.shape, dtype=torch.bool, device=next_tokens.device)
        mask = padded_causal_mask(valid, None, self.compute_dtype)
        return self(hidden, next_tokens, positions, attention_mask=mask, past_key_values=cache), valid

    def new_cache(self, base_cache):
        """The drafter's KV cache for one decode (a drafter sharing cache layers with the base overrides this)."""
        from transformers import DynamicCache

        return DynamicCache()

    def decoder_layers(self) -> list[nn.Module]:
        """The draft decoder layers, in order (what modeling.init_from_base_layer / lora_rank act on)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose decoder layers")

    @property
    def compute_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ----- the base's embedding and lm_head -----
    def attach_base(self, embed_tokens: nn.Module, lm_head: nn.Module) -> "DrafterBase":
        """Share the base's frozen embedding and lm_head (kept out of parameters() and state_dict()).
        The base lm_head also gives the training targets when the drafter has its own head."""
        object.__setattr__(self, "base_embed_tokens", embed_tokens)
        object.__setattr__(self, "base_lm_head", lm_head)
        return self

    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        embed = self.embed if self.own_embedding else self.base_embed_tokens
        if embed is None:
            raise RuntimeError("drafter has no base attached: call attach_base(embed_tokens, lm_head) first")
        return embed(input_ids)

    def check_base(self, base) -> "DrafterBase":
        """Fail clearly when this drafter was trained for another base (see compat.check_drafter_base)."""
        check_drafter_base(self, base)
        return self


def build_for_base(cls, base, hf_config, meta: Optional[dict], own_embedding: bool, own_lm_head: bool,
                   draft_vocab: Optional[torch.Tensor], **extra) -> DrafterBase:
    """A fresh drafter of class `cls` for a FrozenBase: reduced vocabulary set, base attached, own embedding and
    lm_head started from the base's weights where the shapes allow. `draft_vocab` implies an own lm_head."""
    own_lm_head = own_lm_head or draft_vocab is not None
    drafter = cls(hf_config, base.hidden_size, base.vocab_size, base.embed_tokens.weight.shape[1], own_embedding,
                  own_lm_head, None if draft_vocab is None else int(draft_vocab.numel()), meta=base_meta(base, meta),
                  **extra)
    if draft_vocab is not None:
        drafter.set_draft_vocab(draft_vocab)
    drafter = drafter.to(base.device).attach_base(base.embed_tokens, base.lm_head)
    drafter.init_lm_head_from_base()
    if own_embedding and drafter.embed.weight.shape == base.embed_tokens.weight.shape:
        with torch.no_grad():
            drafter.embed.weight.copy_(base.embed_tokens.weight)
    return drafter
