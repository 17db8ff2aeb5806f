"""The exact expand of serving/vllm_cpu_fix.py (the vLLM worker's `patch_engine`, and a vLLM plugin): what vLLM's
Triton expand_kernel computes — each request's value repeated over its draft tokens, replace_from → replace_to — for
float and integer tensors alike (the CPU build's own writes float outputs into a discarded int64 copy)."""
import torch
from hypothesis import given, settings, strategies as st

from specforge_het.serving.vllm_cpu_fix import exact_expand


@settings(max_examples=80, deadline=None)
@given(counts=st.lists(st.integers(0, 5), min_size=1, max_size=6), data=st.data(),
       dtype=st.sampled_from([torch.float32, torch.int64, torch.int32]))
def test_exact_expand_repeats_each_request_over_its_tokens(counts, data, dtype):
    values = data.draw(st.lists(st.sampled_from([0, 1, 2, 7]) if dtype != torch.float32
                                else st.sampled_from([0.0, 0.7, 1.0, 1.3]), min_size=len(counts), max_size=len(counts)))
    x = torch.tensor(values, dtype=dtype)
    cu = torch.tensor(counts, dtype=torch.int32).cumsum(0).to(torch.int32)
    out = torch.full((sum(counts),), -123, dtype=dtype)
    exact_expand(out, x, cu, 0, 1)
    want = [1 if v == 0 else v for v, n in zip(values, counts) for _ in range(n)]
    assert out.tolist() == torch.tensor(want, dtype=dtype).tolist()
