"""The P-EAGLE drafter: EAGLE-3's input layer, any number of plain decoder layers after it, and a learned
`mask_hidden` that stands in for base features at the positions it drafts in parallel.

    g_t   = fc(cat(f^{l1}_t, f^{l2}_t, f^{l3}_t))       slot 1 and every committed position (base features)
    g_mask = fc(mask_hidden)                            slots 2..k (mask_hidden: [1, k·H_base], learned)
    layer 0:  h = g + attn(cat(input_layernorm(embed(token)), hidden_norm(g))) ; h = h + mlp(norm(h))
    layer i:  the draft family's pre-norm decoder layer (attention input H)
    logits = lm_head(norm(h))
One drafter call over [slot 1, mask × (k − 1)] at consecutive positions, with plain causal attention over the
committed positions' keys and the slots before, drafts k tokens — what vLLM 0.32 runs for speculators `peagle`
checkpoints (`Eagle3LlamaForCausalLM` with `parallel_drafting`: layer 0 reads 2·H, layers ≥ 1 read H; mask slots
take the `mask_token_id` embedding and `combine_hidden_states(mask_hidden)`). Keys follow vLLM's: `layers.{i}.*`,
`fc.weight`, `norm.weight`, `lm_head.weight`, `mask_hidden`, `d2t` / `t2d` for a reduced draft vocabulary.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ...config.errors import ConfigError
from ...modeling.architectures import register_architecture
from ...modeling.compat import require_own_parts_for_width
from ...modeling.draft_config import draft_hf_config
from ...modeling.drafter_base import DrafterBase, build_for_base
from ...modeling.head import apply_head
from ...modeling.eagle3_layer import Eagle3InputLayer, mlp_out
from ...modeling.family import family_stack, rope_kwargs
from ...modeling.masks import causal_mask
from ...utils.hf_compat import cache_kw
from ..block_common.model import check_mask_token, require_plain_layers


def plain_layer(layer: nn.Module, h: torch.Tensor, attention_kwargs: dict) -> torch.Tensor:
    """Layers ≥ 1: the draft family's pre-norm decoder layer, written out (as vLLM computes it)."""
    h = h + layer.self_attn(hidden_states=layer.input_layernorm(h), **attention_kwargs)[0]
    return h + mlp_out(layer, h)


@register_architecture("peagle_drafter")
class PEagleDrafter(DrafterBase):
    EXTRA_KEYS = ("feature_layers", "mask_token_id")
    PROPOSER = "parallel"  # families/peagle/proposer.py

    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None,
                 base_embed_dim: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = True,
                 draft_vocab_size: Optional[int] = None, meta: Optional[dict] = None,
                 feature_layers: Optional[list] = None, mask_token_id: int = 0):
        width = hf_config.hidden_size
        if not feature_layers:
            raise ConfigError("a P-EAGLE drafter needs its base feature layer ids (data.aux_layer_ids)")
        check_mask_token(mask_token_id, base_vocab_size)
        require_own_parts_for_width("P-EAGLE", width, base_hidden_size, base_embed_dim, own_embedding, own_lm_head)
        super().__init__(hf_config, base_hidden_size, base_vocab_size, base_embed_dim, own_embedding, own_lm_head,
                         draft_vocab_size, meta, head_in_features=width, embed_dim=width)
        self.feature_layers = list(feature_layers)
        self.mask_token_id = int(mask_token_id)
        self.fc = nn.Linear(len(self.feature_layers) * base_hidden_size, width, bias=False)
        # What the mask slots read in place of base features; small, so that fc(mask) starts near a typical g.
        self.mask_hidden = nn.Parameter(torch.randn(1, len(self.feature_layers) * base_hidden_size) * 0.02)
        skeleton = family_stack(hf_config)
        require_plain_layers(skeleton.layers, hf_config.model_type, "P-EAGLE", "llama or qwen3 (what vLLM serves)")
        layer0 = Eagle3InputLayer(skeleton.layers[0], width, "P-EAGLE layer 0", "llama or qwen3: what vLLM serves")
        self.layers = nn.ModuleList([layer0, *skeleton.layers[1:]])
        self.norm = skeleton.norm
        self.rotary_emb = skeleton.rotary_emb
        self._rope_kwargs = rope_kwargs(self.rotary_emb)

    def forward(self, hidden: torch.Tensor, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None, from_base: bool = True,
                ttt_state: Optional[dict] = None) -> torch.Tensor:
        """hidden: fused base features [B,T,k·H_base] (or `mask_features`); input_ids [B,T] → outputs
        [B,T,H_draft] before the final norm. `from_base` is the tree proposer's flag: P-EAGLE always reads
        k·H_base-wide inputs."""
        if not from_base:
            raise ConfigError("P-EAGLE drafts every slot from base features or mask_hidden, never from its own "
                              "outputs (its proposer is 'parallel')")
        dtype = self.fc.weight.dtype
        h = self.fc(hidden.to(dtype))
        emb = self.embed_ids(input_ids).to(dtype)
        if attention_mask is None and past_key_values is not None:
            attention_mask = causal_mask(h.shape[1], h.dtype, h.device, past_key_values.get_seq_length())
        attention = {"position_embeddings": self.rotary_emb(h, position_ids, **self._rope_kwargs),
                     "attention_mask": attention_mask, "use_cache": past_key_values is not None,
                     "position_ids": position_ids, **cache_kw(past_key_values),
                     **({"ttt_state": ttt_state} if ttt_state is not None else {})}
        h = self.layers[0](emb, h, **attention)
        for layer in self.layers[1:]:
            h = plain_layer(layer, h, attention)
        return h

    def mask_features(self, batch: int, slots: int) -> torch.Tensor:
        """mask_hidden for `slots` mask slots of each of `batch` rows: [batch, slots, k·H_base] (a view)."""
        return self.mask_hidden.expand(batch, slots, -1)

    def mask_ids(self, batch: int, slots: int, device) -> torch.Tensor:
        return torch.full((batch, slots), self.mask_token_id, dtype=torch.long, device=device)

    def decoder_layers(self) -> list[nn.Module]:
        return list(self.layers)

    @property
    def head(self) -> nn.Module:
        """The vocabulary head the drafter's logits come from: its own lm_head, or the base's."""
        return self.lm_head if self.own_lm_head else self.base_lm_head

    def head_input(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.norm(outputs)

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        return apply_head(self.head, self.head_input(outputs))


def build_peagle_drafter(base, feature_layers: list[int], mask_token_id: int, overrides: Optional[dict] = None,
                         meta: Optional[dict] = None, family: Optional[str] = None, hidden_size: Optional[int] = None,
                         own_embedding: bool = False, own_lm_head: bool = True,
                         draft_vocab: Optional[torch.Tensor] = None, draft_layers: int = 2) -> PEagleDrafter:
    cfg = draft_hf_config(base.config, draft_layers, family, hidden_size, overrides)
    return build_for_base(PEagleDrafter, base, cfg, meta, own_embedding, own_lm_head, draft_vocab,
                          feature_layers=base.check_layer_ids(feature_layers, "data.aux_layer_ids"),
                          mask_token_id=mask_token_id)
