"""The prompts inference, benchmarks and plugins decode: conversations of inference.prompts (or the training data),
tokenized with the base's chat template up to the first assistant turn."""
from __future__ import annotations

from ..config.schema import RunConfig
from ..config.errors import ConfigError
from ..data.conversations import prompt_ids, read_conversations


def load_prompts(cfg: RunConfig, tokenizer) -> list[list[int]]:
    path = cfg.inference.prompts or cfg.data.conversations
    convs, _ = read_conversations(path)
    convs = convs[cfg.inference.prompt_offset: cfg.inference.prompt_offset + cfg.inference.num_prompts]
    if not convs:
        raise ConfigError(f"inference.prompts: no prompts in {path} after offset {cfg.inference.prompt_offset}")
    return [prompt_ids(tokenizer, c) for c in convs]
