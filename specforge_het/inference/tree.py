"""Draft trees as tensors: EAGLE-2 dynamic expansion, ancestor masks, greedy acceptance — batched.

A batch of B trees, one per sequence, each with a root (the last token the base produced, index 0) and n draft
nodes (indices 1..n): `tokens [B, n+1]`, `parents [B, n+1]` (the root's parent is -1) and `depths [B, n+1]`,
sorted so parents precede children. Every row has the same node count (the same budget), not the same shape.
Everything is computed level by level (≤ depth tensor ops over the whole batch), never node by node.
A chain of length k is the tree with top_k = 1 and total_tokens = k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..modeling.drafter_base import additive_mask

TIE_BREAK = 1e-6  # a child's score must sort strictly below its parent's, even when log p == 0


@dataclass
class DraftTree:
    tokens: torch.Tensor  # [B, n+1] long, tokens[:, 0] = roots
    parents: torch.Tensor  # [B, n+1] long, parents[:, 0] = -1
    depths: torch.Tensor  # [B, n+1] long, depths[:, 0] = 0

    @property
    def size(self) -> int:
        return self.tokens.shape[-1]

    def row(self, b: int) -> "DraftTree":
        """One sequence's tree, unbatched ([n+1] tensors), for the per-sequence sampling verifier."""
        return DraftTree(self.tokens[b], self.parents[b], self.depths[b])


def ancestor_matrix(parents: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """anc[b, i, j] = True when j is i or an ancestor of i, for [B, n] parents (rows/cols in tree order).
    Each round walks every node one step up its chain, so max-depth rounds cover all ancestors."""
    bsz, n = parents.shape
    anc = torch.zeros(bsz, n, n, dtype=torch.bool, device=parents.device)
    cur = torch.arange(n, device=parents.device).expand(bsz, n).clone()
    up = parents.clamp_min(0)  # the root is its own parent: the walk stays there
    for _ in range(int(depths.max()) + 1):
        anc.scatter_(2, cur[..., None], True)
        cur = up.gather(1, cur)
    return anc


def tree_attention_mask(anc: torch.Tensor, prefix_valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Tree nodes see the valid part of their sequence's prefix (cache) plus their own ancestors.
    anc [B, q, q], prefix_valid [B, P] bool (False = a padding slot) → additive [B, 1, q, P + q]."""
    q = anc.shape[-1]
    prefix = prefix_valid[:, None, :].expand(-1, q, -1)
    return additive_mask(torch.cat([prefix, anc], dim=2), dtype)


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B, N, ...] rows picked per batch row by idx [B, M] → [B, M, ...]."""
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:]))


