"""Export to SGLang's draft formats (0.5.x), which SGLang serves unmodified.

EAGLE-3 → `LlamaForCausalLMEagle3`: `midlayer.*` (q/k/v in_features 2·H), `fc.weight` [H, k·H_target], `norm.weight`,
`lm_head.weight` [draft_vocab, H], `d2t`, `t2d`, and `embed_tokens.weight` when the drafter owns one;
config with `draft_vocab_size`, `target_hidden_size`, `eagle_config.eagle_aux_hidden_state_layer_ids`, and the
EAGLE-3.1 flags `fc_norm` (weights `fc_norm.{i}.weight`) and `norm_output`.
EAGLE-1/2 → `LlamaForCausalLMEagle` / `Qwen2ForCausalLMEagle` / `MistralForCausalLMEagle`: `fc.weight`, `fc.bias`,
`layers.N.*` with no input norm on layer 0; lm_head and embeddings come from the target.

DFlash → `DFlashDraftModel`, DSpark → `Qwen3DSparkModel` (`block_to_sglang`): `layers.N.*` (Qwen3), `fc.weight`,
`hidden_norm.weight`, `norm.weight` (+ `markov_head.*`, `confidence_head.proj.*`), `dflash_config`.

Only drafts SGLang computes identically are written; anything else is refused with what SGLang lacks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from ..config.schema import ConfigError
from .eagle1_checks import check_eagle1_layout
from ..modeling.draft_config import head_dim_of
from ..utils.io import atomic_write, atomic_write_json, atomic_write_text
from .registry import Exporter, register_exporter

EAGLE1_ARCH = {"llama": "LlamaForCausalLMEagle", "qwen2": "Qwen2ForCausalLMEagle", "mistral": "MistralForCausalLMEagle"}
EAGLE3_FAMILIES = ("llama", "mistral")  # SGLang's EAGLE-3 midlayer is a Llama layer (no q/k norms, no qkv bias)


def _llama_fields(cfg) -> dict:
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


def _state(drafter, dtype: Optional[torch.dtype]) -> dict:
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
            for k, v in drafter.state_dict().items() if "rotary_emb." not in k}


def eagle3_to_sglang(drafter, dtype: Optional[torch.dtype] = None) -> tuple[dict, dict]:
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
    state = _state(drafter, dtype)
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
        "architectures": ["LlamaForCausalLMEagle3"], **_llama_fields(cfg), "vocab_size": drafter.base_vocab_size,
        # null = SGLang takes lm_head (and embeddings) from the target: only right for a shared head at the same width.
        "draft_vocab_size": drafter.draft_vocab_size if drafter.own_lm_head else None,
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": list(drafter.feature_layers)},
        "fc_norm": drafter.fc_norm, "norm_output": drafter.norm_output,  # EAGLE-3.1 flags, as SGLang reads them
        "torch_dtype": str(weights["fc.weight"].dtype).replace("torch.", ""),
    }
    if width != drafter.base_hidden_size:
        config["target_hidden_size"] = drafter.base_hidden_size
        if not drafter.own_embedding or not drafter.own_lm_head:
            raise ConfigError("an EAGLE-3 draft of another width needs its own embedding and lm_head for SGLang")
    return config, weights


def eagle_to_sglang(drafter, dtype: Optional[torch.dtype] = None) -> tuple[dict, dict]:
    cfg = drafter.hf_config
    if cfg.model_type not in EAGLE1_ARCH:
        raise ConfigError(f"SGLang serves EAGLE-1/2 drafts of families {', '.join(EAGLE1_ARCH)}; this draft is "
                          f"{cfg.model_type} — retrain with one of them, or export to specforge_het")
    check_eagle1_layout(drafter, "SGLang")
    weights = _state(drafter, dtype)
    if "fc.bias" not in weights:  # a draft trained without one (modeling.fc_bias false): SGLang's fc has a bias
        weights["fc.bias"] = torch.zeros(drafter.fc.out_features, dtype=weights["fc.weight"].dtype)
    config = {**cfg.to_dict(), "architectures": [EAGLE1_ARCH[cfg.model_type]], "vocab_size": drafter.base_vocab_size,
              "tie_word_embeddings": False}
    config.pop("_attn_implementation_autoset", None)
    return config, weights


BLOCK_ARCHITECTURES = ("DFlashDraftModel", "Qwen3DSparkModel")  # SGLang's DFlash and DSpark draft classes


def block_weights(drafter, dtype: Optional[torch.dtype], engine: str, vocab_parts: bool) -> dict:
    """A DFlash / DSpark drafter's tensors under the engines' names (the same in vLLM and SGLang): the backbone
    (`layers.*`, `fc`, `hidden_norm`, `norm`), DSpark's heads, and with `vocab_parts` its own `embed_tokens` /
    `lm_head` / `d2t` (SGLang always takes the target's). Anything else is refused."""
    heads = ("markov_head.", "confidence_head.") if drafter.ARCHITECTURE == "dspark_drafter" else ()
    keep = ("layers.", "fc.", "hidden_norm.", "norm.") + heads + (("lm_head.", "d2t") if vocab_parts else ())
    weights = {}
    for k, v in _state(drafter, dtype).items():
        if vocab_parts and k == "embed.weight":
            weights["embed_tokens.weight"] = v
        elif k.startswith(keep):
            weights[k] = v
        elif k not in ("d2t", "t2d"):
            raise ConfigError(f"block drafter export to {engine}: unexpected drafter weight {k!r}")
    return weights


def block_to_sglang(drafter, dtype: Optional[torch.dtype] = None) -> tuple[dict, dict]:
    """DFlash → SGLang's `DFlashDraftModel` (models/dflash.py), DSpark → its `Qwen3DSparkModel` (models/dspark.py, the
    same backbone + `markov_head.*`, `confidence_head.proj.*`). Qwen3 layers (SGLang's DFlash attention always has
    q/k norms); the embedding and lm_head are always the target's (the backbone's fc is [H, k·H]: the draft runs at
    the target's width); `dflash_config.target_layer_ids` are ours (output of block i, DFlash's own convention).
    DSpark's `block_size` counts its drafts (γ; `sample_from_anchor: false`: the anchor is the bonus token):
    ours − 1."""
    cfg = drafter.hf_config
    dspark = drafter.ARCHITECTURE == "dspark_drafter"
    if cfg.model_type != "qwen3":
        raise ConfigError(f"SGLang's DFlash draft layers are Qwen3 layers (q/k norms); this draft is {cfg.model_type} "
                          "— retrain with modeling.draft_family qwen3 (the --@dflash / --@dspark default)")
    if drafter.own_embedding or drafter.own_lm_head or cfg.hidden_size != drafter.base_hidden_size:
        raise ConfigError("SGLang's DFlash / DSpark drafts take the target's embedding and lm_head and run at its "
                          "width: retrain with the shared embedding and lm_head at the base's width, or export to vllm")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ConfigError("SGLang's DFlash layers take no attention / MLP bias; this draft has one")
    weights = block_weights(drafter, dtype, "SGLang", vocab_parts=False)
    layer = {**_llama_fields(cfg), "model_type": "qwen3"}
    block = drafter.block_size - 1 if dspark else drafter.block_size
    config = {
        **layer, "architectures": ["Qwen3DSparkModel" if dspark else "DFlashDraftModel"],
        "vocab_size": drafter.base_vocab_size, "block_size": block,
        "dflash_config": {"target_layer_ids": list(drafter.feature_layers), "mask_token_id": drafter.mask_token_id,
                          "block_size": block},
        "torch_dtype": str(weights["fc.weight"].dtype).replace("torch.", ""),
    }
    if dspark:
        config.update({"sample_from_anchor": False, "markov_rank": drafter.markov_rank, "markov_head_type": "vanilla",
                       "enable_confidence_head": True, "confidence_head_with_markov": True,
                       "mask_token_id": drafter.mask_token_id})
    return config, weights


def launch_readme(config: dict, base: str, draft_dir: Path, steps: int, topk: int, tokens: int) -> str:
    arch = config["architectures"][0]
    if arch in BLOCK_ARCHITECTURES:
        algo = "DFLASH" if arch == "DFlashDraftModel" else "DSPARK"
        drafts = config["block_size"] - (1 if algo == "DFLASH" else 0)
        extra = ("\nSet `SGLANG_RAGGED_VERIFY_MODE=cap-accept` (or `compact`) for SGLang to load the confidence head "
                 "and verify only the part of each block it expects accepted; the default `static` verifies whole "
                 "blocks and skips the head." if algo == "DSPARK" else "")
        return f"""# Draft model for SGLang ({arch})

Exported by specforge_het. Serve it next to its base model with:

```bash
python -m sglang.launch_server --model-path {base} \\
  --speculative-algorithm {algo} --speculative-draft-model-path {draft_dir} \\
  --speculative-num-draft-tokens {drafts + 1}
```

{drafts} drafts per step plus the bonus token: the block the drafter was trained with.{extra}
"""
    eagle3 = arch.endswith("Eagle3")
    algo = "EAGLE3" if eagle3 else "EAGLE"
    return f"""# Draft model for SGLang ({config['architectures'][0]})

Exported by specforge_het. Serve it next to its base model with:

```bash
python -m sglang.launch_server --model-path {base} \\
  --speculative-algorithm {algo} --speculative-draft-model-path {draft_dir} \\
  --speculative-num-steps {steps} --speculative-eagle-topk {topk} --speculative-num-draft-tokens {tokens}
```

`--speculative-algorithm {algo}` must match the format: serving {'an EAGLE-3' if eagle3 else 'an EAGLE-1/2'} draft with
`{'EAGLE' if eagle3 else 'EAGLE3'}` silently accepts nothing (τ = 1.0).
"""


CONVERTERS = {"eagle3_drafter": eagle3_to_sglang, "eagle_drafter": eagle_to_sglang, "dflash_drafter": block_to_sglang,
              "dspark_drafter": block_to_sglang}


def export_sglang(drafter, out: Path, dtype: Optional[torch.dtype], base: str, steps: int, topk: int,
                  tokens: int) -> Path:
    EXPORTER.check(drafter)
    config, weights = CONVERTERS[drafter.ARCHITECTURE](drafter, dtype)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))
    atomic_write_json(out / "config.json", config)
    atomic_write_text(out / "README.md", launch_readme(config, base, out, steps, topk, tokens))
    return out


