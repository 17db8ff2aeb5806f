"""Asynchronous drafting (SSD-style "speculative speculative decoding"): while the base verifies step t's tree, the
drafter already drafts step t+1's tree for the most likely verification outcomes, and a hit skips drafting.

An outcome is (j accepted nodes along the tree's principal path, the base's bonus token b). The worker feeds the
principal path once; outcomes are scored by P(j), the running share of verify steps that accepted j nodes (full
acceptance counts for every j ≥ the path length; Laplace-smoothed), times the drafter's probability of b after j
nodes (b ≠ the path's own next token when j < the path length). For the `branches` best it copies the drafter
cache, feeds b and expands the next tree. (The drafter's own path probabilities would be a poor estimate of j:
a substitute of the base is accepted whenever its argmax is the base's, however flat its distribution.)
After the verify, the accepted tokens either match a pre-drafted outcome (hit: its cache and tree are used as
they are) or not (miss: the engine drafts as usual).
Verification is untouched, so output stays exactly the base's whatever the hit rate.

Only drafters that read no base features qualify (classic draft models, SubSpec substitutes): an EAGLE drafter
needs the base's hidden states of the accepted tokens, which exist only once the verify is done. On GPU the
worker runs on its own CUDA stream; on CPU it is a thread (torch releases the GIL inside its kernels).
"""
from __future__ import annotations

import contextlib
import copy
import threading
from dataclasses import dataclass

import torch

from ..config.errors import ConfigError
from .registry import Plugin, register_plugin
from ..inference.kv_cache import crop_cache
from ..inference.tree import expand_tree
from ..modeling.masks import padded_causal_mask


def check_token_only(drafter) -> None:
    if not drafter.token_only:
        raise ConfigError("plugins async_draft needs a drafter that reads no base features (classic_draft, or subspec "
                          "without a shared KV cache): an EAGLE drafter needs the base's features of the accepted "
                          "tokens")


@dataclass
class AsyncStats:
    steps: int = 0
    hits: int = 0
    drafted: int = 0  # outcomes pre-drafted

    @property
    def hit_rate(self) -> float:
        return self.hits / max(self.steps, 1)