@torch.no_grad()
def expand_tree(drafter, root_token: torch.Tensor, root_feature: torch.Tensor, draft_cache,
                prefix_valid: torch.Tensor, root_position: torch.Tensor, depth: int, top_k: int, total_tokens: int,
                best_first: bool = False) -> DraftTree:
    """EAGLE-2 dynamic trees for a batch. root_token [B], root_feature [B, H] (the drafter output at the position
    before the root: it predicts the root's children), prefix_valid [B, P] the drafter cache's real slots,
    root_position [B]. Each of `depth` rounds feeds top_k frontier nodes per row through the drafter and adds
    their top_k children to the candidate pool; the best `total_tokens` candidates (by cumulative log-prob) form
    the tree. Frontier: the best children of the previous round (EAGLE-2), or with `best_first` the best
    not-yet-expanded candidates of the whole pool at any depth (SpecExec-style budget tree: with a large
    total_tokens budget the tree grows where the probability mass is, deep or wide).
    The drafter cache is extended by the fed nodes; the caller crops it back to P afterwards."""
    device = root_token.device
    bsz = root_token.shape[0]
    logp = drafter.logits(root_feature[:, None]).float().log_softmax(-1)[:, 0]
    scores, tokens = logp.topk(top_k)  # [B, k]
    tokens = drafter.draft_to_target(tokens)  # a reduced draft vocabulary maps back to target ids
    # Candidate pool (per-row indices); parents index the pool (-1 = root). Same layout in every row.
    pool_tokens, pool_scores = [tokens], [scores]
    pool_parents = [torch.full((bsz, top_k), -1, dtype=torch.long, device=device)]
    pool_depths = [torch.ones(bsz, top_k, dtype=torch.long, device=device)]
    frontier = torch.arange(top_k, device=device).expand(bsz, top_k)  # pool indices to feed next
    frontier_feat = root_feature[:, None].expand(-1, top_k, -1)  # the feature paired with each frontier token
    pool_feats = [frontier_feat]  # per candidate: its parent's drafter output (what it is fed with)
    expanded = torch.zeros(bsz, top_k, dtype=torch.bool, device=device)
    fed_pool_idx = torch.empty(bsz, 0, dtype=torch.long, device=device)  # pool index of each fed cache entry
    fed_anc = torch.empty(bsz, 0, 0, dtype=torch.bool, device=device)  # ancestor-or-self among fed entries
    pool_size = top_k
    eye = torch.eye(top_k, dtype=torch.bool, device=device)
    for d in range(1, depth):
        k_in = frontier.shape[1]
        all_parents, all_depths = torch.cat(pool_parents, 1), torch.cat(pool_depths, 1)
        # Ancestors of the frontier among already-fed entries = the parent's fed row.
        old = torch.zeros(bsz, k_in, fed_anc.shape[1], dtype=torch.bool, device=device)
        if fed_anc.shape[1]:  # from level 2 on, every frontier parent was fed one level earlier
            parent_pool = all_parents.gather(1, frontier)
            fed_pos_of_parent = (fed_pool_idx[:, None, :] == parent_pool[:, :, None]).float().argmax(-1)
            old = take(fed_anc, fed_pos_of_parent)
        new_rows = torch.cat([old, eye[:k_in, :k_in].expand(bsz, -1, -1)], dim=2)
        fed_anc = torch.cat([torch.nn.functional.pad(fed_anc, (0, k_in)), new_rows], dim=1)
        fed_pool_idx = torch.cat([fed_pool_idx, frontier], dim=1)
        visible = torch.cat([prefix_valid[:, None, :].expand(-1, k_in, -1), new_rows], dim=2)
        mask = additive_mask(visible, frontier_feat.dtype)
        frontier_depth = all_depths.gather(1, frontier)
        positions = root_position[:, None] + frontier_depth - 1
        out = drafter(frontier_feat, torch.cat(pool_tokens, 1).gather(1, frontier), positions,
                      attention_mask=mask, past_key_values=draft_cache, from_base=False)  # [B, k_in, H]
        logp = drafter.logits(out).float().log_softmax(-1)  # [B, k_in, V]
        child_scores, child_tokens = logp.topk(top_k, dim=-1)
        child_tokens = drafter.draft_to_target(child_tokens)
        cum = torch.cat(pool_scores, 1).gather(1, frontier)[..., None] + child_scores - TIE_BREAK  # [B, k_in, k]
        pool_tokens.append(child_tokens.reshape(bsz, -1))
        pool_scores.append(cum.reshape(bsz, -1))
        pool_parents.append(frontier[..., None].expand(-1, -1, top_k).reshape(bsz, -1))
        pool_depths.append((frontier_depth[..., None] + 1).expand(-1, -1, top_k).reshape(bsz, -1))
        pool_feats.append(out.repeat_interleave(top_k, dim=1))
        expanded = torch.cat([expanded.scatter(1, frontier, True),
                              torch.zeros(bsz, k_in * top_k, dtype=torch.bool, device=device)], dim=1)
        if best_first:  # the best unexpanded candidates anywhere in the pool (same count in every row)
            scores_now = torch.cat(pool_scores, 1).masked_fill(expanded, float("-inf"))
            frontier = scores_now.topk(min(top_k, int((~expanded[0]).sum()))).indices
            frontier_feat = take(torch.cat(pool_feats, 1), frontier)
        else:  # EAGLE-2: the best children of this round
            best = cum.reshape(bsz, -1).topk(min(top_k, k_in * top_k)).indices
            frontier = pool_size + best
            frontier_feat = take(out, best // top_k)
        pool_size += k_in * top_k

    all_scores = torch.cat(pool_scores, 1)
    keep = all_scores.topk(min(total_tokens, pool_size)).indices  # [B, n]
    all_depths = torch.cat(pool_depths, 1)
    # Parents before children: order by (depth, pool index).
    keep = keep.gather(1, torch.argsort(all_depths.gather(1, keep) * (pool_size + 1) + keep, dim=1))
    n = keep.shape[1]
    where = torch.full((bsz, pool_size), -1, dtype=torch.long, device=device)
    where.scatter_(1, keep, torch.arange(1, n + 1, device=device).expand(bsz, n))
    pp = torch.cat(pool_parents, 1).gather(1, keep)
    parents = torch.where(pp >= 0, where.gather(1, pp.clamp_min(0)), torch.zeros_like(pp))
    assert bool((parents >= 0).all()), "draft tree selection lost an ancestor"
    col = lambda v: torch.full((bsz, 1), v, dtype=torch.long, device=device)  # noqa: E731
    return DraftTree(
        tokens=torch.cat([root_token.view(bsz, 1), torch.cat(pool_tokens, 1).gather(1, keep)], dim=1),
        parents=torch.cat([col(-1), parents], dim=1),
        depths=torch.cat([col(0), all_depths.gather(1, keep)], dim=1),
    )


def greedy_accept(tree: DraftTree, anc: torch.Tensor, base_argmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the accepted path (tree indices, root first): the deepest node whose every ancestor's token is
    the base's greedy choice at its parent. Siblings hold distinct tokens, so the accepted nodes form one path.
    base_argmax [B, n+1] → (paths [B, L_max] padded with the last node, lengths [B])."""
    correct = tree.tokens == base_argmax.gather(1, tree.parents.clamp_min(0))
    correct[:, 0] = True
    ok = correct.clone()
    for _ in range(int(tree.depths.max())):  # ok(node) = correct(node) and ok(parent), one level per round
        ok = correct & ok.gather(1, tree.parents.clamp_min(0))
    deepest = torch.where(ok, tree.depths, torch.full_like(tree.depths, -1)).argmax(1)  # [B]
    on_path = take(anc, deepest[:, None])[:, 0]  # [B, n+1] ancestors-or-self of the deepest node
    return path_indices(on_path)


def path_indices(on_path: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [B, n+1] path membership (tree order = root → deepest) → (indices [B, L_max] padded with each row's
    last node, lengths [B])."""
    n = on_path.shape[1]
    lengths = on_path.sum(1)
    idx = torch.arange(n, device=on_path.device).expand_as(on_path)
    order = torch.where(on_path, idx, idx + n).sort(1).values[:, : int(lengths.max())]
    last = order.gather(1, (lengths - 1)[:, None])
    return torch.where(order < n, order, last), lengths


def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution the base samples from: softmax(logits / T), restricted to the top-p nucleus."""
    probs = (logits.float() / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        outside = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # the most likely token always stays
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_accept(tree: DraftTree, probs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Recursive rejection sampling over a tree of deterministic candidates (SpecInfer-style multi-draft, with
    each candidate a point-mass draft): at node u with base distribution p, try u's children in order —
    accept child x with probability p(x); on rejection set p(x) = 0 and renormalise (the residual
    norm(max(0, p − δ_x))). If no child is accepted, the next token is sampled from the residual. The emitted
    tokens are distributed exactly as base sampling, whatever the drafter proposed.
    Returns (accepted path of tree indices, root first; the sampled next token)."""
    path, cur = [0], 0
    while True:
        p = probs[cur].clone()
        nxt = None
        for c in (tree.parents == cur).nonzero(as_tuple=True)[0].tolist():
            x = tree.tokens[c]
            if torch.rand((), generator=generator, device=p.device) < p[x]:
                nxt = c
                break
            p[x] = 0.0
            p = p / p.sum()
        if nxt is None:
            token = torch.multinomial(p, 1, generator=generator)[0]
            return torch.tensor(path, device=probs.device), token
        path.append(nxt)
        cur = nxt
