"""Training speed and peak memory of EAGLE-2 and EAGLE-3 (training-time test, 7 steps) drafters on one base, at
one sequence length, side by side in one run.

    python -m specforge_het.bench.train_speed [--bench.base output/demo_base] [--bench.seq 2048] [--bench.steps 6]
        [--bench.device cpu]

Each algorithm runs in a fresh subprocess (so the peak resident memory on CPU belongs to it alone; on CUDA the
allocator's peak is used): the base's features for one batch of real stdlib text are computed once, then timed
optimizer steps (forward + backward + AdamW) of the drafter with its algorithm's loss, bf16 autocast on CUDA over
fp32 weights as in training. Tokens/s counts the sequence tokens trained on per second.
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

from ._options import parse_options, to_argv

log = logging.getLogger(__name__)

RUNS = {"eagle2": {"name": "eagle2"}, "eagle3 (TTT 7)": {"name": "eagle3", "ttt_length": 7}}


def one(base_path: str, algorithm: dict, seq: int, steps: int, batch: int, device: str) -> dict:
    from .. import train
    from ..algorithms import get_algorithm
    from ..config.schema import RunConfig
    from ..config.schema import AlgorithmSection
    from ..data.stdlib_corpus import stdlib_files
    from ..modeling.base import load_base

    cfg = RunConfig()
    cfg.base.model_name_or_path, cfg.base.device = base_path, device
    cfg.base.dtype = "bfloat16" if device.startswith("cuda") else "float32"
    cfg.algorithm = AlgorithmSection(**algorithm)
    base = load_base(cfg.base)
    text = "\n".join(f.text for f in stdlib_files(max_mb=2.0))
    ids = base.tokenizer(text, add_special_tokens=False)["input_ids"][: seq * batch]
    input_ids = torch.tensor(ids, device=base.device).view(batch, seq)
    layers = train.feature_layers_for(cfg, base)
    data = base.add_features({"input_ids": input_ids, "loss_mask": torch.ones_like(input_ids)},
                             layers or ())
    drafter = train.make_drafter(cfg, base, feature_layers=layers).to(base.device)  # fp32 master weights
    model = train.DrafterWithLoss(drafter, get_algorithm(algorithm["name"]).loss, cfg.algorithm).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = base.device.type == "cuda"

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss, _ = model(**data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    step()  # warm-up: allocations, kernel selection
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {"tokens_per_s": steps * seq * batch / seconds, "step_s": seconds / steps, "peak_mib": peak,
            "trainable": sum(p.numel() for p in drafter.parameters()), "loss": float(loss)}


@dataclass
class Options:
    base: str = "output/demo_base"
    seq: int = field(default=2048, metadata={"help": "tokens per sequence"})
    batch: int = 1
    steps: int = field(default=6, metadata={"help": "timed steps"})
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    one: Optional[str] = field(default=None, metadata={"internal": True})  # run one algorithm, print JSON


def main(argv=None) -> list[dict]:
    args = parse_options(Options, argv, "bench.train_speed", __doc__)
    if args.one:
        log.info(json.dumps(one(args.base, RUNS[args.one], args.seq, args.steps, args.batch, args.device)))
        return []
    rows = []
    for label in RUNS:
        proc = subprocess.run([sys.executable, "-m", "specforge_het.bench.train_speed", *to_argv(args, one=label)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench.train_speed: {label} failed:\n{proc.stderr[-2000:]}")
        rows.append({"algorithm": label, **json.loads(proc.stdout.strip().splitlines()[-1])})
    mem = "CUDA peak allocated" if args.device.startswith("cuda") else "peak RSS"
    log.info(f"\ndrafter training on {args.base}, batch {args.batch} × {args.seq} tokens, {args.device}, "
          f"{args.steps} timed steps")
    log.info(f"| algorithm | trainable | tokens/s | s/step | {mem} MiB | ratio tok/s |")
    log.info("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        log.info(f"| {r['algorithm']} | {r['trainable'] / 1e6:.2f}M | {r['tokens_per_s']:.0f} | {r['step_s']:.3f} "
              f"| {r['peak_mib']:.0f} | {r['tokens_per_s'] / rows[0]['tokens_per_s']:.2f} |")
    return rows


if __name__ == "__main__":
    from ..utils.logs import setup_logging

    setup_logging()
    main()
