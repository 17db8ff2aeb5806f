"""Allowed values of every numeric key with a meaningful range, and the keys that need more than a type and a range.
Checked whenever a value is set — from a preset, a saved config or the command line — so a bad value stops the run
with one line before anything is loaded, never deep inside torch."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric key: lo ≤ x ≤ hi (or < where open); None = unbounded on that side."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x) -> bool:
        return ((self.lo is None or (x > self.lo if self.lo_open else x >= self.lo))
                and (self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)))

    def __str__(self) -> str:
        lo = "" if self.lo is None else f"{self.lo:g} {'<' if self.lo_open else '≤'} "
        hi = "" if self.hi is None else f" {'<' if self.hi_open else '≤'} {self.hi:g}"
        return f"{lo}x{hi}"


AT_LEAST_0, AT_LEAST_1 = Range(0), Range(1)
POSITIVE, UNIT = Range(0, lo_open=True), Range(0, 1)
PROB, FRACTION = Range(0, 1, lo_open=True), Range(0, 1, hi_open=True)  # (0, 1] and [0, 1)

# Every numeric key with a meaningful range; checked whenever a value is set (presets, saved configs, the CLI). The
# keys a family or plugin declares (config/options.py) bring their ranges with them; the schema adds them here.
RANGES: dict[str, Range] = {
    "modeling.draft_layers": AT_LEAST_1, "modeling.draft_hidden_size": AT_LEAST_1,
    "modeling.draft_vocab_size": AT_LEAST_1, "modeling.init_from_base_layer": AT_LEAST_0,
    "modeling.lora_rank": AT_LEAST_0, "modeling.lora_alpha": POSITIVE, "algorithm.ttt_decay": PROB,
    "data.max_length": Range(2), "data.max_samples": AT_LEAST_1, "data.shard_size": AT_LEAST_1,
    "data.batch_size": AT_LEAST_1, "data.regen_temperature": AT_LEAST_0, "data.regen_max_new_tokens": AT_LEAST_1,
    "training.learning_rate": POSITIVE, "training.num_train_epochs": POSITIVE, "training.max_steps": Range(-1),
    "training.per_device_train_batch_size": AT_LEAST_1, "training.gradient_accumulation_steps": AT_LEAST_1,
    "training.warmup_steps": AT_LEAST_0, "training.weight_decay": AT_LEAST_0, "training.adam_beta1": FRACTION,
    "training.adam_beta2": FRACTION, "training.max_grad_norm": AT_LEAST_0, "training.logging_steps": AT_LEAST_1,
    "training.save_steps": AT_LEAST_1, "training.save_total_limit": AT_LEAST_1,
    "training.dataloader_num_workers": AT_LEAST_0, "training.eval_fraction": FRACTION,
    "training.eval_steps": AT_LEAST_1, "training.eval_depth": AT_LEAST_1,
    "training.sequence_parallel": AT_LEAST_1,
    "inference.depth": AT_LEAST_1, "inference.top_k": AT_LEAST_1, "inference.total_tokens": AT_LEAST_1,
    "inference.budget": Range(1, 4096), "inference.budget_rounds": AT_LEAST_1, "inference.max_new_tokens": AT_LEAST_1,
    "inference.num_prompts": AT_LEAST_1, "inference.prompt_offset": AT_LEAST_0, "inference.temperature": AT_LEAST_0,
    "inference.top_p": PROB, "inference.seed": AT_LEAST_0, "inference.batch_size": AT_LEAST_1,
    "inference.near_tie_ulps": AT_LEAST_0,
    "synth.num_prompts": AT_LEAST_1, "synth.max_prompt_tokens": AT_LEAST_1, "synth.temperature": POSITIVE,
    "synth.top_p": PROB, "synth.min_words": AT_LEAST_0, "synth.batch_size": AT_LEAST_1, "synth.seed": AT_LEAST_0,
    "synth.time_budget_s": POSITIVE, "training.time_budget_s": POSITIVE,
    "benchmark.sampling_temperature": POSITIVE,
    "benchmark.max_samples": AT_LEAST_1,
    "serve.port": Range(0, 65535), "serve.max_tokens_limit": AT_LEAST_1, "serve.default_max_tokens": AT_LEAST_1,
    "serve.max_batch": Range(1, 256), "serve.batch_wait_ms": Range(0, 10_000),
    "export.num_steps": AT_LEAST_1, "export.topk": AT_LEAST_1, "export.num_draft_tokens": AT_LEAST_1,
    "demo.vocab_size": Range(300), "demo.hidden_size": AT_LEAST_1, "demo.num_hidden_layers": AT_LEAST_1,
    "demo.num_attention_heads": AT_LEAST_1, "demo.num_key_value_heads": AT_LEAST_1,
    "demo.intermediate_size": AT_LEAST_1, "demo.seq_len": Range(2), "demo.batch_size": AT_LEAST_1,
    "demo.train_steps": AT_LEAST_1, "demo.learning_rate": POSITIVE, "demo.num_conversations": AT_LEAST_1,
    "demo.answer_tokens": AT_LEAST_1, "demo.max_corpus_mb": POSITIVE,
}


def _check_ds_range(value, where: str) -> None:
    if value is not None and (len(value) != 2 or not 0 <= value[0] <= value[1]):
        raise ConfigError(f"config key {where}: expected [a, b] with 0 <= a <= b (samples a..b-1), got {value!r}")


def _check_layer_list(value, where: str) -> None:
    if value is not None and any(v < 0 for v in value):
        raise ConfigError(f"config key {where}: layer ids are 0-based block indices (>= 0), got {value!r}")


def _check_shapes(value, where: str) -> None:
    from .shapes import parse_shape

    for text in value or []:
        parse_shape(text)


# Keys whose valid values need more than a type and a range.
VALIDATORS: dict[str, typing.Callable[[Any, str], None]] = {
    "data.ds_range": _check_ds_range,
    "data.aux_layer_ids": _check_layer_list,
    "export.feature_layers": _check_layer_list,
    "benchmark.shapes": _check_shapes,
}


def check_value(dotted: str, value: Any, where: str) -> None:
    rng = RANGES.get(dotted)
    if rng is not None and value is not None and value not in rng:
        wanted = str(rng).replace("x", dotted.split(".", 1)[1])
        raise ConfigError(f"config key {where}: expected {wanted}, got {value!r}")
    if dotted in VALIDATORS:
        VALIDATORS[dotted](value, where)
