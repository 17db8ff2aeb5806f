"""The draft family's decoder stack: any Hugging Face decoder model, built without its vocabulary-sized embedding
and running our attention function (plain SDPA, or the unrolled training-time-test attention)."""
from __future__ import annotations

import copy
import inspect

from . import ttt_attention


def family_stack(hf_config):
    """The draft family's decoder model without its (vocab-sized) embedding, with our attention function
    (plain SDPA, or the unrolled training-time-test attention when a `ttt_state` is passed)."""
    from transformers import AutoModel

    cfg = copy.deepcopy(hf_config)
    cfg.vocab_size = 2
    cfg.tie_word_embeddings = False
    cfg.pad_token_id = None
    cfg._attn_implementation = ttt_attention.NAME
    skeleton = AutoModel.from_config(cfg)
    for layer in skeleton.layers:  # the layers keep a reference to the config they were built with
        layer.self_attn.config._attn_implementation = ttt_attention.NAME
    return skeleton


def rope_kwargs(rotary_emb) -> dict:
    """Gemma-3-style rotary modules take the layer type; every draft layer is full attention."""
    return {"layer_type": "full_attention"} if "layer_type" in inspect.signature(rotary_emb.forward).parameters else {}
