"""EAGLE-3's input decoder layer (its "midlayer"), shared by the drafters that read fused base features this way
(EAGLE-3 / 3.1, and P-EAGLE's layer 0): attention over [input_layernorm(embedding), hidden_norm(hidden)] — q/k/v
widened to 2·H — with the residual on the un-normed hidden, then the layer's MLP. Attribute names are the engines'
(`self_attn`, `mlp`, `input_layernorm`, `hidden_norm`, `post_attention_layernorm`)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..config.errors import ConfigError


def mlp_out(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """layer.mlp(post_attention_layernorm(h)); MoE blocks return (output, router logits): the output."""
    out = layer.mlp(layer.post_attention_layernorm(h))
    return out[0] if isinstance(out, tuple) else out


class Eagle3InputLayer(nn.Module):
    def __init__(self, family_layer: nn.Module, width: int, who: str, families: str):
        """family_layer: one decoder layer of the draft family (its modules are taken over); `who` and `families`
        name the drafter and the families to choose in the error for a layer without separate q/k/v."""
        super().__init__()
        attn = family_layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):
            proj = getattr(attn, name, None)
            if not isinstance(proj, nn.Linear):
                raise ConfigError(f"{who}: {type(attn).__name__} has no separate {name}; choose a draft family with "
                                  f"q/k/v projections ({families})")
            setattr(attn, name, nn.Linear(2 * width, proj.out_features, bias=proj.bias is not None))
        self.self_attn = attn
        self.mlp = family_layer.mlp
        self.input_layernorm = family_layer.input_layernorm
        self.hidden_norm = copy.deepcopy(family_layer.input_layernorm)
        self.post_attention_layernorm = family_layer.post_attention_layernorm

    def forward(self, emb: torch.Tensor, hidden: torch.Tensor, **attention) -> torch.Tensor:
        """emb, hidden [B, T, H] → [B, T, H]; `attention`: the attention module's keywords (position_embeddings,
        attention_mask, the cache, ...)."""
        x = torch.cat([self.input_layernorm(emb), self.hidden_norm(hidden)], dim=-1)
        hidden = hidden + self.self_attn(hidden_states=x, **attention)[0]
        return hidden + mlp_out(self, hidden)
