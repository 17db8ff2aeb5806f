"""How a config key's annotation reads a value (never eval'd) and how --help names it: the typing machinery of the
schema, shared by the benchmarks' own option dataclasses."""
from __future__ import annotations

import math
import typing
from typing import Any, Literal

from .errors import ConfigError, closest


def field_types(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`; convert only where it is lossless and unambiguous."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {where}: expected one of {', '.join(map(str, choices))}, got {value!r}"
                          + (f"; {closest(value, choices)}" if isinstance(value, str) else ""))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `--base.model_name_or_path 123` names a folder "123"
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
    elif tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            item = typing.get_args(tp)
            return [coerce(v, item[0], f"{where}, item {i}") for i, v in enumerate(value)] if item else list(value)
    else:
        return value
    tname = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"config key {where}: expected {tname}, got {value!r} ({type(value).__name__})")


def type_name(tp: Any) -> str:
    """How --help shows a key's type: choices for Literal types, 'x or None' for optional ones."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{type_name(args[0])} or None"
    if origin is Literal:
        return "one of " + " | ".join(map(str, typing.get_args(tp)))
    if origin is list:
        item = typing.get_args(tp)
        return f"list of {item[0].__name__}" if item else "list"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
