"""benchmark: speculative decoding over public-format question files — MT-bench (multi-turn), HumanEval-style and
GSM8K-style — for every strategy, next to base-only decoding of the same turns in the same run, summarised in one
table (τ, tokens/s, speedup, iteration ÷ base step, peak memory) like SpecExec's.

    python -m specforge_het.inference.benchmark --@demo --@eagle2 [--benchmark.max_samples 10]
        [--benchmark.mt_bench question.jsonl] [--benchmark.humaneval HumanEval.jsonl.gz] [--benchmark.gsm8k test.jsonl]
        [--inference.strategy all] [--inference.batch_size 4] [--benchmark.shapes "['chain:2','tree:3:4:10']"]

`benchmark.shapes` decodes the listed proposal shapes instead of inference.strategy's (base-only once for all): the
way to find the shape a drafter pays most with on a machine. MT-bench questions are answered turn by turn: turn 2's
prompt holds the question, each decoder's own answer to turn 1 (identical under greedy decoding), and the second
question. Writes benchmark.json, summary.md and acceptance.png into benchmark.output_dir, with the resolved config.
"""
from __future__ import annotations

import logging
import json
from dataclasses import dataclass
from pathlib import Path

from ..config.cli import run_entry, save_resolved_config
from ..config.schema import RunConfig
from ..config.errors import ConfigError
from ..data.conversations import normalise_row, render
from ..data.heldout import HeldOut
from ..utils.paths import resolve_path
from ..utils.provenance import provenance, provenance_line
from ..utils.io import atomic_write_json, atomic_write_text, read_text
from .divergence import check_outputs
from .engine import base_decode_batch
from .measure import PeakMemory, decode_batches, load_pair, pooled_tau, summarise, write_acceptance_png
from .strategies import eos_ids, shape_plan

# file kind → (the field each row must hold, whether it is a list of user turns / one user turn / raw text)

log = logging.getLogger(__name__)
FORMATS = {"mt_bench": ("turns", "chat"), "gsm8k": ("question", "chat"), "humaneval": ("prompt", "raw")}


@dataclass
class Task:
    name: str
    path: str
    style: str  # "chat": user turns through the chat template; "raw": text completed as is
    turns: list[list[str]]  # per question, its user turns (one for GSM8K / HumanEval)


