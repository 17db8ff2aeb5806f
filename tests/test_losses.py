"""The loss menu (algorithms/losses.py): each divergence against its definition on random distributions (hypothesis),
zero exactly at q = p, each one fits a drafter distribution to a target, and every algorithm trains with every loss."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specforge_het.algorithms import get_algorithm
from specforge_het.algorithms.losses import DISTRIBUTION_LOSSES, LK_FLOOR, acceptance_mass, distribution_loss
from specforge_het.config import ConfigError
from specforge_het.config.schema import AlgorithmSection, set_key

from test_algorithms import eagle3_batches, fit, make
from test_hetero import batches, tiny_base

NAMES = list(DISTRIBUTION_LOSSES)


@st.composite
def logit_pairs(draw):
    vocab = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))  # flat to nearly one-hot
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, vocab, generator=g, dtype=torch.float64) * scale, \
        torch.randn(3, vocab, generator=g, dtype=torch.float64) * scale


def by_definition(name: str, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Each loss written from its textbook formula, over probabilities (float64)."""
    kl = lambda a, b: (a * (a.clamp_min(1e-300).log() - b.clamp_min(1e-300).log())).sum(-1)  # noqa: E731
    if name == "forward_kl":
        return -(p * q.log()).sum(-1)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "jsd":
        m = (p + q) / 2
        return kl(p, m) / 2 + kl(q, m) / 2
    if name == "tv":
        return (p - q).abs().sum(-1) / 2
    return -torch.minimum(p, q).sum(-1).clamp_min(LK_FLOOR).log()  # the documented floor


@settings(max_examples=60, deadline=None)
@given(pair=logit_pairs(), name=st.sampled_from(NAMES))
def test_each_loss_is_its_definition(pair, name):
    target, logits = pair
    p, q = target.softmax(-1), logits.softmax(-1)
    got = distribution_loss(name)(target, logits).double()
    assert torch.allclose(got, by_definition(name, p, q), atol=2e-5, rtol=1e-4), name


@settings(max_examples=40, deadline=None)
@given(pair=logit_pairs(), name=st.sampled_from(NAMES))
def test_losses_are_nonnegative_and_zero_at_the_target(pair, name):
    target, logits = pair
    loss = distribution_loss(name)
    assert (loss(target, logits) >= -1e-6).all()
    at_target = loss(target, target.clone())
    if name == "forward_kl":  # soft CE: KL + H(p), so its minimum is the target's entropy
        p = target.softmax(-1)
        at_target = at_target - (-(p * p.log()).sum(-1)).float()
    assert at_target.abs().max() < 1e-5


def test_tv_and_lk_are_the_acceptance_rate():
    """1 − tv and exp(−lk) are Σ min(p, q): the chance a draft sampled from q is accepted against p."""
    p = torch.tensor([[0.7, 0.2, 0.1]]).log()
    q = torch.tensor([[0.5, 0.5, 0.0 + 1e-9]]).log()
    alpha = 0.5 + 0.2 + 1e-9
    assert math.isclose(float(acceptance_mass(p, q)), alpha, rel_tol=1e-5)
    assert math.isclose(float(distribution_loss("tv")(p, q)), 1 - alpha, rel_tol=1e-5)
    assert math.isclose(float(distribution_loss("lk")(p, q)), -math.log(alpha), rel_tol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_each_loss_fits_a_distribution(name):
    """Gradient descent on q's logits under each loss raises the acceptance mass Σ min(p, q) towards 1."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(8, 20, generator=g) * 3
    logits = torch.randn(8, 20, generator=g).requires_grad_()
    opt = torch.optim.Adam([logits], lr=0.1)
    start = float(acceptance_mass(target, logits.detach()).mean())
    for _ in range(300):
        loss = distribution_loss(name)(target, logits).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = float(acceptance_mass(target, logits.detach()).mean())
    assert end > max(0.9, start + 0.2), (name, start, end)


def test_no_gradient_reaches_the_target():
    target = torch.randn(2, 5, requires_grad=True)
    for name in NAMES:
        distribution_loss(name)(target, torch.randn(2, 5, requires_grad=True)).sum().backward()
    assert target.grad is None


@pytest.fixture(scope="module")
def base():
    return tiny_base("llama")


@pytest.mark.parametrize("algorithm", ["eagle2", "eagle3"])
@pytest.mark.parametrize("name", NAMES)
def test_every_algorithm_trains_with_every_loss(base, algorithm, name):
    drafter = make(base, algorithm, lm_head="own") if algorithm == "eagle3" else make(base, algorithm)
    data = eagle3_batches(base, 2, seed=4) if algorithm == "eagle3" else batches(base, 2, seed=4)
    alg = AlgorithmSection(name=algorithm, ttt_length=2, loss=name)
    start, end, metrics = fit(drafter, data, alg, steps=12)
    assert math.isfinite(end) and end < start, (algorithm, name, start, end)


def test_an_unknown_loss_names_the_menu():
    from specforge_het.config import RunConfig

    with pytest.raises(ConfigError, match="reverse_kl"):
        set_key(RunConfig(), "algorithm.loss", "reverse_k", "test")


def test_classic_draft_distills_with_the_chosen_loss(base):
    from specforge_het.config.schema import ModelingSection

    alg = get_algorithm("classic_draft")
    drafter = alg.build(base, ModelingSection(draft_layers=1), None, {"algorithm": "classic_draft"}, None)
    batch = batches(base, 1, seed=5)[0]
    with torch.no_grad():
        losses = {n: float(alg.loss(drafter, batch, AlgorithmSection(name="classic_draft", distill_alpha=1.0,
                                                                     loss=n), training=False)[0]) for n in NAMES}
    assert len({round(v, 6) for v in losses.values()}) == len(NAMES), losses  # each loss is really used
