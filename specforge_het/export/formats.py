"""What the engines' draft formats share, for the families' converters (families/*/export.py): a drafter's tensors
as plain CPU tensors, a draft layer's HF config in the Llama field names both engines read, and the speculators
config block vLLM validates."""
from __future__ import annotations

from typing import Optional

import torch

from ..modeling.draft_config import head_dim_of
from .base_parts import base_architectures


def llama_fields(cfg) -> dict:
    rope = getattr(cfg, "rope_parameters", None) or {}
    out = {
        "model_type": "llama", "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": head_dim_of(cfg), "hidden_act": cfg.hidden_act, "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings, "num_hidden_layers": cfg.num_hidden_layers,
        "rope_theta": rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)), "tie_word_embeddings": False,
        "attention_bias": bool(getattr(cfg, "attention_bias", False)),
        "mlp_bias": bool(getattr(cfg, "mlp_bias", False)),
    }
    if rope.get("rope_type", "default") != "default":
        out["rope_scaling"] = dict(rope)
    return out


def state_of(drafter, dtype: Optional[torch.dtype]) -> dict:
    """The drafter's tensors (cast to dtype when given), contiguous on the CPU, without rotary caches."""
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
            for k, v in drafter.state_dict().items() if "rotary_emb." not in k}


def vllm_layer_config(drafter) -> dict:
    """A draft layer's config as vLLM's speculators formats hold it (`transformer_layer_config`), with the base's
    vocabulary size."""
    cfg = drafter.hf_config
    fields = llama_fields(cfg)
    if cfg.model_type == "qwen3":  # Eagle3Qwen3ForCausalLM: the same shape fields, q/k norms implied by the family
        fields["model_type"] = "qwen3"
        fields["architectures"] = ["Qwen3ForCausalLM"]
    else:
        fields["architectures"] = ["LlamaForCausalLM"]
    fields["vocab_size"] = drafter.base_vocab_size
    return fields


def speculators_config(algorithm: str, tokens: int, base: str) -> dict:
    """The `speculators_config` block vLLM validates: one greedy proposal method of `tokens` drafts, the verifier."""
    return {"algorithm": algorithm,
            "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": tokens}],
            "default_proposal_method": "greedy",
            "verifier": {"name_or_path": base, "architectures": base_architectures(base)}}


def dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")
