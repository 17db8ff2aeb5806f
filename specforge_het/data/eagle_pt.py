"""Reader for the official EAGLE offline data layout: one `.pt` file per sample holding `input_ids` [T],
`hidden_state` [T, H] and `loss_mask` [T] (a leading batch dim of 1 is accepted).

Files are loaded with `torch.load(weights_only=True)`: tensors only, never arbitrary pickled objects.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config.errors import ConfigError

REQUIRED = ("input_ids", "hidden_state", "loss_mask")


class EaglePtDataset(torch.utils.data.Dataset):
    def __init__(self, data_dir: str | Path):
        self.dir = Path(data_dir)
        self.files = sorted(self.dir.rglob("*.pt"))
        if not self.files:
            raise ConfigError(f"no .pt files under {self.dir} (expected the official EAGLE offline data layout)")
        first = self[0]
        self.manifest = {"hidden_size": first["hidden"].shape[-1], "aux_layer_ids": [], "format": "eagle_pt"}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> dict:
        path = self.files[idx]
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for truncated or non-tensor pickles
            raise ConfigError(f"{path}: not a weights-only EAGLE sample ({type(e).__name__}: {e})") from None
        if not isinstance(data, dict) or any(k not in data for k in REQUIRED):
            have = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"{path}: expected keys {list(REQUIRED)}, found {have}")
        ids, hidden, mask = (data[k] for k in REQUIRED)
        ids, mask = ids.reshape(-1), mask.reshape(-1)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        if not (len(ids) == len(mask) == hidden.shape[0]):
            raise ConfigError(f"{path}: lengths differ (input_ids {len(ids)}, loss_mask {len(mask)}, "
                              f"hidden_state {hidden.shape[0]})")
        return {"input_ids": ids.long(), "loss_mask": mask.long(), "hidden": hidden}
