"""What the inference run and the benchmark runner share: strategy parameters, batched decoding over a prompt
list, the per-strategy summary row (τ, tokens/s, speedup, iteration ÷ base step, memory, acceptance by depth),
the printed table and the acceptance histogram PNG."""
from __future__ import annotations

import dataclasses
import logging
import resource
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from ..config.schema import RunConfig
from ..config.errors import ConfigError
from ..modeling.base import load_base
from ..utils.extras import have, missing_message
from ..utils.precision import resolve_auto_dtype
from .engine import DecodeResult, Sampling
from .strategies import resolve_strategies

log = logging.getLogger(__name__)

def load_pair(cfg: RunConfig):
    """(base, speculator, sampling) for an inference-style run, with the inference section checked first. The
    speculator (plugins/__init__.py) decodes like speculative_decode_batch with the drafter and plugins bound;
    `.drafter` is the drafter itself."""
    inf = cfg.inference
    resolve_strategies(inf.strategy)
    if inf.batch_size < 1:
        raise ConfigError(f"inference.batch_size: expected >= 1, got {inf.batch_size}")
    try:
        sampling = Sampling(inf.temperature, inf.top_p, inf.seed, inf.draft_sampling)
    except ValueError as e:
        raise ConfigError(f"inference: {e}") from None
    from ..plugins import build_speculator

    if inf.verify_precision not in ("model", "float32"):
        raise ConfigError(f"inference.verify_precision: expected model or float32, got {inf.verify_precision!r}")
    from .compiled import check_compilable

    if inf.compile:
        check_compilable(list(cfg.plugins.enabled or []), inf.verify_precision)
    if inf.static_cache:  # the fp32 head works over it: only plugins are refused
        check_compilable(list(cfg.plugins.enabled or []), "model", "inference.static_cache")
    base = load_base(decode_base_section(cfg))
    base.static_cache = inf.static_cache
    if inf.verify_precision == "float32":
        base.head_dtype = torch.float32
    speculator = build_speculator(cfg, base)
    if inf.compile:
        from .compiled import compile_for_decoding

        compile_for_decoding(base, speculator.drafter)
    return base, speculator, sampling


def decode_base_section(cfg: RunConfig):
    """The base section with inference.dtype applied (auto: bf16 where a probe shows it pays here)."""
    dtype = resolve_auto_dtype(cfg.inference.dtype, cfg.base.dtype, 1024, 4096, "inference: bf16 base")
    return dataclasses.replace(cfg.base, dtype=dtype)


def decode_batches(decode, prompts: list[list[int]], batch_size: int, desc: str) -> list[DecodeResult]:
    """decode(list of prompts) → results, called on consecutive batches of `batch_size` prompts."""
    out = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        for i in range(0, len(prompts), batch_size):
            out.extend(decode(prompts[i:i + batch_size]))
            bar.update(len(prompts[i:i + batch_size]))
    return out


