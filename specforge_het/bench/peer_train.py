"""EAGLE-3 training side by side with SpecForge (sgl-project): same base, same dumped features, same batches, same
optimizer and budget → tokens/s, peak memory and accuracy at each draft position, in one table.

    python -m specforge_het.bench.peer_train --@demo --@eagle3 --@demo_eagle3 [--bench.steps 60]
        [--bench.eval_batches 8] [--bench.peer_python ~/.cache/specforge_het/peer-specforge0.2.0/bin/python]
        [--bench.systems specforge_het,specforge]

Installs nothing. The SpecForge arm runs in `--bench.peer_python` (default: this interpreter), an environment where
`import specforge` works and this package is importable; for example a venv holding `pip install --no-deps
specforge==0.2.0 yunchang openai-harmony` on top of this project's packages (SpecForge pins torch 2.11 /
sglang 0.5.14, neither of which its EAGLE-3 training path needs on CPU).

Both arms read `data.dataset_dir` (our data_gen output: the fused aux layers and the last hidden state), train
`--bench.steps` AdamW steps (training.learning_rate, betas (0.9, 0.95), gradient clipping training.max_grad_norm,
linear warm-up over training.warmup_steps, then constant) on the same batches in the same order, TTT
`algorithm.ttt_length` with weights 0.8**i, one process each (a fresh subprocess: its peak RSS is its own), then
score the last `--bench.eval_batches` batches (never trained on) with their own forward: top-1 agreement with the
base's token at each draft position. The embedding is the base's, frozen, in both; each system initialises the rest
its own way (SpecForge: random lm_head; ours: lm_head from the base's).

SpecForge patches applied at run time, because its EAGLE-3 path assumes a CUDA GPU (listed in the report):
  1. `specforge.core.loss.LogSoftmaxLoss` (a Triton kernel) → the same soft cross-entropy in plain torch
     (SpecForge's own reference formula, `-(mask · p · log_softmax(logits)).sum(-1).mean()`);
  2. the teacher's logits (`target_head`) computed in float32 here (its TargetHead defaults to bf16);
  3. attention_backend "sdpa" (no flex attention/FlashAttention on CPU); one process, no FSDP wrapper.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
import types

import torch

from . import comma_choices
from ._options import parse_options, split_argv, to_argv

log = logging.getLogger(__name__)

SYSTEMS = ("specforge_het", "specforge")
PATCHES = ("specforge.core.loss.LogSoftmaxLoss (Triton) → plain torch soft cross-entropy",
           "teacher logits in float32 (TargetHead defaults to bf16)",
           "attention_backend sdpa, one process, no FSDP wrapper")


def batches_of(cfg, dataset, count: int, batch_size: int) -> list[dict]:
    """The first `count` batches of the dataset in order (the same for both arms)."""
    from ..data.shards import collate

    return [collate([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))])
            for s in range(0, min(len(dataset), count * batch_size), batch_size)]


def patch_specforge() -> None:
    """Patch 1: SpecForge's Triton soft cross-entropy → the same loss in plain torch, before its import."""
    loss = types.ModuleType("specforge.core.loss")

    class LogSoftmaxLoss:
        @staticmethod
        def apply(logits, target_p, position_mask):
            logp = torch.log_softmax(logits.float(), dim=-1)
            return -(position_mask * target_p * logp).sum(-1).mean()

    loss.LogSoftmaxLoss = LogSoftmaxLoss
    sys.modules["specforge.core.loss"] = loss


class OursArm:
    """Our EAGLE-3 drafter and loss (families/eagle3/train.py), as `train` builds them."""

    def __init__(self, cfg, base, dataset, layers):
        from ..families.eagle3.train import eagle3_loss
        from ..train import make_drafter

        self.drafter, self.cfg, self.loss = make_drafter(cfg, base, dataset, layers), cfg, eagle3_loss

    def parameters(self):
        return [p for p in self.drafter.parameters() if p.requires_grad]

    def step(self, batch: dict, training: bool) -> tuple[torch.Tensor, list[float]]:
        loss, metrics = self.loss(self.drafter, batch, self.cfg.algorithm, training=training)
        return loss, [float(metrics[f"acc_{i}"]) for i in range(self.cfg.algorithm.ttt_length)]


class SpecForgeArm:
    """SpecForge 0.2.0's LlamaForCausalLMEagle3 inside its OnlineEagle3Model (the TTT trainer), fed what its
    offline path feeds it: input ids and the teacher shifted by one (TargetHead.preprocess), the fused aux layers."""

    def __init__(self, cfg, base, dataset, layers):
        patch_specforge()
        from specforge.algorithms.eagle3.model import OnlineEagle3Model
        from specforge.modeling.draft.llama3_eagle import LlamaForCausalLMEagle3
        from specforge.utils import padding
        from transformers import LlamaConfig

        b = base.config
        config = LlamaConfig(hidden_size=b.hidden_size, intermediate_size=b.intermediate_size, num_hidden_layers=1,
                             num_attention_heads=b.num_attention_heads, num_key_value_heads=b.num_key_value_heads,
                             vocab_size=base.vocab_size, rms_norm_eps=b.rms_norm_eps,
                             max_position_embeddings=b.max_position_embeddings,
                             rope_theta=getattr(b, "rope_theta", 10000.0), hidden_act=b.hidden_act,
                             pad_token_id=None, tie_word_embeddings=False)
        config.draft_vocab_size, config.target_hidden_size = base.vocab_size, b.hidden_size
        torch.manual_seed(cfg.training.seed)
        self.draft = LlamaForCausalLMEagle3(config, attention_backend="sdpa").float()
        self.draft.embed_tokens.weight.data.copy_(base.model.get_input_embeddings().weight.float())
        self.draft.embed_tokens.requires_grad_(False)  # SpecForge's freeze_embedding()
        self.model = OnlineEagle3Model(self.draft, length=cfg.algorithm.ttt_length, attention_backend="sdpa")
        self.head, self.padding = base.model.get_output_embeddings(), padding

    def parameters(self):
        return [p for p in self.draft.parameters() if p.requires_grad]

    def step(self, batch: dict, training: bool) -> tuple[torch.Tensor, list[float]]:
        with torch.no_grad():  # patch 2: the teacher in float32
            target = self.head(self.padding(batch["hidden"], left=False).float())
        plosses, _, acces, *_ = self.model(
            input_ids=self.padding(batch["input_ids"], left=False), attention_mask=batch["attention_mask"],
            target=target, loss_mask=batch["loss_mask"][..., None].float(), hidden_states=batch["aux_hidden"].float())
        loss = sum(0.8 ** i * p for i, p in enumerate(plosses))  # SpecForge's ploss weights
        return loss, [float(a) for a in acces]


