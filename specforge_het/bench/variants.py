"""A side-by-side table of inference reports: one row per drafter variant (τ, speedup, trainable size).

    python -m specforge_het.bench.variants --bench.reports 'output/demo/variants/*/inference' --bench.out T

`bench.reports`: inference output folders (each holding report.json, whose parent is the drafter it evaluated),
comma-separated, each may be a glob pattern. With `bench.out` the table is also written as T.md (with the command,
commit, date, machine and CPU class that produced it) and T.json (the rows and that provenance).
"""
from __future__ import annotations

import logging
import json
import math
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

from safetensors import safe_open

from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.provenance import provenance, provenance_line
from ._options import parse_options

log = logging.getLogger(__name__)


def drafter_params(drafter_dir: Path) -> int:
    """Weights in the drafter checkpoint (its trainable parameters; the vocabulary maps are not counted)."""
    with safe_open(str(drafter_dir / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if k not in ("d2t", "t2d"))


def collect(report_dirs: list[Path]) -> list[dict]:
    """One row per (drafter, strategy) of the inference reports in report_dirs."""
    rows = []
    for d in report_dirs:
        path = d / "report.json"
        if not path.is_file():
            raise SystemExit(f"bench.variants: no report.json in {d}")
        report = json.loads(path.read_text())
        drafter = Path(report["drafter"])
        params = drafter_params(drafter) if (drafter / "model.safetensors").is_file() else -1
        for row in report["strategies"]:
            rows.append({"variant": drafter.name, "drafter": str(drafter), "params": params,
                         **{k: row[k] for k in ("strategy", "depth", "top_k", "total_tokens", "tau",
                                                "iteration_over_base_step", "speedup", "identical", "prompts")}})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| variant | trainable params | strategy | τ | iter/base step | τ ÷ iter cost | speedup | lossless |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for row in rows:
        cost = row["iteration_over_base_step"]
        lines.append(f"| {row['variant']} | {row['params'] / 1e6:.2f}M | {row['strategy']} (d{row['depth']}, "
                     f"k{row['top_k']}, n{row['total_tokens']}) | {row['tau']:.2f} | {cost:.2f} | "
                     f"{row['tau'] / cost:.2f} | {row['speedup']:.2f}× | {row['identical']}/{row['prompts']} |")
    return "\n".join(lines)


@dataclass
class Options:
    reports: str = field(default="output/demo/variants/*/inference",
                         metadata={"help": "inference output folders, comma-separated; glob patterns allowed"})
    out: str = field(default="", metadata={"help": "also write the table to OUT.md and OUT.json with its provenance"})


def main(argv=None) -> None:
    options = parse_options(Options, argv, "bench.variants", __doc__)
    prov = provenance("bench.variants")
    dirs = [Path(p) for pattern in options.reports.split(",") if pattern for p in (sorted(glob(pattern)) or [pattern])]
    rows = collect(dirs)
    text = table(rows)
    if options.out:
        out = Path(options.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out.with_suffix(".json"), {"provenance": prov, "rows": rows})
        atomic_write_text(out.with_suffix(".md"), provenance_line(prov) + "\n\n" + text + "\n")
    log.info("\n" + text)


if __name__ == "__main__":
    main()
