"""A table of drafting families trained for one base, from the reports their runs already wrote: training (time,
steps, held-out simulated τ), our decoder (τ, speedup, iteration cost, lossless check per task and strategy) and
vLLM serving the export (τ, per-position parity with our decoder, tok/s base → speculative).

    python -m specforge_het.bench.families --bench.drafters output/smollm2/eagle3,output/smollm2/dflash \\
        --bench.benchmark benchmark_bf16 --bench.serving serving --bench.out docs/results/smollm2_families

Per drafter folder D it reads D/drafter_config.json, D/train_log.json and D/eval.json (written by `train`),
D/BENCHMARK/benchmark.json (`inference.benchmark`) and D/SERVING/serving.json (`bench.serving`); a report that is
missing leaves its cells empty ("–") and is named in the log. Nothing is measured here: each number is the ratio its
own run measured side by side, and the table lists every source run's command, commit, date and CPU class.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.provenance import provenance, provenance_line
from ._options import parse_options
from .variants import drafter_params

log = logging.getLogger(__name__)
DASH = "–"


def read_json(path: Path) -> Optional[object]:
    if not path.is_file():
        log.info(f"bench.families: {path} is missing; its cells stay empty")
        return None
    return json.loads(path.read_text())


def training_row(drafter: Path) -> dict:
    """The family, size and training budget of one drafter folder, from what `train` wrote there."""
    config = read_json(drafter / "drafter_config.json") or {}
    log_rows = read_json(drafter / "train_log.json") or []
    evals = [r for r in (read_json(drafter / "eval.json") or []) if "eval_tau_sim" in r]
    final = next((r for r in reversed(log_rows) if "train_runtime" in r), {})
    weights = drafter / "model.safetensors"
    return {"drafter": str(drafter), "family": config.get("algorithm") or drafter.name,
            "params": drafter_params(weights.parent) if weights.is_file() else None,
            "train_minutes": final["train_runtime"] / 60 if "train_runtime" in final else None,
            "steps": final.get("step"), "epochs": final.get("epoch"),
            "tau_sim": evals[-1]["eval_tau_sim"] if evals else None,
            "tau_sim_step": evals[-1]["step"] if evals else None}


def decoder_rows(report: Optional[dict], family: str) -> list[dict]:
    """One row per (task, strategy) of an inference.benchmark report."""
    keys = ("task", "strategy", "depth", "top_k", "total_tokens", "tau", "speedup", "tokens_per_s",
            "base_tokens_per_s", "iteration_over_base_step", "identical", "near_ties", "mismatches", "turns")
    return [{"family": family, "dtype": report.get("dtype"), **{k: row.get(k) for k in keys}}
            for row in (report or {}).get("rows", [])]


def serving_rows(report: Optional[dict], drafter: Path, family: str) -> list[dict]:
    """The rows of a bench.serving report that served this drafter."""
    keys = ("depth", "temperature", "tau_vllm", "tau_ours", "parity", "vllm_identical", "ours_identical",
            "vllm_base_tok_s", "vllm_spec_tok_s", "patched", "engine_defect")
    return [{"family": family, "dtype": report.get("dtype"), **{k: row.get(k) for k in keys}}
            for row in (report or {}).get("rows", []) if Path(row.get("drafter", "")) == drafter]


def first_report(drafter: Path, subfolders: str, name: str) -> Path:
    """drafter/SUB/name for the first of the comma-separated subfolders that holds one (else the first's path)."""
    paths = [drafter / sub / name for sub in subfolders.split(",") if sub]
    return next((p for p in paths if p.is_file()), paths[0] if paths else drafter / name)


def fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return DASH if value is None else f"{value:{spec}}{suffix}"


def training_table(rows: list[dict]) -> str:
    lines = ["| family | drafter | trainable params | training | steps (epochs) | held-out simulated τ (chain 5) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        params = DASH if r["params"] is None else f"{r['params'] / 1e6:.1f}M"
        epochs = DASH if r["epochs"] is None else f"{r['epochs']:.1f}"
        lines.append(f"| {r['family']} | `{r['drafter']}` | {params} | {fmt(r['train_minutes'], '.0f', ' min')} | "
                     f"{fmt(r['steps'], 'd')} ({epochs}) | {fmt(r['tau_sim'])} |")
    return "\n".join(lines)


def decoder_table(rows: list[dict]) -> str:
    lines = ["| family | task | strategy | dtype | τ | tok/s base → spec | speedup | iter/base step | identical |",
             "|---|---|---|---|---:|---|---:|---:|---|"]
    for r in rows:
        shape = f"{r['strategy']} (d{r['depth']}, k{r['top_k']}, n{r['total_tokens']})"
        ties = f" (+{r['near_ties']} near-ties)" if r.get("near_ties") else ""
        lines.append(f"| {r['family']} | {r['task']} | {shape} | {r['dtype']} | {fmt(r['tau'])} | "
                     f"{fmt(r['base_tokens_per_s'], '.1f')} → {fmt(r['tokens_per_s'], '.1f')} | "
                     f"{fmt(r['speedup'], '.2f', '×')} | {fmt(r['iteration_over_base_step'])} | "
                     f"{r['identical']}/{r['turns']}{ties} |")
    return "\n".join(lines)


def serving_table(rows: list[dict]) -> str:
    lines = ["| family | drafts | T | dtype | τ vLLM | τ ours (same drafts) | parity | identical vLLM / ours | "
             "vLLM tok/s base → spec |", "|---|---:|---:|---|---:|---:|---|---|---|"]
    for r in rows:
        base, spec = r["vllm_base_tok_s"], r["vllm_spec_tok_s"]
        speed = DASH if not (base and spec) else f"{base:.0f} → {spec:.0f} ({spec / base:.2f}×)"
        identical = ("sampled" if r["temperature"] else f"{r['vllm_identical']} / {r['ours_identical']}")
        parity = DASH if r["parity"] is None else ("yes" if r["parity"] else "**no**")
        if r.get("engine_defect") and r["temperature"] and not r.get("patched"):  # greedy never reads it
            parity += " (engine defect)"
        temperature = f"{r['temperature']} (patched vLLM)" if r.get("patched") else r["temperature"]
        lines.append(f"| {r['family']} | {fmt(r['depth'], 'd')} | {temperature} | {r['dtype'] or DASH} | "
                     f"{fmt(r['tau_vllm'])} | "
                     f"{fmt(r['tau_ours'])} | {parity} | {identical} | {speed} |")
    return "\n".join(lines)


@dataclass
class Options:
    drafters: str = field(default="", metadata={"help": "drafter folders written by `train`, comma-separated"})
    benchmark: str = field(default="benchmark", metadata={
        "help": "the subfolder of each drafter holding inference.benchmark's benchmark.json; a comma-separated "
                "list: the first that holds one (a rerun's folder before the original's)"})
    serving: str = field(default="serving", metadata={
        "help": "the subfolder of each drafter holding bench.serving's serving.json (a comma-separated list as "
                "for benchmark)"})
    out: str = field(default="", metadata={"help": "also write the tables to OUT.md and OUT.json with provenance"})


def collect(options: Options) -> dict:
    drafters = [Path(d) for d in options.drafters.split(",") if d]
    if not drafters:
        raise SystemExit("bench.families: --bench.drafters: expected drafter folders, comma-separated")
    missing = [str(d) for d in drafters if not d.is_dir()]
    if missing:
        raise SystemExit(f"bench.families: --bench.drafters: no such folder {', '.join(missing)}")
    result = {"training": [], "decoder": [], "serving": [], "sources": []}
    for d in drafters:
        train = training_row(d)
        result["training"].append(train)
        bench = read_json(first_report(d, options.benchmark, "benchmark.json"))
        serve = read_json(first_report(d, options.serving, "serving.json"))
        result["decoder"] += decoder_rows(bench, train["family"])
        result["serving"] += serving_rows(serve, d, train["family"])
        result["sources"] += [r["provenance"] for r in (bench, serve) if r and "provenance" in r]
    return result


def render(result: dict) -> str:
    sources = "\n".join(f"- {provenance_line(p)}" for p in result["sources"])
    return "\n\n".join(["Training:", training_table(result["training"]), "Our decoder:",
                        decoder_table(result["decoder"]), "vLLM serving the export:",
                        serving_table(result["serving"]), "Source runs:\n\n" + sources])


def main(argv=None) -> None:
    options = parse_options(Options, argv, "bench.families", __doc__)
    result = collect(options)
    text = render(result)
    if options.out:
        prov = provenance("bench.families")
        out = Path(options.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out.with_suffix(".json"), {"provenance": prov, **result})
        atomic_write_text(out.with_suffix(".md"), provenance_line(prov) + "\n\n" + text + "\n")
    log.info("\n" + text)


if __name__ == "__main__":
    main()
