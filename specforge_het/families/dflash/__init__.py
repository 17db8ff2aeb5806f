"""DFlash (algorithm `dflash`, architecture `dflash_drafter`): the block-drafter backbone (block_common/) as it is —
one non-causal pass drafts a block; the block proposer; vLLM speculators `dflash` and SGLang `DFlashDraftModel`
exports; preset `--@dflash`."""
# Imported by families.load_all: importing them registers the family; this file imports nothing.
REGISTERS = ("..block_common.proposer", ".export", ".model", ".train")
