"""The proposal-shape syntax of `benchmark.shapes` (`chain:D`, `tree:D:K:N`): one parser, used when the config loads
(config/ranges.py) and when the benchmark decodes (inference/strategies.py)."""
from __future__ import annotations

from .errors import ConfigError


def parse_shape(text: str) -> tuple[str, dict]:
    """A proposal shape written `chain:D` (D drafts in a row) or `tree:D:K:N` (depth D, top-K children, N nodes
    verified) → (strategy, the decoder's parameters)."""
    parts = str(text).split(":")
    ok = (parts[0] == "chain" and len(parts) == 2) or (parts[0] == "tree" and len(parts) == 4)
    try:
        numbers = [int(p) for p in parts[1:]] if ok else []
    except ValueError:
        ok = False
    if not ok or min(numbers) < 1:
        raise ConfigError(f"benchmark.shapes: expected 'chain:DEPTH' or 'tree:DEPTH:TOP_K:NODES' (positive "
                          f"integers), got {text!r}")
    if parts[0] == "chain":
        return "chain", {"depth": numbers[0], "top_k": 1, "total_tokens": numbers[0]}
    return "tree", {"depth": numbers[0], "top_k": numbers[1], "total_tokens": numbers[2]}
