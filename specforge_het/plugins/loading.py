"""A drafter checkpoint loaded for a base: on its device and dtype, the base's embedding and head attached, checked
against that base (what the plugins and their applications load drafters with)."""
from __future__ import annotations

from ..modeling.checkpoint import load_drafter


def load_drafter_for(base, path: str):
    drafter = load_drafter(path, device=base.device, dtype=base.dtype)
    return drafter.attach_base(base.embed_tokens, base.lm_head).check_base(base).eval()
