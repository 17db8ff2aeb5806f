"""train: fit a drafter over a frozen base from a hidden-state dataset (made by data_gen).

    python -m specforge_het.train [--@preset ...] [--training.learning_rate 3e-4] [--training.max_steps N]

A `transformers.Trainer` subclass drives the loop (schedulers, logging, checkpoints, accelerate). Only the
drafter's parameters exist in the trained module: the base's embedding and lm_head are attached frozen and
unregistered, so the optimizer and checkpoints never see them.
"""
from __future__ import annotations

import logging
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback, TrainerCallback

from .algorithms import check_options, check_packing, get_algorithm
from .config.cli import run_entry, save_resolved_config
from .config.schema import RunConfig
from .config.errors import ConfigError
from .data.conversations import TokenizedConversations, set_chat_template, tokenize_all
from .data.eagle_pt import EaglePtDataset
from .data.packing import PackedDataset
from .data.self_distill import training_conversations
from .data.shards import HiddenStateDataset, collate
from .modeling.base import FrozenBase, load_base
from .evaluation import evaluate_drafter, write_eval_report
from .modeling.checkpoint import load_checked_state, read_drafter_config, warm_start
from .modeling.safetensors_io import read_safetensors
from .modeling.drafter_base import DrafterBase
from .modeling.lora import add_lora, has_adapters, init_from_base_layers, resume_state
from .modeling.vocab import target_token_counts, top_tokens
# Re-exported: what tests and scripts have imported from here.
from .trainer_flags import (deepspeed_flags, draft_layer_classes, fsdp_flags, precision_flags,  # noqa: F401
                            reporters, training_arguments)
from . import trainer_sp
from .utils.io import atomic_write_text, sha256_file

log = logging.getLogger(__name__)


class DrafterWithLoss(torch.nn.Module):
    """What the Trainer trains: the drafter, with the algorithm's loss as its forward. The loss calls several
    drafter methods (unrolled steps, logits); run inside one forward, it runs inside DistributedDataParallel's
    forward under multi-process training, which is what keeps gradient synchronisation right."""

    def __init__(self, drafter: DrafterBase, loss_fn, algorithm_cfg):
        super().__init__()
        self.drafter = drafter
        self.loss_fn, self.algorithm_cfg = loss_fn, algorithm_cfg
        self.sp = None  # the sequence-parallel group (trainer_sp.py): the loss then trains this process's rows

    def forward(self, **batch):
        extra = {"sp": self.sp} if self.sp is not None and self.training else {}
        return self.loss_fn(self.drafter, batch, self.algorithm_cfg, training=self.training, **extra)


