"""`specforge-het`: one console script for every stage and benchmark.

    specforge-het SUBCOMMAND [--@preset ...] [--section.key VALUE ...]
    specforge-het bench NAME [...]
    specforge-het SUBCOMMAND --help

Each subcommand runs the same module as `python -m specforge_het.<module>` (those entry points keep working), with
the arguments after the subcommand. `--help` here reads the modules' docstrings without importing them (fast).
"""
from __future__ import annotations

import ast
import importlib.util
import pkgutil
import runpy
import sys

from .config.errors import closest

STAGES = {
    "convert": "specforge_het.convert",
    "synthesize": "specforge_het.synthesize",
    "demo-base": "specforge_het.demo_base",
    "data-gen": "specforge_het.data_gen",
    "train": "specforge_het.train",
    "infer": "specforge_het.inference",
    "benchmark": "specforge_het.inference.benchmark",
    "serve": "specforge_het.inference.server",
    "export": "specforge_het.export",
    "router": "specforge_het.plugins.router",
    "serving-env": "specforge_het.serving.env",
}


def bench_names() -> list[str]:
    from . import bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def summary_of(module: str) -> str:
    """The first line of a module's docstring, read from its source (no import, so no torch start-up)."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec else None
    origins = [origin]
    if spec and spec.submodule_search_locations:  # a package run as a module: its __main__, else the package's own
        main = importlib.util.find_spec(module + ".__main__")
        origins = [main.origin if main else None, origin]
    for path in filter(None, origins):
        try:
            doc = ast.get_docstring(ast.parse(open(path, encoding="utf-8").read()))
        except (OSError, SyntaxError):
            doc = None
        if doc:
            line = doc.strip().splitlines()[0].split(": ", 1)[-1] if ": " in doc.splitlines()[0][:20] else \
                doc.strip().splitlines()[0]
            return line if len(line) <= 90 else line[:89].rsplit(" ", 1)[0] + " …"
    return ""


def help_text() -> str:
    from . import __version__

    width = max(len(n) for n in [*STAGES, *(f"bench {b}" for b in bench_names())])
    lines = [f"specforge-het {__version__}: train, check and export speculative-decoding drafters", "",
             "usage: specforge-het SUBCOMMAND [--@preset ...] [--section.key VALUE ...]",
             "       specforge-het SUBCOMMAND --help   (its presets, sections, keys, types, ranges and defaults)", "",
             "stages:"]
    lines += [f"  {name.ljust(width)}  {summary_of(mod)}" for name, mod in STAGES.items()]
    lines += ["", "benchmarks (specforge-het bench NAME):"]
    lines += [f"  {('bench ' + b).ljust(width)}  {summary_of('specforge_het.bench.' + b)}" for b in bench_names()]
    return "\n".join(lines)


def resolve(argv: list[str]) -> tuple[str, list[str]]:
    """(module, its arguments) for a command line; SystemExit(2) with one line for an unknown subcommand."""
    name, rest = argv[0], argv[1:]
    if name == "bench":
        names = bench_names()
        if not rest or rest[0] not in names:
            given = rest[0] if rest else ""
            sys.stderr.write(f"specforge-het bench: unknown benchmark {given!r}; {closest(given, names)}\n")
            raise SystemExit(2)
        return f"specforge_het.bench.{rest[0]}", rest[1:]
    if name not in STAGES:
        sys.stderr.write(f"specforge-het: unknown subcommand {name!r}; {closest(name, [*STAGES, 'bench'])}\n")
        raise SystemExit(2)
    return STAGES[name], rest


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(help_text() + "\n")
        return
    if argv[0] in ("-V", "--version"):
        from . import __version__

        sys.stdout.write(f"specforge-het {__version__}\n")
        return
    module, rest = resolve(argv)
    sys.argv = [f"specforge-het {argv[0]}", *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
