"""DFlash drafts in the engines' formats: the block layouts of block_common/export.py as they are.

    vllm serve BASE --speculative-config '{"method": "dflash", "model": DRAFT, "num_speculative_tokens": B − 1}'
"""
from __future__ import annotations

from ...export.registry import Converter, register_converter
from ..block_common.export import block_readme, block_to_sglang, block_to_vllm


def dflash_to_vllm(drafter, dtype, base: str, steps: int = 0) -> tuple[dict, dict]:
    return block_to_vllm(drafter, dtype, base)


def dflash_to_sglang(drafter, dtype=None, base: str = "", steps: int = 0) -> tuple[dict, dict]:
    """SGLang's `DFlashDraftModel` counts the whole block (anchor included), as we do."""
    return block_to_sglang(drafter, dtype, "DFlashDraftModel", drafter.block_size)


def sglang_readme(config: dict, base: str, draft_dir, steps: int, topk: int, tokens: int) -> str:
    return block_readme(config, base, draft_dir, "DFLASH", config["block_size"] - 1)


register_converter(Converter("vllm", "dflash_drafter", "speculators dflash (DFlashDraftModel)", dflash_to_vllm,
                             engine_architectures=("DFlashSpeculator",)))
register_converter(Converter("sglang", "dflash_drafter", "DFlashDraftModel", dflash_to_sglang,
                             engine_architectures=("DFlashDraftModel",), static_check=False, readme=sglang_readme))
