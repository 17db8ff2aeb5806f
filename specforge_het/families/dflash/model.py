"""The DFlash drafter (arXiv 2602.06036): the block-drafter backbone of block_common/model.py, as it is."""
from __future__ import annotations

from functools import partial

from ...modeling.architectures import register_architecture
from ..block_common.model import BlockDrafter, build_block_drafter


@register_architecture("dflash_drafter")
class DFlashDrafter(BlockDrafter):
    """One non-causal pass over [anchor, mask × (B−1)] drafts B−1 tokens (block_common/model.py)."""


build_dflash_drafter = partial(build_block_drafter, cls=DFlashDrafter)
