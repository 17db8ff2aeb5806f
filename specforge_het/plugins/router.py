"""Draft router: several drafters for one base; for each prompt, a small classifier over prompt features picks the
drafter expected to be accepted most. Trained on recorded per-prompt acceptance (τ of every drafter on every
training prompt); `fit` also reports τ with routing next to every single drafter (and the per-prompt oracle)
on held-out prompts.

    python -m specforge_het.plugins.router --@demo --plugins.router_drafters "['output/demo/drafter', ...]"

Prompt features: the base's mean last hidden state over the prompt (one base forward; the decode's own prefill
is not reused) and its log length, standardized. Classifier: multinomial logistic regression (L2), trained on
which drafter had the best τ, each prompt weighted by how much that choice mattered (best τ − mean τ).
Saved as router.safetensors + router.json (no pickle).
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..config.cli import run_entry, save_resolved_config
from ..data.conversations import prompt_ids, read_conversations
from ..inference.prompts import load_prompts
from ..inference.strategies import eos_ids, strategy_params
from ..modeling.base import load_base
from ..utils.io import atomic_write_json
from .loading import load_drafter_for
from .routing import fit

log = logging.getLogger(__name__)


def run(cfg, presets: list[str]) -> dict:
    """Fit a router for plugins.router_drafters on data.conversations, evaluate it on the inference prompts."""
    p = cfg.plugins
    base = load_base(cfg.base)
    drafters = [load_drafter_for(base, d) for d in p.router_drafters]
    convs, _ = read_conversations(cfg.data.conversations, p.router_train_prompts)
    train_prompts = [prompt_ids(base.tokenizer, c) for c in convs]
    eval_prompts = load_prompts(cfg, base.tokenizer)
    out = Path(p.router_path)
    save_resolved_config(cfg, out, "plugins.router", presets)
    router, report = fit(base, drafters, [str(d) for d in p.router_drafters], train_prompts, eval_prompts,
                         cfg.inference.max_new_tokens, eos_ids(base), strategy_params(cfg, "chain"))
    router.save(out)
    atomic_write_json(out / "report.json", report)
    log.info(f"router: trained on {report['train_prompts']} prompts "
             f"(best drafter counts {report['train_best_counts']}); "
          f"on {report['eval_prompts']} held-out prompts, chain τ:")
    for name, tau in report["tau_single"].items():
        log.info(f"  {tau:5.2f}  {name}")
    log.info(f"  {report['tau_routed']:5.2f}  routed (choices {report['routed_counts']})\n"
          f"  {report['tau_oracle']:5.2f}  oracle (best drafter per prompt)\nrouter → {out}")
    return report


if __name__ == "__main__":
    run_entry("plugins.router", __doc__.strip().splitlines()[0], run)