class DrafterTrainer(Trainer):
    """Trainer whose loss is the algorithm's, whose logs carry the loss parts and tokens/s, and whose checkpoints
    are our drafter format (safetensors + JSON, no pickled training args). `model` is the bare drafter."""

    def __init__(self, *args, model: DrafterBase, loss_fn, algorithm_cfg, base: FrozenBase | None = None,
                 aux_layer_ids=(), eval_depth: int = 5, sequence_parallel: int = 1, **kwargs):
        super().__init__(*args, model=DrafterWithLoss(model, loss_fn, algorithm_cfg), **kwargs)
        self.sp = trainer_sp.setup(sequence_parallel, self.args.world_size, model.hf_config.num_attention_heads,
                                   self.args.deepspeed)
        self.model.sp = self.sp
        self.drafter = model
        self.loss_fn = loss_fn
        self.eval_depth = eval_depth
        self.eval_history: list[dict] = []
        self.algorithm_cfg = algorithm_cfg
        self.base = base  # online mode: batches without "hidden" get the base's features on the fly
        self.aux_layer_ids = list(aux_layer_ids)
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_count = 0
        self._tokens, self._tokens_since = 0, time.perf_counter()  # tokens trained on since the last log
        self._real_tokens = 0  # of which not padding

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is not None and not self.is_fsdp_enabled and self.args.world_size > 1:
            # accelerate switches FSDP on only for accelerator processes; CPU processes (gloo) get the same FSDP2
            # path here — torch's fully_shard runs on a CPU device mesh.
            from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

            self.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            self.accelerator.state.distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True

    def get_train_dataloader(self):
        with trainer_sp.data_per_group(self.accelerator, self.sp):  # every process of a group: the same batches
            return super().get_train_dataloader()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "hidden" not in inputs:
            if self.base is None:
                raise RuntimeError("batch has no hidden states and the trainer has no base to compute them")
            self.base.add_features(inputs, self.aux_layer_ids)
        loss, metrics = model(**inputs)
        if model.training:
            self._tokens += int(inputs["input_ids"].numel())
            self._real_tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else 0
        for k, v in metrics.items():
            self._metric_sums[k] += float(v)
        self._metric_count += 1
        return (loss, metrics) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """Loss, per-step accuracy and simulated τ on the held-out split; logged, and written to eval.json/png."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None or len(dataset) == 0:
            return {}
        if self.eval_history and self.eval_history[-1]["step"] == self.state.global_step:
            return {k: v for k, v in self.eval_history[-1].items() if k != "step"}  # already evaluated here
        loader = self.get_eval_dataloader(dataset)
        metrics = evaluate_drafter(self.drafter, loader, self.loss_fn,
                                   self.algorithm_cfg, self.eval_depth, self.base, self.aux_layer_ids)
        self.eval_history.append({"step": self.state.global_step, **metrics})
        self.log(metrics)
        if self.args.should_save:
            write_eval_report(self.eval_history, Path(self.args.output_dir), self.eval_depth)
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._metric_count and "loss" in logs:
            logs.update({k: round(v / self._metric_count, 4) for k, v in self._metric_sums.items()})
            self._metric_sums.clear()
            self._metric_count = 0
            now = time.perf_counter()
            # Tokens (padding included) per second per process since the last log: how training speed is quoted.
            seconds = max(now - self._tokens_since, 1e-9)
            logs["tokens_per_s"] = round(self._tokens / seconds, 1)
            logs["real_tokens_per_s"] = round(self._real_tokens / seconds, 1)  # what packing raises
            self._tokens, self._real_tokens, self._tokens_since = 0, 0, now
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self.is_fsdp_enabled:
            return super().save_model(output_dir, _internal_call)
        # FSDP2: every process gathers the full weights from the shards (a collective), the main process writes.
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in self.model.state_dict().items()}
        if self.args.should_save:
            self._save(output_dir, state_dict=state)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = Path(output_dir or self.args.output_dir)
        if not self.args.should_save:
            return
        # Under DeepSpeed ZeRO-3 the Trainer passes the weights gathered from every rank (the drafter's own
        # parameters are shards there); they are keyed by the DrafterWithLoss wrapper's names.
        if state_dict is not None:
            state_dict = {k.removeprefix("drafter."): v for k, v in state_dict.items()}
        self.drafter.save_pretrained(output_dir, state=state_dict)
        atomic_write_text(output_dir / "training_args.json", self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume: the checkpoint's drafter weights, every key checked (the Trainer's own loader is not strict)."""
        weights = Path(resume_from_checkpoint) / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"{resume_from_checkpoint}: no drafter weights (model.safetensors) to resume from")
        check_same_drafter(self.drafter, Path(resume_from_checkpoint))
        state = read_safetensors(weights, read_drafter_config(Path(resume_from_checkpoint)).get("weights_sha256"))
        if has_adapters(self.drafter.state_dict()):
            state = resume_state(self.drafter, Path(resume_from_checkpoint), state)
        load_checked_state(self.drafter, state, weights)


# Fields of drafter_config.json that say what was trained; a run resumes only a checkpoint that agrees on all of them.
IDENTITY_FIELDS = ("architecture", "algorithm", "base_hidden_size", "base_vocab_size", "own_embedding", "own_lm_head",
                   "draft_vocab_size", "feature_layers", "first_layer_input_norm", "draft_config")
VOLATILE_DRAFT_FIELDS = ("transformers_version", "_attn_implementation_autoset", "dtype", "torch_dtype")


