"""Sampling is lossless in distribution: speculative samples of the next three tokens follow the base's exact
joint distribution (total-variation distance within multinomial noise), for a chain and for a tree, with
temperature and top-p. A sampler at the wrong temperature must fail the same test (the test has power)."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specforge_het.inference.engine import Sampling, base_decode, speculative_decode
from specforge_het.inference.tree import DraftTree, sample_accept, sampling_probs
from specforge_het.modeling.base import FrozenBase, freeze
from specforge_het.modeling.drafter import build_drafter

VOCAB, PROMPT, N_TOKENS = 12, [3, 7, 1, 4, 4, 9, 2], 3


@pytest.fixture(scope="module")
def small_vocab_pair():
    """A random 1-layer Llama over 12 tokens (so the 3-token joint has 1728 outcomes, enumerable exactly)
    and a random drafter sharing its embedding and lm_head."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper next-token distributions, so the mass sits on few outcomes
        model.lm_head.weight.mul_(40.0)
    base = FrozenBase(model=freeze(model), tokenizer=None, device=torch.device("cpu"), dtype=torch.float32)
    torch.manual_seed(1)
    drafter = build_drafter(base).eval()
    return base, drafter


@torch.no_grad()
def exact_joint(base, sampling: Sampling) -> torch.Tensor:
    """P(x1, x2, x3 | PROMPT) under base sampling, as a flat [VOCAB**3] tensor (batched full forwards)."""
    joint = torch.ones(1)
    prefixes = [[]]
    for _ in range(N_TOKENS):
        ids = torch.tensor([PROMPT + p for p in prefixes])
        probs = sampling_probs(base.model(ids).logits[:, -1], sampling.temperature, sampling.top_p)
        joint = (joint[:, None] * probs).reshape(-1)
        prefixes = [p + [t] for p in prefixes for t in range(VOCAB)]
    return joint


def empirical(samples: list[list[int]]) -> torch.Tensor:
    counts = torch.zeros(VOCAB ** N_TOKENS)
    for s in samples:
        counts[s[0] * VOCAB * VOCAB + s[1] * VOCAB + s[2]] += 1
    return counts / counts.sum()


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def draw(decode, n: int, sampling: Sampling) -> list[list[int]]:
    out = []
    for seed in range(n):
        s = Sampling(sampling.temperature, sampling.top_p, seed=seed)
        out.append(decode(s).tokens[len(PROMPT):len(PROMPT) + N_TOKENS])
    return out


@pytest.mark.parametrize("strategy,temperature,top_p", [("chain", 0.8, 1.0), ("tree", 1.0, 0.9)])
def test_speculative_sampling_matches_base_distribution(small_vocab_pair, strategy, temperature, top_p):
    base, drafter = small_vocab_pair
    params = dict(depth=3, top_k=1, total_tokens=3) if strategy == "chain" else dict(depth=3, top_k=3, total_tokens=8)
    sampling = Sampling(temperature, top_p)
    exact = exact_joint(base, sampling)
    n = 1500
    spec = draw(lambda s: speculative_decode(base, drafter, PROMPT, N_TOKENS, set(), **params, sampling=s), n, sampling)
    plain = draw(lambda s: base_decode(base, PROMPT, N_TOKENS, set(), s), n, sampling)
    tv_spec, tv_plain = tv(empirical(spec), exact), tv(empirical(plain), exact)
    # Noise scale: the TV of an exact multinomial sample of the same size from the exact joint.
    gen = torch.Generator().manual_seed(123)
    noise = [tv(torch.bincount(torch.multinomial(exact, n, replacement=True, generator=gen),
                               minlength=exact.numel()).float() / n, exact) for _ in range(20)]
    bound = max(noise) * 1.25
    assert tv_plain <= bound, f"base sampling itself is off: TV {tv_plain:.3f} > {bound:.3f}"
    assert tv_spec <= bound, f"speculative {strategy} sampling TV {tv_spec:.3f} > noise bound {bound:.3f}"
    # Power: the same test rejects base sampling at a different temperature.
    wrong = Sampling(temperature * 1.6, top_p)
    wrong_samples = draw(lambda s: base_decode(base, PROMPT, N_TOKENS, set(), s), n, wrong)
    assert tv(empirical(wrong_samples), exact) > bound * 1.5
    # The drafter must have been exercised: some draft tokens accepted, some rejected.
    runs = [speculative_decode(base, drafter, PROMPT, 12, set(), **params, sampling=Sampling(temperature, top_p, seed=s))
            for s in range(20)]
    accepted = [a for r in runs for a in r.accepted]
    assert 0 < sum(accepted) and min(accepted) == 0


def test_sample_accept_is_exact_on_a_fixed_tree():
    """Hand-made tree and per-node distributions: the first emitted token follows the root's distribution, and
    the token after an accepted child follows that child's distribution, whatever the tree proposes."""
    #      0
    #    / | \
    #   1  2  3        tokens 0, 1, 2 (the three most likely under the root's p: the common, favourable case)
    #   |
    #   4              token 5 (unlikely under node 1's p: mostly rejected)
    tree = DraftTree(tokens=torch.tensor([9, 0, 1, 2, 5]), parents=torch.tensor([-1, 0, 0, 0, 1]),
                     depths=torch.tensor([0, 1, 1, 1, 2]))
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(5, 6, generator=g) ** 3
    probs = probs / probs.sum(-1, keepdim=True)
    n = 20000
    first = torch.zeros(6)
    second_after_0 = torch.zeros(6)
    for _ in range(n):
        path, bonus = sample_accept(tree, probs, g)
        emitted = tree.tokens[path[1:]].tolist() + [int(bonus)]
        first[emitted[0]] += 1
        if len(path) >= 2 and int(path[1]) == 1:
            second_after_0[emitted[1]] += 1
    assert tv(first / n, probs[0]) < 0.02
    assert second_after_0.sum() > 1000
    assert tv(second_after_0 / second_after_0.sum(), probs[1]) < 0.03
    assert tv(first / n, probs[1]) > 0.1  # the bound separates distinct distributions


def test_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.allclose(sampling_probs(logits, 1.0, 0.7), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.allclose(sampling_probs(logits, 1.0, 0.1), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(sampling_probs(logits, 1.0, 1.0), torch.tensor([0.5, 0.3, 0.15, 0.05]))
