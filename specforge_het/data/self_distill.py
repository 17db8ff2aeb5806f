"""The conversations a run trains on: `data.conversations` as read, or — with `data.regenerate_to` — the base's own
answers to them (self-distillation), made once per set of inputs and resumable (data/regenerate.py). Offline
(data_gen) and online training read them through here, so `--@online --@self_distill` trains on the answers too."""
from __future__ import annotations

import logging
from pathlib import Path

from ..modeling.base import base_identity
from ..utils.io import sha256_file
from .conversations import read_conversations
from .regenerate import regenerate_to_file

log = logging.getLogger(__name__)


def _sha(path: str | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None


def regenerate_fingerprint(cfg, base) -> dict:
    d = cfg.data
    return {"base": base_identity(base, cfg.base.model_name_or_path), "conversations_sha256": _sha(d.conversations),
            "max_samples": d.max_samples, "chat_template_sha256": _sha(d.chat_template),
            "temperature": d.regen_temperature, "max_new_tokens": d.regen_max_new_tokens,
            "batch_size": d.batch_size, "seed": cfg.training.seed}


def training_conversations(base, cfg, who: str) -> list[list[dict]]:
    convs, report = read_conversations(cfg.data.conversations, cfg.data.max_samples)
    log.info(f"{who}: {cfg.data.conversations}: {report.summary()}")
    if cfg.data.regenerate_to:
        writer = _answering_base(base, cfg)
        convs = regenerate_to_file(writer, convs, cfg.data.regenerate_to, regenerate_fingerprint(cfg, writer),
                                   cfg.data.regen_max_new_tokens, cfg.data.regen_temperature,
                                   batch_size=cfg.data.batch_size, seed=cfg.training.seed)
    return convs


def _answering_base(base, cfg):
    """The base that writes the answers: the run's own, or a copy in data.regen_dtype (bf16 where it pays)."""
    import dataclasses

    from ..modeling.base import load_base
    from ..utils.precision import resolve_auto_dtype

    cfg_text = base.model.config.get_text_config()
    dtype = resolve_auto_dtype(cfg.data.regen_dtype, cfg.base.dtype, cfg_text.hidden_size,
                               getattr(cfg_text, "intermediate_size", 4 * cfg_text.hidden_size),
                               "self-distill: bf16 base")
    if dtype == cfg.base.dtype:
        return base
    return load_base(dataclasses.replace(cfg.base, dtype=dtype), device=base.device)
