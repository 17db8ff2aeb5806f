"""Sampling is lossless in distribution: speculative samples of the next three tokens follow the base's exact
joint distribution (total-variation distance within multinomial noise), for a chain and for a tree, with
temperature and top-p. A sampler at the wrong temperature must fail the same test (the test has power)."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specforge_het.inference.accept import sample_accept, sampling_probs
from specforge_het.inference.engine import Sampling, base_decode_batch, speculative_decode, speculative_decode_batch
from specforge_het.inference.tree import DraftTree
from specforge_het.modeling.base import FrozenBase, freeze
from specforge_het.families.eagle.model import build_drafter

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


def draw_batched(decode_batch, n: int, sampling: Sampling, rows: int = 250) -> list[list[int]]:
    """n independent draws as batches of `rows` copies of the prompt (batch rows are independent draws)."""
    out = []
    for seed in range(-(-n // rows)):
        s = Sampling(sampling.temperature, sampling.top_p, seed=seed)
        out += [r.tokens[len(PROMPT):len(PROMPT) + N_TOKENS] for r in decode_batch([PROMPT] * rows, s)]
    return out[:n]


def noise_bound(exact: torch.Tensor, n: int) -> float:
    """The TV a sample of n draws may show by chance: 1.25 × the largest TV, over 20 tries, of an exact multinomial
    sample of the same size from the exact joint."""
    gen = torch.Generator().manual_seed(123)
    noise = [tv(torch.bincount(torch.multinomial(exact, n, replacement=True, generator=gen),
                               minlength=exact.numel()).float() / n, exact) for _ in range(20)]
    return max(noise) * 1.25


def assert_speculative_sampling_exact(base, drafter, params: dict, sampling: Sampling, n: int = 1500) -> None:
    """n speculative draws of N_TOKENS (batched, independent) follow base sampling's exact joint law within noise."""
    exact = exact_joint(base, sampling)
    spec = draw_batched(lambda ps, s: speculative_decode_batch(
        base, drafter, ps, N_TOKENS, set(), **params,
        sampling=Sampling(s.temperature, s.top_p, s.seed, sampling.draft)), n, sampling)
    assert tv(empirical(spec), exact) <= noise_bound(exact, n)


@pytest.mark.parametrize("strategy,temperature,top_p", [("chain", 0.8, 1.0), ("tree", 1.0, 0.9)])
def test_speculative_sampling_matches_base_distribution(small_vocab_pair, strategy, temperature, top_p):
    base, drafter = small_vocab_pair
    params = dict(depth=3, top_k=1, total_tokens=3) if strategy == "chain" else dict(depth=3, top_k=3, total_tokens=8)
    sampling = Sampling(temperature, top_p)
    exact = exact_joint(base, sampling)
    n = 1500
    spec = draw_batched(
        lambda ps, s: speculative_decode_batch(base, drafter, ps, N_TOKENS, set(), **params, sampling=s), n, sampling)
    plain = draw_batched(lambda ps, s: base_decode_batch(base, ps, N_TOKENS, set(), s), n, sampling)
    tv_spec, tv_plain = tv(empirical(spec), exact), tv(empirical(plain), exact)
    bound = noise_bound(exact, n)
    assert tv_plain <= bound, f"base sampling itself is off: TV {tv_plain:.3f} > {bound:.3f}"
    assert tv_spec <= bound, f"speculative {strategy} sampling TV {tv_spec:.3f} > noise bound {bound:.3f}"
    # Power: the same test rejects base sampling at a different temperature.
    wrong = Sampling(temperature * 1.6, top_p)
    wrong_samples = draw_batched(lambda ps, s: base_decode_batch(base, ps, N_TOKENS, set(), s), n, wrong)
    assert tv(empirical(wrong_samples), exact) > bound * 1.5
    # The drafter must have been exercised: some draft tokens accepted, some rejected.
    runs = [speculative_decode(base, drafter, PROMPT, 12, set(), **params,
                               sampling=Sampling(temperature, top_p, seed=s)) for s in range(20)]
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
    tree = DraftTree(tokens=torch.tensor([[9, 0, 1, 2, 5]]), parents=torch.tensor([[-1, 0, 0, 0, 1]]),
                     depths=torch.tensor([[0, 1, 1, 1, 2]]))
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(5, 6, generator=g) ** 3
    probs = probs / probs.sum(-1, keepdim=True)
    n = 20000
    first = torch.zeros(6)
    second_after_0 = torch.zeros(6)
    rows = DraftTree(*(getattr(tree, f).expand(n, -1) for f in ("tokens", "parents", "depths")))
    paths, lens, bonus = sample_accept(rows, probs[None].expand(n, -1, -1), g)
    for path, length, b in zip(paths.tolist(), lens.tolist(), bonus.tolist()):
        path = path[:length]
        emitted = tree.tokens[0, path[1:]].tolist() + [b]
        first[emitted[0]] += 1
        if len(path) >= 2 and path[1] == 1:
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


@torch.no_grad()
def _root_distributions(base, drafter, root: int, sampling: Sampling):
    """(p, q, root feature): the base's sampling distribution after PROMPT + root, and the drafter's at the root
    (its prefill row for (h_last, root)), both with temperature and top-p applied."""
    ids = torch.tensor([PROMPT])
    hidden, _ = base.forward(ids)
    feats = drafter(hidden, torch.tensor([PROMPT[1:] + [root]]), torch.arange(len(PROMPT))[None])
    _, logits = base.forward(torch.tensor([PROMPT + [root]]))
    p = sampling_probs(logits[0, -1], sampling.temperature, sampling.top_p)
    q = sampling_probs(drafter.logits(feats[:, -1:])[0, 0], sampling.temperature, sampling.top_p)
    return p, q, feats[:, -1]


