"""DFlash (algorithm `dflash`, architecture `dflash_drafter`): the block-drafter backbone (block_common/) as it is —
one non-causal pass drafts a block; the block proposer; vLLM speculators `dflash` and SGLang `DFlashDraftModel`
exports; preset `--@dflash`."""
from ..block_common import proposer  # noqa: F401  (registers the block proposer this family's drafter names)
from . import export, model, train  # noqa: F401  (importing them registers the family)
