"""The block drafters' shared keys (config/options.py), read by every family built on block_common (P-EAGLE reads
`mask_token_id` too)."""
from __future__ import annotations

from typing import Optional

from ...config.options import Option, declare
from ...config.ranges import AT_LEAST_0, AT_LEAST_1, Range

OPTIONS = declare(
    "block_common",
    Option("modeling", "block_size", int, 8,
           "block drafters: one pass over [anchor, mask × (block_size − 1)] drafts block_size − 1 tokens",
           Range(2, 64)),
    Option("modeling", "mask_token_id", Optional[int], None,
           "block drafters and P-EAGLE: the token the mask slots are embedded as (None = the base tokenizer's pad "
           "token, else its last id)", AT_LEAST_0),
    Option("algorithm", "num_anchors", int, 64,
           "block drafters: blocks trained per sequence (anchors drawn among assistant positions)", AT_LEAST_1),
)
