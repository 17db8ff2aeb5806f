"""The block proposer: block drafters (DFlash, DSpark) draft a whole block in one call.

Per step: one drafter call over [the context rows committed since the last call; the block [root, mask × (B−1)]]
(block_common/model.py). The context rows' keys stay in the drafter's KV cache, the block's are cropped. The block's
slot i holds the drafter's distribution for the token at depth i; the proposal is
  chain  (top_k 1)  the top token (or one sample of q_i) at each depth 1..min(depth, B−1);
  tree   (top_k k)  a caterpillar: at depth i the k best (or k sampled without replacement) tokens of slot i, all
                    children of the principal (first) node at depth i−1, best-scored nodes kept up to total_tokens
                    (cumulative log-probability along the principal chain; the principal chain ranks first).
The drafter is always run with its full trained block, whatever the depth used. Sampled drafts carry q for the
verifier; slot i's q does not depend on the tokens drawn before it — still an exact proposal for the
rejection sampler, which only needs each draft drawn from the q it is checked against. How the slots are drawn is
`draw` (all at once here; left to right with a Markov head in families/dspark/proposer.py).
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from ...inference.kv_cache import crop_cache, select_rows
from ...inference.proposers import register_proposer
from ...inference.slot_cache import SlotCache, kept_valid, started
from ...inference.tree import DraftTree, attach_q, draft_children, select_tree, tree_sampling
from .model import block_attention


def caterpillar_tree(drafter, root: torch.Tensor, logits: torch.Tensor, top_k: int, total_tokens: int, sampling,
                     generator) -> DraftTree:
    """root [B], per-depth logits [B, D, V] → the tree described in the module docstring (slots drawn at once)."""
    sampling = tree_sampling(sampling)
    drawn = draft_children(logits, min(top_k, logits.shape[-1]), sampling, generator)
    return assemble_caterpillar(drafter, root, drawn, total_tokens)


def assemble_caterpillar(drafter, root: torch.Tensor, drawn: tuple, total_tokens: int) -> DraftTree:
    """root [B] and each depth's drawn children (ids [B, D, k], slot scores [B, D, k], q [B, D, V] or None, as
    tree.draft_children returns them) → the caterpillar tree."""
    ids, slot_scores, q = drawn
    bsz, depth, k = ids.shape
    dev = ids.device
    principal_cum = torch.cat([torch.zeros(bsz, 1, device=dev), slot_scores[..., 0].cumsum(1)[:, :-1]], 1)
    scores = torch.minimum(principal_cum[..., None] + slot_scores, principal_cum[..., None])  # ≤ the parent's
    # The pool, depth-major ([B, D·k]): slot j of depth d is the child of depth d−1's principal (first) slot.
    levels = torch.arange(depth, device=dev).repeat_interleave(k).expand(bsz, -1)
    principal = (torch.arange(k, device=dev) == 0).repeat(depth).expand(bsz, -1)
    parents = torch.where(levels > 0, (levels - 1) * k, -1)
    tree, keep = select_tree(root, drafter.draft_to_target(ids).reshape(bsz, -1), parents, levels + 1, principal,
                             scores.reshape(bsz, -1), total_tokens, k, depth)
    if q is not None:  # q row i = the children of the depth-i principal node (row 0: the root's)
        q_of_pool = torch.where(principal & (levels + 1 < depth), levels + 1, -1)
        attach_q(tree, drafter, q, q_of_pool.gather(1, keep))
    return tree


@register_proposer("block")
class BlockProposer:
    def __init__(self, drafter, depth: int, top_k: int, total_tokens: int, best_first: bool = False):
        self.drafter = drafter
        self.depth = min(depth, drafter.block_size - 1)
        self.top_k = top_k
        self.total_tokens = self.depth if top_k == 1 else total_tokens
        self.feature_layers = drafter.feature_layers
        self.max_nodes = min(self.total_tokens, self.depth * top_k)
        # Per decode: the drafter's cache of context keys, which of its slots are real [B, P], and the context not
        # yet fed (base features [B, L, ·], their positions and real-row mask [B, L]).
        self.cache = self.valid = self.pending = self.root_pos = None

    def start(self, hidden, ids, root, positions, valid, base_cache) -> None:
        """A static base cache gets a static drafter cache: its first call (the prompt's context and a block) is
        its prefill, whose block slots stay unused; later calls' context and block go through the scratch."""
        size = self.drafter.block_size
        if isinstance(base_cache, SlotCache):
            self.cache = SlotCache(base_cache.capacity + size, self.depth + 1 + size)
        else:
            self.cache = DynamicCache()
        self.valid = torch.zeros(ids.shape[0], 0, dtype=torch.bool, device=ids.device)
        self.pending = (hidden, positions, valid)

    def propose(self, root, root_pos, sampling, gen) -> DraftTree:
        d = self.drafter
        feats, ctx_pos, ctx_valid = self.pending
        bsz, n_ctx, size = feats.shape[0], feats.shape[1], d.block_size
        dev = root.device
        block_ids = torch.full((bsz, size), d.mask_token_id, dtype=torch.long, device=dev)
        block_ids[:, 0] = root
        block_pos = root_pos[:, None] + torch.arange(size, device=dev)
        before = torch.ones(bsz, size, n_ctx, dtype=torch.bool, device=dev)  # the pending context precedes the root
        mask = block_attention(ctx_valid, before, torch.zeros(bsz, size, dtype=torch.long, device=dev),
                               d.compute_dtype, self.valid)
        out = d(d.context(feats), ctx_pos, block_ids, block_pos, mask, past_key_values=self.cache)
        if not isinstance(self.cache, SlotCache):
            crop_cache(self.cache, self.valid.shape[1] + n_ctx)  # the block's keys go; the context's stay
            self.valid = torch.cat([self.valid, ctx_valid], 1)
        elif self.cache.valid is None:  # that was the prefill: slots [0, n_ctx + size)
            self.valid = started(self.cache, torch.cat([ctx_valid, torch.zeros_like(block_ids, dtype=torch.bool)], 1))
        else:  # the context's keys move to each row's next slots; the block's are dropped with the scratch
            self.cache.commit(torch.arange(n_ctx, device=dev).expand_as(ctx_valid), ctx_valid)
        self.pending, self.root_pos = None, root_pos
        drawn = self.draw(out[:, 1:1 + self.depth], root, tree_sampling(sampling), gen)
        return assemble_caterpillar(d, root, drawn, self.total_tokens)

    def draw(self, outputs: torch.Tensor, root: torch.Tensor, sampling, gen) -> tuple:
        """The block slots' outputs [B, D, H] → each depth's children (tree.draft_children), all slots at once."""
        logits = self.drafter.logits(outputs)
        return draft_children(logits, min(self.top_k, logits.shape[-1]), sampling, gen)

    def commit(self, hidden, next_tokens, lens) -> None:
        """The accepted path's base features become context at positions root_pos + i (the root's included)."""
        width = next_tokens.shape[1]
        steps = torch.arange(width, device=next_tokens.device)[None]
        self.pending = (hidden, self.root_pos[:, None] + steps, steps < lens[:, None])

    def keep(self, rows) -> None:
        select_rows(self.cache, rows)
        self.valid = kept_valid(self.cache, self.valid, rows)
        if self.pending is not None:
            self.pending = tuple(x[rows] for x in self.pending)
