"""P-EAGLE's own key (config/options.py). It also reads the block drafters' `modeling.mask_token_id`."""
from __future__ import annotations

from ...config.options import Option, declare
from ...config.ranges import Range

OPTIONS = declare(
    "peagle",
    Option("algorithm", "parallel_depth", int, 5,
           "P-EAGLE: draft positions trained per anchor (slot 1 + parallel_depth − 1 mask slots); serve with "
           "num_speculative_tokens ≤ it", Range(2, 32)),
)
