"""DSpark drafts in the engines' formats: the block layouts (block_common/export.py) plus `markov_head.*` and
`confidence_head.proj.*`. `sample_from_anchor: false` (the anchor is the committed bonus token, as we train), so
DSpark's `block_size` counts the drafts only (γ): ours − 1.

vLLM: the speculators `dspark` format (vLLM's Qwen3DSparkModel: qwen3_dspark.py).
SGLang: `Qwen3DSparkModel` (models/dspark.py).
"""
from __future__ import annotations

from ...export.formats import speculators_config
from ...export.registry import Converter, register_converter
from ..block_common.export import block_readme, block_to_sglang, block_to_vllm

HEADS = ("markov_head.", "confidence_head.")
HEAD_FIELDS = {"markov_head_type": "vanilla", "enable_confidence_head": True, "confidence_head_with_markov": True}


def dspark_to_vllm(drafter, dtype, base: str, steps: int = 0) -> tuple[dict, dict]:
    config, weights = block_to_vllm(drafter, dtype, base, heads=HEADS)
    config.update({
        "speculators_model_type": "dspark", "architectures": ["Qwen3DSparkModel"],
        "block_size": drafter.block_size - 1, "sample_from_anchor": False,
        "markov_rank": drafter.markov_rank, **HEAD_FIELDS,
        "speculators_config": speculators_config("dspark", drafter.block_size - 1, base),
    })
    return config, weights


def dspark_to_sglang(drafter, dtype=None, base: str = "", steps: int = 0) -> tuple[dict, dict]:
    config, weights = block_to_sglang(drafter, dtype, "Qwen3DSparkModel", drafter.block_size - 1, heads=HEADS)
    config.update({"sample_from_anchor": False, "markov_rank": drafter.markov_rank, **HEAD_FIELDS,
                   "mask_token_id": drafter.mask_token_id})
    return config, weights


def sglang_readme(config: dict, base: str, draft_dir, steps: int, topk: int, tokens: int) -> str:
    extra = ("\nSet `SGLANG_RAGGED_VERIFY_MODE=cap-accept` (or `compact`) for SGLang to load the confidence head "
             "and verify only the part of each block it expects accepted; the default `static` verifies whole "
             "blocks and skips the head.")
    return block_readme(config, base, draft_dir, "DSPARK", config["block_size"], extra)


register_converter(Converter("vllm", "dspark_drafter", "speculators dspark (Qwen3DSparkModel)", dspark_to_vllm,
                             engine_architectures=("Qwen3DSparkModel",)))
register_converter(Converter("sglang", "dspark_drafter", "Qwen3DSparkModel", dspark_to_sglang,
                             engine_architectures=("Qwen3DSparkModel",), static_check=False, readme=sglang_readme))
