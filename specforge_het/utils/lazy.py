"""Package names resolved on first use (PEP 562): a package's `__init__` maps each public name to the submodule that
defines it, so importing the package — or one light submodule of it — loads none of the heavy ones."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_names(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """The module-level `__getattr__` of `package`: name → getattr(import `package.where[name]`, name)."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__
