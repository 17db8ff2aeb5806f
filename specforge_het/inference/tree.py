"""Draft trees as tensors: EAGLE-2 dynamic expansion and SpecExec-style budget trees, ancestor masks — batched.

A batch of B trees, one per sequence, each with a root (the last token the base produced, index 0) and n draft
nodes (indices 1..n): `tokens [B, n+1]`, `parents [B, n+1]` (the root's parent is -1) and `depths [B, n+1]`,
sorted so parents precede children. Every row has the same node count (the same budget), not the same shape.
Everything is computed level by level (≤ depth tensor ops over the whole batch), never node by node.
A chain of length k is the tree with top_k = 1 and total_tokens = k.

Selection is ancestor-closed by construction, not by a score margin: candidates are ranked by the key
(on the principal chain, cumulative score, pool index) — a child's score is clamped to at most its parent's and
the pool lists parents before children, so a parent always ranks before its child, ties included. The principal
chain (each node's first child: the drafter's greedy chain, or its first sample) ranks first, so every tree holds
the chain of its depth and accepts at least what that chain would.

Sampling (a `Sampling` with temperature > 0): each expanded node's children are drawn from the drafter's sampling
distribution q (temperature and top-p as for the base) without replacement (Gumbel-top-k), in draw order, and q is
kept for the verifier (accept.py). The shape is decided from q's sorted probabilities only — never from which
token was drawn into a slot — so the kept children of a node are a prefix of its draws, as the verifier requires.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..modeling.masks import additive_mask
from .accept import Sampling, sampling_probs, take


@dataclass
class DraftTree:
    tokens: torch.Tensor  # [B, n+1] long, tokens[:, 0] = roots
    parents: torch.Tensor  # [B, n+1] long, parents[:, 0] = -1
    depths: torch.Tensor  # [B, n+1] long, depths[:, 0] = 0
    # Sampled trees only: q [B, F, V_draft] the draft distributions the children of the F expanded nodes were drawn
    # from, q_index [B, n+1] each node's row of q (-1: not expanded), draft_ids [V_draft] their target ids (None:
    # the draft vocabulary is the target's).
    q: Optional[torch.Tensor] = None
    q_index: Optional[torch.Tensor] = None
    draft_ids: Optional[torch.Tensor] = None
    max_children: Optional[int] = None  # an upper bound on any node's child count (the tree's top_k)
    # An upper bound on depths known on the host (the proposer's depth): loops and path widths over it need no
    # host synchronisation. None (hand-made trees): read from depths, which synchronises.
    max_depth: Optional[int] = None

    @property
    def size(self) -> int:
        return self.tokens.shape[-1]

    def row(self, b: int) -> "DraftTree":
        """One sequence's tree, unbatched ([n+1] tensors)."""
        return DraftTree(self.tokens[b], self.parents[b], self.depths[b])


def ancestor_matrix(parents: torch.Tensor) -> torch.Tensor:
    """anc[b, i, j] = True when j is i or an ancestor of i, for [B, n] parents (rows/cols in tree order).
    Pointer doubling: after round r every row holds its ancestors up to distance 2^r and `jump` points 2^r levels
    up, so ⌈log2 n⌉ rounds cover any tree of n nodes — a bound known from the shape, with no host synchronisation."""
    bsz, n = parents.shape
    jump = parents.clamp_min(0)  # the root is its own parent: jumps stay there
    eye = torch.eye(n, dtype=torch.bool, device=parents.device).expand(bsz, n, n)
    anc = eye.scatter(2, jump[..., None], True)  # self and parent: distance ≤ 1
    for _ in range(max(0, n - 2).bit_length()):  # 2^r ≥ n − 1, the deepest possible node
        anc = anc | take(anc, jump)  # distance ≤ 2^r, then from 2^r up: ≤ 2^(r+1)
        jump = jump.gather(1, jump)
    return anc


