"""Verifiers: which of a proposal's nodes the base accepts, given the base's logits at every node.

    verifier(tree, anc, logits, gen) → (paths [B, L] tree indices root first, padded with each row's last node;
                                         lens [B] nodes on the path incl. the root; bonus [B] the base's next token)
L is the tree's static path width (root + max_depth) when it has one: no verifier reads the device to size it.

greedy   the deepest node whose every ancestor's token is the base's argmax (token-identical to base greedy)
sampled  recursive rejection sampling (exact base sampling; accepts Σ min(p, q) for drafts from q)
forced   timing benchmarks only: the path to the deepest node, as if the base had agreed all along it
The proposer never sees which verifier runs: every proposer is lossless under the first two.
"""
from __future__ import annotations

from typing import Callable

import torch

from .accept import Sampling, greedy_accept, path_indices, path_width, sample_accept, sampling_probs, take

Verifier = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _bonus(logits_argmax: torch.Tensor, paths: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    return logits_argmax.gather(1, paths.gather(1, (lens - 1)[:, None]))[:, 0]


def greedy_verifier(tree, anc, logits, gen):
    base_argmax = logits.argmax(-1)
    paths, lens = greedy_accept(tree, anc, base_argmax)
    return paths, lens, _bonus(base_argmax, paths, lens)


def forced_verifier(tree, anc, logits, gen):
    paths, lens = path_indices(take(anc, tree.depths.argmax(1, keepdim=True))[:, 0], path_width(tree))
    return paths, lens, _bonus(logits.argmax(-1), paths, lens)


def sampled_verifier(sampling: Sampling) -> Verifier:
    def verify(tree, anc, logits, gen):
        return sample_accept(tree, sampling_probs(logits, sampling.temperature, sampling.top_p), gen)
    return verify


def verifier_for(sampling: Sampling, force_accept: bool = False) -> Verifier:
    if not sampling.greedy:  # forcing applies to greedy timing runs only
        return sampled_verifier(sampling)
    return forced_verifier if force_accept else greedy_verifier