def read_task(name: str, path: str, max_samples: int) -> Task:
    field, style = FORMATS[name]
    p = Path(resolve_path(path))
    if not p.is_file():
        raise ConfigError(f"benchmark.{name}: no question file at {path}")
    turns = []
    for n, line in enumerate(read_text(p).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not a JSON line ({e.msg})") from None
        value = row.get(field) if isinstance(row, dict) else None
        if value is None:  # any other prompt file: its user turns (messages, ShareGPT, prompt, question, turns)
            value = [m["content"] for m in normalise_row(row, f"{path}:{n}") or [] if m["role"] == "user"] or None
        value = [value] if isinstance(value, str) and field != "turns" else value
        if not isinstance(value, list) or not value or not all(isinstance(t, str) and t for t in value):
            raise ConfigError(f"{path}:{n}: a {name} row needs {field!r} as "
                              f"{'a list of non-empty strings' if field == 'turns' else 'a non-empty string'}")
        turns.append(value)
    if not turns:
        raise ConfigError(f"benchmark.{name}: {path} holds no questions")
    return Task(name, path, style, turns)


def select(task: Task, max_samples: int, selection: str, training: HeldOut | None) -> Task:
    """At most max_samples questions: the first ones, or spread evenly over the file (every category of an
    MT-bench file); questions sharing text with the run's training conversations are left out first."""
    turns = task.turns
    if training is not None:
        turns = [q for q in turns if not any(training.leaks(t) for t in q)]
        if len(turns) < len(task.turns):
            log.info(f"benchmark.{task.name}: {len(task.turns) - len(turns)} questions overlap the training "
                     "conversations; left out")
    if not turns:
        raise ConfigError(f"benchmark.{task.name}: every question of {task.path} shares text with the training "
                          "conversations (benchmark.exclude_training); benchmark on held-out questions")
    if selection == "spread" and len(turns) > max_samples:
        turns = [turns[i * len(turns) // max_samples] for i in range(max_samples)]
    return Task(task.name, task.path, task.style, turns[:max_samples])


def tasks_of(cfg: RunConfig) -> list[Task]:
    b = cfg.benchmark
    if b.max_samples < 1:
        raise ConfigError(f"benchmark.max_samples: expected >= 1, got {b.max_samples}")
    training = None
    if b.exclude_training:
        files = [f for f in (cfg.data.conversations, cfg.data.regenerate_to) if f and Path(f).is_file()]
        training = HeldOut.from_files(files) if files else None
    tasks = [select(read_task(name, getattr(b, name), b.max_samples), b.max_samples, b.selection, training)
             for name in FORMATS if getattr(b, name)]
    if not tasks:
        raise ConfigError("benchmark: no question files given (set benchmark.mt_bench, benchmark.humaneval "
                          "and/or benchmark.gsm8k)")
    return tasks


def decode_task(task: Task, tokenizer, decode, batch_size: int, desc: str) -> list[list]:
    """Every turn of every question, batched across questions turn by turn → results[question][turn]. A decoder's
    own answer to turn t goes into its prompt for turn t+1."""
    history = [[] for _ in task.turns]
    results = [[] for _ in task.turns]
    for t in range(max(len(q) for q in task.turns)):
        live = [i for i, q in enumerate(task.turns) if t < len(q)]
        prompts = []
        for i in live:
            history[i].append({"role": "user", "content": task.turns[i][t]})
            text = (task.turns[i][t] if task.style == "raw"
                    else render(tokenizer, history[i], add_generation_prompt=True))
            prompts.append(tokenizer(text, add_special_tokens=task.style == "raw")["input_ids"])
        outs = decode_batches(decode, prompts, batch_size, f"{desc} turn {t + 1}")
        for i, p, r in zip(live, prompts, outs):
            answer = tokenizer.decode(r.tokens[len(p):], skip_special_tokens=True)
            history[i].append({"role": "assistant", "content": answer})
            results[i].append(r)
    return results


def run(cfg: RunConfig, presets: list[str]) -> dict:
    inf, b = cfg.inference, cfg.benchmark
    plan = shape_plan(cfg)
    tasks = tasks_of(cfg)
    base, speculate, sampling = load_pair(cfg)
    eos = eos_ids(base)
    out_dir = Path(b.output_dir)
    save_resolved_config(cfg, out_dir, "benchmark", presets)
    tok = base.tokenizer

    def base_dec(ps):
        return base_decode_batch(base, ps, inf.max_new_tokens, eos, sampling)

    def spec_dec(params):
        return lambda ps: speculate(ps, inf.max_new_tokens, eos, **params, sampling=sampling)

    warm = [tok("def f():", add_special_tokens=True)["input_ids"]]
    base_dec(warm)
    spec_dec(plan[0][1])(warm)
    report = {"provenance": provenance("inference.benchmark"), "base": cfg.base.model_name_or_path,
              "drafter": speculate.name(inf.drafter_path),
              "proposer": getattr(speculate.drafter, "PROPOSER", "tree") if speculate.drafter is not None else None,
              "max_new_tokens": inf.max_new_tokens, "dtype": str(base.dtype).removeprefix("torch."),
              "batch_size": inf.batch_size, "temperature": inf.temperature, "top_p": inf.top_p,
              "max_samples": b.max_samples, "rows": []}
    lossless = True
    for task in tasks:
        with PeakMemory(base.device) as base_mem:
            base_res = decode_task(task, tok, base_dec, inf.batch_size, f"{task.name} base-only")
        base_flat = [r for q in base_res for r in q]
        for s, params in plan:
            with PeakMemory(base.device) as mem:
                spec_res = decode_task(task, tok, spec_dec(params), inf.batch_size, f"{task.name} {s}")
            flat = [r for q in spec_res for r in q]
            check = compare_turns(base, flat, base_flat, params, inf.near_tie_ulps) if sampling.greedy else None
            lossless &= check is None or check["passed"]
            row = summarise(s, params, flat, base_flat, check["identical"] if check else -1, mem)
            if check:
                keys = ("near_ties", "mismatches", "verdict", "after_divergence", "divergences")
                row.update({k: check[k] for k in keys})
            row.update(task=task.name, label=f"{task.name}/{s}", questions=len(task.turns), turns=len(flat),
                       base_peak_memory_mib=base_mem.mib, tau_by_turn=tau_by_turn(spec_res))
            report["rows"].append(row)
    report["lossless"] = lossless if sampling.greedy else None
    atomic_write_json(out_dir / "benchmark.json", report)
    table = summary_table(report)
    atomic_write_text(out_dir / "summary.md", table + "\n")
    write_acceptance_png(report["rows"], out_dir / "acceptance.png",
                         f"{inf.drafter_path}: {', '.join(t.name for t in tasks)} (batch {inf.batch_size})")
    log.info("\n" + table)
    log.info(f"\nwrote {out_dir}/benchmark.json, summary.md, acceptance.png")
    if report["lossless"] is False:
        log.error("benchmark: LOSSLESS CHECK FAILED — speculative output differs from base-only greedy output where "
                  "the base's choice is not a near-tie (see benchmark.json)")
        raise SystemExit(1)
    return report


def tau_by_turn(results: list[list]) -> list[float]:
    """τ pooled over each turn number's verify steps (MT-bench's turn 2 decodes after a longer, two-turn context
    than any single-turn training conversation)."""
    turns = max(len(q) for q in results)
    return [pooled_tau([q[t] for q in results if t < len(q)]) for t in range(turns)]


def compare_turns(base, runs: list, base_runs: list, params: dict, ulps: float) -> dict:
    """The lossless check of a task: every turn against base-only decoding, divergences classified
    (divergence.py). A later turn whose prompt already differs (it holds an earlier turn's near-tie answer) is
    counted under `after_divergence`, not compared."""
    pairs = [(r, b) for r, b in zip(runs, base_runs) if r.tokens[: len(r.tokens) - r.new_tokens] ==
             b.tokens[: len(b.tokens) - b.new_tokens]]
    check = check_outputs(base, [r.tokens for r, _ in pairs], [b.tokens for _, b in pairs],
                          [len(r.tokens) - r.new_tokens for r, _ in pairs],
                          [1, 2, params["depth"] + 1, params["total_tokens"] + 1], ulps)
    check["after_divergence"] = len(runs) - len(pairs)
    check["passed"] &= check["after_divergence"] == 0 or check["near_ties"] > 0  # a prompt differs only after a tie
    return check


def summary_table(report: dict) -> str:
    mode = "greedy" if not report["temperature"] else f"T={report['temperature']}, top-p {report['top_p']}"
    mode += f", {report['dtype']}" if report.get("dtype") else ""
    mode += f", proposer {report['proposer']}" if report.get("proposer") not in (None, "tree") else ""
    lines = [f"Base {report['base']}, drafter {report['drafter']}; {mode}, batch {report['batch_size']}, "
             f"≤ {report['max_new_tokens']} new tokens per turn, ≤ {report['max_samples']} questions per file.", "",
             "| task | strategy | depth | top_k | nodes | τ | tok/s | base tok/s | speedup | iter/base step "
             "| identical | peak MiB (spec / base) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    if report.get("provenance"):
        lines.insert(1, provenance_line(report["provenance"]))
    for r in report["rows"]:
        ident = f"{r['identical']}/{r['turns']}" if r["identical"] >= 0 else "sampled"
        if r.get("near_ties"):
            ident += f" (+{r['near_ties']} near-ties)"
        lines.append(f"| {r['task']} | {r['strategy']} | {r['depth']} | {r['top_k']} | {r['total_tokens']} "
                     f"| {r['tau']:.2f} | {r['tokens_per_s']:.1f} | {r['base_tokens_per_s']:.1f} | {r['speedup']:.2f}× "
                     f"| {r['iteration_over_base_step']:.2f} | {ident} "
                     f"| {r['peak_memory_mib']:.0f} / {r['base_peak_memory_mib']:.0f} |")
    by_turn = [f"{r['label']} {' / '.join(f'{t:.2f}' for t in r['tau_by_turn'])}" for r in report["rows"]
               if len(r.get("tau_by_turn", [])) > 1]
    if by_turn:
        lines.append("\nτ by turn (turn 1 / turn 2 ...): " + "; ".join(by_turn) + ".")
    lines.append(f"\nPeak memory: {report['rows'][0]['memory_kind'].replace('_', ' ')}.")
    return "\n".join(lines)


if __name__ == "__main__":
    run_entry("benchmark", __doc__.strip().splitlines()[0], run)