def tree_attention_mask(anc: torch.Tensor, prefix_valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Tree nodes see the valid part of their sequence's prefix (cache) plus their own ancestors.
    anc [B, q, q], prefix_valid [B, P] bool (False = a padding slot) → additive [B, 1, q, P + q]."""
    q = anc.shape[-1]
    prefix = prefix_valid[:, None, :].expand(-1, q, -1)
    return additive_mask(torch.cat([prefix, anc], dim=2), dtype)


def rank_desc(*keys: torch.Tensor) -> torch.Tensor:
    """Indices [B, N] ordering each row by the keys (most significant first), each descending; ties keep the
    original (pool) order. Stable sorts from the least significant key up."""
    order = torch.arange(keys[0].shape[1], device=keys[0].device).expand_as(keys[0])
    for key in reversed(keys):
        key = key.float() if key.dtype == torch.bool else key
        order = order.gather(1, key.gather(1, order).argsort(dim=1, descending=True, stable=True))
    return order


def tree_sampling(sampling: Optional[Sampling]) -> Optional[Sampling]:
    """The sampling a tree's drafts are drawn with: None = deterministic top-k candidates (greedy decoding, or
    sampling with `draft_sampling: greedy`: verified as point-mass drafts)."""
    return None if sampling is not None and (sampling.greedy or sampling.draft == "greedy") else sampling


def draft_children(logits: torch.Tensor, k: int, sampling: Optional[Sampling], generator
                   ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Drafter logits [B, m, V] → (k child draft ids per node in slot order [B, m, k], slot scores [B, m, k]
    sorted descending, q [B, m, V] or None). Greedy: the top-k tokens, scored by log-probability. Sampled: k draws
    without replacement from q (the Gumbel-top-k trick), scored by q's k largest log-probabilities — slot j's score
    does not depend on which token was drawn into it. Slots beyond q's support score −inf."""
    if sampling is None or sampling.greedy:
        scores, ids = logits.float().log_softmax(-1).topk(k)
        return ids, scores, None
    q = sampling_probs(logits, sampling.temperature, sampling.top_p)
    log_q = q.log()
    u = torch.rand(q.shape, generator=generator, device=q.device).clamp_(torch.finfo(torch.float32).tiny, 1.0)
    ids = (log_q - (-u.log()).log()).topk(k).indices
    return ids, log_q.topk(k).values, q


class _Pool:
    """The candidate pool of one expansion, per batch row: parents index the pool (-1 = the root); pool order
    lists every parent before its children."""

    def __init__(self):
        self.tokens, self.scores, self.parents, self.depths, self.principal, self.feats = [], [], [], [], [], []

    def add(self, tokens, scores, parents, depths, principal, feats) -> None:
        for name, v in zip(("tokens", "scores", "parents", "depths", "principal", "feats"),
                           (tokens, scores, parents, depths, principal, feats)):
            getattr(self, name).append(v)

    def cat(self, name: str) -> torch.Tensor:
        return torch.cat(getattr(self, name), 1)


