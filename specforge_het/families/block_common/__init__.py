"""Shared by the block-drafter families (DFlash, DSpark): the backbone model, its training blocks, the block proposer
(registered as "block" when a family imports it) and the engines' block layouts. No family registers here: each
registers its own drafter subclass, algorithm and converters from its folder. P-EAGLE, which also drafts every depth
in one call, uses its caterpillar tree (`proposer.assemble_caterpillar`) and mask-token default."""
