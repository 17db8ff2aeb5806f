"""The EAGLE-1/2 drafter: `fc(cat(embed(token_{i+1}), h_i))` → decoder layer(s) → predicted h_{i+1}.

Heterogeneous by construction: the decoder layers are the HF classes of any decoder family (by default the
base's own), built from that family's config (`draft_config.py`) with `num_hidden_layers = draft_layers`, at any
width H_draft. `fc` maps [embedding, base feature] into H_draft; when H_draft ≠ H_base, `out_proj` maps the
draft output back to the base width, because EAGLE-1/2 regresses the base's features and feeds its own
predictions back as the next step's feature.

Embedding and lm_head are the base's, frozen and shared, by default (see `drafter_base.py`); optionally the
drafter owns its embedding (at H_draft) and/or its lm_head (on base-width features), possibly over a reduced
draft vocabulary. Weights: fc.*, layers.N.* (the official EAGLE layout) [+ out_proj, embed, lm_head, d2t, t2d].
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ...modeling.architectures import register_architecture
from ...modeling.draft_config import draft_hf_config
from ...modeling.drafter_base import DrafterBase, build_for_base
from ...modeling.head import apply_head
from ...modeling.family import family_stack, rope_kwargs
from ...modeling.masks import causal_mask
from ...utils.hf_compat import cache_kw

__all__ = ["EagleDrafter", "build_drafter", "causal_mask"]


@register_architecture("eagle_drafter")
class EagleDrafter(DrafterBase):
    EXTRA_KEYS = ("first_layer_input_norm", "fc_bias")

    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None,
                 base_embed_dim: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = False,
                 draft_vocab_size: Optional[int] = None, meta: Optional[dict] = None,
                 first_layer_input_norm: bool = True, fc_bias: bool = True):
        width = hf_config.hidden_size
        super().__init__(hf_config, base_hidden_size, base_vocab_size, base_embed_dim, own_embedding, own_lm_head,
                         draft_vocab_size, meta, head_in_features=base_hidden_size, embed_dim=width)
        emb_dim = width if own_embedding else self.base_embed_dim
        # The official EAGLE-1/2 fc has a bias (SGLang serves it); vLLM's EAGLE-1 fc has none (modeling.fc_bias).
        self.fc_bias = fc_bias
        self.fc = nn.Linear(emb_dim + base_hidden_size, width, bias=fc_bias)
        skeleton = family_stack(hf_config)
        self.layers = skeleton.layers
        # The official EAGLE-1/2 layout (and SGLang's LlamaForCausalLMEagle) has no input norm on layer 0: the fc
        # output enters attention as is. New drafters follow it; checkpoints saved before the flag keep their norm.
        self.first_layer_input_norm = first_layer_input_norm
        if not first_layer_input_norm:
            self.layers[0].input_layernorm = nn.Identity()
        self.rotary_emb = skeleton.rotary_emb
        self._rope_kwargs = rope_kwargs(self.rotary_emb)
        self.out_proj = nn.Linear(width, base_hidden_size, bias=False) if width != base_hidden_size else None

    def forward(self, hidden: torch.Tensor, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None, from_base: bool = True,
                ttt_state: Optional[dict] = None) -> torch.Tensor:
        """hidden [B,T,H_base] features h_i (the base's, or this drafter's own predictions: the same space),
        input_ids [B,T] tokens t_{i+1} → predicted h_{i+1} [B,T,H_base].

        attention_mask: additive 4D [B|1, 1, T, past+T]; None = causal (over the cache, if any).
        ttt_state: a dict shared by the steps of one unrolled forward (see ttt_attention.py)."""
        emb = self.embed_ids(input_ids).to(self.fc.weight.dtype)
        x = self.fc(torch.cat([emb, hidden.to(self.fc.weight.dtype)], dim=-1))
        if attention_mask is None and past_key_values is not None:
            attention_mask = causal_mask(x.shape[1], x.dtype, x.device, past_key_values.get_seq_length())
        pos_emb = self.rotary_emb(x, position_ids, **self._rope_kwargs)
        extra = {"ttt_state": ttt_state} if ttt_state is not None else {}
        for layer in self.layers:
            out = layer(x, attention_mask=attention_mask, position_ids=position_ids,
                        **cache_kw(past_key_values), use_cache=past_key_values is not None,
                        position_embeddings=pos_emb, **extra)
            x = out[0] if isinstance(out, tuple) else out
        return self.out_proj(x) if self.out_proj is not None else x

    def decoder_layers(self) -> list[nn.Module]:
        return list(self.layers)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits of (base-width) features."""
        head = self.lm_head if self.own_lm_head else self.base_lm_head
        return apply_head(head, features)


def build_drafter(base, draft_layers: int = 1, overrides: Optional[dict] = None, meta: Optional[dict] = None,
                  family: Optional[str] = None, hidden_size: Optional[int] = None, own_embedding: bool = False,
                  own_lm_head: bool = False, draft_vocab: Optional[torch.Tensor] = None,
                  fc_bias: bool = True) -> EagleDrafter:
    """A fresh EAGLE-1/2 drafter for a FrozenBase (see `build_for_base`)."""
    cfg = draft_hf_config(base.config, draft_layers, family, hidden_size, overrides)
    return build_for_base(EagleDrafter, base, cfg, meta, own_embedding, own_lm_head, draft_vocab,
                          first_layer_input_norm=False, fc_bias=fc_bias)
