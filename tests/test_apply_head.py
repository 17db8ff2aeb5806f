"""modeling.head.apply_head: a drafter's head over slices of longer sequences, flattened to rows first so
torch.matmul never falls back to a batched matmul that copies the head's weight on every call."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile

from specforge_het.modeling.head import apply_head


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(2, 9), st.data())
def test_same_logits_as_the_head_on_any_slice(batch, length, data):
    torch.manual_seed(length)
    head = torch.nn.Linear(16, 40, bias=data.draw(st.booleans()))
    seq = torch.randn(batch, length, 16, dtype=torch.float64)
    start = data.draw(st.integers(0, length - 1))
    stop = data.draw(st.integers(start + 1, length))
    piece = seq[:, start:stop]  # not foldable by matmul when it is a strict slice
    out = apply_head(head, piece)
    assert out.shape == (batch, stop - start, 40) and out.dtype == head.weight.dtype
    torch.testing.assert_close(out, head(piece.to(head.weight.dtype)), rtol=1e-5, atol=1e-5)


def test_no_weight_sized_copy_on_a_slice():
    """The bug it fixes: with a frozen head (the base's, shared), head(seq[:, 1:5]) went through a batched matmul
    that copied the whole weight on every call (a block drafter's 49k-token head: ~120 ms per draft on 2 cores)."""
    head = torch.nn.Linear(64, 512, bias=False).to(torch.bfloat16).requires_grad_(False)  # frozen, as a base head
    seq = torch.randn(1, 8, 64, dtype=torch.bfloat16)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        out = apply_head(head, seq[:, 1:5])
    copied = [e.input_shapes[0] for e in prof.events() if e.name == "aten::copy_" and e.input_shapes]
    assert not any(shape and torch.Size(shape).numel() >= 512 * 64 for shape in copied), copied
    torch.testing.assert_close(out, head(seq[:, 1:5]))
