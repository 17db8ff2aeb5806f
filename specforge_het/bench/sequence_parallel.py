"""Sequence parallelism's memory and time per process against sequence length: one process holding the whole
sequence next to a group of P processes (gloo) each holding 1/P of its rows.

    python -m specforge_het.bench.sequence_parallel [--bench.lengths 2048,4096,8192] [--bench.sizes 1,2] [--bench.ttt 7]
        [--bench.vocab 4096]

The drafter is bench.ttt_memory's fixed tiny EAGLE-3 (width 256, 8 heads, own lm_head); one forward + backward of
the TTT loss (the training loss: fused head, teacher once) over one sequence, each measurement in fresh processes,
so the peak resident memory (ru_maxrss, above the process's level before the step) is that step's alone. The
table gives the largest peak over the group's processes and the step's wall time. On one machine the P processes
share its cores: time here is not the GPU picture, memory per process is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ._options import parse_options

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _member(rank: int, size: int, port: int, length: int, ttt: int, vocab: int, report: str) -> None:
    """One process of the group: warm up, then one measured step; writes its numbers to report.<rank>."""
    import torch.distributed as dist

    from ..families.eagle3.train import eagle3_loss
    from ..config.schema import AlgorithmSection
    from ..modeling.sequence_parallel import make_groups
    from .ttt_memory import bench_drafter, random_batch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        sp = make_groups(size)
        drafter, alg = bench_drafter(vocab), AlgorithmSection(name="eagle3", ttt_length=ttt)
        eagle3_loss(drafter, random_batch(32 * size, vocab), alg, sp=sp)[0].backward()  # warm-up
        drafter.zero_grad(set_to_none=True)
        batch = random_batch(length, vocab)
        dist.barrier()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        loss, _ = eagle3_loss(drafter, batch, alg, sp=sp)
        loss.backward()
        dist.barrier()
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        Path(f"{report}.{rank}").write_text(json.dumps({"peak_mib": (peak - before) / 1024, "seconds": seconds}))
    finally:
        dist.destroy_process_group()


def measure(length: int, size: int, ttt: int, vocab: int) -> dict:
    """Run one group of `size` processes in a fresh interpreter → the worst process's peak and the step time."""
    with tempfile.TemporaryDirectory() as tmp:
        report = str(Path(tmp) / "report")
        cmd = [sys.executable, "-m", "specforge_het.bench.sequence_parallel", "--bench.one",
               f"{length},{size},{ttt},{vocab},{report}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            return {"length": length, "size": size, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        ranks = [json.loads(Path(f"{report}.{r}").read_text()) for r in range(size)]
    return {"length": length, "size": size, "peak_mib": max(r["peak_mib"] for r in ranks),
            "seconds": max(r["seconds"] for r in ranks)}


@dataclass
class Options:
    lengths: str = field(default="2048,4096,8192", metadata={"help": "comma-separated sequence lengths"})
    sizes: str = field(default="1,2", metadata={"help": "comma-separated group sizes P (1 = one process)"})
    ttt: int = field(default=7, metadata={"help": "TTT unroll steps"})
    vocab: int = field(default=4096, metadata={"help": "the drafter's (and the teacher's) vocabulary size"})
    one: Optional[str] = field(default=None, metadata={"internal": True})  # length,size,ttt,vocab,report


def main(argv=None) -> None:
    args = parse_options(Options, argv, "bench.sequence_parallel", __doc__)
    if args.one:
        length, size, ttt, vocab, report = args.one.split(",")
        torch.multiprocessing.spawn(_member, args=(int(size), _free_port(), int(length), int(ttt), int(vocab),
                                                   report), nprocs=int(size))
        return
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x]
        sizes = [int(x) for x in args.sizes.split(",") if x]
    except ValueError:
        raise SystemExit("bench.sequence_parallel: --bench.lengths and --bench.sizes take comma-separated "
                         "integers") from None
    if any(s < 1 or 8 % s for s in sizes):
        raise SystemExit("bench.sequence_parallel: --sizes: each must divide the bench drafter's 8 heads (1, 2, 4, 8)")
    rows = []
    for length in lengths:
        for size in sizes:
            rows.append(measure(length, size, args.ttt, args.vocab))
            r = rows[-1]
            log.info(f"  L={length:<6} P={size}  " + (r["error"] if "error" in r else
                                                       f"peak +{r['peak_mib']:8.1f} MiB  step {r['seconds']:6.2f} s"))
    log.info(f"\nEAGLE-3 TTT ({args.ttt} steps, vocabulary {args.vocab}) forward+backward of one sequence, CPU "
             f"({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores shared by the group)")
    log.info(f"{'L':>6} {'P':>2} {'peak MiB / process':>19} {'÷ P=1':>7} {'step s':>7}")
    single = {r["length"]: r for r in rows if r["size"] == 1 and "error" not in r}
    for r in rows:
        if "error" in r:
            log.info(f"{r['length']:>6} {r['size']:>2} failed: {r['error']}")
            continue
        ratio = f"{single[r['length']]['peak_mib'] / r['peak_mib']:.2f}x" if r["length"] in single else "-"
        log.info(f"{r['length']:>6} {r['size']:>2} {r['peak_mib']:>19.1f} {ratio:>7} {r['seconds']:>7.2f}")


if __name__ == "__main__":
    from ..utils.logs import setup_logging

    setup_logging()
    main()