def verify_sglang(out: Path, base: str) -> str:
    """SGLang's own draft class loading the export with its own load_weights, when the serving environment is built
    (python -m specforge_het.serving.env); otherwise the static reading of SGLang's sources (sglang_check.py)."""
    from ..serving import env

    if env.is_ready():
        from ..serving import check_with_sglang

        report = check_with_sglang([out], base)[0]
        if report.get("error") or report["problems"]:
            raise ConfigError(f"{out}: SGLang's own {report.get('architecture', 'draft class')} does not load this "
                              f"export: {report.get('error') or '; '.join(report['problems'][:5])}")
        return (f"SGLang's {report['architecture']}.load_weights filled {report['checked']} parameters with the "
                "exported tensors" + (f"; from the target: {', '.join(report['from_target'])}"
                                      if report["from_target"] else ""))
    from .sglang_check import check_sglang_export, sglang_models_dir

    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    if arch in BLOCK_ARCHITECTURES:
        return (f"skipped (the static reading of SGLang's sources covers its EAGLE layouts; {arch} is checked by "
                "SGLang's own load_weights once the serving environment is built: python -m specforge_het.serving.env)")
    try:
        sglang_models_dir()
    except ConfigError as e:
        return f"skipped ({e})"
    summary = check_sglang_export(out)
    return (f"{summary['keys']} keys map onto {summary['architecture']}'s parameters"
            + (f"; from the target: {', '.join(summary['from_target'])}" if summary["from_target"] else ""))


def _write(drafter, out: Path, dtype, base: str, ex) -> Path:
    return export_sglang(drafter, out, dtype, base, ex.num_steps, ex.topk, ex.num_draft_tokens)


EXPORTER = register_exporter(Exporter(
    "sglang", "SGLang 0.5's draft layouts + README.md with the launch command",
    {"eagle3_drafter": "LlamaForCausalLMEagle3", "eagle_drafter": "Llama/Qwen2/MistralForCausalLMEagle",
     "dflash_drafter": "DFlashDraftModel", "dspark_drafter": "Qwen3DSparkModel"},
    _write, verify_sglang))
