"""A classic draft model in the engines' formats: it is a plain HF causal LM (`lm.*`), so its export is that LM's own
folder (export/to_hf.py) — served by vLLM's `draft_model` method and SGLang's `STANDALONE` algorithm.

The LM runs at its natural positions (token j at position j; model.py feeds the prompt's first token at prefill), so
the engines, which run a draft model as a plain LM over the sequence, draft exactly what our decoder drafts."""
from __future__ import annotations

from typing import Optional

import torch

from ...config.errors import ConfigError
from ...export.formats import dtype_name, state_of
from ...export.registry import Converter, register_converter
from ...modeling.safetensors_io import tied_keys


def classic_to_hf(drafter, dtype: Optional[torch.dtype], base: str = "", steps: int = 0) -> tuple[dict, dict]:
    lm = drafter.lm
    same = drafter.SAME_TOKENIZER
    if same and drafter.base_vocab_size is not None and lm.config.vocab_size != drafter.base_vocab_size:
        raise ConfigError(f"export.to hf: this draft's vocabulary ({lm.config.vocab_size} rows) differs from the "
                          f"base's ({drafter.base_vocab_size}); vLLM's draft_model needs them equal")
    ties = tied_keys(lm.state_dict())  # e.g. lm_head tied to the embedding: saved once, as HF does
    weights = {k: v for k, v in state_of(lm, dtype).items() if k not in ties}
    config = lm.config.to_dict()
    for key in ("_attn_implementation", "_attn_implementation_autoset", "_name_or_path", "transformers_version"):
        config.pop(key, None)  # the training-time attention (ttt_attention) is ours: engines use their own
    config["architectures"] = [type(lm).__name__]
    config["torch_dtype"] = dtype_name(next(iter(weights.values())))
    return config, weights


def own_tokenizer_folder(drafter, base: str) -> str:
    """A draft with its own tokenizer ships it: the copy saved with the checkpoint, else the draft LM's folder it was
    built from."""
    try:
        return drafter.tokenizer_folder()
    except ConfigError as e:
        raise ConfigError(f"export.to hf: {e}") from None


register_converter(Converter("hf", "classic_drafter", "a plain HF causal LM (vLLM draft_model, SGLang STANDALONE)",
                             classic_to_hf))
# With its own tokenizer: the draft's tokenizer ships with it and vLLM maps the vocabularies itself
# (use_heterogeneous_vocab: the same token-level intersection as vocab_map.py; greedy drafting only).
register_converter(Converter("hf", "classic_cross_vocab_drafter",
                             "a plain HF causal LM with its own tokenizer (vLLM draft_model, use_heterogeneous_vocab)",
                             classic_to_hf, tokenizer_from=own_tokenizer_folder,
                             serving_fields={"use_heterogeneous_vocab": True}))