class PeakMemory:
    """Peak memory of a block: CUDA's allocator high-water mark on GPU; on CPU the process's peak resident set
    (which only grows, so on CPU it is the peak so far, not of this block alone)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        self.kind = "cuda_max_allocated" if self.cuda else "process_max_rss"


def acceptance_by_depth(runs: list[DecodeResult], depth: int) -> list[float]:
    """P(draft token at depth d accepted | the step got to depth d−1), d = 1..depth, pooled over all steps."""
    counts = Counter(a for r in runs for a in r.accepted)
    out = []
    for d in range(1, depth + 1):
        reached = sum(n for a, n in counts.items() if a >= d - 1)
        out.append(sum(n for a, n in counts.items() if a >= d) / reached if reached else 0.0)
    return out


def pooled_tau(runs: list[DecodeResult]) -> float:
    """τ pooled over all verify steps: tokens emitted (accepted drafts + one bonus each step) ÷ steps."""
    return sum(r.emitted for r in runs) / max(1, sum(r.steps for r in runs))


def summarise(name: str, params: dict, runs: list[DecodeResult], base_runs: list[DecodeResult], identical: int,
              memory: PeakMemory | None = None) -> dict:
    steps = sum(r.steps for r in runs)
    spec_secs, base_secs = sum(r.seconds for r in runs), sum(b.seconds for b in base_runs)
    base_steps = sum(b.steps for b in base_runs)
    base_step_s = sum(sum(b.iteration_seconds) for b in base_runs) / max(1, base_steps)
    iter_s = sum(sum(r.iteration_seconds) for r in runs) / max(1, steps)
    tok_s = sum(r.new_tokens for r in runs) / spec_secs if spec_secs else 0.0
    base_tok_s = sum(b.new_tokens for b in base_runs) / base_secs if base_secs else 0.0
    row = {
        "strategy": name, **params,
        "tau": pooled_tau(runs),
        "verify_steps": steps,
        "tokens_per_s": tok_s,
        "base_tokens_per_s": base_tok_s,
        "speedup": tok_s / base_tok_s if base_tok_s else 0.0,
        "iteration_over_base_step": iter_s / base_step_s if base_step_s else 0.0,
        "identical": identical, "prompts": len(runs),
        "accept_histogram": dict(sorted(Counter(a for r in runs for a in r.accepted).items())),
        "acceptance_by_depth": acceptance_by_depth(runs, params["depth"]),
    }
    if memory is not None:
        row["peak_memory_mib"], row["memory_kind"] = memory.mib, memory.kind
    return row


def format_table(rows: list[dict]) -> str:
    lines = [f"{'strategy':<8} {'depth':>5} {'top_k':>5} {'nodes':>5} {'tau':>6} {'tok/s':>8} {'base tok/s':>10} "
             f"{'speedup':>7} {'iter/step':>9} {'identical':>9} {'sim tau':>7} {'peak MiB':>8}"]
    for r in rows:
        ident = f"{r['identical']}/{r['prompts']}" if r["identical"] >= 0 else "skipped"
        sim = f"{r['tau_simulated']:>7.2f}" if "tau_simulated" in r else f"{'-':>7}"
        mem = f"{r['peak_memory_mib']:>8.0f}" if "peak_memory_mib" in r else f"{'-':>8}"
        lines.append(f"{r['strategy']:<8} {r['depth']:>5} {r['top_k']:>5} {r['total_tokens']:>5} {r['tau']:>6.2f} "
                     f"{r['tokens_per_s']:>8.1f} {r['base_tokens_per_s']:>10.1f} {r['speedup']:>6.2f}x "
                     f"{r['iteration_over_base_step']:>9.2f} {ident:>9} {sim} {mem}")
    return "\n".join(lines)


def write_acceptance_png(rows: list[dict], path: Path, title: str) -> Path:
    """Two panels per run: the histogram of accepted draft tokens per verify step, and the acceptance rate at each
    draft depth given the step reached it — one series per strategy (or task × strategy). Skipped, with one line,
    without matplotlib (the `plot` extra): the JSON report is the record."""
    if not have("matplotlib"):
        log.warning(f"{path.name} not drawn: {missing_message('matplotlib')}")
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        label = r.get("label", r["strategy"])
        hist = {int(k): v for k, v in r["accept_histogram"].items()}
        total = sum(hist.values()) or 1
        xs = sorted(hist)
        ax1.bar([x + i * width for x in xs], [hist[x] / total for x in xs], width=width, label=label)
        depths = list(range(1, len(r["acceptance_by_depth"]) + 1))
        ax2.plot(depths, r["acceptance_by_depth"], marker="o", label=label)
    ax1.set(xlabel="draft tokens accepted per verify step", ylabel="fraction of steps", title="accepted length")
    ax2.set(xlabel="draft depth d", ylabel="P(accept at d | reached d−1)", ylim=(0, 1.02), title="acceptance by depth")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
