"""Which base blocks a multi-layer drafter reads by default."""
from __future__ import annotations


def default_feature_layers(num_layers: int) -> list[int]:
    """EAGLE-3's low / middle / high layers {1, N//2−1, N−4}; for bases under 8 layers, evenly spread over blocks
    0..N−2: SGLang reads block k's output at the input of block k+1, so it cannot capture the last block."""
    if num_layers >= 8:
        return [1, num_layers // 2 - 1, num_layers - 4]
    last = max(0, num_layers - 2)
    return [0, last // 2, last]
