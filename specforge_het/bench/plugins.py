"""The plugins side by side on one base: τ, tokens/s and speedup of EAGLE-2, EAGLE-3, the classic draft model and a
SubSpec 4-bit substitute, each without and with layer offloading (base-only decoding timed in the same state),
plus asynchronous drafting and the router, every output checked token-identical to base greedy.

    python -m specforge_het.bench.plugins --@demo [--inference.num_prompts 8] [--inference.max_new_tokens 64]
        [--bench.drafters "{'EAGLE-2': 'output/demo/drafter', 'EAGLE-3': 'output/demo/variants/eagle3', ...}"]

Drafters default to the demo's (bash demo/run_pipeline.sh and python -m specforge_het.bench.variants make them);
missing ones are skipped with a note. Offloading keeps plugins.keep_first_n_layers_on_gpu blocks on the device
(on CPU the device move is a no-op, so the CPU rows show the code path's overhead, not the streaming cost).
Writes output/bench/plugins.{json,md}.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config.cli import run_entry, save_resolved_config
from ..config.schema import RunConfig
from ..inference.prompts import load_prompts
from ..inference.engine import base_decode_batch, hf_greedy
from ..inference.measure import decode_batches, summarise
from ..inference.strategies import eos_ids, strategy_params
from ..modeling.base import load_base
from ..plugins import Speculator, load_drafter_for
from ..plugins.offload import offload_base
from ..plugins.subspec import build_subspec_drafter
from ..utils.io import atomic_write_json, atomic_write_text
from ._options import parse_options, split_argv

DEFAULT_DRAFTERS = {"EAGLE-2": "output/demo/drafter", "EAGLE-3": "output/demo/variants/eagle3",
                    "classic draft": "output/demo/variants/classic"}

log = logging.getLogger(__name__)
OUT = Path("output/bench")


def rows_for(cfg: RunConfig, base, drafters: dict, prompts, eos, refs, offloaded: bool) -> list[dict]:
    inf = cfg.inference
    base_runs = decode_batches(lambda ps: base_decode_batch(base, ps, inf.max_new_tokens, eos), prompts, 1,
                               "base-only")
    rows = []
    for name, (spec, strategies) in drafters.items():
        for s in strategies:
            params = strategy_params(cfg, s) if isinstance(s, str) else s[1]
            label = s if isinstance(s, str) else s[0]
            spec(prompts[:1], 4, eos, **params)  # warm-up
            runs = decode_batches(lambda ps: spec(ps, inf.max_new_tokens, eos, **params), prompts, 1, f"{name} {label}")
            identical = sum(r.tokens == ref for r, ref in zip(runs, refs))
            row = summarise(label, params, runs, base_runs, identical)
            row.update(drafter=name, offload=offloaded, **spec.take_stats())
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| drafter | offload | strategy (d, k, n) | τ | tok/s | base tok/s | speedup | identical | notes |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        notes = []
        if "async_hit_rate" in r:
            notes.append(f"async hit rate {r['async_hit_rate']:.2f}")
        if "routed_counts" in r:
            notes.append(f"routed {r['routed_counts']}")
        lines.append(f"| {r['drafter']} | {'yes' if r['offload'] else 'no'} | {r['strategy']} ({r['depth']}, "
                     f"{r['top_k']}, {r['total_tokens']}) | {r['tau']:.2f} | {r['tokens_per_s']:.1f} | "
                     f"{r['base_tokens_per_s']:.1f} | {r['speedup']:.2f}× | {r['identical']}/{r['prompts']} | "
                     f"{'; '.join(notes)} |")
    return "\n".join(lines)


def run(cfg: RunConfig, presets: list[str], paths: dict | None = None) -> list[dict]:
    inf, p = cfg.inference, cfg.plugins
    save_resolved_config(cfg, OUT, "bench.plugins", presets)
    base = load_base(cfg.base)
    prompts = load_prompts(cfg, base.tokenizer)
    eos = eos_ids(base)
    refs = [hf_greedy(base, q, inf.max_new_tokens, eos) for q in prompts]
    loaded = {}
    for name, path in (paths or DEFAULT_DRAFTERS).items():
        if (Path(path) / "drafter_config.json").is_file():
            loaded[name] = load_drafter_for(base, path)
        else:
            log.error(f"bench.plugins: skipping {name}: no drafter at {path}")
    deep = ("deep tree", {"depth": 32, "top_k": 6, "total_tokens": 96})
    chain32 = ("chain", {"depth": 32, "top_k": 1, "total_tokens": 32})
    keep = p.keep_first_n_layers_on_gpu
    subspec = build_subspec_drafter(base, keep, p.quant_bits, p.quant_group_size, p.quant_backend)
    drafters = {name: (Speculator(base, d), ["chain", "tree"]) for name, d in loaded.items()}
    drafters[f"SubSpec {p.quant_bits}-bit"] = (Speculator(base, subspec), [chain32, deep])
    if keep:  # the kept blocks' KV cache shared with the base (batch 1)
        shared = build_subspec_drafter(base, keep, p.quant_bits, p.quant_group_size, p.quant_backend, share_kv=True)
        drafters[f"SubSpec {p.quant_bits}-bit, KV shared"] = (Speculator(base, shared), [chain32, deep])
    rows = rows_for(cfg, base, drafters, prompts, eos, refs, offloaded=False)
    extra = {f"SubSpec {p.quant_bits}-bit + async": (Speculator(base, subspec, async_branches=p.async_branches),
                                                     [("chain", strategy_params(cfg, "chain")), chain32])}
    if "classic draft" in loaded:
        extra["classic draft + async"] = (Speculator(base, loaded["classic draft"], async_branches=p.async_branches),
                                          ["chain"])
    rows += rows_for(cfg, base, extra, prompts, eos, refs, offloaded=False)
    offloader = offload_base(base, keep, p.offload_prefetch)
    try:
        rows += rows_for(cfg, base, drafters, prompts, eos, refs, offloaded=True)
    finally:
        offloader.remove()
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "plugins.json", rows)
    text = (f"Base {cfg.base.model_name_or_path}, {len(prompts)} prompts × ≤ {inf.max_new_tokens} new tokens, batch 1, "
            f"greedy; offloading keeps {keep} block(s) on {base.device}.\n\n" + table(rows))
    atomic_write_text(OUT / "plugins.md", text + "\n")
    log.info("\n" + text)
    if any(r["identical"] != r["prompts"] for r in rows):
        raise SystemExit("bench.plugins: some output differs from base greedy (see the table)")
    return rows


@dataclass
class Options:
    drafters: dict = field(default_factory=dict, metadata={
        "help": "name → drafter folder ({'EAGLE-2': 'output/demo/drafter', ...}); empty = the demo's (the rest of "
                "the command line: presets and --section.key, as for inference)"})


def main(argv=None) -> None:
    mine, rest = split_argv(sys.argv[1:] if argv is None else argv)
    paths = parse_options(Options, mine, "bench.plugins", __doc__).drafters or None
    run_entry("bench.plugins", __doc__.strip().splitlines()[0], lambda cfg, presets: run(cfg, presets, paths), rest)


if __name__ == "__main__":
    main()
