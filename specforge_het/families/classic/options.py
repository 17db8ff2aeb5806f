"""The classic draft's own keys (config/options.py): where its draft LM starts and how it is distilled."""
from __future__ import annotations

from typing import Optional

from ...config.options import Option, declare
from ...config.ranges import AT_LEAST_0, UNIT

OPTIONS = declare(
    "classic",
    Option("modeling", "draft_model_path", Optional[str], None,
           "start from this small LM instead of a fresh one; with a tokenizer of its own it drafts across "
           "vocabularies"),
    Option("algorithm", "distill_alpha", float, 0.5, "weight of distillation (soft CE to the base) vs data CE", UNIT),
    Option("algorithm", "sequence_weight", float, 0.0,
           "with its own tokenizer: weight of sequence-level distillation (CE on the base's text re-encoded by the "
           "draft's tokenizer, what string-level drafting reads), added to the loss on the shared tokens",
           AT_LEAST_0),
)
