"""The block-drafter backbone shared by the block families (DFlash's design, arXiv 2602.06036): one non-causal pass
over a block [anchor, mask × (B−1)] drafts B−1 tokens at once, conditioned on several base layers' features.

    c_j = hidden_norm(fc(cat(f^{l1}_j, …, f^{lk}_j)))       the context: one vector per committed position j
    layer:  x = input_layernorm(h);  h = h + attn(q from x, k/v from [c_{<anchor}; x]);  h = h + mlp(post_norm(h))
    o   = norm(h)  → logits = lm_head(o)                       block slot i (1..B−1) predicts the token at anchor + i
The context vectors enter every layer only as keys and values (projected by that layer's own k/v projections, with
its k-norm and RoPE at their positions) — never as queries, never through the MLP; the block's slots attend to the
context before the anchor and to each other in both directions. The mask slots are the embedding of `mask_token_id`.
This is what vLLM's `DFlashQwen3Model` computes (qwen3_dflash.py: `precompute_and_store_context_kv` + the layers);
keys follow it (`layers.N.*`, `fc.weight`, `hidden_norm.weight`, `norm.weight`).
Draft layers of any pre-norm decoder family (input_layernorm → attention → post_attention_layernorm → MLP) and any
width; vLLM serves the qwen3 family (its DFlash layers have q/k norms).

Computed here by running each layer's own attention module over [context rows; block rows] with a mask in which
context rows see only themselves (their outputs are dropped): exact, and any HF family's attention (GQA, q/k norms,
RoPE variants) works unchanged. At inference the context rows' keys stay in the KV cache (the block's are cropped).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ...config.errors import ConfigError
from ...modeling.compat import require_own_parts_for_width
from ...modeling.draft_config import draft_hf_config
from ...modeling.drafter_base import DrafterBase, build_for_base
from ...modeling.head import apply_head
from ...modeling.family import family_stack, rope_kwargs
from ...modeling.feature_layers import default_feature_layers
from ...modeling.masks import additive_mask
from ...utils.hf_compat import cache_kw


def block_feature_layers(num_layers: int) -> list[int]:
    """DFlash reads 5 base blocks spread from the second to the fourth-last (3 under 8 layers, as EAGLE-3's default:
    the engines capture block k at the input of block k+1, so never the last block)."""
    if num_layers < 8:
        return default_feature_layers(num_layers)
    lo, hi = 1, num_layers - 4
    return sorted({round(lo + (hi - lo) * i / 4) for i in range(5)})


def check_mask_token(mask_token_id: int, base_vocab_size: Optional[int]) -> None:
    if base_vocab_size is not None and not 0 <= mask_token_id < base_vocab_size:
        raise ConfigError(f"modeling.mask_token_id: expected 0..{base_vocab_size - 1} (a base token id), "
                          f"got {mask_token_id}")


def require_plain_layers(layers, model_type: str, who: str, families: str) -> None:
    """Draft layers that a layer-by-layer forward (and the engines) can compute: the plain pre-norm layout."""
    for layer in layers:
        missing = [n for n in ("self_attn", "input_layernorm", "post_attention_layernorm", "mlp")
                   if not hasattr(layer, n)]
        if missing or hasattr(layer, "pre_feedforward_layernorm"):
            raise ConfigError(f"{who} draft layers need the plain pre-norm layout (input_layernorm, self_attn, "
                              f"post_attention_layernorm, mlp); {model_type} layers differ — choose "
                              f"modeling.draft_family {families}")


class BlockDrafter(DrafterBase):
    """The block-drafter backbone; a family registers its own subclass (it names the checkpoint architecture)."""
    EXTRA_KEYS = ("feature_layers", "block_size", "mask_token_id")
    PROPOSER = "block"  # families/block_common/proposer.py

    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None,
                 base_embed_dim: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = False,
                 draft_vocab_size: Optional[int] = None, meta: Optional[dict] = None,
                 feature_layers: Optional[list] = None, block_size: int = 8, mask_token_id: int = 0):
        width = hf_config.hidden_size
        if not feature_layers:
            raise ConfigError("a DFlash drafter needs its base feature layer ids (data.aux_layer_ids)")
        if not 2 <= block_size <= 64:
            raise ConfigError(f"modeling.block_size: expected 2..64, got {block_size}")
        check_mask_token(mask_token_id, base_vocab_size)
        require_own_parts_for_width("DFlash", width, base_hidden_size, base_embed_dim, own_embedding, own_lm_head)
        super().__init__(hf_config, base_hidden_size, base_vocab_size, base_embed_dim, own_embedding, own_lm_head,
                         draft_vocab_size, meta, head_in_features=width, embed_dim=width)
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        self.feature_layers = list(feature_layers)
        self.block_size, self.mask_token_id = int(block_size), int(mask_token_id)
        self.fc = nn.Linear(len(self.feature_layers) * base_hidden_size, width, bias=False)
        self.hidden_norm = LlamaRMSNorm(width, eps=getattr(hf_config, "rms_norm_eps", 1e-6))
        skeleton = family_stack(hf_config)
        require_plain_layers(skeleton.layers, hf_config.model_type, "DFlash",
                             "qwen3 (what vLLM serves), llama, qwen2 or mistral")
        self.layers = skeleton.layers
        self.norm = skeleton.norm
        self.rotary_emb = skeleton.rotary_emb
        self._rope_kwargs = rope_kwargs(self.rotary_emb)

    def context(self, features: torch.Tensor) -> torch.Tensor:
        """Fused base features [B, L, k·H_base] → context vectors [B, L, H_draft]."""
        return self.hidden_norm(self.fc(features.to(self.fc.weight.dtype)))

    def forward(self, context: torch.Tensor, context_pos: torch.Tensor, block_ids: torch.Tensor,
                block_pos: torch.Tensor, attention_mask: torch.Tensor, past_key_values=None) -> torch.Tensor:
        """context [B, L, H] (L may be 0) at context_pos [B, L]; block tokens block_ids [B, Q] at block_pos [B, Q];
        attention_mask additive [B, 1, L + Q, P + L + Q] over (cached slots P, context, block) → outputs [B, Q, H]
        (after the final norm: logits read them as they are)."""
        dtype = self.fc.weight.dtype
        h = self.embed_ids(block_ids).to(dtype)
        n_ctx = context.shape[1]
        pos = torch.cat([context_pos, block_pos], 1)
        pos_emb = self.rotary_emb(h, pos, **self._rope_kwargs)
        context = context.to(dtype)
        for layer in self.layers:
            x = torch.cat([context, layer.input_layernorm(h)], 1)
            attn = layer.self_attn(hidden_states=x, position_embeddings=pos_emb, attention_mask=attention_mask,
                                   **cache_kw(past_key_values), use_cache=past_key_values is not None,
                                   position_ids=pos)[0]
            h = h + attn[:, n_ctx:]
            mlp = layer.mlp(layer.post_attention_layernorm(h))
            h = h + (mlp[0] if isinstance(mlp, tuple) else mlp)
        return self.norm(h)

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        head = self.lm_head if self.own_lm_head else self.base_lm_head
        return apply_head(head, outputs)

    def greedy_block(self, outputs: torch.Tensor, anchor_ids: torch.Tensor) -> torch.Tensor:
        """Greedy drafts of block slots: outputs [..., D, H] → draft ids [..., D] (each slot's top token)."""
        return self.logits(outputs).argmax(-1)

    def decoder_layers(self) -> list[nn.Module]:
        return list(self.layers)


def block_attention(context_valid: torch.Tensor, context_before: torch.Tensor, block_groups: torch.Tensor,
                    dtype: torch.dtype, cached_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The additive mask of one DFlash call. context_valid [B, L] real context rows; context_before [B, Q, L] which
    context rows each block row may see; block_groups [B, Q] the block each block row belongs to (rows of one
    block see each other); cached_valid [B, P] real cached slots (every block row sees them) → [B, 1, L+Q, P+L+Q].
    Context rows see only themselves (their outputs are discarded; the row must not be empty)."""
    bsz, n_ctx = context_valid.shape
    q = block_groups.shape[1]
    dev = context_valid.device
    cached = cached_valid if cached_valid is not None else torch.zeros(bsz, 0, dtype=torch.bool, device=dev)
    ctx_rows = torch.cat([torch.zeros(bsz, n_ctx, cached.shape[1], dtype=torch.bool, device=dev),
                          torch.eye(n_ctx, dtype=torch.bool, device=dev).expand(bsz, -1, -1),
                          torch.zeros(bsz, n_ctx, q, dtype=torch.bool, device=dev)], 2)
    blk_rows = torch.cat([cached[:, None, :].expand(-1, q, -1), context_before & context_valid[:, None, :],
                          block_groups[:, :, None] == block_groups[:, None, :]], 2)
    return additive_mask(torch.cat([ctx_rows, blk_rows], 1), dtype)


def default_mask_token(base) -> int:
    pad = getattr(base.tokenizer, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    return base.vocab_size - 1


def build_block_drafter(base, feature_layers: list[int], block_size: int, mask_token_id: Optional[int],
                         overrides: Optional[dict] = None, meta: Optional[dict] = None, family: Optional[str] = None,
                         hidden_size: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = False,
                         draft_vocab: Optional[torch.Tensor] = None, draft_layers: int = 1, cls=None,
                         **extra) -> BlockDrafter:
    """A fresh block drafter of class `cls` (a family's BlockDrafter subclass; its own arguments in `extra`)."""
    cfg = draft_hf_config(base.config, draft_layers, family, hidden_size, overrides)
    mask = default_mask_token(base) if mask_token_id is None else mask_token_id
    return build_for_base(cls, base, cfg, meta, own_embedding, own_lm_head, draft_vocab,
                          feature_layers=base.check_layer_ids(feature_layers, "data.aux_layer_ids"),
                          block_size=block_size, mask_token_id=mask, **extra)
