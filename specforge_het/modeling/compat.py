"""Does a drafter fit a base? The checks made whenever the two meet (width, vocabulary, tokenizer, feature layers),
the metadata recorded at training time that they read, and the width rule for sharing the base's embedding/lm_head."""
from __future__ import annotations

from typing import Optional

from ..config.errors import ConfigError


def base_meta(base, meta: Optional[dict]) -> dict:
    """Run metadata plus the base tokenizer's fingerprint (checked again whenever the drafter meets a base)."""
    from .base import tokenizer_fingerprint

    meta = dict(meta or {})
    meta.setdefault("base_num_layers", base.num_layers)  # what the engines' layer-capture rules are checked against
    if base.tokenizer is not None:
        meta.setdefault("tokenizer_fingerprint", tokenizer_fingerprint(base.tokenizer))
    return meta


def check_drafter_base(drafter, base) -> None:
    """Fail clearly when `drafter` was trained for another base (width, vocabulary, tokenizer, layers)."""
    where = drafter.meta.get("base_model_name_or_path", "its training base")
    if base.hidden_size != drafter.base_hidden_size:
        raise ConfigError(f"drafter expects base hidden_size {drafter.base_hidden_size} (trained on {where}), "
                          f"but the base has {base.hidden_size}")
    if drafter.base_vocab_size is not None and base.vocab_size != drafter.base_vocab_size:
        raise ConfigError(f"drafter expects a base vocabulary of {drafter.base_vocab_size} tokens (trained on "
                          f"{where}), but the base has {base.vocab_size}: the tokenizers differ")
    fp = drafter.meta.get("tokenizer_fingerprint")
    if fp and base.tokenizer is not None:
        from .base import tokenizer_fingerprint

        if tokenizer_fingerprint(base.tokenizer) != fp:
            raise ConfigError(f"drafter was trained with another tokenizer than this base's ({where}): token "
                              "ids would mean different things; train a drafter for this base")
    if drafter.feature_layers:
        base.check_layer_ids(drafter.feature_layers, "drafter feature layers")


def require_own_parts_for_width(kind: str, width: int, base_hidden_size: int, base_embed_dim: Optional[int],
                                own_embedding: bool, own_lm_head: bool) -> None:
    """A drafter whose layers run at `width` can share the base's embedding / lm_head only at the base's widths."""
    embed_width = base_embed_dim or base_hidden_size
    if not own_embedding and embed_width != width:
        raise ConfigError(f"{kind} at draft width {width} ≠ base embedding width {embed_width}"
                          " needs its own embedding: set modeling.embedding: own")
    if not own_lm_head and width != base_hidden_size:
        raise ConfigError(f"{kind} at draft width {width} ≠ base width {base_hidden_size} needs its own lm_head: "
                          "set modeling.lm_head: own")
