"""A draft LM with its own tokenizer (token-level intersection, TLI — vLLM's `use_heterogeneous_vocab`).

The decode loop speaks the base's ids. Each base id reaches the draft LM as the draft id of the same string (the
draft's unk where there is none: vocab_map.py); the draft's next-token distribution is restricted to the
intersection and moved onto base ids. So the proposer's q is an ordinary distribution over base tokens — greedy
decoding stays token-identical to the base (verification never depends on the drafter) and rejection sampling stays
exact — and vLLM, which drafts the same way, proposes the same tokens.

Training (train.py) distils on the intersection: the data's base tokens outside it teach nothing.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from ...config.errors import ConfigError
from ...modeling.architectures import register_architecture
from ...modeling.compat import base_meta
from ...utils.io import atomic_write_dir
from .model import ClassicDrafter, load_draft_lm
from .vocab_map import build_vocab_map, overlap_line

log = logging.getLogger(__name__)
TOKENIZER_DIR = "draft_tokenizer"  # the draft's own tokenizer, saved beside the weights


@register_architecture("classic_cross_vocab_drafter")
class CrossVocabDrafter(ClassicDrafter):
    SAME_TOKENIZER = False

    def __init__(self, hf_config, base_hidden_size: int, base_vocab_size: Optional[int] = None, *args,
                 meta: Optional[dict] = None, lm=None, **kwargs):
        super().__init__(hf_config, base_hidden_size, base_vocab_size, *args, meta=meta, lm=lm, **kwargs)
        # The vocabulary map (vocab_map.py), saved with the weights: tli_target_to_draft [V_base],
        # tli_draft_to_target [V_draft] (−1 outside the intersection), and the draft's fallback id.
        self.register_buffer("tli_target_to_draft", torch.full((base_vocab_size,), -1, dtype=torch.long))
        self.register_buffer("tli_draft_to_target", torch.full((hf_config.vocab_size,), -1, dtype=torch.long))
        self.register_buffer("tli_draft_unk", torch.tensor(0))

    def set_vocab_map(self, vocab_map: dict) -> "CrossVocabDrafter":
        self.tli_target_to_draft.copy_(vocab_map["target_to_draft"])
        self.tli_draft_to_target.copy_(vocab_map["draft_to_target"])
        self.tli_draft_unk.copy_(vocab_map["draft_unk"])
        return self

    def to_draft(self, target_ids: torch.Tensor) -> torch.Tensor:
        ids = self.tli_target_to_draft[target_ids]
        return torch.where(ids < 0, self.tli_draft_unk, ids)

    def intersection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(draft ids, their base ids) of the shared token strings, in draft-id order. Computed once per state of
        the map (a nonzero() each draft step would sync and allocate); a load, copy or move of the buffer renews it."""
        m = self.tli_draft_to_target
        key = (m.data_ptr(), m._version, m.device)
        if getattr(self, "_intersection_key", None) != key:
            draft_ids = (m >= 0).nonzero()[:, 0]
            self._intersection, self._intersection_key = (draft_ids, m[draft_ids]), key
        return self._intersection

    def save_pretrained(self, out_dir, *args, **kwargs):
        """The checkpoint, and the draft's own tokenizer beside it (draft_tokenizer/), so decoding and export
        need no other folder."""
        out = super().save_pretrained(out_dir, *args, **kwargs)
        tokenizers = getattr(self, "string_tokenizers", None)
        if tokenizers is not None:
            atomic_write_dir(out / TOKENIZER_DIR, tokenizers[1].save_pretrained)
        return out

    def tokenizer_folder(self) -> str:
        """Where the draft's own tokenizer is: its copy in the checkpoint, else the draft LM it was built from."""
        checkpoint = getattr(self, "checkpoint_dir", None)  # set by load_drafter
        if checkpoint and (Path(checkpoint) / TOKENIZER_DIR / "tokenizer_config.json").is_file():
            return str(Path(checkpoint) / TOKENIZER_DIR)
        path = self.meta.get("draft_model_path")
        if not path or not Path(path).is_dir():
            raise ConfigError(f"the draft's own tokenizer is neither saved with the checkpoint ({TOKENIZER_DIR}/) "
                              f"nor at modeling.draft_model_path ({path!r}), where it was built from")
        return path

    def use_string_drafting(self, base_tokenizer) -> "CrossVocabDrafter":
        """Draft through text instead of the intersection (string_proposer.py): needs the base's tokenizer and
        the draft's own."""
        from transformers import AutoTokenizer

        self.string_tokenizers = (base_tokenizer, AutoTokenizer.from_pretrained(self.tokenizer_folder()))
        self.PROPOSER = "string"
        return self

    def forward(self, hidden, input_ids: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return super().forward(hidden, self.to_draft(input_ids), *args, **kwargs)

    def prefill(self, hidden, prompt_ids: torch.Tensor, next_tokens: torch.Tensor, *args, **kwargs):
        return super().prefill(hidden, self.to_draft(prompt_ids), self.to_draft(next_tokens), *args, **kwargs)

    def draft_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.lm.lm_head(features)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Over the base's vocabulary: the intersection's draft logits at their base ids, −inf elsewhere."""
        draft = self.draft_logits(features)
        draft_ids, target_ids = self.intersection()
        out = draft.new_full((*draft.shape[:-1], self.base_vocab_size), float("-inf"))
        out[..., target_ids] = draft[..., draft_ids]
        return out

    def token_states(self, input_ids: torch.Tensor, packing: Optional[dict] = None) -> torch.Tensor:
        return super().token_states(self.to_draft(input_ids), packing)


def build_cross_vocab_drafter(base, modeling, draft_tokenizer, meta: dict) -> CrossVocabDrafter:
    """The LM of modeling.draft_model_path, whose tokenizer (`draft_tokenizer`) is not the base's."""
    lm = load_draft_lm(modeling.draft_model_path)
    meta = {**(meta or {}), "draft_model_path": modeling.draft_model_path}
    vocab_map = build_vocab_map(base.tokenizer, draft_tokenizer, base.vocab_size, lm.config.vocab_size)
    n = int((vocab_map["draft_to_target"] >= 0).sum())
    log.info(f"classic_draft: the draft LM has its own tokenizer; {overlap_line(vocab_map)}")
    meta = base_meta(base, {**meta, "vocab_intersection": n})
    drafter = CrossVocabDrafter(lm.config, base.hidden_size, base.vocab_size, meta=meta, lm=lm).set_vocab_map(vocab_map)
    drafter.string_tokenizers = (base.tokenizer, draft_tokenizer)  # sequence-level distillation re-encodes text
    return drafter.to(base.device).attach_base(base.embed_tokens, base.lm_head)
