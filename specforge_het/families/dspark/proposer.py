"""The Markov block proposer: DSpark (model.py) — the block proposer's single backbone call, then the
slots drawn left to right.

Slot i's logits add the Markov bias of the principal (first) token drawn at depth i−1 (the root for i = 1), so
every depth's children are drawn from a q that depends on the draft before it — which is exactly the node they hang
from in the caterpillar tree (block_common/proposer.py), so q stays the distribution each child was drawn from:
exact for the rejection sampler. The confidence head's running product then cuts the proposal
(drafter.confidence_cut; rows of a batch share the longest depth any of them keeps, so a cut never shortens a row
below what it asked for).
"""
from __future__ import annotations

import torch

from ...inference.proposers import register_proposer
from ...inference.tree import draft_children
from ..block_common.proposer import BlockProposer
from .model import cut_depth


@register_proposer("markov_block")
class MarkovBlockProposer(BlockProposer):
    def draw(self, outputs: torch.Tensor, root: torch.Tensor, sampling, gen) -> tuple:
        d = self.drafter
        backbone = d.logits(outputs)  # [B, D, V_draft]: one lm_head call for every slot
        previous, drawn, embeddings = root, [], []
        for i in range(outputs.shape[1]):
            logits, embedding = d.with_markov(backbone[:, i], previous)
            drawn.append(draft_children(logits[:, None], min(self.top_k, logits.shape[-1]), sampling, gen))
            embeddings.append(embedding)
            previous = d.draft_to_target(drawn[-1][0][:, 0, 0])
        keep = len(drawn)
        if d.confidence_cut > 0:  # the head only decides a cut: no cut, no head
            confidence = torch.sigmoid(d.confidence_head(outputs, torch.stack(embeddings, 1)).float())
            keep = cut_depth(confidence, d.confidence_cut)
        ids, scores, q = (torch.cat(parts, 1) if parts[0] is not None else None for parts in zip(*drawn[:keep]))
        return ids, scores, q
