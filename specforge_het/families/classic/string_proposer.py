"""String-level drafting with a draft LM of another tokenizer (universal assisted generation's scheme; lossless
because verification is): the draft LM continues its own tokenization of the committed text greedily for `depth`
tokens, the text it wrote is re-encoded by the base's tokenizer, and the base tokens that follow the committed ones
are the draft chain. Unlike the token-level intersection (cross_vocab.py), any base token can be drafted, also ones
outside the shared vocabulary. The drafts are point masses (no q), so sampling stays exact: the sampled verifier
accepts a draft x with probability p(x) and resamples from the residual otherwise.

Chains only. Each row keeps its committed base ids, the draft ids its draft LM has consumed, and that LM's KV cache;
every step the committed text is re-encoded for the draft and the cache cut back to the longest common prefix
(re-encoding may change the last tokens). The base's re-encoding is anchored on the last ANCHOR committed tokens: a
proposal is made only where it reproduces them (a continuation that merges into the committed tail drafts nothing
that step). Per-row Python: meant for batch 1 to a few rows.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from ...config.errors import ConfigError
from ...inference.kv_cache import crop_cache
from ...inference.proposers import register_proposer
from ...inference.tree import DraftTree
from ...modeling.masks import padded_causal_mask

ANCHOR = 8  # committed base tokens re-encoded with the continuation, to find where the new tokens start


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _Row:
    def __init__(self, base_ids: list[int]):
        self.base_ids = base_ids  # committed base tokens, prompt first, the next root last
        self.fed: list[int] = []  # draft ids in the draft LM's cache, in order
        self.cache = DynamicCache()


@register_proposer("string")
class StringProposer:
    def __init__(self, drafter, depth: int, top_k: int, total_tokens: int, best_first: bool = False):
        if top_k != 1 or best_first:
            raise ConfigError("inference.proposer string: string-level drafting proposes chains (inference.strategy "
                              "chain); trees and budgets draft through the token-level intersection")
        tokenizers = getattr(drafter, "string_tokenizers", None)
        if tokenizers is None:
            raise ConfigError("inference.proposer string: needs a draft LM with its own tokenizer "
                              "(a classic_cross_vocab_drafter) and the base's tokenizer")
        self.lm, (self.base_tok, self.draft_tok) = drafter.lm, tokenizers
        self.depth, self.max_nodes, self.feature_layers = depth, depth, None
        self.rows: list[_Row] = []

    @staticmethod
    def prepare(drafter, base):
        if not hasattr(drafter, "use_string_drafting"):
            raise ConfigError(f"inference.proposer string: needs a draft LM with its own tokenizer (a "
                              f"classic_cross_vocab_drafter); this drafter is a {drafter.ARCHITECTURE}")
        return drafter.use_string_drafting(base.tokenizer)

    def start(self, hidden, ids, root, positions, valid, base_cache) -> None:
        self.rows = [_Row(ids[b][valid[b]].tolist() + [int(root[b])]) for b in range(ids.shape[0])]

    def propose(self, root, root_pos, sampling, gen) -> DraftTree:
        chains = [self._draft(row) for row in self.rows]
        dev, n = root.device, self.depth
        tokens = torch.tensor([[int(r)] + (c + [c[-1] if c else int(r)] * n)[:n]  # padding: verification decides
                               for r, c in zip(root.tolist(), chains)], device=dev)
        b = len(chains)
        return DraftTree(tokens, torch.arange(-1, n, device=dev)[None].expand(b, -1).contiguous(),
                         torch.arange(n + 1, device=dev)[None].expand(b, -1).contiguous(), max_children=1,
                         max_depth=n)

    def commit(self, hidden, next_tokens, lens) -> None:
        for row, toks, n in zip(self.rows, next_tokens.tolist(), lens.tolist()):
            row.base_ids += toks[:n]

    def keep(self, rows) -> None:
        self.rows = [self.rows[i] for i in rows.tolist()]

    @torch.no_grad()
    def _draft(self, row: _Row) -> list[int]:
        """The base tokens that follow row.base_ids in the draft LM's greedy continuation (≤ depth of them)."""
        context = self.draft_tok.encode(self.base_tok.decode(row.base_ids), add_special_tokens=False)
        keep = min(common_prefix(row.fed, context), len(context) - 1)
        crop_cache(row.cache, keep)
        row.fed = context[:keep]
        new, feed = [], context[keep:]
        for _ in range(self.depth):
            start = len(row.fed)
            step = torch.tensor([feed], device=self.lm.device)
            mask = padded_causal_mask(torch.ones_like(step, dtype=torch.bool),
                                      torch.ones(1, start, dtype=torch.bool, device=step.device), self.lm.dtype)
            out = self.lm(input_ids=step, position_ids=torch.arange(start, start + len(feed), device=step.device)[None],
                          attention_mask=mask, past_key_values=row.cache, use_cache=True, logits_to_keep=1)
            row.fed += feed
            feed = [int(out.logits[0, -1].argmax())]
            new += feed
        text = self.draft_tok.decode(context + new)[len(self.draft_tok.decode(context)):]
        tail = row.base_ids[-ANCHOR:]
        encoded = self.base_tok.encode(self.base_tok.decode(tail) + text, add_special_tokens=False)
        if encoded[: len(tail)] != tail:
            return []
        return encoded[len(tail): len(tail) + self.depth]
