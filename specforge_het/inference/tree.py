"""Draft trees as tensors: EAGLE-2 dynamic expansion, ancestor masks, greedy acceptance.

A tree has a root (the last token the base produced, index 0) and n draft nodes (indices 1..n), stored
as `tokens [n+1]`, `parents [n+1]` (root's parent is -1) and `depths [n+1]`, sorted so parents precede
children. Everything is computed level by level (≤ depth tensor ops), never node by node.
A chain of length k is the tree with top_k = 1 and total_tokens = k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..modeling.drafter import causal_mask

TIE_BREAK = 1e-6  # a child's score must sort strictly below its parent's, even when log p == 0


@dataclass
class DraftTree:
    tokens: torch.Tensor  # [n+1] long, tokens[0] = root
    parents: torch.Tensor  # [n+1] long, parents[0] = -1
    depths: torch.Tensor  # [n+1] long, depths[0] = 0

    @property
    def size(self) -> int:
        return self.tokens.numel()


def ancestor_matrix(parents: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """anc[i, j] = True when j is i or an ancestor of i (rows/cols in tree order)."""
    n = parents.numel()
    anc = torch.eye(n, dtype=torch.bool, device=parents.device)
    for d in range(1, int(depths.max()) + 1):
        rows = (depths == d).nonzero(as_tuple=True)[0]
        anc[rows] |= anc[parents[rows]]
    return anc


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [q, k] (True = attend) → additive float [1, 1, q, k]."""
    out = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    out.masked_fill_(~visible, torch.finfo(dtype).min)
    return out[None, None]


