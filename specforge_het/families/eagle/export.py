"""EAGLE-1/2 drafts in the engines' formats.

vLLM → its `eagle` method (`EagleLlamaForCausalLM`, llama_eagle.py): a plain Llama config (`architectures:
[LlamaForCausalLM]`, which vLLM renames), `fc.weight` — vLLM's fc has no bias, so a draft trained with one
(`modeling.fc_bias`, the official EAGLE layout) is refused unless the bias is zero — and `layers.N.*` with no input
norm on layer 0; embedding and lm_head come from the target.

    vllm serve BASE --speculative-config '{"method": "eagle", "model": DRAFT, "num_speculative_tokens": 5}'

SGLang → `LlamaForCausalLMEagle` / `Qwen2ForCausalLMEagle` / `MistralForCausalLMEagle`: `fc.weight`, `fc.bias`,
`layers.N.*` with no input norm on layer 0; lm_head and embeddings come from the target.
"""
from __future__ import annotations

from typing import Optional

import torch

from ...config.errors import ConfigError
from ...export.formats import dtype_name, llama_fields, state_of
from ...export.from_official import OFFICIAL_IMPORTERS, OfficialImporter
from ...export.registry import Converter, register_converter
from ...modeling.checkpoint import load_checked_state
from ...modeling.draft_config import hf_config_from_dict
from .layout import check_eagle1_layout
from .model import EagleDrafter

EAGLE1_ARCH = {"llama": "LlamaForCausalLMEagle", "qwen2": "Qwen2ForCausalLMEagle", "mistral": "MistralForCausalLMEagle"}


def eagle_to_vllm(drafter, dtype: Optional[torch.dtype], base: str = "", steps: int = 0) -> tuple[dict, dict]:
    cfg = drafter.hf_config
    if cfg.model_type != "llama":
        raise ConfigError(f"vLLM's EAGLE-1 draft (EagleLlamaForCausalLM) is a Llama layer stack; this draft is "
                          f"{cfg.model_type} — retrain with modeling.draft_family llama, or use EAGLE-3")
    check_eagle1_layout(drafter, "vLLM")
    weights = state_of(drafter, dtype)
    bias = weights.pop("fc.bias", None)
    if bias is not None and bool(bias.any()):
        raise ConfigError("vLLM's EAGLE-1 fc has no bias, and this draft's fc bias is not zero: retrain with "
                          "--modeling.fc_bias false to serve it with vLLM (SGLang takes it as it is)")
    config = {**llama_fields(cfg), "architectures": ["LlamaForCausalLM"], "vocab_size": drafter.base_vocab_size,
              "torch_dtype": dtype_name(weights["fc.weight"])}
    return config, weights


def eagle_to_sglang(drafter, dtype: Optional[torch.dtype] = None, base: str = "", steps: int = 0) -> tuple[dict, dict]:
    cfg = drafter.hf_config
    if cfg.model_type not in EAGLE1_ARCH:
        raise ConfigError(f"SGLang serves EAGLE-1/2 drafts of families {', '.join(EAGLE1_ARCH)}; this draft is "
                          f"{cfg.model_type} — retrain with one of them, or export to specforge_het")
    check_eagle1_layout(drafter, "SGLang")
    weights = state_of(drafter, dtype)
    if "fc.bias" not in weights:  # a draft trained without one (modeling.fc_bias false): SGLang's fc has a bias
        weights["fc.bias"] = torch.zeros(drafter.fc.out_features, dtype=weights["fc.weight"].dtype)
    config = {**cfg.to_dict(), "architectures": [EAGLE1_ARCH[cfg.model_type]], "vocab_size": drafter.base_vocab_size,
              "tie_word_embeddings": False}
    config.pop("_attn_implementation_autoset", None)
    return config, weights


register_converter(Converter("vllm", "eagle_drafter", "eagle (EagleLlamaForCausalLM)", eagle_to_vllm,
                             engine_architectures=("EagleLlamaForCausalLM",)))
register_converter(Converter("sglang", "eagle_drafter", "Llama/Qwen2/MistralForCausalLMEagle", eagle_to_sglang,
                             engine_architectures=tuple(EAGLE1_ARCH.values())))


def load_official_eagle(path, cfg: dict, state: dict, meta: dict, feature_layers=None):
    """An official EAGLE-1/2 checkpoint (yuhuili layout): `config.json` (a Llama config) + `fc.weight` [H, 2H],
    `fc.bias`, `layers.N.*` (no input norm on layer 0), optional `embed_tokens.weight` (dropped: our EAGLE-1/2
    drafters share the base's)."""
    n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
    hf = hf_config_from_dict({**cfg, "num_hidden_layers": n_layers})
    state.pop("embed_tokens.weight", None)
    state.pop("lm_head.weight", None)
    model = EagleDrafter(hf, cfg["hidden_size"], cfg["vocab_size"], cfg["hidden_size"], meta=meta,
                         first_layer_input_norm="layers.0.input_layernorm.weight" in state, fc_bias="fc.bias" in state)
    return load_checked_state(model, state, path)


OFFICIAL_IMPORTERS.register("eagle2", OfficialImporter(
    lambda state: "fc.weight" in state and any(k.startswith("layers.") for k in state), load_official_eagle))
