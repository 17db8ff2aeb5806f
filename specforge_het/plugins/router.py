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
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config.schema import ConfigError
from ..modeling.checkpoint import read_safetensors
from ..utils.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

WEIGHTS, CONFIG = "router.safetensors", "router.json"


@torch.no_grad()
def prompt_features(base, prompts: list[list[int]]) -> torch.Tensor:
    rows = []
    for p in prompts:
        ids = torch.tensor([p], device=base.device)
        hidden, _ = base.forward(ids)
        rows.append(torch.cat([hidden[0].float().mean(0), torch.tensor([len(p)], device=base.device).log()]))
    return torch.stack(rows).cpu()


def fit_classifier(x: torch.Tensor, labels: torch.Tensor, n_classes: int, weights: torch.Tensor | None = None,
                   l2: float = 1e-2, steps: int = 200) -> dict:
    """Multinomial logistic regression on standardized features → {"mean", "std", "weight", "bias"}."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1])
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    sample_w = weights if weights is not None else torch.ones(len(x))
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(z @ w + b, labels, reduction="none")
        loss = (ce * sample_w).sum() / sample_w.sum().clamp_min(1e-9) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return {"mean": mean, "std": std, "weight": w.detach(), "bias": b.detach()}


@dataclass
class Router:
    base: object
    params: dict
    drafters: list

    def scores(self, prompts: list[list[int]]) -> torch.Tensor:
        p = self.params
        return ((prompt_features(self.base, prompts) - p["mean"]) / p["std"]) @ p["weight"] + p["bias"]

    def choose(self, prompts: list[list[int]]) -> list[int]:
        return self.scores(prompts).argmax(-1).tolist()

    def save(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.params.items()}
        atomic_write(out / WEIGHTS, lambda tmp: save_file(tensors, tmp))
        atomic_write_json(out / CONFIG, {"drafters": self.drafters, "features": "mean last hidden state + log length",
                                         "classifier": "multinomial logistic regression"})
        return out


def load_router(path: str, base, drafters: list[str]) -> Router:
    folder = Path(path)
    if not (folder / CONFIG).is_file():
        raise ConfigError(f"plugins.router_path: no router at {folder} (missing {CONFIG}); train one with "
                          "python -m specforge_het.plugins.router")
    saved = json.loads((folder / CONFIG).read_text())["drafters"]
    if [str(d) for d in drafters] != saved:
        raise ConfigError(f"{folder / CONFIG}: the router was trained for drafters {saved}, but "
                          f"plugins.router_drafters is {list(drafters)}")
    params = read_safetensors(folder / WEIGHTS)
    if params["weight"].shape[0] != base.hidden_size + 1:
        raise ConfigError(f"{folder / WEIGHTS}: trained on features of width {params['weight'].shape[0] - 1}, but "
                          f"this base's hidden size is {base.hidden_size}")
    return Router(base, params, saved)


def record_tau(base, drafters: list, prompts: list[list[int]], max_new: int, eos: set[int],
               params: dict) -> torch.Tensor:
    """τ (tokens per verify step) of every drafter on every prompt → [N, K]."""
    from tqdm import tqdm

    from ..inference.engine import speculative_decode_batch

    tau = torch.zeros(len(prompts), len(drafters))
    for i, p in enumerate(tqdm(prompts, desc="router: recording acceptance", unit="prompt")):
        for k, d in enumerate(drafters):
            r = speculative_decode_batch(base, d, [p], max_new, eos, **params)[0]
            tau[i, k] = r.emitted / max(r.steps, 1)
    return tau


def fit(base, drafters: list, drafter_names: list[str], train_prompts, eval_prompts, max_new: int, eos: set[int],
        params: dict) -> tuple[Router, dict]:
    """Record τ on train_prompts, fit the classifier, compare on eval_prompts → (router, report)."""
    if len(drafters) < 2:
        raise ConfigError("plugins.router_drafters: a router needs at least two drafters")
    tau = record_tau(base, drafters, train_prompts, max_new, eos, params)
    best = tau.argmax(1)
    margin = tau.max(1).values - tau.mean(1)
    router = Router(base, fit_classifier(prompt_features(base, train_prompts), best, len(drafters), margin + 1e-3),
                    list(drafter_names))
    held = record_tau(base, drafters, eval_prompts, max_new, eos, params)
    chosen = torch.tensor(router.choose(eval_prompts))
    report = {
        "train_prompts": len(train_prompts), "eval_prompts": len(eval_prompts),
        "train_best_counts": torch.bincount(best, minlength=len(drafters)).tolist(),
        "tau_single": dict(zip(drafter_names, held.mean(0).tolist())),
        "tau_routed": held.gather(1, chosen[:, None]).mean().item(),
        "tau_oracle": held.max(1).values.mean().item(),
        "routed_counts": torch.bincount(chosen, minlength=len(drafters)).tolist(),
    }
    return router, report


def run(cfg, presets: list[str]) -> dict:
    """Fit a router for plugins.router_drafters on data.conversations, evaluate it on the inference prompts."""
    from ..config import save_resolved_config
    from ..data.conversations import prompt_ids, read_conversations
    from ..inference.prompts import load_prompts
    from ..inference.measure import eos_ids, strategy_params
    from ..modeling.base import load_base
    from . import load_drafter_for

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
    from ..config import run_entry

    run_entry("plugins.router", __doc__.strip().splitlines()[0], run)
