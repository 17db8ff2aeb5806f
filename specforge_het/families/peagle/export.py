"""P-EAGLE in vLLM's format: the speculators `peagle` config (read from vLLM 0.32's
transformers_utils/configs/speculators/algos.py `update_peagle` and model_executor/models/llama_eagle3.py).

`config.json`: `speculators_model_type: peagle` (vLLM serves it as method `eagle3` with `parallel_drafting: true`,
through `PeagleLlamaForCausalLM` / `PeagleQwen3ForCausalLM` = its Eagle3 classes), `transformer_layer_config` (the
draft layers' HF config, `num_hidden_layers` of them), `mask_token_id` (required; vLLM's `pard_token`),
`draft_vocab_size`, `target_hidden_size` for a draft of another width, `norm_before_residual: false` (layer 0 adds
the un-normed fc output back), `eagle_aux_hidden_state_layer_ids` in vLLM's convention (ours + 1).
Weights: `layers.{i}.*` (layer 0's q/k/v read 2·H, its `hidden_norm`), `fc.weight`, `norm.weight`, `lm_head.weight`,
`mask_hidden` [1, k·H_target] (vLLM refuses a parallel-drafting checkpoint without it), `embed_tokens.weight` when the
draft owns one, `d2t` only for a reduced draft vocabulary.

    vllm serve BASE --speculative-config '{"method": "eagle3", "parallel_drafting": true, "model": DRAFT,
                                           "num_speculative_tokens": K}'

SGLang 0.5.23 has no parallel EAGLE drafting: no SGLang export.
"""
from __future__ import annotations

from typing import Optional

import torch

from ...config.errors import ConfigError
from ...export.formats import dtype_name, speculators_config, state_of, vllm_layer_config
from ...export.registry import Converter, register_converter

VLLM_FAMILIES = ("llama", "qwen3")  # vLLM's peagle architecture map


def peagle_to_vllm(drafter, dtype: Optional[torch.dtype], base: str, steps: int) -> tuple[dict, dict]:
    cfg = drafter.hf_config
    if cfg.model_type not in VLLM_FAMILIES:
        raise ConfigError(f"vLLM serves P-EAGLE layers of the llama and qwen3 families; this draft is "
                          f"{cfg.model_type} — retrain with modeling.draft_family llama or qwen3")
    if getattr(cfg, "mlp_bias", False):
        raise ConfigError("vLLM's P-EAGLE layers' MLP has no bias; this draft has one")
    if cfg.hidden_size != drafter.base_hidden_size and not (drafter.own_embedding and drafter.own_lm_head):
        raise ConfigError("a P-EAGLE draft of another width than the base needs its own embedding and lm_head for "
                          "vLLM (modeling.embedding own, modeling.lm_head own)")
    weights = {}
    for k, v in state_of(drafter, dtype).items():
        if k == "embed.weight":
            weights["embed_tokens.weight"] = v
        elif k.startswith(("layers.", "fc.", "norm.", "lm_head.")) or k in ("mask_hidden", "d2t"):
            weights[k] = v
        elif k != "t2d":
            raise ConfigError(f"P-EAGLE export to vLLM: unexpected drafter weight {k!r}")
    config = {
        "speculators_model_type": "peagle",
        "architectures": ["PEagleSpeculator"],
        "transformer_layer_config": vllm_layer_config(drafter),
        "draft_vocab_size": drafter.draft_vocab_size or drafter.base_vocab_size,
        "norm_before_residual": False,
        "mask_token_id": drafter.mask_token_id,
        "eagle_aux_hidden_state_layer_ids": [k + 1 for k in drafter.feature_layers],
        "speculators_config": speculators_config("peagle", steps, base),
        "torch_dtype": dtype_name(weights["fc.weight"]),
    }
    if cfg.hidden_size != drafter.base_hidden_size:
        config["target_hidden_size"] = drafter.base_hidden_size
    return config, weights


register_converter(Converter("vllm", "peagle_drafter", "speculators peagle (vLLM eagle3 + parallel_drafting)",
                             peagle_to_vllm, engine_architectures=("PEagleSpeculator",),
                             serving_fields={"method": "eagle3", "parallel_drafting": True}))
