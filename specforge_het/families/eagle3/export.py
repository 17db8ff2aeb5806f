"""EAGLE-3 drafts in the engines' formats.

vLLM: the speculators `eagle3` format (vLLM maps it to `Eagle3LlamaForCausalLM`, or `Eagle3Qwen3ForCausalLM` for a
Qwen3 midlayer with q/k norms): `config.json` with `speculators_model_type: eagle3`, `transformer_layer_config` (the
midlayer's HF config), `draft_vocab_size`, `target_hidden_size` (a draft narrower or wider than the base),
`norm_before_residual: false` (our midlayer adds the un-normed fc output back), the EAGLE-3.1 flags `fc_norm` (weights
`fc_norm.{i}.weight`) and `norm_output`, `eagle_aux_hidden_state_layer_ids` in vLLM's convention (id j = the output
of block j−1, ours + 1); weights `layers.0.*`, `fc.weight`, `norm.weight`,
`lm_head.weight`, `embed_tokens.weight` when the draft owns one, and `d2t` only for a reduced draft vocabulary
(vLLM creates `draft_id_to_target_id` only then, and refuses the key otherwise).

    vllm serve BASE --speculative-config '{"method": "eagle3", "model": DRAFT, "num_speculative_tokens": 5}'

SGLang: `LlamaForCausalLMEagle3`: `midlayer.*` (q/k/v in_features 2·H), `fc.weight` [H, k·H_target], `norm.weight`,
`lm_head.weight` [draft_vocab, H], `d2t`, `t2d`, and `embed_tokens.weight` when the drafter owns one;
config with `draft_vocab_size`, `target_hidden_size`, `eagle_config.eagle_aux_hidden_state_layer_ids`, and the
EAGLE-3.1 flags `fc_norm` (weights `fc_norm.{i}.weight`) and `norm_output`.
"""
from __future__ import annotations

from typing import Optional

import torch

from ...config.errors import ConfigError
from ...export.formats import dtype_name, llama_fields, speculators_config, state_of, vllm_layer_config
from ...export.from_official import OFFICIAL_IMPORTERS, OfficialImporter
from ...export.registry import Converter, register_converter
from ...modeling.checkpoint import load_checked_state
from ...modeling.draft_config import hf_config_from_dict
from .model import Eagle3Drafter

VLLM_EAGLE3_FAMILIES = {"llama": "llama", "mistral": "llama", "qwen3": "qwen3"}
EAGLE3_FAMILIES = ("llama", "mistral")  # SGLang's EAGLE-3 midlayer is a Llama layer (no q/k norms, no qkv bias)


def eagle3_to_vllm(drafter, dtype: Optional[torch.dtype], base: str, steps: int) -> tuple[dict, dict]:
    cfg = drafter.hf_config
    if cfg.model_type not in VLLM_EAGLE3_FAMILIES:
        raise ConfigError(f"vLLM serves EAGLE-3 midlayers of the llama and qwen3 families; this draft is "
                          f"{cfg.model_type} — retrain with modeling.draft_family llama or qwen3")
    if getattr(cfg, "mlp_bias", False):
        raise ConfigError("vLLM's EAGLE-3 midlayer MLP has no bias; this draft has one")
    if cfg.hidden_size != drafter.base_hidden_size and not drafter.own_embedding:
        raise ConfigError("an EAGLE-3 draft of another width than the base needs its own embedding for vLLM "
                          "(modeling.embedding own)")
    weights = {}
    for k, v in state_of(drafter, dtype).items():
        if k == "embed.weight":
            weights["embed_tokens.weight"] = v
        elif k.startswith("midlayer."):
            weights[k.replace("midlayer.", "layers.0.", 1)] = v
        elif k.startswith(("fc.", "norm.", "lm_head.")):
            weights[k] = v
        elif k.startswith("fc_norms."):  # EAGLE-3.1: vLLM's model.fc_norm.{i}
            weights[k.replace("fc_norms.", "fc_norm.", 1)] = v
        elif k == "d2t":
            weights[k] = v
        elif k != "t2d":
            raise ConfigError(f"EAGLE-3 export to vLLM: unexpected drafter weight {k!r}")
    if "lm_head.weight" not in weights and cfg.hidden_size != drafter.base_hidden_size:
        raise ConfigError("an EAGLE-3 draft of another width than the base needs its own lm_head for vLLM")
    # Without lm_head.weight vLLM shares the target's (the proposer's _maybe_share_lm_head), as our shared head does.
    vocab = drafter.draft_vocab_size or drafter.base_vocab_size
    layer_cfg = vllm_layer_config(drafter)
    config = {
        "speculators_model_type": "eagle3",
        "architectures": ["Eagle3Speculator"],
        "transformer_layer_config": layer_cfg,
        "draft_vocab_size": vocab,
        "norm_before_residual": False,
        "fc_norm": drafter.fc_norm,  # EAGLE-3.1 flags (speculators' names, read by vLLM's update_eagle3)
        "norm_output": drafter.norm_output,
        "eagle_aux_hidden_state_layer_ids": [k + 1 for k in drafter.feature_layers],
        "speculators_config": speculators_config("eagle3", steps, base),
        "torch_dtype": dtype_name(weights["fc.weight"]),
    }
    if cfg.hidden_size != drafter.base_hidden_size:
        config["target_hidden_size"] = drafter.base_hidden_size
    return config, weights


