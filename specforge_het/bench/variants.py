"""A side-by-side table of inference reports: one row per drafter variant (τ, speedup, trainable size).

    python -m specforge_het.bench.variants --bench.reports 'output/demo/variants/*/inference'

`bench.reports`: inference output folders (each holding report.json, whose parent is the drafter it evaluated),
comma-separated, each may be a glob pattern.
"""
from __future__ import annotations

import logging
import json
import math
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

from safetensors import safe_open

from ._options import parse_options

log = logging.getLogger(__name__)


def drafter_params(drafter_dir: Path) -> int:
    """Weights in the drafter checkpoint (its trainable parameters; the vocabulary maps are not counted)."""
    with safe_open(str(drafter_dir / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if k not in ("d2t", "t2d"))


def table(report_dirs: list[Path]) -> str:
    lines = ["| variant | trainable params | strategy | τ | iter/base step | speedup | lossless |",
             "|---|---:|---|---:|---:|---:|---|"]
    for d in report_dirs:
        path = d / "report.json"
        if not path.is_file():
            raise SystemExit(f"bench.variants: no report.json in {d}")
        report = json.loads(path.read_text())
        drafter = Path(report["drafter"])
        params = drafter_params(drafter) if (drafter / "model.safetensors").is_file() else -1
        for row in report["strategies"]:
            lines.append(f"| {drafter.name} | {params / 1e6:.2f}M | {row['strategy']} (d{row['depth']}, "
                         f"k{row['top_k']}, n{row['total_tokens']}) | {row['tau']:.2f} | "
                         f"{row['iteration_over_base_step']:.2f} | {row['speedup']:.2f}× | "
                         f"{row['identical']}/{row['prompts']} |")
    return "\n".join(lines)


@dataclass
class Options:
    reports: str = field(default="output/demo/variants/*/inference",
                         metadata={"help": "inference output folders, comma-separated; glob patterns allowed"})


def main(argv=None) -> None:
    options = parse_options(Options, argv, "bench.variants", __doc__)
    dirs = [Path(p) for pattern in options.reports.split(",") if pattern for p in (sorted(glob(pattern)) or [pattern])]
    log.info(table(dirs))


if __name__ == "__main__":
    main()