@torch.no_grad()
def expand_tree(drafter, root_token: torch.Tensor, root_feature: torch.Tensor, draft_cache,
                prefix_valid: torch.Tensor, root_position: torch.Tensor, depth: int, top_k: int, total_tokens: int,
                best_first: bool = False, sampling: Optional[Sampling] = None,
                generator: Optional[torch.Generator] = None) -> DraftTree:
    """EAGLE-2 dynamic trees for a batch. root_token [B], root_feature [B, H] (the drafter output at the position
    before the root: it predicts the root's children), prefix_valid [B, P] the drafter cache's real slots,
    root_position [B]. Each of `depth` rounds feeds up to top_k frontier nodes per row through the drafter and adds
    their top_k children to the candidate pool; the best `total_tokens` candidates (see the module docstring) form
    the tree. Frontier: the best children of the previous round (EAGLE-2), or with `best_first` the best
    not-yet-expanded candidates of the whole pool at any depth (SpecExec-style budget tree). The principal chain's
    newest node is always in the frontier. With `sampling` (temperature > 0) children are sampled (draft_children).
    The drafter cache is extended by the fed nodes; the caller crops it back to P afterwards."""
    device = root_token.device
    bsz = root_token.shape[0]
    sampling = tree_sampling(sampling)
    sampled = sampling is not None
    logits = drafter.logits(root_feature[:, None])
    k = min(top_k, logits.shape[-1])
    ids, slot_scores, q0 = draft_children(logits, k, sampling, generator)
    pool = _Pool()
    first_slot = torch.arange(k, device=device).expand(bsz, 1, k) == 0
    pool.add(drafter.draft_to_target(ids[:, 0]), slot_scores[:, 0], torch.full((bsz, k), -1, device=device),
             torch.ones(bsz, k, dtype=torch.long, device=device), first_slot[:, 0],
             root_feature[:, None].expand(-1, k, -1))
    q_rows = [q0] if sampled else []
    frontier = torch.arange(k, device=device).expand(bsz, k)  # pool indices to feed next
    frontier_feat = root_feature[:, None].expand(-1, k, -1)  # the feature paired with each frontier token
    expanded = torch.zeros(bsz, k, dtype=torch.bool, device=device)
    fed_pool_idx = torch.empty(bsz, 0, dtype=torch.long, device=device)  # pool index of each fed cache entry
    fed_anc = torch.empty(bsz, 0, 0, dtype=torch.bool, device=device)  # ancestor-or-self among fed entries
    pool_size = k
    eye = torch.eye(k, dtype=torch.bool, device=device)
    for _ in range(1, depth):
        k_in = frontier.shape[1]
        all_parents, all_depths = pool.cat("parents"), pool.cat("depths")
        # Ancestors of a frontier node among already-fed entries = its parent's fed row (none for the root's children).
        parent_pool = all_parents.gather(1, frontier)
        old = torch.zeros(bsz, k_in, fed_anc.shape[1], dtype=torch.bool, device=device)
        if fed_anc.shape[1]:
            fed_pos = (fed_pool_idx[:, None, :] == parent_pool[:, :, None]).float().argmax(-1)
            old = take(fed_anc, fed_pos) & (parent_pool >= 0)[..., None]
        new_rows = torch.cat([old, eye[:k_in, :k_in].expand(bsz, -1, -1)], dim=2)
        fed_anc = torch.cat([torch.nn.functional.pad(fed_anc, (0, k_in)), new_rows], dim=1)
        fed_pool_idx = torch.cat([fed_pool_idx, frontier], dim=1)
        visible = torch.cat([prefix_valid[:, None, :].expand(-1, k_in, -1), new_rows], dim=2)
        frontier_depth = all_depths.gather(1, frontier)
        positions = root_position[:, None] + frontier_depth - 1
        out = drafter(frontier_feat, pool.cat("tokens").gather(1, frontier), positions,
                      attention_mask=additive_mask(visible, frontier_feat.dtype), past_key_values=draft_cache,
                      from_base=False)  # [B, k_in, H]
        ids, slot_scores, q = draft_children(drafter.logits(out), k, sampling, generator)
        parent_scores = pool.cat("scores").gather(1, frontier)[..., None]
        cum = torch.minimum(parent_scores + slot_scores, parent_scores)  # never above the parent, even with rounding
        principal = pool.cat("principal").gather(1, frontier)[..., None] & first_slot
        pool.add(drafter.draft_to_target(ids).reshape(bsz, -1), cum.reshape(bsz, -1),
                 frontier[..., None].expand(-1, -1, k).reshape(bsz, -1),
                 (frontier_depth[..., None] + 1).expand(-1, -1, k).reshape(bsz, -1), principal.reshape(bsz, -1),
                 out.repeat_interleave(k, dim=1))
        if sampled:
            q_rows.append(q)
        expanded = torch.cat([expanded.scatter(1, frontier, True),
                              torch.zeros(bsz, k_in * k, dtype=torch.bool, device=device)], dim=1)
        if best_first:  # the best unexpanded candidates anywhere in the pool (same count in every row)
            order = rank_desc(~expanded, pool.cat("principal"), pool.cat("scores"))
            # Unexpanded candidates: the pool less every node fed so far (a frontier is never fed twice), a count
            # the host knows without reading `expanded`.
            frontier = order[:, : min(k, pool_size + k_in * k - fed_pool_idx.shape[1])]
            frontier_feat = take(pool.cat("feats"), frontier)
        else:  # EAGLE-2: the best children of this round
            best = rank_desc(principal.reshape(bsz, -1), cum.reshape(bsz, -1))[:, : min(k, k_in * k)]
            frontier = pool_size + best
            frontier_feat = take(out, best // k)
        pool_size += k_in * k

    tree, keep = select_tree(root_token, pool.cat("tokens"), pool.cat("parents"), pool.cat("depths"),
                             pool.cat("principal"), pool.cat("scores"), total_tokens, k, depth)
    if sampled:
        q_of_pool = torch.full((bsz, pool_size), -1, dtype=torch.long, device=device)
        rows = torch.arange(1, fed_pool_idx.shape[1] + 1, device=device).expand_as(fed_pool_idx)
        q_of_pool.scatter_(1, fed_pool_idx, rows)
        attach_q(tree, drafter, torch.cat(q_rows, dim=1), q_of_pool.gather(1, keep))  # q row 0 = the root's
    return tree


def select_tree(root_token: torch.Tensor, tokens: torch.Tensor, parents: torch.Tensor, depths: torch.Tensor,
                principal: torch.Tensor, scores: torch.Tensor, total_tokens: int, max_children: int,
                max_depth: int) -> tuple[DraftTree, torch.Tensor]:
    """The best `total_tokens` candidates of a pool (per row [B, N]: target token ids, parents as pool indices with
    −1 = the root, depths (at most max_depth), principal-chain flags, scores), ranked as the module docstring says,
    as a DraftTree in (depth, pool index) order → (tree, the kept pool indices [B, n] in tree order)."""
    bsz, pool_size = tokens.shape
    device = tokens.device
    keep = rank_desc(principal, scores)[:, : min(total_tokens, pool_size)]  # [B, n], ancestor-closed
    # Parents before children: order by (depth, pool index).
    keep = keep.gather(1, torch.argsort(depths.gather(1, keep) * (pool_size + 1) + keep, dim=1))
    n = keep.shape[1]
    where = torch.full((bsz, pool_size), -1, dtype=torch.long, device=device)
    where.scatter_(1, keep, torch.arange(1, n + 1, device=device).expand(bsz, n))
    pp = parents.gather(1, keep)
    tree_parents = torch.where(pp >= 0, where.gather(1, pp.clamp_min(0)), torch.zeros_like(pp))
    col = lambda v: torch.full((bsz, 1), v, dtype=torch.long, device=device)  # noqa: E731
    tree = DraftTree(
        tokens=torch.cat([root_token.view(bsz, 1), tokens.gather(1, keep)], dim=1),
        parents=torch.cat([col(-1), tree_parents], dim=1),
        depths=torch.cat([col(0), depths.gather(1, keep)], dim=1),
        max_children=max_children,
        max_depth=min(max_depth, n),
    )
    return tree, keep


def attach_q(tree: DraftTree, drafter, q: torch.Tensor, q_index_of_kept: torch.Tensor) -> None:
    """A sampled tree's draft distributions: q [B, F, V_draft], each kept node's row of q (−1: not expanded; the
    root's is row 0), and the target ids of the draft vocabulary when it is reduced."""
    tree.q = q
    tree.q_index = torch.cat([torch.zeros_like(q_index_of_kept[:, :1]), q_index_of_kept], dim=1)
    if getattr(drafter, "reduced_vocab", False):
        tree.draft_ids = drafter.draft_to_target(torch.arange(q.shape[-1], device=q.device))
