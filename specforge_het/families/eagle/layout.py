"""What an engine's EAGLE-1/2 draft layout cannot hold (SGLang's `LlamaForCausalLMEagle`, vLLM's
`EagleLlamaForCausalLM` — the official EAGLE layout in both): one clear error per reason."""
from __future__ import annotations

from ...config.errors import ConfigError


def check_eagle1_layout(drafter, engine: str) -> None:
    """engine: "SGLang" or "vLLM", named in the errors."""
    width, base_width = drafter.hf_config.hidden_size, drafter.base_hidden_size
    if width != base_width or drafter.out_proj is not None:
        raise ConfigError(f"{engine}'s EAGLE-1/2 drafts have the target's width; this draft's differs ({width} vs "
                          f"{base_width}) — use EAGLE-3 (target_hidden_size) for that")
    if drafter.own_lm_head or drafter.own_embedding:
        raise ConfigError(f"{engine}'s EAGLE-1/2 drafts take lm_head and embeddings from the target; this draft has "
                          "its own (modeling.lm_head / modeling.embedding own) — use EAGLE-3 for that")
    if drafter.first_layer_input_norm:
        raise ConfigError(f"this EAGLE-1/2 draft normalises layer 0's input, which {engine}'s layout does not have "
                          "(it was trained before the official layout became the default); retrain it")
