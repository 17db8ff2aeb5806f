"""Each plugin's own keys (config/options.py), under [plugins]; the section itself keeps only `enabled`. A key of a
plugin that is not enabled, set away from its default, is refused when the plugins are applied."""
from __future__ import annotations

from typing import Literal, Optional

from ..config.options import Option, declare
from ..config.ranges import AT_LEAST_0, AT_LEAST_1, Range

OPTIONS = (
    declare(
        "offload",
        Option("plugins", "keep_first_n_layers_on_gpu", int, 0,
               "base blocks 0..N-1 stay on the accelerator, the rest live in (pinned) CPU memory and are streamed in",
               AT_LEAST_0),
        Option("plugins", "offload_prefetch", bool, True,
               "copy block i+1 in (on a side CUDA stream) while block i runs"),
    )
    + declare(
        "subspec",
        Option("plugins", "quant_bits", int, 4, "bits of the low-bit substitute blocks", Range(1, 8)),
        Option("plugins", "quant_group_size", int, 64, "weights per quantization group", AT_LEAST_1),
        Option("plugins", "quant_backend", Literal["auto", "hqq", "torch"], "auto",
               "auto = HQQ when installed, else torch"),
        Option("plugins", "subspec_keep_first_n_layers", Optional[int], None,
               "blocks shared unquantized; None = the offloaded split (or 0)", AT_LEAST_0),
        Option("plugins", "subspec_share_kv", bool, True,
               "with kept blocks, batch 1: their KV cache (and verified-token compute) is the base's"),
    )
    + declare(
        "async_draft",
        Option("plugins", "async_branches", int, 3,
               "next trees pre-drafted for this many likely verification outcomes while the base verifies",
               AT_LEAST_1),
    )
    + declare(
        "router",
        Option("plugins", "router_drafters", list, [], "drafter folders, one picked per prompt"),
        Option("plugins", "router_path", str, "output/demo/router",
               "where `python -m specforge_het.plugins.router` saves / reads the router"),
        Option("plugins", "router_train_prompts", int, 48,
               "conversations of data.conversations its acceptance is recorded on", AT_LEAST_1),
    )
)
