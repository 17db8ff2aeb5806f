"""Options that only one drafter family or one plugin reads, declared by the package that reads them.

The schema's generic sections (config/schema.py) keep the keys every run shares. A family declares its own keys in
`families/NAME/options.py`, a plugin in `plugins/options.py`, each as a tuple of `Option`s made by `declare`:

    OPTIONS = declare("dspark", Option("modeling", "markov_rank", int, 64, "rank of the Markov head", Range(1, 4096)))

The schema loads those modules by name when it is first imported (the way the registries find families, so this
layer imports none of them) and adds their keys to its sections: `--modeling.markov_rank` reads and checks like any
other key (type, range, --help, the CLI reference). A key set away from its default on a run whose algorithm or
plugins do not read it is refused in one line (algorithms.check_options, plugins.build.check_plugin_options).

An options module imports nothing but this module and config.ranges, so that loading it loads no model code.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from .ranges import Range

# Packages searched for options modules: every `options.py` directly in them or in one of their sub-packages.
OPTION_PACKAGES = ("specforge_het.families", "specforge_het.plugins")


@dataclass(frozen=True)
class Option:
    section: str  # the schema section the key lives in: modeling, algorithm or plugins
    key: str
    type: Any  # an annotation the schema understands: int, float, bool, str, Optional[...], Literal[...], list
    default: Any
    help: str
    range: Optional[Range] = None
    owner: str = ""  # the family or plugin that declared it (set by `declare`)


def declare(owner: str, *options: Option) -> tuple[Option, ...]:
    """The options of family / plugin `owner`."""
    return tuple(replace(o, owner=owner) for o in options)


def _option_modules() -> list[str]:
    names = []
    for package in OPTION_PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            root = Path(folder)
            names += [f"{package}.options"] if (root / "options.py").is_file() else []
            names += [f"{package}.{p.parent.name}.options" for p in sorted(root.glob("*/options.py"))]
    return names


@lru_cache(maxsize=None)
def declared_options() -> tuple[Option, ...]:
    """Every declared option, in a stable order; two declarations of one key are a programming error."""
    seen: dict[str, Option] = {}
    for module in _option_modules():
        for option in getattr(importlib.import_module(module), "OPTIONS", ()):
            dotted = f"{option.section}.{option.key}"
            if dotted in seen:
                raise ValueError(f"option {dotted} is declared by both {seen[dotted].owner} and {option.owner}")
            seen[dotted] = option
    return tuple(seen.values())