def check_same_drafter(drafter: DrafterBase, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint of another drafter (algorithm, shapes, layers, vocabulary): the weights might
    even fit, but the run would silently continue a different model."""
    saved, now = read_drafter_config(checkpoint), json.loads(json.dumps(drafter.config_dict()))  # as stored
    for cfg in (saved, now):
        cfg["draft_config"] = {k: v for k, v in cfg.get("draft_config", {}).items() if k not in VOLATILE_DRAFT_FIELDS}
    changed = [k for k in IDENTITY_FIELDS if saved.get(k) != now.get(k)]
    if changed:
        raise ConfigError(f"{checkpoint} was made with another drafter config ({', '.join(changed)} differ); resume "
                          "with the settings it was trained with, or choose another training.output_dir to start over")


class LossProgress(ProgressCallback):
    """The Trainer's tqdm bar (steps, ETA) with the latest loss, accuracy and tokens/s as its postfix, instead of
    a dict printed under it at every log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            shown = {k: logs[k] for k in ("loss", "acc", "tokens_per_s") if k in logs}
            self.training_bar.set_postfix({k.replace("tokens_per_s", "tok/s"): v for k, v in shown.items()})
        else:  # evaluation results and the end-of-training summary are printed as usual
            super().on_log(args, state, control, logs, **kwargs)


class TimeBudget(TrainerCallback):
    """training.time_budget_s: stop after the step that crosses the budget (the drafter is saved as at the end of
    any run), so a CPU user sets minutes instead of guessing steps."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        over = self.start is not None and time.perf_counter() - self.start > self.seconds
        if over and not control.should_training_stop:
            control.should_training_stop = True
            if state.is_world_process_zero:
                log.info(f"train: time budget of {self.seconds:.0f} s reached at step {state.global_step}; stopping")


def make_drafter(cfg: RunConfig, base, dataset=None, feature_layers=None) -> DrafterBase:
    """The drafter the algorithm and modeling sections describe; a reduced draft vocabulary is counted from
    `dataset`."""
    m = cfg.modeling
    for key, value in (("embedding", m.embedding), ("lm_head", m.lm_head)):
        if value not in ("shared", "own"):
            raise ConfigError(f"modeling.{key}: expected shared or own, got {value!r}")
    draft_vocab = None
    if m.draft_vocab_size is not None and m.draft_vocab_size != base.vocab_size:
        if dataset is None:
            raise ConfigError("modeling.draft_vocab_size needs a training dataset to count target tokens in")
        used, coverage = top_tokens(target_token_counts(dataset, base.vocab_size), m.draft_vocab_size)
        log.info(f"train: draft vocabulary {used.numel()} of {base.vocab_size} tokens covers {coverage:.1%} of the "
              "loss-masked target tokens")
        draft_vocab = used
    meta = {"algorithm": cfg.algorithm.name, "base_model_name_or_path": cfg.base.model_name_or_path}
    torch.manual_seed(cfg.training.seed)
    drafter = get_algorithm(cfg.algorithm.name).build(base, m, feature_layers, meta, draft_vocab)
    if m.init_from_drafter:
        warm_start(drafter, Path(m.init_from_drafter))
        log.info(f"train: every drafter weight starts from {m.init_from_drafter}")
    if m.lora_rank and m.init_from_base_layer is None:
        raise ConfigError("modeling.lora_rank needs modeling.init_from_base_layer (adapters over a random layer "
                          "would leave most of it untrained)")
    skipped = []
    if m.init_from_base_layer is not None:
        skipped = init_from_base_layers(drafter, base, m.init_from_base_layer)
        drafter.meta["init_from_base_layer"] = m.init_from_base_layer
        log.info(f"train: draft layers start from base block {m.init_from_base_layer}"
              + (f" (kept fresh, no matching base weight: {', '.join(skipped)})" if skipped else ""))
    if m.lora_rank:
        add_lora(drafter, m.lora_rank, m.lora_alpha, m.lora_targets, skipped)
        trainable = sum(p.numel() for p in drafter.parameters() if p.requires_grad)
        log.info(f"train: LoRA rank {m.lora_rank} on {', '.join(m.lora_targets)}; {trainable:,} trainable of "
              f"{sum(p.numel() for p in drafter.parameters()):,} drafter parameters")
    return drafter


def feature_layers_for(cfg: RunConfig, base: FrozenBase):
    """The base blocks the algorithm's drafter reads (None = last hidden state), checked against the base."""
    layers = get_algorithm(cfg.algorithm.name).feature_layers(base.num_layers, cfg.data.aux_layer_ids)
    return None if layers is None else base.check_layer_ids(layers, "data.aux_layer_ids")


def split_eval(dataset, fraction: float):
    """The last `fraction` of the samples are held out for evaluation (deterministic, so resumes agree)."""
    if fraction <= 0:
        return dataset, None
    if not 0 < fraction < 1:
        raise ConfigError(f"training.eval_fraction: expected 0 <= x < 1, got {fraction}")
    n_eval = max(1, int(len(dataset) * fraction))
    idx = list(range(len(dataset)))
    return torch.utils.data.Subset(dataset, idx[:-n_eval]), torch.utils.data.Subset(dataset, idx[-n_eval:])


def training_dataset(cfg: RunConfig, base: FrozenBase):
    """offline: a data_gen dataset (ours or the official EAGLE .pt layout); online: tokenized conversations."""
    if cfg.data.mode == "online":
        set_chat_template(base.tokenizer, cfg.data.chat_template)
        convs = training_conversations(base, cfg, "train (online)")
        return TokenizedConversations(tokenize_all(base.tokenizer, convs, cfg.data.max_length, "train (online)",
                                                   cfg.data.regenerate_to or cfg.data.conversations))
    if cfg.data.mode != "offline":
        raise ConfigError(f"data.mode: expected offline or online, got {cfg.data.mode!r}")
    readers = {"specforge_het": HiddenStateDataset, "eagle_pt": EaglePtDataset}
    if cfg.data.format not in readers:
        raise ConfigError(f"data.format: expected one of {', '.join(readers)}, got {cfg.data.format!r}")
    dataset = readers[cfg.data.format](cfg.data.dataset_dir)
    if dataset.manifest.get("hidden_size") != base.hidden_size:
        raise ConfigError(f"{cfg.data.dataset_dir}: dataset hidden_size {dataset.manifest.get('hidden_size')} does "
                          f"not match base {cfg.base.model_name_or_path} hidden_size {base.hidden_size}")
    return dataset


def checkpoint_is_complete(ckpt: Path) -> bool:
    """trainer_state.json is written last and must parse; the drafter weights must match their recorded hash."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
        weights_sha = read_drafter_config(ckpt).get("weights_sha256")
    except (OSError, ValueError, ConfigError):  # missing or truncated files
        return False
    return weights_sha is None or sha256_file(ckpt / "model.safetensors") == weights_sha


def check_weights_only(ckpt: Path) -> None:
    """The Trainer's own states in a checkpoint (optimizer, scheduler, RNG) are torch pickles, read with
    weights_only=True; one that holds anything else is refused here, by name, instead of by a traceback mid-resume."""
    import pickle

    from transformers.trainer_pt_utils import safe_globals  # the numpy RNG types the Trainer itself allows

    for path in sorted(ckpt.glob("*.pt")) + sorted(ckpt.glob("*.pth")) + sorted(ckpt.glob("*.bin")):
        try:
            with safe_globals():
                torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
            raise ConfigError(f"{path}: refused — not a weights-only torch file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]}); delete {ckpt.name} to resume from an earlier "
                              "checkpoint, or choose another training.output_dir") from None


def last_complete_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint-N folder that was written to the end. The Trainer writes trainer_state.json last, so a
    folder without it (or with it truncated, or with damaged weights) is what a kill during a save leaves: it is
    removed, and training resumes from the previous complete one (the step is saved again on the way)."""
    complete = []
    for ckpt in out_dir.glob("checkpoint-*"):
        if not ckpt.name.split("-", 1)[1].isdigit():
            continue
        if checkpoint_is_complete(ckpt):
            complete.append(ckpt)
        elif int(os.environ.get("LOCAL_RANK", "0")) == 0:
            log.info(f"train: {ckpt} is incomplete or damaged (killed while saving?); removing it")
            shutil.rmtree(ckpt, ignore_errors=True)
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


def run(cfg: RunConfig, presets: list[str]) -> Path:
    algorithm = get_algorithm(cfg.algorithm.name)
    check_options(algorithm, {"modeling": cfg.modeling, "algorithm": cfg.algorithm})
    check_packing(algorithm, cfg.data)
    trainer_sp.check_algorithm(algorithm, cfg.training.sequence_parallel)
    loss_fn = algorithm.loss
    base = load_base(cfg.base)
    layers = feature_layers_for(cfg, base)
    dataset = training_dataset(cfg, base)
    have = dataset.manifest.get("aux_layer_ids") if hasattr(dataset, "manifest") else None
    if layers and cfg.data.mode == "offline" and list(have or []) != layers:
        raise ConfigError(f"{cfg.data.dataset_dir}: the dataset holds base layers {have or []} but the "
                          f"{cfg.algorithm.name} drafter reads layers {layers}; rerun data_gen with the same "
                          "--@preset (or set data.aux_layer_ids to match)")
    drafter = make_drafter(cfg, base, dataset, layers)
    train_set, eval_set = split_eval(dataset, cfg.training.eval_fraction)
    if cfg.data.packing:  # the held-out split stays unpacked: its simulated τ reads one conversation per row
        train_set = PackedDataset(train_set, cfg.data.max_length)
    out_dir = Path(cfg.training.output_dir)
    save_resolved_config(cfg, out_dir, "train", presets)
    capture_ids = layers if layers else base.check_layer_ids(cfg.data.aux_layer_ids, "data.aux_layer_ids")
    trainer = DrafterTrainer(
        model=drafter, args=training_arguments(cfg, base.device.type == "cpu", drafter.hf_config.hidden_size,
                                               draft_layer_classes(drafter)),
        train_dataset=train_set,
        eval_dataset=eval_set, data_collator=collate, loss_fn=loss_fn, algorithm_cfg=cfg.algorithm, base=base,
        aux_layer_ids=capture_ids, eval_depth=cfg.training.eval_depth,
        sequence_parallel=cfg.training.sequence_parallel,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LossProgress)
    if cfg.training.time_budget_s:
        trainer.add_callback(TimeBudget(cfg.training.time_budget_s))
    if trainer.is_deepspeed_enabled and trainer.args.should_save:
        stage = trainer.args.hf_deepspeed_config.config["zero_optimization"]["stage"]
        log.info(f"train: DeepSpeed ZeRO-{stage} over {trainer.args.world_size} processes")
    if trainer.is_fsdp_enabled and trainer.args.should_save:
        log.info(f"train: FSDP{trainer.accelerator.state.fsdp_plugin.fsdp_version} over {trainer.args.world_size} "
                 f"processes (reshard_after_forward={trainer.args.fsdp_config['reshard_after_forward']}, "
                 f"wrap {trainer.args.fsdp_config.get('transformer_layer_cls_to_wrap') or 'the drafter as one unit'})")
    last_ckpt = last_complete_checkpoint(out_dir)
    if last_ckpt:
        check_weights_only(last_ckpt)
        log.info(f"train: resuming from {last_ckpt} (delete it or choose another training.output_dir to start over)")
    trainer.train(resume_from_checkpoint=str(last_ckpt) if last_ckpt else None)
    trainer.save_model(str(out_dir))
    if eval_set is not None:
        final = trainer.evaluate()
        log.info(f"train: held-out simulated τ (chain depth {cfg.training.eval_depth}) {final['eval_tau_sim']:.2f}, "
              f"acceptance per position " + " ".join(f"{final[f'eval_accept_d{i}']:.2f}"
                                                      for i in range(1, cfg.training.eval_depth + 1)))
    history = [h for h in trainer.state.log_history if "loss" in h]
    atomic_write_text(out_dir / "train_log.json", json.dumps(trainer.state.log_history, indent=1))
    if history:
        first, last = history[0], history[-1]
        log.info(f"train: loss {first['loss']:.4f} → {last['loss']:.4f}, top-1 acc {first.get('acc', 0):.3f} → "
              f"{last.get('acc', 0):.3f} over {trainer.state.global_step} steps; drafter → {out_dir}")
    return out_dir


if __name__ == "__main__":
    run_entry("train", __doc__.strip().splitlines()[0], run)
