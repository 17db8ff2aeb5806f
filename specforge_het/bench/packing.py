"""Sequence packing on a real dataset: padding fraction and training tokens/s, unpacked vs packed, in one run.

    python -m specforge_het.bench.packing --@demo --@eagle3 --@demo_eagle3 [--bench.steps 20]

Both arms train the same fresh drafter (same seed, the preset's algorithm, batch size and learning rate) for
`--bench.steps` timed optimizer steps (after 2 untimed ones) on the same shuffled samples: unpacked (right-padded
batches,
what training does without data.packing) and packed (LPT rows of data.max_length tokens). Tokens/s counts real
(non-padding) tokens.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
import logging
import time

import torch

from ._options import parse_options, split_argv

log = logging.getLogger(__name__)
WARMUP = 2  # untimed steps per arm


def arm(cfg, base, dataset, packed: bool, steps: int) -> dict:
    from ..algorithms import get_algorithm
    from ..data.packing import PackedDataset
    from ..data.shards import collate
    from ..train import feature_layers_for

    torch.manual_seed(cfg.training.seed)
    algorithm = get_algorithm(cfg.algorithm.name)
    drafter = algorithm.build(base, cfg.modeling, feature_layers_for(cfg, base), {}, None)
    rows = PackedDataset(dataset, cfg.data.max_length) if packed else dataset
    loader = torch.utils.data.DataLoader(rows, batch_size=cfg.training.per_device_train_batch_size, shuffle=True,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(drafter.parameters(), lr=cfg.training.learning_rate)
    real = slots = done = 0
    losses = []
    start = None
    while done < steps + WARMUP:
        for batch in loader:
            if done == WARMUP:  # first-call allocations and kernel selection are not timed
                start = time.perf_counter()
            loss, _ = algorithm.loss(drafter, batch, cfg.algorithm)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if done >= WARMUP:
                real += int(batch["attention_mask"].sum())
                slots += batch["attention_mask"].numel()
                losses.append(float(loss.detach()))
            done += 1
            if done == steps + WARMUP:
                break
    seconds = time.perf_counter() - start
    return {"rows": len(rows), "padding": 1 - real / slots, "tokens_per_s": real / seconds, "seconds": seconds,
            "tokens": real, "loss_last5": sum(losses[-5:]) / len(losses[-5:])}


@dataclass
class Options:
    steps: int = field(default=20, metadata={"help": "training steps per arm (the rest of the command line: presets "
                                                     "and --section.key, as for train)"})


def main(argv=None) -> None:
    from ..config.cli import resolve_config
    from ..modeling.base import load_base
    from ..train import training_dataset

    mine, rest = split_argv(sys.argv[1:] if argv is None else argv)
    args = parse_options(Options, mine, "bench.packing", __doc__)
    cfg, _ = resolve_config(rest)
    base = load_base(cfg.base)
    dataset = training_dataset(cfg, base)
    results = {name: arm(cfg, base, dataset, name == "packed", args.steps) for name in ("unpacked", "packed")}
    u, p = results["unpacked"], results["packed"]
    log.info(f"\n{cfg.algorithm.name} on {cfg.data.dataset_dir}: {len(dataset)} samples, batch "
             f"{cfg.training.per_device_train_batch_size}, {args.steps} steps each, CPU "
             f"{torch.backends.cpu.get_cpu_capability()}")
    log.info(f"{'arm':<9} {'rows':>5} {'padding':>8} {'real tok/s':>10} {'tokens':>7} {'loss (last 5)':>13}")
    for name, r in results.items():
        log.info(f"{name:<9} {r['rows']:>5} {r['padding']:>8.1%} {r['tokens_per_s']:>10.0f} {r['tokens']:>7} "
                 f"{r['loss_last5']:>13.4f}")
    log.info(f"packed / unpacked real tokens/s: {p['tokens_per_s'] / u['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    from ..utils.logs import setup_logging

    setup_logging()
    main()
