"""Engine overhead at scale: a random-weight Llama-3.2-1B-shaped base (16 layers, width 2048, GQA 32/8 heads,
128k vocabulary, tied embeddings) with a random EAGLE-2 drafter, decoded with *forced acceptance* — every verify
step accepts the path to its tree's deepest node — so chain / tree / budget iterations are timed at full depth without a
trained drafter. Base-only decoding of the same prompts runs in the same process for the ratio columns.

    python -m specforge_het.bench.forced_acceptance [--bench.device cuda] [--bench.dtype bfloat16]
        [--bench.batch_sizes 1,4] [--bench.new_tokens 128] [--bench.layers 16] [--bench.json out.json]

iter/base step is our P1 metric: one speculative iteration (draft + verify + bookkeeping) over one base decode
step; τ is fixed by the forced path length, so tokens/s ≈ τ ÷ (iter/base step) × base tokens/s.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Optional
import json

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ..inference.engine import base_decode_batch, speculative_decode_batch
from ..inference.measure import PeakMemory, format_table, summarise
from ..modeling.base import FrozenBase, freeze
from ..families.eagle.model import build_drafter
from ._options import parse_options

log = logging.getLogger(__name__)

STRATEGIES = {"chain": dict(depth=5, top_k=1, total_tokens=5),
              "tree": dict(depth=5, top_k=8, total_tokens=32),
              "budget": dict(depth=8, top_k=8, total_tokens=64, best_first=True)}


def random_base(layers: int, device: str, dtype: torch.dtype, sharpen: float) -> FrozenBase:
    """Random weights, with the tied embedding / lm_head scaled by `sharpen`: random logits are nearly flat over
    128k tokens, which makes every dynamic tree wide and shallow; sharper ones give the deep trees a trained
    drafter builds (the drafter shares this lm_head)."""
    cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      tie_word_embeddings=True, rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(sharpen)
        model = model.to(dtype)
    model.config._attn_implementation = "sdpa"
    return FrozenBase(model=freeze(model.eval()), tokenizer=None, device=torch.device(device), dtype=dtype)


@dataclass
class Options:
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    batch_sizes: str = field(default="1,4", metadata={"help": "comma-separated"})
    new_tokens: int = 128
    prompts: int = 8
    layers: int = 16
    sharpen: float = field(default=10.0, metadata={"help": "scale of the tied embedding / lm_head"})
    json: Optional[str] = field(default=None, metadata={"help": "also write the rows here"})


def main(argv=None) -> list[dict]:
    args = parse_options(Options, argv, "bench.forced_acceptance", __doc__)
    dtype = getattr(torch, args.dtype)
    base = random_base(args.layers, args.device, dtype, args.sharpen)
    torch.manual_seed(1)
    drafter = build_drafter(base).to(device=args.device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 128000, (int(n),), generator=g).tolist()
               for n in torch.randint(64, 256, (args.prompts,), generator=g)]
    params_count = sum(p.numel() for p in base.model.parameters())
    log.info(f"base: random Llama, {params_count / 1e9:.2f}B parameters, {args.dtype} on {args.device}; "
          f"drafter: {sum(p.numel() for p in drafter.parameters()) / 1e6:.0f}M; {len(prompts)} prompts of 64–255 "
          f"tokens, {args.new_tokens} new tokens, forced acceptance")
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        batches = [prompts[i:i + bs] for i in range(0, len(prompts), bs)]
        base_decode_batch(base, batches[0], 8, set())  # warm-up
        with PeakMemory(base.device):
            base_runs = [r for b in batches for r in base_decode_batch(base, b, args.new_tokens, set())]
        table = []
        for name, params in STRATEGIES.items():
            speculative_decode_batch(base, drafter, batches[0], 8, set(), **params, force_accept=True)
            with PeakMemory(base.device) as mem:
                runs = [r for b in batches for r in speculative_decode_batch(base, drafter, b, args.new_tokens, set(),
                                                                             **params, force_accept=True)]
            row = summarise(name, params, runs, base_runs, -1, mem)
            row["batch_size"] = bs
            table.append(row)
        log.info(f"\nbatch {bs}")
        log.info(format_table(table))
        rows.extend(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                       "dtype": args.dtype, "params": params_count, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    from ..utils.logs import setup_logging

    setup_logging()
    main()
