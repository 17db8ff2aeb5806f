"""The parallel proposer: P-EAGLE (model.py) drafts every depth from one drafter call.

The drafter's cache and its commit are the tree proposer's (inference/proposers/eagle_tree.py): after each step it
holds the (base feature, next token) pairs of the committed sequence, and its output at the last pair — the pair
whose token is the root — gives depth 1's logits. A proposal then runs one call over `depth − 1` mask slots at the
positions after that pair (causal over the cache and each other), whose keys are dropped after it. The slots'
logits make
  chain  (top_k 1)  the top token (or one sample of q_i) at each depth;
  tree   (top_k k)  the block proposer's caterpillar (families/block_common/proposer.py): depth i's k best (or
                    sampled) tokens, all children of depth i−1's principal node — no slot reads the tokens drafted
                    before it, so q_i is the distribution each child was drawn from.
"""
from __future__ import annotations

import torch

from ...inference.kv_cache import crop_cache
from ...inference.proposers import register_proposer
from ...inference.proposers.eagle_tree import TreeProposer
from ...inference.tree import DraftTree, draft_children, tree_sampling
from ...modeling.masks import padded_causal_mask
from ..block_common.proposer import assemble_caterpillar


@register_proposer("parallel")
class ParallelProposer(TreeProposer):
    def __init__(self, drafter, depth: int, top_k: int, total_tokens: int, best_first: bool = False):
        super().__init__(drafter, depth, top_k, total_tokens, best_first)
        self.total_tokens = depth if top_k == 1 else total_tokens
        self.max_nodes = min(self.total_tokens, depth * top_k)

    def propose(self, root, root_pos, sampling, gen) -> DraftTree:
        d = self.drafter
        self.root_pos = root_pos
        outputs = self.last_feat[:, None]
        slots = self.depth - 1
        if slots:
            bsz, dev = root.shape[0], root.device
            # The last committed pair sits at root_pos − 1: mask slot i (depth i + 1) at root_pos − 1 + i.
            positions = root_pos[:, None] + torch.arange(slots, device=dev)
            fresh = torch.ones(bsz, slots, dtype=torch.bool, device=dev)
            masks = d(d.mask_features(bsz, slots), d.mask_ids(bsz, slots, dev), positions,
                      past_key_values=self.cache,
                      attention_mask=padded_causal_mask(fresh, self.valid, d.compute_dtype))
            crop_cache(self.cache, self.valid.shape[1], contiguous=getattr(d, "compiled_forward", False))
            outputs = torch.cat([outputs, masks], 1)
        logits = d.logits(outputs)
        drawn = draft_children(logits, min(self.top_k, logits.shape[-1]), tree_sampling(sampling), gen)
        return assemble_caterpillar(d, root, drawn, self.total_tokens)
