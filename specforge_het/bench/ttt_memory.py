"""EAGLE-3 training-time-test memory and step time against sequence length, next to a naïve unroll.

    python -m specforge_het.bench.ttt_memory [--bench.lengths 512,1024,2048,4096] [--bench.naive_max 2048]
        [--bench.ttt 7] [--bench.vocab 4096] [--bench.impls ours,per_step,naive]

One fixed tiny EAGLE-3 drafter (Llama midlayer, width 256, 8 heads, a `--bench.vocab`-token own lm_head, 3 fused base
layers of width 256) runs one forward + backward of the TTT loss per length, each in a fresh subprocess so the peak
resident memory (ru_maxrss) belongs to that step alone. Implementations:
  ours      the training loss: modeling/ttt_attention.py (SDPA causal + sink keys, no mask tensor), the teacher
            computed once and the head fused into the loss in row chunks (algorithms/head_loss.py)
  per_step  the same attention, the plain loss: each step's teacher and full logits kept for backward
  naive     the plain loss and an attention that concatenates every step's keys and materialises the
            L × (i+1)·L mask and scores
The slope column is the peak-memory growth per doubling of L: ~2× means linear, ~4× quadratic.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional
import json
import resource
import subprocess
import sys
import time

import torch

from . import comma_choices
from ._options import parse_options, to_argv

log = logging.getLogger(__name__)

NAIVE = "specforge_ttt_naive"
IMPLS = ("ours", "per_step", "naive")


def naive_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, ttt_state=None, **kw):
    """Reference unroll: all steps' keys concatenated, an explicit L × (i+1)·L mask, full score matrix."""
    groups = query.shape[1] // key.shape[1]
    steps = ttt_state.setdefault(module.layer_idx, [])
    steps.append((key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)))
    L = query.shape[2]
    keys = torch.cat([k for k, _ in steps], 2)
    values = torch.cat([v for _, v in steps], 2)
    visible = torch.zeros(L, L * len(steps), dtype=torch.bool)
    visible[:, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
    for j in range(1, len(steps)):
        visible[:, j * L:(j + 1) * L] = torch.eye(L, dtype=torch.bool)
    scores = (query @ keys.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~visible, float("-inf"))
    return (scores.softmax(-1) @ values).transpose(1, 2).contiguous(), None


WIDTH = 256  # the bench drafter's width (and its base's)


def bench_drafter(vocab: int, impl: str = "ours"):
    """The fixed tiny EAGLE-3 drafter of this bench (seeded), its base parts attached."""
    from transformers import AttentionInterface, LlamaConfig

    from ..families.eagle3.model import Eagle3Drafter

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=WIDTH, intermediate_size=704, num_hidden_layers=1, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=vocab, max_position_embeddings=65536)
    drafter = Eagle3Drafter(cfg, WIDTH, vocab, WIDTH, own_lm_head=True, feature_layers=[0, 1, 2])
    if impl == "naive":
        AttentionInterface.register(NAIVE, naive_attention)
        drafter.midlayer.self_attn.config._attn_implementation = NAIVE
    embed, head = torch.nn.Embedding(vocab, WIDTH), torch.nn.Linear(WIDTH, vocab, bias=False)
    drafter.attach_base(embed.requires_grad_(False), head.requires_grad_(False))
    return drafter


def random_batch(n: int, vocab: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, vocab, (1, n), generator=g),
            "hidden": torch.randn(1, n, WIDTH, generator=g), "aux_hidden": torch.randn(1, n, 3 * WIDTH, generator=g),
            "loss_mask": torch.ones(1, n, dtype=torch.long)}


def one_step(length: int, impl: str, ttt: int, vocab: int) -> dict:
    from ..families.eagle3.train import eagle3_loss, eagle3_loss_per_step
    from ..config.schema import AlgorithmSection

    torch.set_num_threads(2)
    drafter = bench_drafter(vocab, impl)
    loss_fn = eagle3_loss if impl == "ours" else eagle3_loss_per_step
    alg = AlgorithmSection(name="eagle3", ttt_length=ttt)
    loss_fn(drafter, random_batch(32, vocab), alg)[0].backward()  # warm-up: first-call allocations and kernel selection
    drafter.zero_grad(set_to_none=True)
    batch = random_batch(length, vocab)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    loss, _ = loss_fn(drafter, batch, alg)
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"length": length, "impl": impl, "peak_mib": (peak - before) / 1024, "seconds": seconds}


@dataclass
class Options:
    lengths: str = field(default="512,1024,2048,4096", metadata={"help": "comma-separated sequence lengths"})
    naive_max: int = field(default=2048, metadata={"help": "longest length for the naive unroll (it is quadratic)"})
    ttt: int = field(default=7, metadata={"help": "TTT unroll steps"})
    vocab: int = field(default=4096, metadata={"help": "the drafter's (and the teacher's) vocabulary size"})
    impls: str = field(default="ours,per_step,naive", metadata={"help": "comma-separated, of: " + ", ".join(IMPLS)})
    one: Optional[str] = field(default=None, metadata={"internal": True})  # length,impl for the subprocess


def main(argv=None) -> None:
    args = parse_options(Options, argv, "bench.ttt_memory", __doc__)
    if args.one:
        length, impl = args.one.split(",")
        log.info(json.dumps(one_step(int(length), impl, args.ttt, args.vocab)))
        return
    impls = comma_choices(args.impls, IMPLS, "bench.ttt_memory: --bench.impls")
    rows = []
    for impl in impls:
        for length in (int(x) for x in args.lengths.split(",")):
            if impl == "naive" and length > args.naive_max:
                continue
            out = subprocess.run([sys.executable, "-m", "specforge_het.bench.ttt_memory",
                                  *to_argv(args, one=f"{length},{impl}")], capture_output=True, text=True)
            if out.returncode:
                rows.append({"length": length, "impl": impl, "error": out.stderr.strip().splitlines()[-1]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            log.info(f"  {impl:<5} L={length:<5} peak +{r['peak_mib']:8.1f} MiB  step {r['seconds']:6.2f} s")
    log.info(f"\nEAGLE-3 TTT ({args.ttt} steps, vocabulary {args.vocab}) forward+backward, CPU "
             f"({torch.backends.cpu.get_cpu_capability()}), one sequence")
    log.info(f"{'impl':<6} {'L':>5} {'peak MiB':>9} {'x per 2L':>8} {'step s':>7} {'x per 2L':>8}")
    for impl in impls:
        prev = None
        for r in (r for r in rows if r["impl"] == impl):
            if "error" in r:
                log.info(f"{impl:<6} {r['length']:>5} failed: {r['error']}")
                continue
            mem_ratio = f"{r['peak_mib'] / prev['peak_mib']:.2f}" if prev else "-"
            time_ratio = f"{r['seconds'] / prev['seconds']:.2f}" if prev else "-"
            log.info(f"{impl:<6} {r['length']:>5} {r['peak_mib']:>9.1f} {mem_ratio:>8} {r['seconds']:>7.2f} "
                     f"{time_ratio:>8}")
            prev = r
    both = {(r["impl"], r["length"]): r for r in rows if "error" not in r}
    for length in sorted({r["length"] for r in rows}):
        for other in ("per_step", "naive"):
            if ("ours", length) in both and (other, length) in both:
                o, n = both[("ours", length)], both[(other, length)]
                log.info(f"L={length}: {other} / ours peak memory {n['peak_mib'] / o['peak_mib']:.2f}x, "
                         f"step time {n['seconds'] / o['seconds']:.2f}x")

if __name__ == "__main__":
    from ..utils.logs import setup_logging

    setup_logging()
    main()
