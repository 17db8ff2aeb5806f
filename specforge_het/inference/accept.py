"""Verification: which draft nodes the base accepts, greedy or sampled, batched over sequences.

Greedy: the deepest node whose every ancestor's token is the base's argmax at its parent (token-identical to
base greedy decoding whatever the drafter proposed).

Sampling: recursive rejection sampling (RRS) down the tree. At node u with base distribution p and draft
distribution q (the one u's children were drawn from, without replacement, in tree order), the children are tried
in order: child x is accepted with probability min(1, p(x)/q(x)); on rejection p ← norm(max(0, p − q)) and
q ← q with x removed, renormalised; when every child is rejected the next token is drawn from the residual p.
Each step is the standard speculative-sampling lemma (for any draft distribution, accept-or-residual emits p), so
the emitted tokens follow the base's distribution exactly — and a chain accepts its first draft with probability
Σ_x min(p(x), q(x)), the most any verifier of one draft can (Leviathan et al., 2023; Jeon et al., 2024 for drafts
without replacement). Trees built without draft distributions (deterministic candidates) are verified with each
candidate as a point-mass draft: accepted with probability p(x), residual p with x removed.
The walk is level by level and sibling by sibling over the whole batch: depth × top_k tensor steps, bounded by the
tree's host-known depth (DraftTree.max_depth), so a step never waits on the device to learn how far to walk.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sampling:
    """temperature 0 = greedy (then top_p is unused)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    # sampled: draft tokens drawn from the drafter's q and verified against it (accepts Σ min(p, q)); greedy: the
    # drafter's top tokens as point-mass drafts (accepted with p(x)) — what vLLM's default draft_sample_method does.
    draft: str = "sampled"

    def __post_init__(self):
        import math

        if not (math.isfinite(self.temperature) and self.temperature >= 0) or not 0 < self.top_p <= 1:
            raise ValueError(f"sampling needs a finite temperature >= 0 and 0 < top_p <= 1, got {self}")
        if self.draft not in ("sampled", "greedy"):
            raise ValueError(f"sampling.draft: expected sampled or greedy, got {self.draft!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)


def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution sampled from: softmax(logits / T), restricted to the top-p nucleus. Applied identically
    to the base's logits (p) and the drafter's (q)."""
    probs = (logits.float() / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        outside = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # the most likely token always stays
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B, N, ...] rows picked per batch row by idx [B, M] → [B, M, ...]."""
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:]))


