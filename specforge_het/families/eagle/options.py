"""EAGLE-1/2's own keys (config/options.py): the fc bias of the official layout and the feature-regression loss."""
from __future__ import annotations

from ...config.options import Option, declare
from ...config.ranges import AT_LEAST_0

OPTIONS = declare(
    "eagle",
    Option("modeling", "fc_bias", bool, False,
           "a bias on fc (the official EAGLE layout). vLLM's EAGLE-1 fc has none, so the default is without: such "
           "drafts serve in vLLM and SGLang (exported with a zero bias); true matches official checkpoints"),
    Option("algorithm", "v_w", float, 1.0, "feature-regression weight", AT_LEAST_0),
    Option("algorithm", "p_w", float, 0.1, "soft cross-entropy weight", AT_LEAST_0),
    Option("algorithm", "noise_std", float, 0.2, "uniform noise added to input features while training", AT_LEAST_0),
)
