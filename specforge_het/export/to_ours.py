"""Our own format: model.safetensors + drafter_config.json, loadable with `load_drafter(path)` — for every drafter
(an imported official checkpoint becomes usable by inference and train this way)."""
from __future__ import annotations

from pathlib import Path

from ..modeling.checkpoint import load_drafter
from .registry import Exporter, register_exporter


def export_specforge_het(drafter, out: str, dtype, base=None, cfg=None) -> Path:
    out_path = drafter.save_pretrained(out, dtype=dtype)
    # Validate what we wrote by reading it back: every key present, same shapes.
    again = load_drafter(out_path)
    want = {k: v.shape for k, v in drafter.state_dict().items() if "rotary_emb." not in k}
    got = {k: v.shape for k, v in again.state_dict().items() if "rotary_emb." not in k}
    if want != got:
        raise RuntimeError(f"export to {out_path} did not round-trip: keys/shapes differ")
    return out_path


register_exporter(Exporter("specforge_het", "our own: model.safetensors + drafter_config.json", True,
                           export_specforge_het))