def tree_attention_mask(anc: torch.Tensor, prefix_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Tree nodes see the whole prefix (cache) plus their own ancestors."""
    q = anc.shape[0]
    prefix = torch.ones(q, prefix_len, dtype=torch.bool, device=anc.device)
    return additive_mask(torch.cat([prefix, anc], dim=1), dtype)


@torch.no_grad()
def expand_tree(drafter, root_token: torch.Tensor, root_feature: torch.Tensor, draft_cache, prefix_len: int,
                root_position: int, depth: int, top_k: int, total_tokens: int, best_first: bool = False) -> DraftTree:
    """EAGLE-2 dynamic tree. root_feature is the drafter output at the position before the root
    (it predicts the root's children). Each of `depth` rounds feeds top_k frontier nodes through the drafter and
    adds their top_k children to the candidate pool; the best `total_tokens` candidates (by cumulative log-prob)
    form the tree. Frontier: the best children of the previous round (EAGLE-2), or with `best_first` the best
    not-yet-expanded candidates of the whole pool at any depth (SpecExec-style budget tree: with a large
    total_tokens budget the tree grows where the probability mass is, deep or wide).
    The drafter cache is extended by the fed nodes; the caller crops it back to prefix_len afterwards."""
    device = root_token.device
    logp = drafter.logits(root_feature[None]).float().log_softmax(-1)[0]
    scores, tokens = logp.topk(top_k)
    tokens = drafter.draft_to_target(tokens)  # a reduced draft vocabulary maps back to target ids
    # Candidate pool (global indices), parents index the pool (-1 = root).
    pool_tokens, pool_scores = [tokens], [scores]
    pool_parents = [torch.full((top_k,), -1, dtype=torch.long, device=device)]
    pool_depths = [torch.ones(top_k, dtype=torch.long, device=device)]
    frontier = torch.arange(top_k, device=device)  # pool indices to feed next
    frontier_feat = root_feature[None].expand(top_k, -1)  # the feature paired with each frontier token
    pool_feats = [frontier_feat]  # per candidate: its parent's drafter output (what it is fed with)
    expanded = [torch.zeros(top_k, dtype=torch.bool, device=device)]
    fed_pool_idx = torch.empty(0, dtype=torch.long, device=device)  # pool index of each fed cache entry
    fed_anc = torch.empty(0, 0, dtype=torch.bool, device=device)  # ancestor-or-self among fed entries
    pool_size = top_k
    for d in range(1, depth):
        k_in = frontier.numel()
        # Ancestors of the frontier among already-fed entries = the parent's fed row.
        parent_pool = torch.cat(pool_parents)[frontier]
        old = torch.zeros(k_in, fed_anc.shape[0], dtype=torch.bool, device=device)
        if fed_anc.shape[0]:  # from level 2 on, every frontier parent was fed one level earlier
            fed_pos_of_parent = (fed_pool_idx[None, :] == parent_pool[:, None]).float().argmax(-1)
            old = fed_anc[fed_pos_of_parent]
        new_rows = torch.cat([old, torch.eye(k_in, dtype=torch.bool, device=device)], dim=1)
        fed_anc = torch.cat([torch.nn.functional.pad(fed_anc, (0, k_in)), new_rows], dim=0)
        fed_pool_idx = torch.cat([fed_pool_idx, frontier])
        visible = torch.cat([torch.ones(k_in, prefix_len, dtype=torch.bool, device=device), new_rows], dim=1)
        mask = additive_mask(visible, frontier_feat.dtype)
        positions = (root_position + torch.cat(pool_depths)[frontier] - 1)[None]
        out = drafter(frontier_feat[None], torch.cat(pool_tokens)[frontier][None], positions,
                      attention_mask=mask, past_key_values=draft_cache, from_base=False)[0]
        logp = drafter.logits(out).float().log_softmax(-1)  # [k_in, V]
        child_scores, child_tokens = logp.topk(top_k, dim=-1)
        child_tokens = drafter.draft_to_target(child_tokens)
        cum = torch.cat(pool_scores)[frontier][:, None] + child_scores - TIE_BREAK  # [k_in, top_k]
        pool_tokens.append(child_tokens.reshape(-1))
        pool_scores.append(cum.reshape(-1))
        pool_parents.append(frontier[:, None].expand(-1, top_k).reshape(-1))
        pool_depths.append((torch.cat(pool_depths)[frontier][:, None] + 1).expand(-1, top_k).reshape(-1))
        pool_feats.append(out.repeat_interleave(top_k, dim=0))
        done = torch.cat(expanded)
        done[frontier] = True
        expanded = [done, torch.zeros(k_in * top_k, dtype=torch.bool, device=device)]
        if best_first:  # the best unexpanded candidates anywhere in the pool
            scores_now = torch.cat(pool_scores).masked_fill(torch.cat(expanded), float("-inf"))
            frontier = scores_now.topk(min(top_k, int((~torch.cat(expanded)).sum()))).indices
            frontier_feat = torch.cat(pool_feats)[frontier]
        else:  # EAGLE-2: the best children of this round
            best = cum.reshape(-1).topk(min(top_k, cum.numel())).indices
            frontier = pool_size + best
            frontier_feat = out[best // top_k]
        pool_size += k_in * top_k

    all_scores = torch.cat(pool_scores)
    keep = all_scores.topk(min(total_tokens, all_scores.numel())).indices
    all_depths = torch.cat(pool_depths)
    # Parents before children: order by (depth, pool index).
    keep = keep[torch.argsort(all_depths[keep] * (pool_size + 1) + keep)]
    where = torch.full((pool_size,), -1, dtype=torch.long, device=device)
    where[keep] = torch.arange(1, keep.numel() + 1, device=device)
    pp = torch.cat(pool_parents)[keep]
    parents = torch.where(pp >= 0, where[pp.clamp_min(0)], torch.zeros_like(pp))
    assert bool((parents >= 0).all()), "draft tree selection lost an ancestor"
    return DraftTree(
        tokens=torch.cat([root_token.view(1), torch.cat(pool_tokens)[keep]]),
        parents=torch.cat([torch.tensor([-1], device=device), parents]),
        depths=torch.cat([torch.zeros(1, dtype=torch.long, device=device), all_depths[keep]]),
    )


def greedy_accept(tree: DraftTree, anc: torch.Tensor, base_argmax: torch.Tensor) -> torch.Tensor:
    """The accepted path (tree indices, root first): the deepest node whose every ancestor's token is the
    base's greedy choice at its parent. Siblings hold distinct tokens, so the accepted nodes form one path."""
    ok = torch.zeros(tree.size, dtype=torch.bool, device=tree.tokens.device)
    ok[0] = True
    correct = tree.tokens == base_argmax[tree.parents.clamp_min(0)]
    for d in range(1, int(tree.depths.max()) + 1):
        rows = (tree.depths == d).nonzero(as_tuple=True)[0]
        ok[rows] = correct[rows] & ok[tree.parents[rows]]
    deepest = torch.where(ok, tree.depths, torch.full_like(tree.depths, -1)).argmax()
    return anc[deepest].nonzero(as_tuple=True)[0]  # ancestors in tree order = root → deepest


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
