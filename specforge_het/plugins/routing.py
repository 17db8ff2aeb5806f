"""The draft router at run time and its fitting: prompt features, the classifier, `Router` (which drafter each prompt
gets), and `fit` (record τ of every drafter, fit, compare on held-out prompts). The command that trains one is
plugins/router.py."""
from __future__ import annotations

import logging
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..config.errors import ConfigError
from .registry import Plugin, register_plugin
from .speculator import Speculator
from .loading import load_drafter_for
from ..inference.engine import speculative_decode_batch
from ..modeling.safetensors_io import read_safetensors
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


def apply(spec, cfg, base, enabled):
    p = cfg.plugins
    drafters = [load_drafter_for(base, d) for d in p.router_drafters]
    router = load_router(p.router_path, base, p.router_drafters)
    return Speculator(base, drafters[0], route=router.choose, drafters=drafters)


register_plugin(Plugin(
    "router", 1, "pick one of plugins.router_drafters per prompt with a classifier trained on recorded acceptance",
    apply, provides_drafter=True, in_server=False))
