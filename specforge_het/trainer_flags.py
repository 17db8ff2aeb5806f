"""How a run's training section becomes transformers.TrainingArguments: precision, loggers, and the multi-process
back ends (DeepSpeed ZeRO, FSDP2) — every setting checked here, with one line naming the field on a bad value."""
from __future__ import annotations

import copy
import importlib.util

import torch
from transformers import TrainingArguments

from .config.schema import RunConfig
from .config.errors import ConfigError, closest


def precision_flags(mode: str, use_cpu: bool, probe_shape: tuple[int, int] = (1024, 4096)) -> dict:
    """TrainingArguments flags for training.mixed_precision. Autocast only: the drafter's weights (and so the
    optimizer's master copy) stay fp32 whatever the base's dtype. `probe`: bf16 autocast where a one-second matmul
    probe shows it is faster on this machine (GPUs with bf16, AVX512-BF16 / AMX CPUs), else fp32 — never decided by
    a CPU model name. bf16 on a CPU is allowed when asked for; fp16 autocast needs a GPU."""
    if mode not in ("auto", "no", "bf16", "fp16", "probe"):
        raise ConfigError(f"training.mixed_precision: expected auto, no, bf16, fp16 or probe, got {mode!r}")
    gpu_bf16 = not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if mode == "auto":
        mode = "bf16" if gpu_bf16 else "no"
    elif mode == "probe":
        from .utils.precision import bf16_pays

        mode = "bf16" if gpu_bf16 or (use_cpu and bf16_pays(*probe_shape, "train: bf16 autocast")) else "no"
    if mode == "fp16" and use_cpu:
        raise ConfigError("training.mixed_precision fp16 needs a GPU; on a CPU use bf16, probe or no")
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


REPORTERS = ("none", "tensorboard", "wandb", "json")


def reporters(report_to: str) -> list[str]:
    """training.report_to → the Trainer's integrations. "json" is ours: train_log.json is always written, so it
    adds nothing; tensorboard and wandb must be installed (wandb runs offline with WANDB_MODE=offline)."""
    names = [n.strip() for n in report_to.split(",") if n.strip()]
    for n in names:
        if n not in REPORTERS:
            raise ConfigError(f"training.report_to: unknown logger {n!r}; expected a comma-separated list of "
                              f"{', '.join(REPORTERS)}")
    wanted = [n for n in names if n not in ("none", "json")]
    for n in wanted:  # each integration is the package of its name
        if importlib.util.find_spec(n) is None:
            raise ConfigError(f"training.report_to {n}: the {n} package is not installed "
                              f"(pip install {n}; wandb: pip install 'specforge_het[wandb]')")
    return wanted or ["none"]


def deepspeed_flags(ds_config: dict | None, use_cpu: bool, hidden_size: int) -> dict:
    """TrainingArguments flags for training.deepspeed (a mapping, e.g. from the zero2 / zero3 presets). The bucket
    sizes left "auto" are sized here from the drafter's width (transformers would read it from a model config
    the trained module does not have), with transformers' own rules."""
    if not ds_config:
        return {}
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("training.deepspeed is set but DeepSpeed is not installed: "
                          "pip install 'specforge_het[deepspeed]'")
    stage = ds_config.get("zero_optimization", {}).get("stage")
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"training.deepspeed.zero_optimization.stage: expected 0, 1, 2 or 3, got {stage!r}")
    if "optimizer" in ds_config and use_cpu:
        raise ConfigError("training.deepspeed.optimizer: DeepSpeed's own optimizers need a GPU; leave it out and "
                          "the Trainer's AdamW (training.learning_rate, adam_beta*) is used")
    ds_config = copy.deepcopy(ds_config)
    zero = ds_config["zero_optimization"]
    for key, size in (("reduce_bucket_size", hidden_size * hidden_size),
                      ("stage3_prefetch_bucket_size", int(0.9 * hidden_size * hidden_size)),
                      ("stage3_param_persistence_threshold", 10 * hidden_size)):
        if zero.get(key) == "auto":
            zero[key] = size
    return {"deepspeed": ds_config}


def draft_layer_classes(drafter) -> list[str]:
    """Class names of the draft decoder layers (FSDP's wrapping units)."""
    try:
        return sorted({type(layer).__name__ for layer in drafter.decoder_layers()})
    except NotImplementedError:
        return []


FSDP_KEYS = {"reshard_after_forward": bool, "cpu_offload": bool, "wrap": str}


def fsdp_flags(fsdp: dict | None, deepspeed: dict | None, layer_classes: list[str]) -> dict:
    """TrainingArguments flags for training.fsdp: FSDP2 (torch fully_shard) through accelerate. "layers" wraps each
    draft decoder layer (`layer_classes`) as its own unit, "none" shards the drafter as one."""
    if fsdp is None:  # an empty mapping is FSDP with the defaults
        return {}
    if deepspeed:
        raise ConfigError("training.fsdp and training.deepspeed are both set; choose one")
    for key, value in fsdp.items():
        if key not in FSDP_KEYS:
            raise ConfigError(f"training.fsdp.{key}: unknown key; {closest(key, FSDP_KEYS)}")
        if not isinstance(value, FSDP_KEYS[key]):
            raise ConfigError(f"training.fsdp.{key}: expected {FSDP_KEYS[key].__name__}, got {value!r}")
    wrap = fsdp.get("wrap", "layers")
    if wrap not in ("layers", "none"):
        raise ConfigError(f"training.fsdp.wrap: expected layers or none, got {wrap!r}")
    config = {"version": 2, "reshard_after_forward": fsdp.get("reshard_after_forward", True),
              "cpu_offload": fsdp.get("cpu_offload", False), "state_dict_type": "FULL_STATE_DICT"}
    if wrap == "layers" and layer_classes:
        config.update(auto_wrap_policy="TRANSFORMER_BASED_WRAP", transformer_layer_cls_to_wrap=sorted(layer_classes))
    else:
        config["auto_wrap_policy"] = "NO_WRAP"
    return {"fsdp": True, "fsdp_config": config}


def training_arguments(cfg: RunConfig, use_cpu: bool, hidden_size: int = 0,
                       layer_classes: list[str] = ()) -> TrainingArguments:
    t = cfg.training
    return TrainingArguments(
        output_dir=t.output_dir, learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type, weight_decay=t.weight_decay, adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2, max_grad_norm=t.max_grad_norm, logging_steps=t.logging_steps,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, seed=t.seed, report_to=reporters(t.report_to),
        dataloader_num_workers=t.dataloader_num_workers, remove_unused_columns=False, use_cpu=use_cpu,
        save_only_model=False, logging_first_step=True,
        eval_strategy="steps" if t.eval_fraction > 0 else "no", eval_steps=t.eval_steps,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        **precision_flags(t.mixed_precision, use_cpu, (max(hidden_size, 256),) * 2),
        **deepspeed_flags(t.deepspeed, use_cpu, hidden_size), **fsdp_flags(t.fsdp, t.deepspeed, list(layer_classes)),
    )
