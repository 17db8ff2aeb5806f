"""Benchmark options on the project's one command-line syntax: `--bench.KEY VALUE` (or `--bench.KEY=VALUE`), read
the way every stage reads `--section.key` (python literals through fire; never eval), typed by the benchmark's own
dataclass, with `--help` listing every key, its type, default and meaning.

A benchmark declares

    @dataclass
    class Options:
        steps: int = field(default=20, metadata={"help": "AdamW steps per arm"})

and calls `options = parse_options(Options, argv, "bench.NAME", __doc__)` (this module is private: not a benchmark).
Comma lists stay strings ("1,4"), as each benchmark splits them; fire's reading of `1,4` as a tuple is joined back.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import typing
from typing import Optional, Sequence

from ..config.cli import parse_flags
from ..config.errors import ConfigError, closest
from ..config.types import coerce, field_types, type_name
from ..utils.logs import setup_logging

log = logging.getLogger(__name__)
SECTION = "bench"


def help_text(cls, entry: str, doc: str) -> str:
    types = field_types(cls)
    lines = [f"usage: python -m specforge_het.{entry} [--{SECTION}.KEY VALUE ...]", "",
             (doc or "").strip(), "", f"[{SECTION}] keys:"]
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  --{SECTION}.{f.name:<18} {type_name(types[f.name]):<8} default {default!r}"
                     + (f"  — {f.metadata['help']}" if f.metadata.get("help") else ""))
    return "\n".join(lines)


def parse_options(cls, argv: Optional[Sequence[str]], entry: str, doc: str):
    """argv (None = sys.argv[1:]) → an instance of the dataclass `cls`; --help prints the keys and exits 0; a bad
    key or value exits 2 with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(cls, entry, doc))
        raise SystemExit(0)
    try:
        return read_options(cls, argv, entry)
    except ConfigError as e:
        log.error(f"{entry}: {e}")
        raise SystemExit(2) from None


def read_options(cls, argv: Sequence[str], entry: str):
    types = field_types(cls)
    values = {}
    for dotted, value in parse_flags(argv).items():
        section, _, key = dotted.partition(".")
        if section != SECTION or not key:
            raise ConfigError(f"unknown option --{dotted}; {entry} takes --{SECTION}.KEY (see --help)")
        if key not in types:
            raise ConfigError(f"unknown option --{SECTION}.{key}; {closest(key, types)}")
        text = str in (types[key], *typing.get_args(types[key]))  # str or Optional[str]
        if text and isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)  # fire reads `1,4` as a tuple: the benchmark splits commas
        elif text and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # fire reads `16` as a number: a comma list of one
        values[key] = coerce(value, types[key], f"--{SECTION}.{key}")
    return cls(**values)


def to_argv(options, **overrides) -> list[str]:
    """The command-line form of `options` with `overrides` (for a benchmark's own subprocesses)."""
    out = []
    for f in dataclasses.fields(options):
        value = overrides.get(f.name, getattr(options, f.name))
        if value is not None:
            out += [f"--{SECTION}.{f.name}", str(value)]
    return out


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the --bench.* options, everything else: presets and --section.key for a benchmark that also runs a stage)."""
    mine, rest, i = [], [], 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            mine.append(a)
            i += 1
        elif a.startswith(f"--{SECTION}."):
            takes_value = "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("--")
            mine += argv[i:i + 1 + takes_value]
            i += 1 + takes_value
        else:
            rest.append(a)
            i += 1
    return mine, rest