def eagle3_to_sglang(drafter, dtype: Optional[torch.dtype] = None, base: str = "", steps: int = 0) -> tuple[dict, dict]:
    cfg = drafter.hf_config
    if cfg.model_type not in EAGLE3_FAMILIES:
        raise ConfigError(f"SGLang's LlamaForCausalLMEagle3 has a Llama midlayer; this draft is a {cfg.model_type} "
                          f"layer ({'q/k norms' if cfg.model_type.startswith('qwen3') else 'other layer math'}) "
                          "that it "
                          "cannot compute — retrain with modeling.draft_family llama, or export to specforge_het")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ConfigError("SGLang's EAGLE-3 midlayer has no q/k/v or MLP biases; this draft has them")
    width = cfg.hidden_size
    if width == 3 * drafter.base_hidden_size and width != drafter.base_hidden_size:
        raise ConfigError(f"draft width {width} = 3 × target width: SGLang would skip the fc (it tests widths); "
                          "choose another draft width")
    state = state_of(drafter, dtype)
    weights = {}
    for k, v in state.items():
        if k == "embed.weight":
            weights["embed_tokens.weight"] = v
        elif k.startswith(("midlayer.", "fc.", "norm.", "lm_head.")) or k in ("d2t", "t2d"):
            weights[k] = v
        elif k.startswith("fc_norms."):  # EAGLE-3.1: SGLang's model.fc_norm.{i}
            weights[k.replace("fc_norms.", "fc_norm.", 1)] = v
        else:
            raise ConfigError(f"EAGLE-3 export: unexpected drafter weight {k!r}")
    if drafter.own_lm_head and not drafter.reduced_vocab:  # SGLang needs the maps whenever it has a draft vocab
        weights["d2t"] = torch.zeros(drafter.draft_vocab_size, dtype=torch.long)
        weights["t2d"] = torch.ones(drafter.base_vocab_size, dtype=torch.bool)
    config = {
        "architectures": ["LlamaForCausalLMEagle3"], **llama_fields(cfg), "vocab_size": drafter.base_vocab_size,
        # null = SGLang takes lm_head (and embeddings) from the target: only right for a shared head at the same width.
        "draft_vocab_size": drafter.draft_vocab_size if drafter.own_lm_head else None,
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": list(drafter.feature_layers)},
        "fc_norm": drafter.fc_norm, "norm_output": drafter.norm_output,  # EAGLE-3.1 flags, as SGLang reads them
        "torch_dtype": dtype_name(weights["fc.weight"]),
    }
    if width != drafter.base_hidden_size:
        config["target_hidden_size"] = drafter.base_hidden_size
        if not drafter.own_embedding or not drafter.own_lm_head:
            raise ConfigError("an EAGLE-3 draft of another width needs its own embedding and lm_head for SGLang")
    return config, weights


register_converter(Converter("vllm", "eagle3_drafter", "speculators eagle3", eagle3_to_vllm,
                             engine_architectures=("Eagle3Speculator",)))
register_converter(Converter("sglang", "eagle3_drafter", "LlamaForCausalLMEagle3", eagle3_to_sglang,
                             engine_architectures=("LlamaForCausalLMEagle3",)))


def load_official_eagle3(path, cfg: dict, state: dict, meta: dict, feature_layers):
    """An official EAGLE-3 checkpoint (or SGLang layout): `midlayer.*`, `fc.weight` [H, k·T], `norm.weight`,
    `lm_head.weight`, optional `d2t` / `t2d` / `embed_tokens.weight` / EAGLE-3.1 `fc_norm.*`; feature layers from
    `eagle_config.eagle_aux_hidden_state_layer_ids` (or `export.feature_layers`)."""
    hf = hf_config_from_dict({**cfg, "num_hidden_layers": 1})
    target = cfg.get("target_hidden_size") or cfg["hidden_size"]
    layers = feature_layers or (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    if not layers:
        raise ConfigError(f"{path}: config has no eagle_config.eagle_aux_hidden_state_layer_ids; pass the base "
                          "layers the draft was trained on with --export.feature_layers")
    reduced = "d2t" in state and state["d2t"].numel() < cfg["vocab_size"]
    own_embed = "embed_tokens.weight" in state
    if "embed_tokens.weight" in state:
        state["embed.weight"] = state.pop("embed_tokens.weight")
    for k in [k for k in state if k.startswith("fc_norm.")]:  # EAGLE-3.1 per-feature norms (SGLang's names)
        state[k.replace("fc_norm.", "fc_norms.", 1)] = state.pop(k)
    if not reduced:
        state.pop("d2t", None), state.pop("t2d", None)
    else:
        state["t2d"] = state["t2d"].bool()
        state["d2t"] = state["d2t"].long()
    model = Eagle3Drafter(hf, target, cfg["vocab_size"], target, own_embedding=own_embed,
                          own_lm_head="lm_head.weight" in state,
                          draft_vocab_size=state["lm_head.weight"].shape[0] if reduced else None, meta=meta,
                          feature_layers=list(layers), fc_norm=bool(cfg.get("fc_norm") or cfg.get("use_aux_norm")),
                          norm_output=bool(cfg.get("norm_output")))
    return load_checked_state(model, state, path)


OFFICIAL_IMPORTERS.register("eagle3", OfficialImporter(lambda state: any(k.startswith("midlayer.") for k in state),
                                                       load_official_eagle3))