def path_indices(on_path: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [B, n+1] path membership (tree order = root → deepest) → (indices [B, width] padded with each row's
    last node, lengths [B]). width: a host-known bound on path lengths (no synchronisation); None trims to the
    longest row, which reads it from the device."""
    n = on_path.shape[1]
    lengths = on_path.sum(1)
    idx = torch.arange(n, device=on_path.device).expand_as(on_path)
    order = torch.where(on_path, idx, idx + n).sort(1).values[:, : int(lengths.max()) if width is None else width]
    last = order.gather(1, (lengths - 1)[:, None])
    return torch.where(order < n, order, last), lengths


def path_width(tree) -> int | None:
    """The static width of a tree's accepted paths (root + max_depth nodes), None when the tree has no bound."""
    return None if tree.max_depth is None else tree.max_depth + 1


def greedy_accept(tree, anc: torch.Tensor, base_argmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the accepted path (tree indices, root first): the deepest node whose every ancestor's token is
    the base's greedy choice at its parent. Siblings hold distinct tokens, so the accepted nodes form one path.
    base_argmax [B, n+1] → (paths [B, L] padded with the last node, lengths [B]); L = path_width(tree), or the
    longest row when the tree has no depth bound."""
    correct = tree.tokens == base_argmax.gather(1, tree.parents.clamp_min(0))
    correct[:, 0] = True
    ok = ~(anc & ~correct[:, None, :]).any(-1)  # every ancestor-or-self correct: one tensor op, no loop
    deepest = torch.where(ok, tree.depths, torch.full_like(tree.depths, -1)).argmax(1)  # [B]
    on_path = take(anc, deepest[:, None])[:, 0]  # [B, n+1] ancestors-or-self of the deepest node
    return path_indices(on_path, path_width(tree))


def children_table(parents: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """[B, n+1] parents → kids [B, n+1, width]: each node's children in tree order, padded with −1."""
    bsz, n = parents.shape
    dev = parents.device
    par = torch.where(parents < 0, torch.full_like(parents, n), parents)  # the root goes to a dummy group n
    order = (par * n + torch.arange(n, device=dev)).argsort(1)
    grouped = par.gather(1, order)
    pos = torch.arange(n, device=dev).expand(bsz, n)
    starts = torch.ones_like(grouped, dtype=torch.bool)
    starts[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
    rank = pos - torch.where(starts, pos, torch.zeros_like(pos)).cummax(1).values
    if width is None:
        width = max(1, int(rank.max()) + 1)
    kids = torch.full((bsz, n + 1, width + 1), -1, dtype=torch.long, device=dev)
    kids[torch.arange(bsz, device=dev)[:, None], grouped, rank.clamp_max(width)] = order
    return kids[:, :n, :width]


def _node_q(tree, node: torch.Tensor, vocab: int) -> torch.Tensor:
    """The draft distribution over target ids [B, V] that `node`'s children were drawn from (zeros when the node
    was not expanded: it has no children then)."""
    rows = torch.arange(node.shape[0], device=node.device)
    qi = tree.q_index[rows, node]
    q = tree.q[rows, qi.clamp_min(0)] * (qi >= 0)[:, None]
    if tree.draft_ids is None:
        return q
    return torch.zeros(q.shape[0], vocab, dtype=q.dtype, device=q.device).scatter_(
        1, tree.draft_ids.expand(q.shape[0], -1), q)


def _renormalised(x: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    total = x.sum(-1, keepdim=True)
    return torch.where(total > 0, x / total.clamp_min(torch.finfo(x.dtype).tiny), fallback)


def sample_accept(tree, probs: torch.Tensor, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recursive rejection sampling over a batch of trees (see the module docstring). probs [B, n+1, V]: the base's
    sampling distribution at every node. → (paths [B, L] tree indices, root first, padded with each row's last
    node, L = path_width(tree) or the longest row; lengths [B]; the next token [B] drawn from the final residual)."""
    bsz, n, vocab = probs.shape
    dev = probs.device
    rows = torch.arange(bsz, device=dev)
    kids = children_table(tree.parents, tree.max_children)
    sampled = tree.q is not None
    cur = torch.zeros(bsz, dtype=torch.long, device=dev)
    p = probs[:, 0]
    q = _node_q(tree, cur, vocab) if sampled else None
    walking = torch.ones(bsz, dtype=torch.bool, device=dev)
    path = [cur]
    levels = int(tree.depths.max()) if tree.max_depth is None else tree.max_depth
    # Every uniform up front: the stream consumed depends on shapes only, and nothing in the loop reads the device.
    uniforms = torch.rand(levels, kids.shape[2], bsz, generator=generator, device=dev)
    for level in range(levels):
        moved = torch.zeros(bsz, dtype=torch.bool, device=dev)
        nxt = cur
        for j in range(kids.shape[2]):
            child = kids[rows, cur, j]
            x = tree.tokens.gather(1, child.clamp_min(0)[:, None])[:, 0] * (child >= 0)  # no child: a dummy id 0
            px = p.gather(1, x[:, None])[:, 0]
            qx = q.gather(1, x[:, None])[:, 0] if sampled else torch.ones_like(px)
            trying = walking & ~moved & (child >= 0) & (qx > 0)  # q(x) = 0: a padding slot, never drawn
            accept = trying & (uniforms[level, j] * qx < px)  # probability min(1, p(x) / q(x))
            reject = trying & ~accept
            moved, nxt = moved | accept, torch.where(accept, child, nxt)
            drawn = q if sampled else torch.zeros_like(p).scatter_(1, x[:, None], 1.0)
            p = torch.where(reject[:, None], _renormalised((p - drawn).clamp_min(0), p), p)
            if sampled:  # the next sibling was drawn without replacement: x is out of its distribution
                q = torch.where(reject[:, None], _renormalised(q.scatter(1, x[:, None], 0.0), q), q)
        walking = walking & moved
        cur = nxt
        path.append(cur)
        p = torch.where(moved[:, None], probs[rows, cur], p)
        if sampled:
            q = torch.where(moved[:, None], _node_q(tree, cur, vocab), q)
    paths = torch.stack(path, 1)
    lengths = 1 + (paths[:, 1:] != paths[:, :-1]).sum(1)
    if tree.max_depth is None:
        paths = paths[:, : int(lengths.max())]
    return paths, lengths, torch.multinomial(p, 1, generator=generator)[:, 0]
