"""Grouped SDPA (modeling/gqa_attention.py): the same attention as transformers' SDPA path, without its key/value
copies, on CPU under a mask; every other call is transformers' own."""
import types

import torch
from hypothesis import given, settings, strategies as st
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.integrations import sdpa_attention

from specforge_het.modeling.gqa_attention import NAME, grouped_sdpa_forward, use_grouped_sdpa


@settings(max_examples=25, deadline=None)
@given(kv_heads=st.integers(1, 3), groups=st.integers(1, 4), queries=st.integers(1, 9), prefix=st.integers(0, 12),
       batch=st.integers(1, 3), bool_mask=st.booleans(), seed=st.integers(0, 2**16))
def test_grouped_equals_transformers_sdpa(kv_heads, groups, queries, prefix, batch, bool_mask, seed):
    g = torch.Generator().manual_seed(seed)
    keys = prefix + queries
    q = torch.randn(batch, kv_heads * groups, queries, 16, generator=g)
    k, v = (torch.randn(batch, kv_heads, keys, 16, generator=g) for _ in range(2))
    visible = torch.rand(batch, 1, queries, keys, generator=g) < 0.6
    visible[..., prefix:] |= torch.eye(queries, dtype=torch.bool)  # every query sees itself (no all-masked row)
    mask = visible if bool_mask else torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)
    module = types.SimpleNamespace(num_key_value_groups=groups, is_causal=True)
    with torch.no_grad():
        ours, _ = grouped_sdpa_forward(module, q, k, v, mask, scaling=0.25)
        theirs, _ = sdpa_attention.sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_grouped_path_taken_only_where_transformers_copies(monkeypatch):
    calls = []
    real = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr("specforge_het.modeling.gqa_attention.sdpa_attention_forward",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    module = types.SimpleNamespace(num_key_value_groups=3, is_causal=True)
    q, k, v = torch.randn(1, 3, 4, 8), torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    mask = torch.ones(1, 1, 4, 6, dtype=torch.bool)
    with torch.no_grad():
        grouped_sdpa_forward(module, q, k, v, mask)  # grouped: no fallback
        assert calls == []
        grouped_sdpa_forward(module, q, k, v, None)  # no mask: transformers already keeps the groups
        grouped_sdpa_forward(module, q[:, :, :1], k, v, mask[:, :, :1])  # one query: likewise
    grouped_sdpa_forward(module, q.requires_grad_(), k, v, mask)  # training keeps transformers' path
    assert len(calls) == 3


def test_model_switch_keeps_logits_and_leaves_other_implementations():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (2, 11))
    padding = torch.ones(2, 11, dtype=torch.long)
    padding[0, :4] = 0
    with torch.no_grad():
        before = model(ids, attention_mask=padding).logits
        assert use_grouped_sdpa(model) and model.config._attn_implementation == NAME
        after = model(ids, attention_mask=padding).logits
    torch.testing.assert_close(after[1], before[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after[0, 4:], before[0, 4:], rtol=1e-5, atol=1e-5)
    eager = LlamaForCausalLM(LlamaConfig(**{**cfg.to_dict(), "attn_implementation": "eager"}))
    assert not use_grouped_sdpa(eager) and eager.config._attn_implementation == "eager"
