"""Benchmark data_gen: its tokens/s next to the base model's plain forward (logits included) on the very same
length-sorted batches, and the bytes it writes per token next to 2·H (one bf16 hidden vector per token).

    python -m specforge_het.bench.data_gen [--@demo] [--data.max_samples 256] [--data.aux_layer_ids [1,2]]
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from ..config.cli import run_entry
from ..config.schema import RunConfig
from ..data.conversations import read_conversations, set_chat_template, tokenize_all
from ..data_gen import dump
from ..modeling.base import load_base

log = logging.getLogger(__name__)


@torch.no_grad()
def plain_forward_seconds(base, samples, batch_size: int) -> float:
    """The reference: `model(input_ids, attention_mask)` over the batches data_gen forms (same sort, same padding)."""
    n = len(samples)
    order = sorted(range(n), key=lambda i: len(samples[i][0]))
    t0 = time.perf_counter()
    for s in range(0, n, batch_size):
        idx = order[s: s + batch_size]
        T = max(len(samples[i][0]) for i in idx)
        ids = torch.zeros(len(idx), T, dtype=torch.long)
        attn = torch.zeros(len(idx), T, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(samples[i][0])] = torch.tensor(samples[i][0])
            attn[r, : len(samples[i][0])] = 1
        base.model(input_ids=ids.to(base.device), attention_mask=attn.to(base.device)).logits.sum().item()
    return time.perf_counter() - t0


def run(cfg: RunConfig, presets: list[str]) -> dict:
    base = load_base(cfg.base)
    set_chat_template(base.tokenizer, cfg.data.chat_template)
    convs, _ = read_conversations(cfg.data.conversations, cfg.data.max_samples or 256)
    samples = tokenize_all(base.tokenizer, convs, cfg.data.max_length, "bench")
    tokens = sum(len(s[0]) for s in samples)
    aux = base.check_layer_ids(cfg.data.aux_layer_ids, "data.aux_layer_ids")
    plain_forward_seconds(base, samples[:32], cfg.data.batch_size)  # warm-up
    rows = []
    for trial in range(2):  # alternate the two, twice, so drift on a shared machine hits both
        plain = plain_forward_seconds(base, samples, cfg.data.batch_size)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = dump(base, cfg, samples, Path(tmp), {"bench": trial}, aux, desc="bench data_gen")
            dg = time.perf_counter() - t0
            on_disk = sum((Path(tmp) / s["file"]).stat().st_size for s in m["shards"])
        rows.append((plain, dg, on_disk))
    plain, dg, on_disk = min(r[0] for r in rows), min(r[1] for r in rows), rows[-1][2]
    H = base.hidden_size
    report = {
        "samples": len(samples), "tokens": tokens, "batch_size": cfg.data.batch_size,
        "plain_forward_tok_s": tokens / plain, "data_gen_tok_s": tokens / dg, "ratio": plain / dg,
        "bytes_per_token": on_disk / tokens, "two_H": 2 * H, "bytes_ratio": on_disk / tokens / (2 * H),
        "aux_layer_ids": aux, "hidden_dtype": cfg.data.hidden_dtype,
    }
    log.info(f"\ndata_gen benchmark: {len(samples)} samples, {tokens} tokens, batch {cfg.data.batch_size}, "
          f"device {base.device}, base {cfg.base.model_name_or_path}")
    log.info(f"  plain forward (logits) : {report['plain_forward_tok_s']:10.0f} tok/s")
    log.info(f"  data_gen (dump+write)  : {report['data_gen_tok_s']:10.0f} tok/s   "
             f"ratio {report['ratio']:.2f} (goal >= 0.8)")
    log.info(f"  on disk                : {report['bytes_per_token']:10.1f} B/token vs 2*H = {2 * H} "
          f"({report['bytes_ratio']:.3f}x; ids, mask and offsets included, aux layers {aux})")
    return report


if __name__ == "__main__":
    run_entry("bench.data_gen", __doc__.strip().splitlines()[0], run)
