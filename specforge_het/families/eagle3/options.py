"""EAGLE-3 / 3.1's own keys (config/options.py): the training-time test's length and EAGLE-3.1's two norms."""
from __future__ import annotations

from ...config.options import Option, declare
from ...config.ranges import AT_LEAST_1

OPTIONS = declare(
    "eagle3",
    Option("modeling", "fc_norm", bool, False,
           "EAGLE-3.1: an RMSNorm per fused base feature before fc — exported as the fc_norm field vLLM and SGLang "
           "read"),
    Option("modeling", "norm_output", bool, False,
           "EAGLE-3.1: the post-norm output (instead of the pre-norm one) fed to the next draft step — exported as "
           "norm_output"),
    Option("algorithm", "ttt_length", int, 7, "training-time-test unroll steps", AT_LEAST_1),
)
