"""Typed run configuration: schema, presets, the `--@preset --section.key` command line, and errors.

Names are resolved on first use, so that importing `config.errors` (the leaf every layer raises from) does not
load the schema and the command line with it."""
from __future__ import annotations

from ..utils.lazy import lazy_names

_WHERE = {"ConfigError": "errors", "RunConfig": "schema", "RESOLVED_CONFIG_NAME": "cli", "resolve_config": "cli",
          "run_entry": "cli", "save_resolved_config": "cli"}

__all__ = sorted(_WHERE)
__getattr__ = lazy_names(__name__, _WHERE)
