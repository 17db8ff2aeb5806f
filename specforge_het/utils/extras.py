"""Optional dependencies: each belongs to a pyproject extra, and a feature that needs a missing one stops with one
line naming the extra to install (never an ImportError traceback)."""
from __future__ import annotations

import importlib.util

# import name → (extra, what needs it)
EXTRAS = {
    "matplotlib": ("plot", "the PNG figures"),
    "gguf": ("gguf", "GGUF bases"),
    "datasets": ("data", "conversations from parquet / arrow / save_to_disk folders / hub datasets"),
    "peft": ("lora", "modeling.lora_rank"),
    "deepspeed": ("deepspeed", "training.deepspeed"),
    "wandb": ("wandb", "training.report_to wandb"),
    "hqq": ("quant", "plugins.quant_backend hqq"),
}


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_message(module: str) -> str:
    extra, what = EXTRAS[module]
    return f"{what} need the `{module}` package: pip install 'specforge_het[{extra}]'"


def require(module: str) -> None:
    if not have(module):
        from ..config.errors import ConfigError  # (config imports utils)

        raise ConfigError(missing_message(module))
