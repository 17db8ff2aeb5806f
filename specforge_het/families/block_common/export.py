"""Block drafters in the engines' formats (the same backbone keys in vLLM and SGLang); each block family registers
its converters from these (families/dflash/export.py, families/dspark/export.py).

vLLM: the speculators formats (`speculators_model_type` dflash / dspark): Qwen3 layers (vLLM's DFlash attention has
q/k norms), `aux_hidden_state_layer_ids` in the aux convention (ours + 1; vLLM subtracts 1 again for
`dflash_config.target_layer_ids`), `mask_token_id`, non-causal blocks.
SGLang: `layers.N.*` (Qwen3), `fc.weight`, `hidden_norm.weight`, `norm.weight` (+ a family's heads), `dflash_config`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ...config.errors import ConfigError
from ...export.formats import dtype_name, llama_fields, speculators_config, state_of, vllm_layer_config


def block_weights(drafter, dtype: Optional[torch.dtype], engine: str, vocab_parts: bool, heads: tuple = ()) -> dict:
    """A block drafter's tensors under the engines' names (the same in vLLM and SGLang): the backbone
    (`layers.*`, `fc`, `hidden_norm`, `norm`), the family's `heads` (key prefixes), and with `vocab_parts` its own
    `embed_tokens` / `lm_head` / `d2t` (SGLang always takes the target's). Anything else is refused."""
    keep = ("layers.", "fc.", "hidden_norm.", "norm.") + heads + (("lm_head.", "d2t") if vocab_parts else ())
    weights = {}
    for k, v in state_of(drafter, dtype).items():
        if vocab_parts and k == "embed.weight":
            weights["embed_tokens.weight"] = v
        elif k.startswith(keep):
            weights[k] = v
        elif k not in ("d2t", "t2d"):
            raise ConfigError(f"block drafter export to {engine}: unexpected drafter weight {k!r}")
    return weights


def block_to_vllm(drafter, dtype: Optional[torch.dtype], base: str, heads: tuple = ()) -> tuple[dict, dict]:
    """The speculators `dflash` layout (vLLM maps it to `DFlashDraftModel` = qwen3_dflash.py); `speculative_tokens`
    = block_size − 1 so that vLLM runs the block the drafter was trained with. A family on this backbone updates
    the config with its own fields."""
    cfg = drafter.hf_config
    if cfg.model_type != "qwen3":
        raise ConfigError(f"vLLM's DFlash draft layers are Qwen3 layers (q/k norms); this draft is {cfg.model_type} "
                          "— retrain with modeling.draft_family qwen3 (the --@dflash default)")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ConfigError("vLLM's DFlash layers take no attention / MLP bias; this draft has one")
    weights = block_weights(drafter, dtype, "vLLM", vocab_parts=True, heads=heads)
    layer_cfg = vllm_layer_config(drafter)
    config = {
        "speculators_model_type": "dflash",
        "architectures": ["DFlashSpeculator"],
        "transformer_layer_config": layer_cfg,
        "draft_vocab_size": drafter.draft_vocab_size or drafter.base_vocab_size,
        "aux_hidden_state_layer_ids": [k + 1 for k in drafter.feature_layers],
        "mask_token_id": drafter.mask_token_id,
        "block_size": drafter.block_size,
        "speculators_config": speculators_config("dflash", drafter.block_size - 1, base),
        "torch_dtype": dtype_name(weights["fc.weight"]),
    }
    if cfg.hidden_size != drafter.base_hidden_size:
        config["target_hidden_size"] = drafter.base_hidden_size
    return config, weights


def block_to_sglang(drafter, dtype: Optional[torch.dtype], architecture: str, block: int,
                    heads: tuple = ()) -> tuple[dict, dict]:
    """SGLang's block draft class `architecture` (DFlashDraftModel: models/dflash.py, or a family's class on the
    same backbone): Qwen3 layers (SGLang's DFlash attention always has q/k norms); the embedding and lm_head are
    always the target's (the backbone's fc is [H, k·H]: the draft runs at the target's width);
    `dflash_config.target_layer_ids` are ours (output of block i, DFlash's own convention); `block` as that class
    counts it."""
    cfg = drafter.hf_config
    if cfg.model_type != "qwen3":
        raise ConfigError(f"SGLang's DFlash draft layers are Qwen3 layers (q/k norms); this draft is {cfg.model_type} "
                          "— retrain with modeling.draft_family qwen3 (the --@dflash / --@dspark default)")
    if drafter.own_embedding or drafter.own_lm_head or cfg.hidden_size != drafter.base_hidden_size:
        raise ConfigError("SGLang's DFlash / DSpark drafts take the target's embedding and lm_head and run at its "
                          "width: retrain with the shared embedding and lm_head at the base's width, or export to vllm")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ConfigError("SGLang's DFlash layers take no attention / MLP bias; this draft has one")
    weights = block_weights(drafter, dtype, "SGLang", vocab_parts=False, heads=heads)
    layer = {**llama_fields(cfg), "model_type": "qwen3"}
    config = {
        **layer, "architectures": [architecture],
        "vocab_size": drafter.base_vocab_size, "block_size": block,
        "dflash_config": {"target_layer_ids": list(drafter.feature_layers), "mask_token_id": drafter.mask_token_id,
                          "block_size": block},
        "torch_dtype": dtype_name(weights["fc.weight"]),
    }
    return config, weights


def block_readme(config: dict, base: str, draft_dir: Path, algorithm: str, drafts: int, extra: str = "") -> str:
    """SGLang's launch command for a block draft: `--speculative-algorithm algorithm`, `drafts` + 1 tokens."""
    arch = config["architectures"][0]
    return f"""# Draft model for SGLang ({arch})

Exported by specforge_het. Serve it next to its base model with:

```bash
python -m sglang.launch_server --model-path {base} \\
  --speculative-algorithm {algorithm} --speculative-draft-model-path {draft_dir} \\
  --speculative-num-draft-tokens {drafts + 1}
```

{drafts} drafts per step plus the bonus token: the block the drafter was trained with.{extra}
"""
