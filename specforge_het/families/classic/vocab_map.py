"""Token-level intersection (TLI) of two tokenizers: which draft tokens are the same string as a target token.

Computed exactly as vLLM 0.32 does for `use_heterogeneous_vocab` (v1/spec_decode/vocab_mapping.py), so that our
decoder and vLLM draft the same tokens: each tokenizer's word-initial space marker (found by encoding " a": `Ġ` for
byte-level BPE, `▁` for SentencePiece) is read as a space, the first id of each normalised string is kept, and the
strings both vocabularies hold are the intersection. Target ids outside it reach the draft LM as the draft's unk
token (else its EOS); the draft's distribution is restricted to the intersection and moved onto target ids.
"""
from __future__ import annotations

import torch

from ...config.errors import ConfigError


def space_prefixes(tokenizer) -> tuple[str, ...]:
    try:
        ids = tokenizer.encode(" a", add_special_tokens=False)
        if ids:
            token = tokenizer.convert_ids_to_tokens(ids[0])
            if isinstance(token, str) and len(token) > 1 and token.endswith("a") and token[0] not in (" ", "\t"):
                return (token[:-1],)
    except Exception:  # a tokenizer that cannot encode text here: both usual markers
        pass
    return ("\u0120", "\u2581")


def normalised_vocab(tokenizer) -> dict[str, int]:
    prefixes = space_prefixes(tokenizer)
    out: dict[str, int] = {}
    for token, tid in tokenizer.get_vocab().items():
        for prefix in prefixes:
            if token.startswith(prefix):
                token = " " + token[len(prefix):]
                break
        out.setdefault(token, tid)
    return out


def fallback_id(tokenizer, role: str) -> int:
    """Where out-of-intersection ids go: unk, else EOS (vLLM's rule)."""
    for name in ("unk_token_id", "eos_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None:
            return int(tid)
    raise ConfigError(f"{role} tokenizer has neither an unk nor an EOS token: out-of-intersection ids have nowhere "
                      "to go")


def build_vocab_map(target_tokenizer, draft_tokenizer, target_vocab_size: int,
                    draft_vocab_size: int) -> dict[str, torch.Tensor]:
    """→ {"target_to_draft": [V_target] long (−1 outside), "draft_to_target": [V_draft] long (−1 outside),
    "draft_unk": [] long, "target_unk": [] long}."""
    target, draft = normalised_vocab(target_tokenizer), normalised_vocab(draft_tokenizer)
    t2d = torch.full((target_vocab_size,), -1, dtype=torch.long)
    d2t = torch.full((draft_vocab_size,), -1, dtype=torch.long)
    for text in set(target) & set(draft):
        t, d = target[text], draft[text]
        if t < target_vocab_size and d < draft_vocab_size:
            t2d[t], d2t[d] = d, t
    if int((d2t >= 0).sum()) == 0:
        raise ConfigError("the draft's and the base's tokenizers share no token string: a drafter cannot propose "
                          "anything the base can verify")
    return {"target_to_draft": t2d, "draft_to_target": d2t,
            "draft_unk": torch.tensor(fallback_id(draft_tokenizer, "the draft")),
            "target_unk": torch.tensor(fallback_id(target_tokenizer, "the base"))}


def overlap_line(vocab_map: dict) -> str:
    d2t = vocab_map["draft_to_target"]
    n = int((d2t >= 0).sum())
    return (f"vocabulary intersection {n} tokens ({100 * n / len(d2t):.1f}% of the draft's {len(d2t)}, "
            f"{100 * n / len(vocab_map['target_to_draft']):.1f}% of the base's {len(vocab_map['target_to_draft'])})")