class AsyncDrafting:
    """One per decode call (it holds the worker of the step in flight)."""

    def __init__(self, branches: int = 3, stats: AsyncStats | None = None):
        if branches < 1:
            raise ConfigError(f"plugins.async_branches: expected >= 1, got {branches}")
        self.branches = branches
        self.stats = stats if stats is not None else AsyncStats()
        self._thread: threading.Thread | None = None
        self._outcomes: dict[tuple, tuple] = {}
        self._error: BaseException | None = None
        self.accepted_counts: dict[int, int] = {}  # verify steps that accepted j draft nodes

    def wrap(self, proposer) -> "AsyncProposer":
        """The decode loop's proposer, with pre-drafting around each verify."""
        return AsyncProposer(proposer, self)

    def start(self, drafter, tree, draft_cache, draft_valid, root_pos, root_feature, tree_params) -> None:
        check_token_only(drafter)
        self._outcomes, self._error = {}, None
        stream = torch.cuda.Stream(draft_valid.device) if draft_valid.is_cuda else None
        if stream is not None:  # the worker's stream must see the tree and cache the compute stream just wrote
            stream.wait_stream(torch.cuda.current_stream(draft_valid.device))
        self._thread = threading.Thread(target=self._work, daemon=True, args=(
            drafter, tree, draft_cache, draft_valid, root_pos, root_feature, tree_params, stream))
        self._thread.start()

    def finish(self, accepted: list[int]):
        """accepted: the step's emitted tokens (accepted draft tokens, then the bonus) → (cache, valid, last feature,
        next tree) pre-drafted for exactly this outcome, or None."""
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise self._error
        self.stats.steps += 1
        j = len(accepted) - 1
        self.accepted_counts[j] = self.accepted_counts.get(j, 0) + 1
        hit = self._outcomes.pop(tuple(accepted), None)
        self._outcomes = {}
        self.stats.hits += hit is not None
        return hit

    def _work(self, *args) -> None:
        try:
            stream = args[-1]
            with torch.no_grad(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
                self._predraft(*args[:-1])
            if stream is not None:
                stream.synchronize()
        except BaseException as e:  # re-raised on the decoding thread by finish()
            self._error = e

    def _predraft(self, drafter, tree, draft_cache, draft_valid, root_pos, root_feature, tree_params) -> None:
        depth, top_k, total_tokens, best_first, sampling = tree_params
        dev = draft_valid.device
        # Sampled trees draw from their own generator: the verifier's coin flips stay independent of the drafts.
        gen = None if sampling.greedy else torch.Generator(dev).manual_seed(sampling.seed * 7919 + self.stats.steps)
        # Principal path: root → the deepest node (ties: the first, i.e. the best-scored, in tree order).
        node, path = int(tree.depths[0].argmax()), []
        while node > 0:
            path.append(node)
            node = int(tree.parents[0, node])
        path_tokens = tree.tokens[0, path[::-1]]  # p1..pd
        d = path_tokens.numel()
        cache = copy.deepcopy(draft_cache)
        prefix = draft_valid.shape[1]
        ones = torch.ones(1, d, dtype=torch.bool, device=dev)
        pos = root_pos[:, None] + torch.arange(d, device=dev)[None]
        feats = drafter(None, path_tokens[None], pos, past_key_values=cache,
                        attention_mask=padded_causal_mask(ones, draft_valid, drafter.compute_dtype))
        # dists[j]: the drafter's distribution of the token after j accepted nodes (j = 0: after the root).
        dists = drafter.logits(torch.cat([root_feature[:, None], feats], 1)).float().log_softmax(-1)[0]  # [d+1, V]
        counts = [self.accepted_counts.get(j, 0) + 1.0 for j in range(d)]
        counts.append(sum(c for j, c in self.accepted_counts.items() if j >= d) + 1.0)  # the whole path accepted
        log_pj = torch.tensor(counts).log() - torch.tensor(counts).sum().log()
        candidates = []  # (log score, j, bonus)
        for j in range(d + 1):
            scores = dists[j].clone()
            if j < d:
                scores[path_tokens[j]] = float("-inf")  # accepting p_{j+1} is a longer outcome, not this one
            scores = scores.log_softmax(-1)
            top = scores.topk(self.branches)
            for s, b in zip(top.values.tolist(), top.indices.tolist()):
                candidates.append((log_pj[j].item() + s, j, b))
        candidates.sort(reverse=True)
        for _, j, b in candidates[: self.branches]:
            bonus = drafter.draft_to_target(torch.tensor([b], device=dev))
            branch = copy.deepcopy(cache)
            crop_cache(branch, prefix + j)
            valid = torch.cat([draft_valid, torch.ones(1, j + 1, dtype=torch.bool, device=dev)], 1)
            feat = drafter(None, bonus[None], root_pos[:, None] + j, past_key_values=branch,
                           attention_mask=padded_causal_mask(valid[:, -1:], valid[:, :-1], drafter.compute_dtype))
            last_feat = feat[:, -1]
            nxt_tree = expand_tree(drafter, bonus, last_feat, branch, valid, root_pos + j + 1, depth, top_k,
                                   total_tokens, best_first, sampling, gen)
            crop_cache(branch, valid.shape[1])
            key = tuple(path_tokens[:j].tolist()) + (int(bonus),)
            self._outcomes[key] = (branch, valid, last_feat, nxt_tree)
            self.stats.drafted += 1



class AsyncProposer:
    """A tree proposer wrapped: after each proposal the worker pre-drafts next trees while the base verifies; on a hit
    the pre-drafted drafter state and tree replace the commit and the next proposal."""

    def __init__(self, inner, drafting: AsyncDrafting):
        self.inner, self.drafting, self.ready = inner, drafting, None
        self.feature_layers, self.max_nodes = inner.feature_layers, inner.max_nodes

    def start(self, *args) -> None:
        self.inner.start(*args)

    def keep(self, rows) -> None:
        self.inner.keep(rows)

    def propose(self, root, root_pos, sampling, gen):
        inner = self.inner
        if self.ready is not None:
            tree, self.ready = self.ready, None
            inner.root_pos = root_pos
        else:
            tree = inner.propose(root, root_pos, sampling, gen)
        self.drafting.start(inner.drafter, tree, inner.cache, inner.valid, root_pos, inner.last_feat,
                            (inner.depth, inner.top_k, inner.total_tokens, inner.best_first, sampling))
        return tree

    def commit(self, hidden, next_tokens, lens) -> None:
        hit = self.drafting.finish(next_tokens[0, : int(lens[0])].tolist())
        if hit is None:
            self.inner.commit(hidden, next_tokens, lens)
        else:
            cache, valid, last_feat, self.ready = hit
            self.inner.restore(cache, valid, last_feat)


def apply(spec, cfg, base, enabled):
    for drafter in spec.drafters or [spec.drafter]:
        check_token_only(drafter)
    spec.async_branches = cfg.plugins.async_branches
    return spec


register_plugin(Plugin(
    "async_draft", 3, "pre-draft the next tree for likely verification outcomes while the base verifies", apply,
    batched=False, in_server=False))