def _first_level_acceptance(base, drafter, root, sampling, top_k, n):
    """Share of n independent verify steps (one batch of n rows) that accept a first-level draft."""
    from transformers import DynamicCache

    from specforge_het.inference.tree import expand_tree

    p, q, feat = _root_distributions(base, drafter, root, sampling)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        tree = expand_tree(drafter, torch.full((n,), root), feat.expand(n, -1), DynamicCache(),
                           torch.ones(n, len(PROMPT), dtype=torch.bool), torch.full((n,), len(PROMPT)), 1, top_k, top_k,
                           sampling=sampling, generator=gen)
        _, lens, _ = sample_accept(tree, p.expand(n, tree.size, -1), gen)
    return float((lens >= 2).float().mean()), p, q


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_chain_acceptance_equals_sum_of_min_p_q(small_vocab_pair, temperature, top_p):
    """A sampled chain accepts its first draft with probability Σ_x min(p(x), q(x)) — what theory allows, more
    than a point-mass draft of the drafter's top token (accepted with p(top))."""
    base, drafter = small_vocab_pair
    sampling, n = Sampling(temperature, top_p), 20000
    rate, p, q = _first_level_acceptance(base, drafter, 5, sampling, 1, n)
    theory = float(torch.minimum(p, q).sum())
    sigma = (theory * (1 - theory) / n) ** 0.5
    assert abs(rate - theory) <= 4.5 * sigma + 1e-9, f"acceptance {rate:.4f} vs Σ min(p, q) = {theory:.4f}"
    assert 0.05 < theory < 0.95  # the drafter is neither useless nor perfect here: the test has power
    assert abs(float(p[q.argmax()]) - theory) > 10 * sigma  # the point-mass rule would be told apart


def test_tree_siblings_sampled_without_replacement_accept_what_theory_allows(small_vocab_pair):
    """Two children drawn without replacement from q and verified recursively: P(accept one) =
    Σ min(p, q) + Σ_x1 q(x1)(1 − min(1, p/q)(x1)) Σ min(p₂, q₂^(x1)), p₂ = norm(max(0, p − q)), q₂ = q without x1."""
    base, drafter = small_vocab_pair
    sampling, n = Sampling(1.0, 1.0), 20000
    rate, p, q = _first_level_acceptance(base, drafter, 5, sampling, 2, n)
    p2 = (p - q).clamp_min(0)
    p2 = p2 / p2.sum()
    theory = float(torch.minimum(p, q).sum())
    for x1 in range(VOCAB):
        q2 = q.clone()
        q2[x1] = 0
        q2 = q2 / q2.sum()
        theory += float(q[x1] * (1 - torch.clamp(p[x1] / q[x1], max=1.0)) * torch.minimum(p2, q2).sum())
    sigma = (theory * (1 - theory) / n) ** 0.5
    assert abs(rate - theory) <= 4.5 * sigma + 1e-9, f"acceptance {rate:.4f} vs theory {theory:.4f}"
    assert theory > float(torch.minimum(p, q).sum()) + 10 * sigma  # the second sibling adds acceptance


@pytest.mark.parametrize("strategy", ["chain", "tree"])
def test_a_drafter_with_another_tokenizer_samples_the_base_distribution(small_vocab_pair, strategy):
    """Cross-tokenizer sampling (TLI): a draft LM over its own 10 ids, 7 of them the same strings as base ids 2..8,
    3 of them none of the base's (their q mass is dropped, and base tokens 0, 1, 9..11 are never drafted). Exact
    rejection sampling against the base still reproduces the base's joint distribution (TV within noise)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from specforge_het.families.classic.cross_vocab import CrossVocabDrafter

    base, _ = small_vocab_pair
    torch.manual_seed(2)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))
    with torch.no_grad():
        lm.lm_head.weight.mul_(20.0)
    draft_to_target = torch.tensor([2, 3, 4, 5, 6, 7, 8, -1, -1, -1])
    target_to_draft = torch.full((VOCAB,), -1)
    target_to_draft[2:9] = torch.arange(7)
    drafter = CrossVocabDrafter(lm.config, 32, VOCAB, lm=lm).set_vocab_map(
        {"target_to_draft": target_to_draft, "draft_to_target": draft_to_target, "draft_unk": torch.tensor(9)})
    drafter = drafter.attach_base(base.embed_tokens, base.lm_head).eval()
    params = dict(depth=3, top_k=1, total_tokens=3) if strategy == "chain" else dict(depth=3, top_k=3, total_tokens=8)
    sampling = Sampling(1.0, 1.0)
    exact = exact_joint(base, sampling)
    n = 1500
    spec = draw_batched(
        lambda ps, s: speculative_decode_batch(base, drafter, ps, N_TOKENS, set(), **params, sampling=s), n, sampling)
    gen = torch.Generator().manual_seed(7)
    noise = [tv(torch.bincount(torch.multinomial(exact, n, replacement=True, generator=gen),
                               minlength=exact.numel()).float() / n, exact) for _ in range(20)]
    assert tv(empirical(spec), exact) <= max(noise) * 1.25
    runs = [speculative_decode(base, drafter, PROMPT, 12, set(), **params, sampling=Sampling(1.0, 1.0, seed=s))
            for s in range(20)]
    accepted = [a for r in runs for a in r.accepted]
    assert 0 < sum(accepted) and min(accepted) == 0  # drafts were both accepted and rejected
