"""Named presets: YAML files under specforge_het/configs/ (any depth; `configs/` at the repository root links
there) and in each drafter family's folder (specforge_het/families/NAME/*.yaml), each a {section: {key: value}}
bundle. They ship inside the package, so a plain `pip install .` has them.

A preset's name is its file stem, matched exactly (never by substring). A preset may also be
given as a path to a .yaml/.json file. YAML is read with `yaml.safe_load`: data only, no code.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import yaml

from .errors import ConfigError, closest

PRESET_SUFFIXES = (".yaml", ".yml", ".json")


def presets_dirs() -> list[Path]:
    """Where presets are looked up: $SPECFORGE_HET_CONFIGS (os.pathsep-separated), the repo's configs/, then the
    drafter families' folders (each family ships its own presets)."""
    dirs = [Path(p) for p in os.environ.get("SPECFORGE_HET_CONFIGS", "").split(os.pathsep) if p]
    package = Path(__file__).resolve().parents[1]
    dirs += [package / "configs", package / "families"]
    return [d for d in dirs if d.is_dir()]


@lru_cache(maxsize=None)
def _index(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """name -> file. An earlier folder shadows a later one; two files of one name in one folder tree is an error."""
    found: dict[str, Path] = {}
    for d in dirs:
        in_this_dir: dict[str, Path] = {}
        for path in sorted(d.rglob("*")):
            if path.suffix not in PRESET_SUFFIXES or not path.is_file():
                continue
            if path.stem in in_this_dir:
                raise ConfigError(f"two presets are named '{path.stem}': {in_this_dir[path.stem]} and {path}")
            in_this_dir[path.stem] = path
        for name, path in in_this_dir.items():
            found.setdefault(name, path)
    return found


def available_presets() -> dict[str, Path]:
    return _index(tuple(presets_dirs()))


def read_mapping_file(path: Path) -> dict:
    """Read a YAML or JSON file of config data, with errors that name the file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at top level, got {type(data).__name__}")
    return data


def load_preset(name: str) -> tuple[dict, Path]:
    """Return (sections mapping, file) of a preset given by name or by path."""
    as_path = Path(name)
    if as_path.suffix in PRESET_SUFFIXES and as_path.is_file():
        path = as_path
    else:
        presets = available_presets()
        if name not in presets:
            raise ConfigError(f"unknown preset '@{name}'; {closest(name, presets)}")
        path = presets[name]
    data = dict(read_mapping_file(path))
    data.pop("description", None)
    return data, path


def preset_descriptions() -> dict[str, str]:
    out = {}
    for name, path in available_presets().items():
        try:
            out[name] = str(read_mapping_file(path).get("description", "")).strip()
        except ConfigError as e:
            out[name] = f"(unreadable: {e})"
    return out
