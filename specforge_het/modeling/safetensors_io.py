"""safetensors files read with one clear error naming the file, and the checks every load and save makes: finite
values, tied weights saved once."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

from ..config.errors import ConfigError
from ..utils.io import sha256_file


def read_safetensors(path: Path, sha256: Optional[str] = None) -> dict:
    """A safetensors file's tensors, with one clear error naming the file when it is missing, truncated or corrupt
    (or, given the hash its writer recorded, when its bytes changed)."""
    if not path.is_file():
        raise ConfigError(f"no weights at {path}")
    if sha256 is not None and sha256_file(path) != sha256:
        raise ConfigError(f"{path} is corrupt: its sha256 differs from the one recorded when it was written")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a bad header or a short file
        raise ConfigError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None


def check_finite(state: dict, where) -> None:
    """Refuse weights holding NaN or ±inf (a diverged run, or corrupted bytes that still parse)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ConfigError(f"{where}: non-finite values (NaN or inf) in {', '.join(sorted(bad)[:6])}"
                          + (f" and {len(bad) - 6} more" if len(bad) > 6 else ""))


def tied_keys(state: dict) -> dict[str, str]:
    """Keys whose tensor is the same storage as an earlier key's (tied weights) → that earlier key."""
    first, ties = {}, {}
    for k, v in state.items():
        v = v.to_local() if hasattr(v, "to_local") else v  # an FSDP2 shard (DTensor): its local storage
        if v.numel() == 0:
            continue
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if ident in first:
            ties[k] = first[ident]
        else:
            first[ident] = k
    return ties
