"""Export to the formats vLLM 0.32 serves unmodified (read from its own sources and proven by loading and serving them
with vLLM's CPU build: tests/test_serving.py). Each drafter family registers its converter for target "vllm"
(families/NAME/export.py: what its config and tensors become); this module writes them with the README holding the
`vllm serve` command and `speculative_config.json` (that command's --speculative-config, which the serving tier
passes to vLLM as it is):

    vllm serve BASE --speculative-config '{"method": METHOD, "model": DRAFT, "num_speculative_tokens": N}'

METHOD is the config's `speculators_model_type` unless the family's converter names the engine's own fields
(`Converter.serving_fields`: a format vLLM serves under another method, with extra switches).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from ..utils.io import atomic_write_json, atomic_write_text
from .registry import Exporter, register_exporter, write_converted


def speculative_config(config: dict, out: Path, steps: int, fields: Optional[dict] = None) -> dict:
    """The --speculative-config a user passes to `vllm serve` (and the tests pass to `vllm.LLM`); `fields`: the
    converter's serving fields, which win."""
    method = config.get("speculators_model_type") or "eagle"
    if "block_size" in config:  # a block drafter: the block it was trained with, as its converter wrote it
        steps = config["speculators_config"]["proposal_methods"][0]["speculative_tokens"]
    return {"method": method, "model": str(out), "num_speculative_tokens": steps, **(fields or {})}


def export_vllm(drafter, out: Path, dtype: Optional[torch.dtype], base: str, steps: int) -> Path:
    converter, config = write_converted("vllm", drafter, out, dtype, base, steps)
    spec = speculative_config(config, out, steps, converter.serving_fields)
    atomic_write_json(out / "speculative_config.json", spec)
    atomic_write_text(out / "README.md", f"""# Draft model for vLLM ({spec['method']})

Exported by specforge_het; vLLM 0.32 loads and serves it unmodified:

```bash
vllm serve {base} --speculative-config '{json.dumps(spec)}'
```
""")
    return out


EXPORTER = register_exporter(Exporter(
    "vllm", "vLLM 0.32's speculators / eagle formats + README.md with the `vllm serve` command", False,
    lambda drafter, out, dtype, base, ex: export_vllm(drafter, out, dtype, base, ex.num_steps)))
