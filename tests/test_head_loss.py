"""The fused, chunked head loss and the teacher computed once (algorithms/head_loss.py): the same loss, metrics and
gradients as the plain per-step EAGLE-3 loss, and what it keeps for backward does not grow with the TTT length."""
import weakref

import pytest
import torch
from hypothesis import given, settings, strategies as st

from specforge_het.algorithms import get_algorithm
from specforge_het.families.eagle3.train import eagle3_loss, eagle3_loss_per_step
from specforge_het.algorithms.head_loss import fused_head_loss, teacher_once
from specforge_het.algorithms.losses import DISTRIBUTION_LOSSES
from specforge_het.config.schema import AlgorithmSection, ModelingSection

from test_algorithms import LAYERS, eagle3_batches
from test_hetero import V, tiny_base


@pytest.fixture(scope="module")
def base():
    return tiny_base("llama")


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), n=st.integers(1, 12), h=st.integers(2, 6), v=st.integers(3, 24), chunk=st.integers(1, 7),
       loss=st.sampled_from(sorted(DISTRIBUTION_LOSSES)), trainable=st.booleans(), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_fused_head_loss_equals_the_plain_one(b, n, h, v, chunk, loss, trainable, bias, seed):
    """Any shapes, chunk sizes, masks (rows with no weight and no metric skipped), losses of the menu, a frozen or
    trainable head with or without bias: same sum, same hits on the rows that matter, same gradients."""
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(h, v, bias=bias).requires_grad_(trainable)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=g))
        if bias:
            head.bias.copy_(torch.randn(v, generator=g))
    feats = torch.randn(b, n, h, generator=g, requires_grad=True)
    teacher = 3 * torch.randn(b, n, v, generator=g)
    weight = (torch.rand(b, n, generator=g) < 0.6).float() * torch.rand(b, n, generator=g)
    metric = torch.rand(b, n, generator=g) < 0.7
    divergence = DISTRIBUTION_LOSSES[loss]

    total, hits = fused_head_loss(feats, head, teacher, weight, metric, divergence, rows_per_chunk=chunk)
    params = [feats] + [p for p in head.parameters() if p.requires_grad]
    fused_grads = torch.autograd.grad(2.5 * total, params)

    logits = head(feats)
    expected = (divergence(teacher, logits) * weight).sum()
    plain_grads = torch.autograd.grad(2.5 * expected, params)
    assert torch.allclose(total, expected, rtol=1e-5, atol=1e-5)
    wanted = (weight != 0) | metric
    assert torch.equal(hits[wanted], (logits.argmax(-1) == teacher.argmax(-1))[wanted])
    assert not hits[~wanted].any()
    for got, want in zip(fused_grads, plain_grads):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5, 1000])
@pytest.mark.parametrize("reduced", [False, True])
def test_teacher_once_is_every_rows_target(base, chunk, reduced):
    modeling = ModelingSection(lm_head="own")
    alg = get_algorithm("eagle3")
    vocab = torch.arange(3, V, 2) if reduced else None
    drafter = alg.build(base, modeling, LAYERS, {}, vocab)
    last = eagle3_batches(base, 1)[0]["hidden"]
    teacher, inside = teacher_once(drafter, last, rows_per_chunk=chunk)
    want, want_inside = drafter.target_logits(last)
    assert torch.allclose(teacher, want, atol=1e-6) and torch.equal(inside, want_inside)


def fresh_drafter(base, reduced, **modeling):
    torch.manual_seed(0)
    alg = get_algorithm("eagle3")
    vocab = torch.arange(3, V, 2) if reduced else None
    return alg.build(base, ModelingSection(**modeling), LAYERS, {}, vocab)


@pytest.mark.parametrize("loss", ["forward_kl", "tv"])
@pytest.mark.parametrize("reduced,modeling", [(False, dict(lm_head="own")), (True, dict(lm_head="own")),
                                              (False, dict(lm_head="shared", norm_output=True, fc_norm=True))])
def test_eagle3_loss_equals_the_per_step_loss(base, loss, reduced, modeling):
    """The training loss, every metric and every parameter's gradient as the plain per-step TTT loss."""
    batch = eagle3_batches(base, 1, seed=3)[0]
    batch["loss_mask"][1, 9:13] = 0  # an inner gap: rows skipped by the fused loss
    alg = AlgorithmSection(name="eagle3", ttt_length=4, loss=loss)
    results = []
    for fn in (eagle3_loss, eagle3_loss_per_step):
        drafter = fresh_drafter(base, reduced, **modeling)
        total, metrics = fn(drafter, batch, alg)
        total.backward()
        grads = {k: p.grad.clone() for k, p in drafter.named_parameters() if p.grad is not None}
        results.append((total.detach(), {k: float(v) for k, v in metrics.items()}, grads))
    (fused, fused_metrics, fused_grads), (plain, plain_metrics, plain_grads) = results
    assert torch.allclose(fused, plain, rtol=1e-5)
    assert fused_metrics.keys() == plain_metrics.keys()
    for k in plain_metrics:
        assert fused_metrics[k] == pytest.approx(plain_metrics[k], rel=1e-5, abs=1e-6), k
    assert fused_grads.keys() == plain_grads.keys() and plain_grads
    for k in plain_grads:
        assert torch.allclose(fused_grads[k], plain_grads[k], rtol=1e-4, atol=1e-6), k


def vocabulary_sized_saves(fn, drafter, batch, alg) -> int:
    """How many rows × vocabulary tensors autograd still keeps for backward when one loss call returns (saved by
    the graph and alive then; what a fused chunk saved and freed inside the call does not count)."""
    saved = []

    def pack(t):
        saved.append(weakref.ref(t))
        return t

    rows = batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = fn(drafter, batch, alg)
    alive = {id(t.untyped_storage()): t for t in (r() for r in saved) if t is not None}
    del loss
    vocab = drafter.draft_vocab_size  # 47: no other width of the tiny drafter (32, 3 × 32 features) is that
    return sum(1 for t in alive.values() if t.dim() >= 2 and t.shape[-1] == vocab and t.numel() >= rows * vocab // 2)


@pytest.mark.parametrize("steps", [2, 5])
def test_fused_loss_keeps_nothing_vocabulary_sized(base, steps):
    """The plain loss keeps rows × vocabulary tensors for backward at every TTT step; the fused loss keeps none
    (a mutation that keeps a chunk's logits graph alive fails this)."""
    batch = eagle3_batches(base, 1)[0]
    drafter = fresh_drafter(base, True, lm_head="own")
    alg = AlgorithmSection(name="eagle3", ttt_length=steps)
    assert vocabulary_sized_saves(eagle3_loss_per_step, drafter, batch, alg) >= steps
    assert vocabulary_sized_saves(eagle3_loss, drafter, batch, alg) == 0
