"""Command line → RunConfig.

    python -m specforge_het.<entry> [--@preset ...] [--use_saved_json_config PATH] [--section.key VALUE ...]

Precedence: built-in defaults (or the saved JSON config) < presets, in the order given < --section.key overrides.
`fire` parses the --key value pairs (literals only: ints, floats, bools, None, lists, dicts, else strings),
then the typed schema checks every name and value.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import fire

from ..algorithms import ALGORITHMS
from ..utils.io import atomic_write_text
from ..utils.logs import setup_logging
from .presets import load_preset, preset_descriptions, read_mapping_file
from .schema import ConfigError, RunConfig, apply_mapping, describe_sections, set_key

RESOLVED_CONFIG_NAME = "resolved_config.json"


def parse_flags(args: Sequence[str]) -> dict:
    """Let fire turn `--a.b VALUE` / `--a.b=VALUE` pairs into python literals (no eval: fire uses ast)."""
    captured: dict = {}

    def collect(**kwargs):
        captured.update(kwargs)

    if args:
        fire.Fire(collect, command=list(args), name="specforge_het")
    return captured


def resolve_config(argv: Sequence[str]) -> tuple[RunConfig, list[str]]:
    """Resolve argv into a RunConfig; returns it and the preset names applied."""
    presets, rest = [], []
    saved: Optional[str] = None
    argv = list(argv)
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--@"):
            presets.append(tok[3:])
        elif tok == "--use_saved_json_config" or tok.startswith("--use_saved_json_config="):
            if "=" in tok:
                saved = tok.split("=", 1)[1]
            else:
                if i + 1 >= len(argv):
                    raise ConfigError("--use_saved_json_config needs a path to a resolved_config.json")
                i += 1
                saved = argv[i]
        elif tok.startswith("--"):
            rest.append(tok)
            if "=" not in tok:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise ConfigError(f"{tok} needs a value (write booleans as `{tok} true`)")
                i += 1
                rest.append(argv[i])
        else:
            raise ConfigError(f"unexpected argument {tok!r}; use --@preset or --section.key value")
        i += 1

    cfg = RunConfig()
    if saved is not None:
        path = Path(saved)
        if path.is_dir():
            path = path / RESOLVED_CONFIG_NAME
        data = read_mapping_file(path)
        data = data.get("config", data)  # accept our wrapped file or a bare sections mapping
        apply_mapping(cfg, data, str(path))
    for name in presets:
        mapping, path = load_preset(name)
        apply_mapping(cfg, mapping, f"preset @{name} ({path})")
    for key, value in parse_flags(rest).items():
        set_key(cfg, key, value, f"--{key}")
    return cfg, presets


def save_resolved_config(cfg: RunConfig, out_dir: str | Path, entry: str, presets: Sequence[str]) -> Path:
    """Write the fully resolved config next to a run's outputs; `--use_saved_json_config` reads it back."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"entry": entry, "presets": list(presets), "argv": sys.argv[1:], "config": cfg.to_dict()}
    path = out / RESOLVED_CONFIG_NAME
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def help_text(entry: str, summary: str) -> str:
    presets = preset_descriptions()
    width = max((len(n) for n in presets), default=0)
    preset_lines = "\n".join(f"  --@{n.ljust(width)}  {d}" for n, d in sorted(presets.items())) or "  (none found)"
    return (
        f"usage: python -m specforge_het.{entry} [--@preset ...] [--use_saved_json_config PATH] "
        "[--section.key VALUE ...]\n\n"
        f"{summary}\n\n"
        "Precedence: defaults (or the saved config) < presets in CLI order < --section.key overrides.\n"
        "Values are literals (1e-4, true, None, [1, 2], {'a': 1}); anything else is a string.\n\n"
        f"presets (configs/):\n{preset_lines}\n\nalgorithm.name: {' | '.join(algorithm_names())}\n\n"
        f"sections and keys:\n{describe_sections()}\n"
    )


def algorithm_names() -> list[str]:
    """The registered algorithms (one per drafter family: specforge_het/families/), for --help."""
    return ALGORITHMS.names()


def run_entry(entry: str, summary: str, main: Callable[[RunConfig, list[str]], object],
              argv: Optional[Sequence[str]] = None) -> object:
    """Shared `__main__` of every entry point: help, config resolution, one clear line on config errors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        sys.stdout.write(help_text(entry, summary) + "\n")
        return None
    setup_logging()
    try:
        cfg, presets = resolve_config(argv)
        return main(cfg, presets)  # bad input found while running (a file, a field, a shape) is one line too
    except ConfigError as e:
        sys.stderr.write(f"specforge_het.{entry}: error: {e}\n")
        raise SystemExit(2)
