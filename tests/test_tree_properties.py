"""Property-based tests of the draft-tree builder and both verifiers (hypothesis): for random, tied, extremely
confident and reduced-vocabulary drafter logits, every tree is valid (ancestor-closed, parents first, distinct
siblings, within its depth and budget) and holds the drafter's greedy chain, and greedy speculative decoding stays
token-identical to the base — in EAGLE-2 and best-first mode, chain and tree, batched, greedy and sampled."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from specforge_het.inference.accept import Sampling, sample_accept
from specforge_het.inference.engine import base_decode_batch, speculative_decode_batch
from specforge_het.inference.tree import expand_tree
from specforge_het.modeling.base import FrozenBase, freeze

VOCAB = 12


class TableDrafter(torch.nn.Module):
    """A drafter whose logits after token t are table[t] (over its draft vocabulary): its output feature is the
    one-hot of the token it was fed. draft_ids (sorted target ids) makes the vocabulary a reduced one."""

    feature_layers, token_only = None, False

    def __init__(self, table: torch.Tensor, draft_ids: torch.Tensor | None = None):
        super().__init__()
        self.table = torch.nn.Parameter(table.float(), requires_grad=False)
        self.d2t = None if draft_ids is None else draft_ids - torch.arange(draft_ids.numel())

    @property
    def reduced_vocab(self) -> bool:
        return self.d2t is not None

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.float32

    def new_cache(self, base_cache):
        return DynamicCache()

    def forward(self, hidden, input_ids, position_ids, attention_mask=None, past_key_values=None, from_base=True):
        return torch.nn.functional.one_hot(input_ids, VOCAB).float()

    def prefill(self, hidden, prompt_ids, next_tokens, positions, cache, valid=None):
        if valid is None:
            valid = torch.ones(next_tokens.shape, dtype=torch.bool)
        return self(hidden, next_tokens, positions), valid

    def logits(self, features):
        return features @ self.table

    def draft_to_target(self, ids):
        return ids if self.d2t is None else ids + self.d2t[ids]


# Logit values that make ties, certainty (log_softmax == 0.0 exactly) and near-certainty likely.
LOGIT = st.one_of(st.sampled_from([0.0, 0.0, -1e-7, -1.0, -1.0, -17.0, -40.0, -100.0, 3.0, 50.0]),
                  st.floats(-30, 30, allow_nan=False, width=32))


@st.composite
def drafters(draw):
    reduced = draw(st.booleans())
    if reduced:
        size = draw(st.integers(2, VOCAB - 1))
        ids = torch.tensor(sorted(draw(st.lists(st.integers(0, VOCAB - 1), min_size=size, max_size=size, unique=True))))
    else:
        ids, size = None, VOCAB
    table = torch.tensor(draw(st.lists(st.lists(LOGIT, min_size=size, max_size=size), min_size=VOCAB,
                                       max_size=VOCAB)))
    return TableDrafter(table, ids)


# depth, top_k, total_tokens, best-first
SHAPES = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 24), st.booleans())


def build(drafter, roots, depth, top_k, total, best_first, sampling=None, gen=None):
    bsz = roots.numel()
    return expand_tree(drafter, roots, torch.nn.functional.one_hot(roots, VOCAB).float(), DynamicCache(),
                       torch.ones(bsz, 3, dtype=torch.bool), torch.full((bsz,), 3), depth, top_k, total, best_first,
                       sampling, gen)


def check_valid(tree, drafter, depth, top_k, total, greedy: bool) -> None:
    for b in range(tree.tokens.shape[0]):
        tok, par, dep = tree.tokens[b].tolist(), tree.parents[b].tolist(), tree.depths[b].tolist()
        n = len(tok) - 1
        assert 1 <= n <= total and par[0] == -1 and dep[0] == 0
        for i in range(1, n + 1):
            assert 0 <= par[i] < i, f"node {i}: parent {par[i]} does not precede it"
            assert dep[i] == dep[par[i]] + 1 <= depth
        for u in range(n + 1):
            kids = [tok[i] for i in range(1, n + 1) if par[i] == u]
            assert len(kids) == len(set(kids)) <= top_k, f"siblings under {u}: {kids}"
        # The principal chain: min(depth, n) nodes, each a child of the previous, each a greedy choice.
        node, chain = 0, 0
        while chain < min(depth, n):
            kids = [i for i in range(1, n + 1) if par[i] == node]
            assert kids, f"the tree holds only {chain} nodes of its principal chain (row {b})"
            node, chain = kids[0], chain + 1
            if greedy:
                logits = drafter.table[tok[par[node]]].log_softmax(-1)  # ties as the builder sees them
                best = drafter.draft_to_target(torch.nonzero(logits == logits.max()).flatten()).tolist()
                assert tok[node] in best, f"chain node {node} token {tok[node]} is not a greedy choice {best}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drafter=drafters(), shape=SHAPES, roots=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=3),
       sampled=st.booleans(), seed=st.integers(0, 1000))
def test_every_tree_is_valid_and_holds_the_greedy_chain(drafter, shape, roots, sampled, seed):
    depth, top_k, total, best_first = shape
    sampling = Sampling(temperature=0.7, top_p=0.9, seed=seed) if sampled else None
    gen = torch.Generator().manual_seed(seed)
    tree = build(drafter, torch.tensor(roots), depth, top_k, total, best_first, sampling, gen)
    check_valid(tree, drafter, depth, top_k, total, greedy=not sampled)
    if sampled:  # a node's children are a prefix of its draws: slots beyond q's support (q = 0) come last
        assert tree.q is not None and bool((tree.q_index[:, 0] == 0).all())
        for b in range(len(roots)):
            for u in range(tree.size):
                kids = (tree.parents[b] == u).nonzero().flatten().tolist()
                if not kids:
                    continue
                q = tree.q[b, int(tree.q_index[b, u])]
                ids = torch.arange(q.numel()) if tree.draft_ids is None else tree.draft_ids
                drawn = [float(q[ids == tree.tokens[b, i]].sum()) > 0 for i in kids]
                assert drawn == sorted(drawn, reverse=True) and drawn[0], f"row {b} node {u}: {drawn}"
        probs = torch.rand(len(roots), tree.size, VOCAB, generator=gen).softmax(-1)
        paths, lens, bonus = sample_accept(tree, probs, gen)
        assert bool((lens >= 1).all()) and bonus.shape == (len(roots),)


@pytest.mark.parametrize("best_first", [False, True])
def test_confident_drafter_case_from_the_issue(best_first):
    """log_softmax == 0.0 for token 0 and −40 for token 1: a low-probability parent and its certain child tie
    under a score margin; the old builder then lost an ancestor (AssertionError). Every budget ≥ 5 must work."""
    table = torch.full((VOCAB, VOCAB), -1000.0)
    table[:, 0], table[:, 1] = 0.0, -40.0
    drafter = TableDrafter(table)
    for total in range(5, 15):
        tree = build(drafter, torch.tensor([3, 0]), 3, 2, total, best_first)
        check_valid(tree, drafter, 3, 2, total, greedy=True)


@pytest.fixture(scope="module")
def tiny_base():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    return FrozenBase(model=freeze(model), tokenizer=None, device=torch.device("cpu"), dtype=torch.float32)


PROMPTS = [[3, 7, 1, 4], [9], [2, 2, 5, 11, 0, 6], [1, 8]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(drafter=drafters(), shape=SHAPES, batch=st.integers(1, 4))
def test_greedy_decoding_stays_identical_to_the_base(tiny_base, drafter, shape, batch):
    depth, top_k, total, best_first = shape
    prompts = PROMPTS[:batch]
    want = base_decode_batch(tiny_base, prompts, 14, set())
    got = speculative_decode_batch(tiny_base, drafter, prompts, 14, set(), depth, top_k, total, best_first=best_first)
    assert [r.tokens for r in got] == [r.tokens for r in want]


@pytest.mark.parametrize("best_first", [False, True])
def test_confident_drafter_decodes_losslessly_in_every_mode(tiny_base, best_first):
    table = torch.full((VOCAB, VOCAB), -1000.0)
    table[:, 0], table[:, 1] = 0.0, -40.0
    drafter = TableDrafter(table)
    want = base_decode_batch(tiny_base, PROMPTS, 20, set())
    for total in (5, 6, 9):
        got = speculative_decode_batch(tiny_base, drafter, PROMPTS, 20, set(), 3, 2, total, best_first=best_first)
        assert [r.tokens for r in got] == [r.tokens for r in want]
        sampled = speculative_decode_batch(tiny_base, drafter, PROMPTS, 20, set(), 3, 2, total, best_first=best_first,
                                           sampling=Sampling(1.0, 1.0, seed=total))
        assert all(len(r.tokens) == len(p) + 20 for r, p in zip(sampled, PROMPTS))
