"""DSpark (arXiv 2607.05147): the DFlash block backbone (families/block_common/model.py) plus two small heads.

    o_1..o_{B−1}   the backbone's block outputs: one non-causal call, exactly as DFlash
    logits_i = lm_head(o_i) + markov_w2(markov_w1[x_{i−1}])      x_0 = the anchor; drafted left to right
    conf_i   = sigmoid(proj(cat(o_i, markov_w1[x_{i−1}])))         P(slot i accepted | slots < i accepted)
The Markov head is a rank-r bigram correction conditioned on the token actually drafted before slot i: the
intra-block dependency DFlash's parallel slots lack, for the cost of a [r] lookup and an [r → V] product per slot
(no second backbone call). The confidence head estimates each slot's acceptance; the proposer stops the block where
the running product of those estimates falls below `confidence_cut` (fewer tokens verified per step; 0 = never).

Layout: DFlash's — the anchor is the last committed token and slots 1..B−1 are the drafts (speculators'
`sample_from_anchor: false`). Keys as vLLM's and SGLang's `Qwen3DSparkModel` load them: `markov_head.markov_w1.weight`
[V_target, r] (indexed by target ids), `markov_head.markov_w2.weight` [V_draft, r], `confidence_head.proj.weight`
[1, H + r] and `.bias` [1] (the head reads the Markov embedding: `confidence_head_with_markov`).
"""
from __future__ import annotations

import torch
from torch import nn

from ...config.errors import ConfigError
from ...modeling.architectures import register_architecture
from ..block_common.model import BlockDrafter, build_block_drafter


class MarkovHead(nn.Module):
    def __init__(self, vocab_size: int, draft_vocab_size: int, rank: int):
        super().__init__()
        self.markov_w1 = nn.Embedding(vocab_size, rank)
        self.markov_w2 = nn.Linear(rank, draft_vocab_size, bias=False)
        nn.init.zeros_(self.markov_w2.weight)  # an untrained head adds nothing: DSpark starts as its DFlash backbone

    def embed(self, target_ids: torch.Tensor) -> torch.Tensor:
        return self.markov_w1(target_ids)

    def bias(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.markov_w2(embedding)


class ConfidenceHead(nn.Module):
    def __init__(self, hidden_size: int, rank: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size + rank, 1, bias=True)

    def forward(self, outputs: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Acceptance logits [...] of block outputs [..., H] after Markov embeddings [..., r]."""
        x = torch.cat([outputs, embedding.to(outputs.dtype)], -1)
        return self.proj(x.to(self.proj.weight.dtype)).squeeze(-1)


@register_architecture("dspark_drafter")
class DSparkDrafter(BlockDrafter):
    EXTRA_KEYS = BlockDrafter.EXTRA_KEYS + ("markov_rank", "confidence_cut")
    PROPOSER = "markov_block"  # families/dspark/proposer.py

    def __init__(self, hf_config, base_hidden_size: int, *args, markov_rank: int = 64, confidence_cut: float = 0.0,
                 **kwargs):
        super().__init__(hf_config, base_hidden_size, *args, **kwargs)
        if not 1 <= markov_rank <= 4096:
            raise ConfigError(f"modeling.markov_rank: expected 1..4096, got {markov_rank}")
        if not 0.0 <= confidence_cut < 1.0:
            raise ConfigError(f"modeling.confidence_cut: expected 0 ≤ cut < 1, got {confidence_cut}")
        if self.base_vocab_size is None:
            raise ConfigError("a DSpark drafter needs the base vocabulary size (its Markov head is indexed by it)")
        self.markov_rank, self.confidence_cut = int(markov_rank), float(confidence_cut)
        self.markov_head = MarkovHead(self.base_vocab_size, self.draft_vocab_size or self.base_vocab_size,
                                      self.markov_rank)
        self.confidence_head = ConfidenceHead(hf_config.hidden_size, self.markov_rank)

    def with_markov(self, logits: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone logits [..., V_draft] and the target ids drafted before each slot [...] → (the logits with the
        Markov bias, the Markov embeddings [..., r] the confidence head reads)."""
        embedding = self.markov_head.embed(previous)
        bias = self.markov_head.bias(embedding.to(self.markov_head.markov_w2.weight.dtype))
        return logits + bias.to(logits.dtype), embedding

    def markov_logits(self, outputs: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block outputs [..., H] and the target ids drafted before each slot [...] → (draft-vocabulary logits
        [..., V_draft] with the Markov bias, the Markov embeddings [..., r])."""
        return self.with_markov(self.logits(outputs), previous)

    def greedy_block(self, outputs: torch.Tensor, anchor_ids: torch.Tensor) -> torch.Tensor:
        """Greedy drafts of the block slots, left to right: outputs [..., D, H], anchor target ids [...] → draft
        ids [..., D] (the Markov bias of slot i reads slot i−1's draft; the backbone logits are computed once)."""
        backbone = self.logits(outputs)
        previous, drafted = anchor_ids, []
        for i in range(outputs.shape[-2]):
            logits, _ = self.with_markov(backbone[..., i, :], previous)
            drafted.append(logits.argmax(-1))
            previous = self.draft_to_target(drafted[-1])
        return torch.stack(drafted, -1)


def build_dspark_drafter(base, markov_rank: int, confidence_cut: float, **block) -> DSparkDrafter:
    return build_block_drafter(base, cls=DSparkDrafter, markov_rank=markov_rank, confidence_cut=confidence_cut,
                               **block)


def cut_depth(confidence: torch.Tensor, cut: float) -> int:
    """confidence [B, D] per slot → how many leading slots to verify: the longest prefix whose running product
    stays ≥ cut in any row (at least 1; every slot when cut is 0). Rows share one depth (trees are batched)."""
    if cut <= 0.0:
        return confidence.shape[1]
    kept = (confidence.float().cumprod(1) >= cut).sum(1)
    return max(1, int(kept.max()))
