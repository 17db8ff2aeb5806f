"""bench.server: the OpenAI-compatible server under load, serial vs concurrent, side by side in one run.

    python -m specforge_het.bench.server --@demo --@eagle2 [--inference.num_prompts 32]
        [--inference.max_new_tokens 64] [--serve.max_batch 8] [--serve.batch_wait_ms 20]

The server runs in this process on a loopback port with the configured base + drafter. The same requests (greedy
completions of the held-out prompts) are sent once one after another, then by serve.max_batch clients at once; the
table gives requests/s, tokens/s and p50 / p95 latency of each, the throughput ratio concurrent ÷ serial, and
whether every concurrent answer equals its serial answer. Writes server.md / server.json into benchmark.output_dir.
"""
from __future__ import annotations

import json
import logging
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config.cli import run_entry, save_resolved_config
from ..config.schema import RunConfig
from ..inference.prompts import load_prompts
from ..inference.measure import load_pair
from ..inference.strategies import eos_ids, strategy_params
from ..inference.server import Engine, build_server
from ..utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def _complete(url: str, prompt: str, max_tokens: int) -> tuple[float, dict]:
    data = json.dumps({"prompt": prompt, "max_tokens": max_tokens}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=data, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=3600) as r:
        out = json.loads(r.read())
    return time.perf_counter() - t0, out


def _row(mode: str, clients: int, results: list[tuple[float, dict]], wall: float) -> dict:
    latencies = sorted(t for t, _ in results)
    tokens = sum(o["usage"]["completion_tokens"] for _, o in results)
    return {"mode": mode, "clients": clients, "requests": len(results), "seconds": round(wall, 2),
            "requests_per_s": round(len(results) / wall, 3), "tokens_per_s": round(tokens / wall, 1),
            "p50_s": round(statistics.median(latencies), 2),
            "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2)}


def run(cfg: RunConfig, presets: list[str]) -> list[dict]:
    base, speculate, _ = load_pair(cfg)
    strategy = "tree" if cfg.inference.strategy in ("both", "all") else cfg.inference.strategy
    engine = Engine(base, speculate.drafter, strategy_params(cfg, strategy), eos_ids(base), "bench",
                    max(cfg.serve.max_tokens_limit, cfg.inference.max_new_tokens), cfg.inference.max_new_tokens,
                    cfg.serve.max_batch, cfg.serve.batch_wait_ms)
    server = build_server(engine, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    prompts = [base.tokenizer.decode(p) for p in load_prompts(cfg, base.tokenizer)]
    n_new, clients = cfg.inference.max_new_tokens, cfg.serve.max_batch
    try:
        _complete(url, prompts[0], 4)  # warm-up
        t0 = time.perf_counter()
        serial = [_complete(url, p, n_new) for p in prompts]
        serial_row = _row("serial", 1, serial, time.perf_counter() - t0)
        before = dict(engine.batcher.stats)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            concurrent = list(pool.map(lambda p: _complete(url, p, n_new), prompts))
        concurrent_row = _row("concurrent", clients, concurrent, time.perf_counter() - t0)
    finally:
        server.shutdown()
    identical = sum(a["choices"][0]["text"] == b["choices"][0]["text"] for (_, a), (_, b) in zip(serial, concurrent))
    concurrent_row["identical_to_serial"] = f"{identical}/{len(prompts)}"
    concurrent_row["throughput_ratio"] = round(concurrent_row["tokens_per_s"] / serial_row["tokens_per_s"], 2)
    stats = engine.batcher.stats
    concurrent_row["mean_rows_per_batch"] = round((stats["rows"] - before["rows"]) /
                                                  max(1, stats["batches"] - before["batches"]), 2)
    rows = [serial_row, concurrent_row]
    out = Path(cfg.benchmark.output_dir)
    lines = [f"strategy {strategy}, {len(prompts)} requests × {n_new} new tokens (greedy), "
             f"serve.max_batch {clients}, serve.batch_wait_ms {cfg.serve.batch_wait_ms}", "",
             "| mode | clients | req/s | tok/s | p50 s | p95 s | ratio | identical | rows/batch |", "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['clients']} | {r['requests_per_s']} | {r['tokens_per_s']} | {r['p50_s']} "
                     f"| {r['p95_s']} | {r.get('throughput_ratio', 1.0)} | {r.get('identical_to_serial', '–')} "
                     f"| {r.get('mean_rows_per_batch', 1)} |")
    atomic_write_text(out / "server.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "server.json", rows)
    save_resolved_config(cfg, out, "bench_server", presets)
    log.info("\n".join(lines))
    return rows


if __name__ == "__main__":
    run_entry("bench.server", __doc__.strip().splitlines()[0], run)