def run_arm(system: str, argv: list[str], steps: int, eval_batches: int) -> dict:
    """One arm, in this process: train, then score the held-out batches."""
    from ..config.cli import resolve_config
    from ..modeling.base import load_base
    from ..train import feature_layers_for, training_dataset

    cfg, _ = resolve_config(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    base = load_base(cfg.base)
    dataset = training_dataset(cfg, base)
    t = cfg.training
    data = batches_of(cfg, dataset, steps + eval_batches, t.per_device_train_batch_size)
    if len(data) < steps + eval_batches:
        raise SystemExit(f"bench.peer_train: {cfg.data.dataset_dir} holds {len(data)} batches of "
                         f"{t.per_device_train_batch_size}; --bench.steps + --bench.eval_batches = "
                         f"{steps + eval_batches}")
    train, held_out = data[:steps], data[steps:]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arm = (OursArm if system == "specforge_het" else SpecForgeArm)(cfg, base, dataset, feature_layers_for(cfg, base))
    params = arm.parameters()
    opt = torch.optim.AdamW(params, lr=t.learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    warm = max(1, t.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    tokens, seconds, losses = 0, 0.0, []
    for i, batch in enumerate(train):
        t0 = time.perf_counter()
        loss, _ = arm.step(batch, training=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:  # the first steps pay one-time allocations
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
        losses.append(float(loss.detach()))
    sums = None
    with torch.no_grad():
        for batch in held_out:
            accs = arm.step(batch, training=False)[1]
            sums = accs if sums is None else [a + b for a, b in zip(sums, accs)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"system": system, "tokens_per_s": tokens / max(seconds, 1e-9), "peak_mib": peak / 1024,
            "arm_mib": (peak - before) / 1024, "acc": [a / len(held_out) for a in sums],
            "loss_first": losses[0], "loss_last": sum(losses[-5:]) / len(losses[-5:])}


@dataclass
class Options:
    steps: int = field(default=60, metadata={"help": "AdamW steps per arm"})
    eval_batches: int = field(default=8, metadata={"help": "held-out batches scored after training"})
    peer_python: str = field(default=sys.executable, metadata={"help": "the interpreter of SpecForge's environment"})
    systems: str = field(default=",".join(SYSTEMS), metadata={"help": "comma-separated, of: " + ", ".join(SYSTEMS)})
    one: Optional[str] = field(default=None, metadata={"internal": True})  # the system this subprocess trains


def main(argv=None) -> None:
    mine, rest = split_argv(sys.argv[1:] if argv is None else argv)
    args = parse_options(Options, mine, "bench.peer_train", __doc__)
    if args.one:
        log.info(json.dumps(run_arm(args.one, rest, args.steps, args.eval_batches)))  # the parent reads it
        return
    systems = comma_choices(args.systems, SYSTEMS, "bench.peer_train: --bench.systems")
    rows = []
    for system in systems:
        python = args.peer_python if system == "specforge" else sys.executable
        cmd = [python, "-m", "specforge_het.bench.peer_train", *to_argv(args, one=system), *rest]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"bench.peer_train: the {system} arm failed ({python}): "
                             + (proc.stderr.strip().splitlines() or ["?"])[-1])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        log.info(f"  {system}: {rows[-1]['tokens_per_s']:.0f} tok/s, peak {rows[-1]['peak_mib']:.0f} MiB")
    report(rows, args.steps, args.eval_batches)


def report(rows: list[dict], steps: int, eval_batches: int) -> None:
    ref = next((r for r in rows if r["system"] == "specforge"), rows[0])
    log.info(f"\nEAGLE-3, {steps} steps on the same batches, {eval_batches} held-out batches, one process each, "
             f"CPU ({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores)")
    log.info(f"{'system':<14} {'tok/s':>7} {'ratio':>6} {'peak MiB':>9} {'loss first→last5':>17}  acc at draft "
             "positions 0…")
    for r in rows:
        log.info(f"{r['system']:<14} {r['tokens_per_s']:>7.0f} {r['tokens_per_s'] / ref['tokens_per_s']:>6.2f} "
                 f"{r['peak_mib']:>9.0f} {r['loss_first']:>7.3f}→{r['loss_last']:<8.3f}  "
                 + " ".join(f"{a:.2f}" for a in r["acc"]))
    if any(r["system"] == "specforge" for r in rows):
        log.info("SpecForge patches applied at run time: " + "; ".join(PATCHES))
    if not all(math.isfinite(r["loss_last"]) for r in rows):
        log.info("a loss is not finite: the comparison is not valid")


if __name__ == "__main__":
    from ..utils.logs import setup_logging

    setup_logging()
    main()
