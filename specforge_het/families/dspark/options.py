"""DSpark's own keys (config/options.py): its Markov head, its confidence head and where that head stops a block."""
from __future__ import annotations

from ...config.options import Option, declare
from ...config.ranges import AT_LEAST_0, FRACTION, Range

OPTIONS = declare(
    "dspark",
    Option("modeling", "markov_rank", int, 64,
           "rank of the Markov head (a bigram logit correction from the previous draft)", Range(1, 4096)),
    Option("modeling", "confidence_cut", float, 0.0,
           "drafts after the running product of per-slot acceptance estimates falls below this are not verified "
           "(0 = verify the whole block; saved with the drafter)", FRACTION),
    Option("algorithm", "confidence_weight", float, 0.1,
           "weight of the confidence head's loss (BCE to greedy acceptance)", AT_LEAST_0),
)
