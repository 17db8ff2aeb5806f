"""Export to a plain Hugging Face causal-LM folder — what vLLM's `draft_model` method and SGLang's `STANDALONE`
algorithm load as a draft model: `config.json` (the LM's own HF config), `model.safetensors` (tied weights saved
once), the base's tokenizer (a same-tokenizer draft), `speculative_config.json` (the `--speculative-config` to pass to
`vllm serve`) and README.md with both engines' commands. A drafter family registers a converter for target "hf" when
its drafter is a plain LM (families/classic/export.py).

    vllm serve BASE --speculative-config '{"method": "draft_model", "model": DRAFT, "num_speculative_tokens": 5}'
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import torch

from ..utils.io import atomic_write_json, atomic_write_text
from .registry import Exporter, register_exporter, write_converted

log = logging.getLogger(__name__)


def speculative_config(out: Path, steps: int, fields: Optional[dict] = None) -> dict:
    return {"method": "draft_model", "model": str(out), "num_speculative_tokens": steps, **(fields or {})}


def save_tokenizer(source: str, out: Path) -> bool:
    """The tokenizer of `source` (the base's for a same-tokenizer draft) beside the draft, when it is a local
    folder."""
    if not (Path(source) / "config.json").is_file() and not (Path(source) / "tokenizer.json").is_file():
        return False
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return True


def export_hf(drafter, out: Path, dtype: Optional[torch.dtype], base: str, steps: int) -> Path:
    converter, config = write_converted("hf", drafter, out, dtype, base, steps)
    source = converter.tokenizer_from(drafter, base) if converter.tokenizer_from else base
    if not save_tokenizer(source, out):
        log.info(f"export: {source} is not a local folder: no tokenizer copied (vLLM and SGLang use the base's)")
    spec = speculative_config(out, steps, converter.serving_fields)
    atomic_write_json(out / "speculative_config.json", spec)
    kind = ("with its own tokenizer (token-level intersection)" if spec.get("use_heterogeneous_vocab")
            else "of the same tokenizer")
    atomic_write_text(out / "README.md", f"""# Draft model ({config['architectures'][0]}, a plain HF causal LM)

Exported by specforge_het. vLLM serves it as a draft model {kind}:

```bash
vllm serve {base} --speculative-config '{json.dumps(spec)}'
```

SGLang (standalone draft model):

```bash
python -m sglang.launch_server --model-path {base} \\
  --speculative-algorithm STANDALONE --speculative-draft-model-path {out} \\
  --speculative-num-steps {steps} --speculative-eagle-topk 1 --speculative-num-draft-tokens {steps + 1}
```
""")
    return out


EXPORTER = register_exporter(Exporter(
    "hf", "a plain HF causal-LM folder (draft models: vLLM draft_model, SGLang STANDALONE) + speculative_config.json",
    False, lambda drafter, out, dtype, base, ex: export_hf(drafter, out, dtype, base, ex.num_steps)))
