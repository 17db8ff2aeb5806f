"""What an export needs from the base it will be served with, read from the base's own folder (no model load): its
architectures (the speculators `verifier` block)."""
from __future__ import annotations

import json
from pathlib import Path


def base_architectures(base: str) -> list[str]:
    """The base's `architectures` from its config.json; [] when it is not a local folder (a hub id)."""
    cfg = Path(base) / "config.json"
    if not cfg.is_file():
        return []
    return list(json.loads(cfg.read_text()).get("architectures") or [])
