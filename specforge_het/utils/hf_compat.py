"""One name for the KV-cache argument of HF model and layer forwards across the transformers versions we support:
5.25 renamed `past_key_values` to `cache` (the old name warns on every call and goes in 5.40); 5.19 knows only the
old one. Every hot-path call passes the cache through `cache_kw`, so neither version warns or breaks."""
from __future__ import annotations

import inspect


def _cache_name() -> str:
    from transformers.models.llama.modeling_llama import LlamaModel

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


CACHE_ARG = _cache_name()


def cache_kw(cache) -> dict:
    """{CACHE_ARG: cache} for a transformers model / decoder-layer call."""
    return {CACHE_ARG: cache}
