"""The EAGLE-3 drafter: fused multi-layer base features, one "midlayer", its own head, trained by unrolling.

    g_t = fc(cat(f^{l1}_t, f^{l2}_t, f^{l3}_t))                    fc: k·H_base → H_draft, no bias
    x   = cat(input_layernorm(embed(token_{t+1})), hidden_norm(g_t))   → the midlayer's attention (q/k/v take 2·H_draft)
    o_t = midlayer(x) with the residual on g_t                       → logits = lm_head(norm(o_t)) over the draft vocab
The next draft step feeds o_t in place of g_t (no fc): the drafter runs on its own outputs, which the training-time
test (TTT) unroll teaches it to do. EAGLE-3.1 flags (vLLM's and SGLang's names): `fc_norm` puts an RMSNorm on each
base feature f^{l} before fc; `norm_output` feeds norm(o_t) to the next step instead of o_t (logits read it as is).
The midlayer is built from any decoder family's modules (attention, MLP or MoE, norms), with the attention's q/k/v
projections widened to 2·H_draft; keys follow SGLang's `LlamaForCausalLMEagle3` (`midlayer.*`, `fc.weight`,
`norm.weight`, `lm_head.weight`, `d2t`, `t2d`).
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
from ...modeling.eagle3_layer import Eagle3InputLayer
from ...modeling.family import family_stack, rope_kwargs
from ...modeling.masks import causal_mask
from ...utils.hf_compat import cache_kw


@register_architecture("eagle3_drafter")
class Eagle3Drafter(DrafterBase):
    EXTRA_KEYS = ("feature_layers", "fc_norm", "norm_output")

    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None,
                 base_embed_dim: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = True,
                 draft_vocab_size: Optional[int] = None, meta: Optional[dict] = None,
                 feature_layers: Optional[list] = None, fc_norm: bool = False, norm_output: bool = False):
        width = hf_config.hidden_size
        if hf_config.num_hidden_layers != 1:
            raise ConfigError(f"EAGLE-3 drafters have one midlayer; got modeling.draft_layers = "
                              f"{hf_config.num_hidden_layers}")
        if not feature_layers:
            raise ConfigError("EAGLE-3 drafter needs its base feature layer ids (data.aux_layer_ids)")
        require_own_parts_for_width("EAGLE-3", width, base_hidden_size, base_embed_dim, own_embedding, own_lm_head)
        super().__init__(hf_config, base_hidden_size, base_vocab_size, base_embed_dim, own_embedding, own_lm_head,
                         draft_vocab_size, meta, head_in_features=width, embed_dim=width)
        self.feature_layers = list(feature_layers)
        self.fc = nn.Linear(len(self.feature_layers) * base_hidden_size, width, bias=False)
        self.norm_output = bool(norm_output)
        self.fc_norms: Optional[nn.ModuleList] = None  # EAGLE-3.1 per-feature norms (exported as fc_norm.{i})
        if fc_norm:
            from transformers.models.llama.modeling_llama import LlamaRMSNorm

            # The engines' plain RMSNorm (weight · x / rms), whatever the draft family's own norm is.
            eps = getattr(hf_config, "rms_norm_eps", 1e-6)
            self.fc_norms = nn.ModuleList(LlamaRMSNorm(base_hidden_size, eps=eps) for _ in self.feature_layers)
        skeleton = family_stack(hf_config)
        self.midlayer = Eagle3InputLayer(skeleton.layers[0], width, "EAGLE-3 midlayer",
                                         "llama, qwen2, qwen3, qwen3_moe, mistral, gemma…")
        self.norm = skeleton.norm
        self.rotary_emb = skeleton.rotary_emb
        self._rope_kwargs = rope_kwargs(self.rotary_emb)

    def forward(self, hidden: torch.Tensor, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None, from_base: bool = True,
                ttt_state: Optional[dict] = None) -> torch.Tensor:
        """hidden: the base's fused features [B,T,k·H_base] (from_base) or this drafter's previous outputs
        [B,T,H_draft]; input_ids [B,T] tokens t_{i+1} → outputs o [B,T,H_draft] (fed to the next step: pre-norm, or
        post-norm with norm_output)."""
        dtype = self.fc.weight.dtype
        g = self.fc(self._normed_features(hidden.to(dtype))) if from_base else hidden.to(dtype)
        emb = self.embed_ids(input_ids).to(dtype)
        if attention_mask is None and past_key_values is not None:
            attention_mask = causal_mask(g.shape[1], g.dtype, g.device, past_key_values.get_seq_length())
        pos_emb = self.rotary_emb(g, position_ids, **self._rope_kwargs)
        extra = {"ttt_state": ttt_state} if ttt_state is not None else {}
        out = self.midlayer(emb, g, position_embeddings=pos_emb, attention_mask=attention_mask,
                            **cache_kw(past_key_values), use_cache=past_key_values is not None,
                            position_ids=position_ids, **extra)
        return self.norm(out) if self.norm_output else out

    @property
    def fc_norm(self) -> bool:
        """The EAGLE-3.1 flag, as saved and exported: whether the per-feature norms exist."""
        return self.fc_norms is not None

    def _normed_features(self, fused: torch.Tensor) -> torch.Tensor:
        if not self.fc_norm:
            return fused
        chunks = fused.chunk(len(self.feature_layers), dim=-1)
        return torch.cat([norm(chunk) for norm, chunk in zip(self.fc_norms, chunks)], dim=-1)

    def decoder_layers(self) -> list[nn.Module]:
        return [self.midlayer]

    @property
    def head(self) -> nn.Module:
        """The vocabulary head the drafter's logits come from: its own lm_head, or the base's."""
        return self.lm_head if self.own_lm_head else self.base_lm_head

    def head_input(self, outputs: torch.Tensor) -> torch.Tensor:
        """What the head reads: the normed outputs (norm_output: forward already normed them)."""
        return outputs if self.norm_output else self.norm(outputs)

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        return apply_head(self.head, self.head_input(outputs))


def build_eagle3_drafter(base, feature_layers: list[int], overrides: Optional[dict] = None, meta: Optional[dict] = None,
                         family: Optional[str] = None, hidden_size: Optional[int] = None, own_embedding: bool = False,
                         own_lm_head: bool = True, draft_vocab: Optional[torch.Tensor] = None,
                         draft_layers: int = 1, fc_norm: bool = False, norm_output: bool = False) -> Eagle3Drafter:
    cfg = draft_hf_config(base.config, draft_layers, family, hidden_size, overrides)
    return build_for_base(Eagle3Drafter, base, cfg, meta, own_embedding, own_lm_head, draft_vocab,
                          feature_layers=base.check_layer_ids(feature_layers, "data.aux_layer_ids"),
                          fc_norm=fc_norm, norm_output=norm_output)
