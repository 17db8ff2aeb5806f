"""Which base layers each engine can hand an EAGLE-3 / block drafter, read from the engines' own sources:

- SGLang (models/llama.py, `set_eagle3_layers_to_capture`): `layers_to_capture = [k + 1 for k in ids]`, and a block
  captures its *input* — so id k is the output of block k, read at the input of block k+1, and the last block's
  output (k = N−1) is never captured: the drafter would get fewer features than its fc expects.
- vLLM (models/llama.py, `_maybe_add_hidden_state(aux, idx + 1, ...)` after every block): id j is the output of
  block j−1, j = 1..N, so every block 0..N−1 can be read (exports write k + 1).
Both record a layer once however often it is listed, so repeated ids cannot be served.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config.errors import ConfigError

LAST_CAPTURABLE = {"sglang": lambda n: n - 2, "vllm": lambda n: n - 1}
RULES = {"sglang": "SGLang reads block k's output at the input of block k+1, so it captures blocks 0..N−2",
         "vllm": "vLLM records every block's output, 0..N−1"}


def base_num_layers(drafter, base_path: str | None) -> int | None:
    """The base's decoder depth: recorded in the drafter at training time, else read from the base's config.json."""
    n = drafter.meta.get("base_num_layers")
    if n is None and base_path and (Path(base_path) / "config.json").is_file():
        cfg = json.loads((Path(base_path) / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        n = cfg.get("num_hidden_layers")
    return n


def check_capture(feature_layers, num_layers: int | None, engine: str) -> None:
    """One clear error when `engine` cannot capture the drafter's feature layers of an N-layer base."""
    if not feature_layers or num_layers is None:
        return
    last = LAST_CAPTURABLE[engine](num_layers)
    bad = [k for k in feature_layers if not 0 <= k <= last]
    if len(set(feature_layers)) < len(feature_layers):
        raise ConfigError(f"{engine} cannot feed this drafter: it reads base layers {list(feature_layers)}, and the "
                          f"engine records each layer once (`if idx in layers`), so fc would get fewer features than "
                          f"it was trained on; retrain with distinct data.aux_layer_ids")
    if bad:
        raise ConfigError(f"{engine} cannot feed this drafter: it reads base layers {list(feature_layers)} of a "
                          f"{num_layers}-layer base, but {RULES[engine]} (layer {bad} out of reach); retrain with "
                          f"data.aux_layer_ids within 0..{last}")
