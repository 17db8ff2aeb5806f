"""`pkg:NAME/relative/path`: a file shipped inside an installed Python package (a model or question file from a
package registry), resolved without importing the package. Any other string is returned as it is."""
from __future__ import annotations

import importlib.util
from pathlib import Path

PKG_PREFIX = "pkg:"


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_path(path: str | None) -> str | None:
    if not path or not path.startswith(PKG_PREFIX):
        return path
    name, _, rel = path[len(PKG_PREFIX):].partition("/")
    folder = package_dir(name)
    if folder is None:
        from ..config.errors import ConfigError  # (config imports utils)

        raise ConfigError(f"{path}: no installed Python package {name!r} "
                          f"(pip install --no-deps {name.replace('_', '-')})")
    return str(folder / rel) if rel else str(folder)
