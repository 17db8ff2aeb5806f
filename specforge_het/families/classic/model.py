"""The classic draft model: an independent small causal LM sharing the base's tokenizer, reading no base features.

Built from a draft family's config (any HF causal LM; `draft_family`, `draft_hidden_size`, `draft_layers`) or loaded
from `modeling.draft_model_path` (a local or hub small LM; `trust_remote_code` stays off). It has its own embedding
and lm_head. To fit the drafters' row convention (row t reads token t+1 and predicts token t+2) it runs every token
one position later than its row, and its cache additionally holds the prompt's first token, fed at prefill.
Weights: `lm.*` (the HF model's own names under `lm.`).
"""
from __future__ import annotations

from typing import Optional

import torch

from ...config.errors import ConfigError
from ...modeling import ttt_attention
from ...modeling.architectures import register_architecture
from ...modeling.base import check_model_path, decoder_parts
from ...modeling.compat import base_meta
from ...modeling.draft_config import draft_hf_config
from ...modeling.drafter_base import DrafterBase
from ...modeling.masks import causal_mask, packed_causal_mask, padded_causal_mask
from ...utils.hf_compat import cache_kw


@register_architecture("classic_drafter")
class ClassicDrafter(DrafterBase):
    token_only = True  # reads no base features: teacher-forced unrolling equals one plain forward
    SAME_TOKENIZER = True  # its ids are the base's (cross_vocab.py: a draft LM with its own tokenizer)

    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None,
                 base_embed_dim: Optional[int] = None, own_embedding: bool = False, own_lm_head: bool = False,
                 draft_vocab_size: Optional[int] = None, meta: Optional[dict] = None, lm=None):
        from transformers import AutoModelForCausalLM

        super().__init__(hf_config, base_hidden_size, base_vocab_size, base_embed_dim, False, False, None, meta)
        if self.SAME_TOKENIZER and base_vocab_size is not None and hf_config.vocab_size < base_vocab_size:
            raise ConfigError(f"classic draft model has a {hf_config.vocab_size}-token vocabulary but the base has "
                              f"{base_vocab_size}: the draft must share the base's tokenizer")
        hf_config._attn_implementation = ttt_attention.NAME
        self.lm = lm if lm is not None else AutoModelForCausalLM.from_config(hf_config)
        self.lm.config._attn_implementation = ttt_attention.NAME

    def forward(self, hidden, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None, from_base: bool = True,
                ttt_state: Optional[dict] = None) -> torch.Tensor:
        """Row t holds token t+1 (at position t+1); `hidden` is ignored. → last hidden states [B,T,H_draft]."""
        dtype = self.lm.get_input_embeddings().weight.dtype
        if attention_mask is None and past_key_values is not None:
            attention_mask = causal_mask(input_ids.shape[1], dtype, input_ids.device, past_key_values.get_seq_length())
        extra = {"ttt_state": ttt_state} if ttt_state is not None else {}
        out = self.lm.model(input_ids=input_ids, position_ids=position_ids + 1, attention_mask=attention_mask,
                            **cache_kw(past_key_values), use_cache=past_key_values is not None, **extra)
        return out.last_hidden_state

    def prefill(self, hidden, prompt_ids: torch.Tensor, next_tokens: torch.Tensor, positions: torch.Tensor, cache,
                valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed each prompt's first token too, at position 0 in an extra leading cache slot, so the draft LM sees the
        whole sequence (in a left-padded batch the first real token sits after the padding; slot order does not
        matter to attention, positions and the mask do)."""
        if valid is None:
            valid = torch.ones(next_tokens.shape, dtype=torch.bool, device=next_tokens.device)
        first = prompt_ids.gather(1, valid.int().argmax(1, keepdim=True))
        ids = torch.cat([first, next_tokens], dim=1)
        slots = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        out = self.lm.model(input_ids=ids, position_ids=torch.cat([positions[:, :1] * 0, positions + 1], dim=1),
                            attention_mask=padded_causal_mask(slots, None, self.lm.dtype), **cache_kw(cache),
                            use_cache=True)
        return out.last_hidden_state[:, 1:], slots

    def decoder_layers(self) -> list[torch.nn.Module]:
        return list(decoder_parts(self.lm)[0])

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.lm.lm_head(features)[..., : self.base_vocab_size or None]

    def token_logits(self, input_ids: torch.Tensor, packing: Optional[dict] = None) -> torch.Tensor:
        """Plain causal forward over whole sequences (positions 0..L−1): logits at t predict token t+1."""
        return self.logits(self.token_states(input_ids, packing))

    def token_states(self, input_ids: torch.Tensor, packing: Optional[dict] = None) -> torch.Tensor:
        """The LM's last hidden states over whole sequences; `packing` (segment_ids, position_ids): rows holding
        several conversations, each attending only to itself from position 0."""
        if not packing:
            return self.lm.model(input_ids=input_ids, use_cache=False).last_hidden_state
        t = input_ids.shape[1]
        mask = packed_causal_mask(packing["segment_ids"][:, :t], self.lm.dtype)
        return self.lm.model(input_ids=input_ids, attention_mask=mask, position_ids=packing["position_ids"][:, :t],
                             use_cache=False).last_hidden_state


def build_classic_drafter(base, modeling, meta: Optional[dict] = None) -> ClassicDrafter:
    meta = base_meta(base, meta)
    lm = None
    if modeling.draft_model_path:
        lm = load_draft_lm(modeling.draft_model_path)
        cfg = lm.config
        meta["draft_model_path"] = modeling.draft_model_path
    else:
        cfg = draft_hf_config(base.config, modeling.draft_layers, modeling.draft_family, modeling.draft_hidden_size,
                              modeling.draft_config_overrides)
        cfg.vocab_size = base.vocab_size
        cfg.tie_word_embeddings = False  # tied tensors cannot be saved as two safetensors keys
    drafter = ClassicDrafter(cfg, base.hidden_size, base.vocab_size, meta=meta, lm=lm)
    drafter = drafter.to(base.device).attach_base(base.embed_tokens, base.lm_head)
    if lm is None and drafter.lm.get_input_embeddings().weight.shape == base.embed_tokens.weight.shape:
        with torch.no_grad():  # same width: start from the base's token embeddings
            drafter.lm.get_input_embeddings().weight.copy_(base.embed_tokens.weight)
    return drafter


def load_draft_lm(path: str):
    """A small LM to start a draft from (local folder or hub id; trust_remote_code stays off), in fp32: the
    optimizer must not step bf16 parameters (autocast takes care of the compute dtype)."""
    from transformers import AutoModelForCausalLM

    check_model_path(path, "modeling.draft_model_path")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def own_tokenizer(path: str, base):
    """The draft LM's tokenizer when it differs from the base's (None: the same vocabulary, or no tokenizer saved
    beside the draft — then it must be the base's)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None
    if base.tokenizer is None or tokenizer.get_vocab() == base.tokenizer.get_vocab():
        return None
    return tokenizer
