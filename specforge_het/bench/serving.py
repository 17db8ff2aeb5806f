"""bench.serving: each drafter exported and served by vLLM's CPU build beside our reference decoder, one table —
engine, drafter, temperature, τ in the engine vs ours, identical outputs, tokens/s base vs speculative inside the
engine — plus SGLang's own classes loading the SGLang export of the same drafter.

    python -m specforge_het.bench.serving --@demo [--benchmark.serving_drafters "['output/demo/drafter', ...]"]
        [--inference.depth 5] [--inference.num_prompts 10] [--inference.max_new_tokens 96]

T = 0: both greedy (identical outputs expected). T = benchmark.sampling_temperature (default 1): vLLM with its default
draft_sample_method (the drafter's top token as a point-mass draft) beside ours in the same mode, and ours drawing
drafts from q (Σ min(p, q)).
Writes serving.md and serving.json into benchmark.output_dir. Runs in the serving environment (built once per
machine: python -m specforge_het.serving.env).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config.cli import run_entry, save_resolved_config
from ..config.schema import RunConfig
from ..config.errors import ConfigError
from ..export.registry import get_exporter
from ..inference.prompts import load_prompts
from ..inference.engine import Sampling, hf_greedy
from ..inference.strategies import eos_ids
from ..modeling.base import load_base
from ..modeling.checkpoint import load_drafter
from ..serving import check_with_sglang, run_vllm
from ..serving.parity import acceptance, compare, reference_chain
from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.provenance import provenance, provenance_line

log = logging.getLogger(__name__)


def export_for(drafter_dir: Path, engine: str, depth: int, base: str) -> Path | str:
    """The drafter exported for `engine` under drafter_dir/serving_<engine>, or the reason it cannot be."""
    from ..export.stage import load_any
    from ..export.capture import base_num_layers, check_capture

    drafter = load_any(str(drafter_dir))
    out = drafter_dir / f"serving_{engine}"
    try:
        check_capture(getattr(drafter, "feature_layers", None), base_num_layers(drafter, base), engine)
        if engine == "vllm" and drafter.ARCHITECTURE in (get_exporter("hf").supports or {}):
            from ..export.to_hf import export_hf  # a draft LM: vLLM's draft_model method

            export_hf(drafter, out, None, base, depth)
        elif engine == "vllm":
            from ..export.to_vllm import export_vllm

            export_vllm(drafter, out, None, base, depth)
        else:
            from ..export.to_sglang import export_sglang

            export_sglang(drafter, out, None, base, depth, 1, depth)
    except ConfigError as e:
        return str(e)
    return out


def run(cfg: RunConfig, presets: list[str]) -> list[dict]:
    inf, b = cfg.inference, cfg.benchmark
    drafters = [Path(d) for d in b.serving_drafters if (Path(d) / "drafter_config.json").is_file()]
    missing = [d for d in b.serving_drafters if Path(d) not in drafters]
    if missing:
        log.warning(f"bench.serving: skipping (no drafter there): {', '.join(missing)}")
    if not drafters:
        raise ConfigError("benchmark.serving_drafters: none of the listed folders holds a drafter")
    base = load_base(cfg.base)
    prompts, eos, depth = load_prompts(cfg, base.tokenizer), eos_ids(base), inf.depth
    out_dir = Path(b.output_dir)
    prov = provenance("bench.serving")  # at the start: the commit and date the run began with
    save_resolved_config(cfg, out_dir, "bench.serving", presets)
    refs = [hf_greedy(base, p, inf.max_new_tokens, eos)[len(p):] for p in prompts]
    exports = {d: {e: export_for(d, e, depth, cfg.base.model_name_or_path) for e in ("vllm", "sglang")}
               for d in drafters}
    hot = b.sampling_temperature
    runs = [{"name": "base@0", "speculative_config": None, "temperature": 0.0},
            {"name": "base@1", "speculative_config": None, "temperature": hot}]
    depths = {d: depth for d in drafters}
    for d in drafters:
        v = exports[d]["vllm"]
        if isinstance(v, Path):  # export_for has just written it, with the --speculative-config to pass
            spec = json.loads((v / "speculative_config.json").read_text())
            depths[d] = spec["num_speculative_tokens"]  # a block drafter's is its trained block − 1
            if depths[d] != depth:
                log.info(f"bench.serving: {d} drafts {depths[d]} tokens per step (its trained block − 1: vLLM runs "
                         f"blocks of num_speculative_tokens + 1), in vLLM and in our decoder; inference.depth "
                         f"{depth} is for the others")
            runs += [{"name": f"{d}@0", "speculative_config": spec, "temperature": 0.0},
                     {"name": f"{d}@1", "speculative_config": spec, "temperature": hot}]
            if b.serving_patch_engine:
                runs.append({"name": f"{d}@1p", "speculative_config": spec, "temperature": hot, "patch_engine": True})
    for r in runs:
        r.update(prompts=prompts, max_tokens=inf.max_new_tokens, seed=inf.seed)
    exact = b.serving_dtype == cfg.base.dtype  # parity needs both decoders in one dtype
    engine = {r["name"]: r for r in run_vllm({"base": cfg.base.model_name_or_path, "dtype": b.serving_dtype,
                                              "runs": runs})}
    sglang = dict(zip([d for d in drafters if isinstance(exports[d]["sglang"], Path)],
                      check_with_sglang([exports[d]["sglang"] for d in drafters
                                         if isinstance(exports[d]["sglang"], Path)], cfg.base.model_name_or_path)))
    rows = []
    for d in drafters:
        drafter = load_drafter(d, device=base.device).attach_base(base.embed_tokens, base.lm_head).eval()
        sg = sglang.get(d)
        sg_text = exports[d]["sglang"] if d not in sglang else (
            f"{sg['checked']} params equal" if not sg.get("error") and not sg["problems"] else "FAILED")
        decoded = {}  # our decoder's runs of this drafter, each decoded once (the patched row reuses "hot")

        def ours(kind: str) -> dict:
            """"greedy" / "hot": drafts greedy (as vLLM's proposer drafts); "sampled": drafts drawn from q."""
            if kind not in decoded:
                sampling = {"greedy": Sampling(0.0, 1.0, inf.seed, draft="greedy"),
                            "hot": Sampling(hot, 1.0, inf.seed, draft="greedy"), "sampled": Sampling(hot)}[kind]
                decoded[kind] = reference_chain(base, drafter, prompts, inf.max_new_tokens, eos, depths[d], sampling)
            return decoded[kind]

        for t, run_name in [(0, f"{d}@0"), (1, f"{d}@1")] + ([(1, f"{d}@1p")] if b.serving_patch_engine else []):
            e = engine.get(run_name)
            mine = ours("hot" if t else "greedy")
            row = {"drafter": str(d), "algorithm": drafter.meta.get("algorithm"), "depth": depths[d],
                   "temperature": hot if t else 0,
                   "tau_ours": acceptance(mine["metrics"])["tau"], "sglang_load_weights": sg_text,
                   "ours_identical": sum(o == r for o, r in zip(mine["outputs"], refs)) if t == 0 else None}
            if t == 1:
                row["tau_ours_sampled_drafts"] = acceptance(ours("sampled")["metrics"])["tau"]
            if e is None or e.get("error"):
                row["vllm"] = exports[d]["vllm"] if e is None else e["error"]
            else:
                base_run = engine[f"base@{t}"]
                parity = compare(mine["metrics"], e["metrics"], greedy=t == 0)["passed"] if exact else None
                row.update(tau_vllm=acceptance(e["metrics"])["tau"], parity=parity,
                           engine_defect=e.get("engine_defect"), patched=bool(e.get("patched")),
                           defect_probe=e.get("defect_probe"),
                           # in another dtype than ours, vLLM's speculative output is checked against its own
                           # base-only output (same engine, same dtype) instead of our fp32 reference
                           vllm_identical=sum(o == r for o, r in zip(e["outputs"], refs if exact else
                                                                     base_run["outputs"])) if t == 0 else None,
                           vllm_base_tok_s=base_run["new_tokens"] / base_run["seconds"],
                           vllm_spec_tok_s=e["new_tokens"] / e["seconds"])
            rows.append(row)
    text = provenance_line(prov) + "\n\n" + table(rows, len(prompts), depth, b.serving_dtype)
    atomic_write_json(out_dir / "serving.json", {"provenance": prov, "dtype": b.serving_dtype, "rows": rows})
    atomic_write_text(out_dir / "serving.md", text + "\n")
    log.info("\n" + text)
    return rows


def table(rows: list[dict], n: int, depth: int, dtype: str = "float32") -> str:
    note = "" if dtype == "float32" else (" (our decoder in its base dtype: parity not checked across dtypes; "
                                          "vLLM's greedy output is compared with vLLM's own base-only output)")
    lines = [f"A chain of drafts ({depth} unless a row says otherwise: a block drafter drafts its trained block − 1), "
             f"{n} prompts, one request at a time, vLLM in {dtype} on CPU{note}.", "",
             "| drafter | drafts | T | τ vLLM | τ ours (same drafts) | τ ours (drafts ~ q) | parity | identical vLLM / "
             "ours | vLLM tok/s base → spec | SGLang load_weights |", "|---|---:|---:|---:|---:|---:|---|---|---|---|"]
    defects = sorted({r["engine_defect"] for r in rows if r.get("engine_defect")})
    for r in rows:
        hit = bool(r.get("engine_defect")) and r["temperature"] != 0 and not r.get("patched")
        if "tau_vllm" in r:
            parity = "–" if r["parity"] is None else "yes" if r["parity"] else "NO"
            vllm = (f"{r['tau_vllm']:.2f}", f"{parity} (engine defect*)" if hit else parity,
                    f"{r['vllm_base_tok_s']:.0f} → {r['vllm_spec_tok_s']:.0f} "
                    f"({r['vllm_spec_tok_s'] / r['vllm_base_tok_s']:.2f}×)")
        else:
            vllm = ("–", "–", f"not served: {r['vllm']}")
        ident = f"{r['vllm_identical'] if r.get('vllm_identical') is not None else '–'} / " \
                f"{r['ours_identical']}" if r["temperature"] == 0 else "sampled"
        sampled = f"{r['tau_ours_sampled_drafts']:.2f}" if "tau_ours_sampled_drafts" in r else "–"
        temp = f"{r['temperature']} (patched vLLM)" if r.get("patched") else f"{r['temperature']}"
        lines.append(f"| {Path(r['drafter']).name} ({r['algorithm']}) | {r.get('depth', depth)} | {temp} "
                     f"| {vllm[0]} "
                     f"| {r['tau_ours']:.2f} | {sampled} | {vllm[1]} | {ident} | {vllm[2]} "
                     f"| {r['sglang_load_weights']} |")
    probes = [r["defect_probe"] for r in rows if r.get("defect_probe")]
    if defects:
        seen = f" (0.7 spread over 3 tokens came out as {probes[0]})" if probes else ""
        lines += ["", "\\* Engine defect, measured by the vLLM worker: " + "; ".join(defects) + seen + ". Rows marked "
                  "\"patched vLLM\" serve with that one kernel replaced by an exact torch version "
                  "(benchmark.serving_patch_engine); the rest of the engine is vLLM's own."]
    return "\n".join(lines)


if __name__ == "__main__":
    run_entry("bench.serving", __doc__.strip().splitlines()[0], run)
