"""Export to the formats vLLM 0.32 serves unmodified (read from its own sources and proven by loading and serving them
with vLLM's CPU build: tests/test_serving.py).

EAGLE-3 → the speculators `eagle3` format (vLLM maps it to `Eagle3LlamaForCausalLM`, or `Eagle3Qwen3ForCausalLM` for a
Qwen3 midlayer with q/k norms): `config.json` with `speculators_model_type: eagle3`, `transformer_layer_config` (the
midlayer's HF config), `draft_vocab_size`, `target_hidden_size` (a draft narrower or wider than the base),
`norm_before_residual: false` (our midlayer adds the un-normed fc output back), the EAGLE-3.1 flags `fc_norm` (weights
`fc_norm.{i}.weight`) and `norm_output`, `eagle_aux_hidden_state_layer_ids` in vLLM's convention (id j = the output
of block j−1, ours + 1); weights `layers.0.*`, `fc.weight`, `norm.weight`,
`lm_head.weight`, `embed_tokens.weight` when the draft owns one, and `d2t` only for a reduced draft vocabulary
(vLLM creates `draft_id_to_target_id` only then, and refuses the key otherwise).

    vllm serve BASE --speculative-config '{"method": "eagle3", "model": DRAFT, "num_speculative_tokens": 5}'

EAGLE-1/2 → vLLM's `eagle` method (`EagleLlamaForCausalLM`, llama_eagle.py): a plain Llama config
(`architectures: [LlamaForCausalLM]`, which vLLM renames), `fc.weight` — vLLM's fc has no bias, so a draft trained
with one (`modeling.fc_bias`, the official EAGLE layout) is refused unless the bias is zero — and `layers.N.*` with no
input norm on layer 0; embedding and lm_head come from the target.

    vllm serve BASE --speculative-config '{"method": "eagle", "model": DRAFT, "num_speculative_tokens": 5}'
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from ..config.schema import ConfigError
from .eagle1_checks import check_eagle1_layout
from ..utils.io import atomic_write, atomic_write_json, atomic_write_text
from .base_parts import base_architectures
from .registry import Exporter, register_exporter
from .to_sglang import _llama_fields, _state, block_weights

VLLM_EAGLE3_FAMILIES = {"llama": "llama", "mistral": "llama", "qwen3": "qwen3"}


def _layer_config(cfg) -> dict:
    fields = _llama_fields(cfg)
    if cfg.model_type == "qwen3":  # Eagle3Qwen3ForCausalLM: the same shape fields, q/k norms implied by the family
        fields["model_type"] = "qwen3"
        fields["architectures"] = ["Qwen3ForCausalLM"]
    else:
        fields["architectures"] = ["LlamaForCausalLM"]
    return fields


def _speculators_config(algorithm: str, tokens: int, base: str) -> dict:
    """The `speculators_config` block vLLM validates: one greedy proposal method of `tokens` drafts, the verifier."""
    return {"algorithm": algorithm,
            "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": tokens}],
            "default_proposal_method": "greedy",
            "verifier": {"name_or_path": base, "architectures": base_architectures(base)}}


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
    for k, v in _state(drafter, dtype).items():
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
    layer_cfg = _layer_config(cfg)
    layer_cfg["vocab_size"] = drafter.base_vocab_size
    config = {
        "speculators_model_type": "eagle3",
        "architectures": ["Eagle3Speculator"],
        "transformer_layer_config": layer_cfg,
        "draft_vocab_size": vocab,
        "norm_before_residual": False,
        "fc_norm": drafter.fc_norm,  # EAGLE-3.1 flags (speculators' names, read by vLLM's update_eagle3)
        "norm_output": drafter.norm_output,
        "eagle_aux_hidden_state_layer_ids": [k + 1 for k in drafter.feature_layers],
        "speculators_config": _speculators_config("eagle3", steps, base),
        "torch_dtype": str(weights["fc.weight"].dtype).replace("torch.", ""),
    }
    if cfg.hidden_size != drafter.base_hidden_size:
        config["target_hidden_size"] = drafter.base_hidden_size
    return config, weights


def eagle_to_vllm(drafter, dtype: Optional[torch.dtype]) -> tuple[dict, dict]:
    cfg = drafter.hf_config
    if cfg.model_type != "llama":
        raise ConfigError(f"vLLM's EAGLE-1 draft (EagleLlamaForCausalLM) is a Llama layer stack; this draft is "
                          f"{cfg.model_type} — retrain with modeling.draft_family llama, or use EAGLE-3")
    check_eagle1_layout(drafter, "vLLM")
    weights = _state(drafter, dtype)
    bias = weights.pop("fc.bias", None)
    if bias is not None and bool(bias.any()):
        raise ConfigError("vLLM's EAGLE-1 fc has no bias, and this draft's fc bias is not zero: retrain with "
                          "--modeling.fc_bias false to serve it with vLLM (SGLang takes it as it is)")
    config = {**_llama_fields(cfg), "architectures": ["LlamaForCausalLM"], "vocab_size": drafter.base_vocab_size,
              "torch_dtype": str(weights["fc.weight"].dtype).replace("torch.", "")}
    return config, weights


def dflash_to_vllm(drafter, dtype: Optional[torch.dtype], base: str) -> tuple[dict, dict]:
    """The speculators `dflash` format (vLLM maps it to `DFlashDraftModel` = qwen3_dflash.py): Qwen3 layers (vLLM's
    DFlash attention has q/k norms), `aux_hidden_state_layer_ids` in the aux convention (ours + 1; vLLM subtracts
    1 again for `dflash_config.target_layer_ids`), `mask_token_id`, non-causal blocks; `speculative_tokens` =
    block_size − 1 so that vLLM runs the block the drafter was trained with."""
    cfg = drafter.hf_config
    if cfg.model_type != "qwen3":
        raise ConfigError(f"vLLM's DFlash draft layers are Qwen3 layers (q/k norms); this draft is {cfg.model_type} "
                          "— retrain with modeling.draft_family qwen3 (the --@dflash default)")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ConfigError("vLLM's DFlash layers take no attention / MLP bias; this draft has one")
    weights = block_weights(drafter, dtype, "vLLM", vocab_parts=True)
    layer_cfg = _layer_config(cfg)
    layer_cfg["vocab_size"] = drafter.base_vocab_size
    config = {
        "speculators_model_type": "dflash",
        "architectures": ["DFlashSpeculator"],
        "transformer_layer_config": layer_cfg,
        "draft_vocab_size": drafter.draft_vocab_size or drafter.base_vocab_size,
        "aux_hidden_state_layer_ids": [k + 1 for k in drafter.feature_layers],
        "mask_token_id": drafter.mask_token_id,
        "block_size": drafter.block_size,
        "speculators_config": _speculators_config("dflash", drafter.block_size - 1, base),
        "torch_dtype": str(weights["fc.weight"].dtype).replace("torch.", ""),
    }
    if cfg.hidden_size != drafter.base_hidden_size:
        config["target_hidden_size"] = drafter.base_hidden_size
    return config, weights


def dspark_to_vllm(drafter, dtype: Optional[torch.dtype], base: str) -> tuple[dict, dict]:
    """The speculators `dspark` format (vLLM's Qwen3DSparkModel: qwen3_dspark.py): DFlash's backbone keys plus
    `markov_head.*` and `confidence_head.proj.*`; `sample_from_anchor: false` (the anchor is the committed bonus
    token, as we train), so DSpark's `block_size` counts the drafts only: ours − 1."""
    config, weights = dflash_to_vllm(drafter, dtype, base)
    config.update({
        "speculators_model_type": "dspark", "architectures": ["Qwen3DSparkModel"],
        "block_size": drafter.block_size - 1, "sample_from_anchor": False,
        "markov_rank": drafter.markov_rank, "markov_head_type": "vanilla",
        "enable_confidence_head": True, "confidence_head_with_markov": True,
        "speculators_config": _speculators_config("dspark", drafter.block_size - 1, base),
    })
    return config, weights


def speculative_config(config: dict, out: Path, steps: int) -> dict:
    """The --speculative-config a user passes to `vllm serve` (and the tests pass to `vllm.LLM`)."""
    method = config.get("speculators_model_type") or "eagle"
    if method in ("dflash", "dspark"):  # the block the drafter was trained with
        steps = config["speculators_config"]["proposal_methods"][0]["speculative_tokens"]
    return {"method": method, "model": str(out), "num_speculative_tokens": steps}


CONVERTERS = {"eagle3_drafter": lambda d, dtype, base, steps: eagle3_to_vllm(d, dtype, base, steps),
              "eagle_drafter": lambda d, dtype, base, steps: eagle_to_vllm(d, dtype),
              "dflash_drafter": lambda d, dtype, base, steps: dflash_to_vllm(d, dtype, base),
              "dspark_drafter": lambda d, dtype, base, steps: dspark_to_vllm(d, dtype, base)}


def export_vllm(drafter, out: Path, dtype: Optional[torch.dtype], base: str, steps: int) -> Path:
    EXPORTER.check(drafter)
    config, weights = CONVERTERS[drafter.ARCHITECTURE](drafter, dtype, base, steps)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))
    atomic_write_json(out / "config.json", config)
    spec = speculative_config(config, out, steps)
    atomic_write_text(out / "README.md", f"""# Draft model for vLLM ({spec['method']})

Exported by specforge_het; vLLM 0.32 loads and serves it unmodified:

```bash
vllm serve {base} --speculative-config '{json.dumps(spec)}'
```
""")
    return out


EXPORTER = register_exporter(Exporter(
    "vllm", "vLLM 0.32's speculators / eagle formats + README.md with the `vllm serve` command",
    {"eagle3_drafter": "speculators eagle3", "eagle_drafter": "eagle (EagleLlamaForCausalLM)",
     "dflash_drafter": "speculators dflash (DFlashDraftModel)",
     "dspark_drafter": "speculators dspark (Qwen3DSparkModel)"},
    lambda drafter, out, dtype, base, ex: export_vllm(drafter, out, dtype, base, ex.num_steps)))
