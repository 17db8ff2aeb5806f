"""Training-time-test attention: the drafter unrolled k steps over a whole sequence, in linear memory.

Unroll step i at row t stands for the draft token at depth i after position t. At inference that token sees the
prefix (the step-0 entries of rows ≤ t) and its own ancestors (steps 1..i of row t). So the step-i query at row
t attends to: step-0 keys at rows ≤ t (causal) + the step-j keys of the *same* row for j = 1..i (a diagonal each).

A naïve implementation concatenates all steps' keys and builds an L × (i+1)·L mask per step. Here the causal part
runs through SDPA with `is_causal=True` (no mask tensor, flash-style kernels) and each diagonal becomes one extra
"sink" key visible to every query: sink j has key e_j (in i extra head dimensions) and value e_j, and the query
carries its diagonal score s_j(t) = q_t·k_j(t)·scale in those dimensions. Softmax then normalises over the causal
keys and the i diagonal scores together; the sink outputs are the diagonal weights, which multiply each row's
own v_j(t). Exact, differentiable, O(L·(d+i)) memory per step.
`ttt_state` (a dict, fresh per unrolled forward) keeps each layer's per-step keys and values, and for packed rows
(several conversations per row) their spans under `SEGMENTS`: attention then runs per conversation. Under sequence
parallelism (`sequence_parallel.NAME`: each rank holds a slice of the rows) the query, keys and values go to a
head-split, whole-sequence layout first and the output comes back (modeling/sequence_parallel.py).

Registered as the attention implementation "specforge_ttt" of every draft layer: without a `ttt_state` it is
plain SDPA (inference with tree masks, single-step training; on CPU without autograd its key/value heads stay
grouped: gqa_attention.py). Draft layers of families with attention logit
soft-capping (Gemma-2) attend without it, the same way in training and inference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from .gqa_attention import grouped_sdpa_forward
from .sequence_parallel import NAME as SEQUENCE_PARALLEL

NAME = "specforge_ttt"
SEGMENTS = "segments"  # ttt_state key: per row, the [start, end) spans of packed conversations


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def unrolled_attention(query: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                       scale: float) -> torch.Tensor:
    """query [B,h,L,d]; keys/values[j] [B,h,L,d] for steps 0..i (step i = the current one) → [B,h,L,d]."""
    if len(keys) == 1:
        return F.scaled_dot_product_attention(query, keys[0], values[0], is_causal=True, scale=scale)
    n = len(keys) - 1  # diagonal steps 1..i
    B, h, L, d = query.shape
    diag_k, diag_v = torch.stack(keys[1:], -2), torch.stack(values[1:], -2)  # [B,h,L,n,d]
    s = (query.unsqueeze(-2) * diag_k).sum(-1)  # [B,h,L,n], unscaled q·k_j(t)
    eye = torch.eye(n, dtype=query.dtype, device=query.device).expand(B, h, n, n)
    zeros_d = query.new_zeros(B, h, n, d)
    q_ext = torch.cat([torch.cat([zeros_d, query], -2), torch.cat([query.new_zeros(B, h, n, n), s], -2)], -1)
    k_ext = torch.cat([torch.cat([zeros_d, keys[0]], -2), torch.cat([eye, query.new_zeros(B, h, L, n)], -2)], -1)
    v_ext = torch.cat([torch.cat([zeros_d, values[0]], -2), torch.cat([eye, query.new_zeros(B, h, L, n)], -2)], -1)
    out = F.scaled_dot_product_attention(q_ext, k_ext, v_ext, is_causal=True, scale=scale)[..., n:, :]
    return out[..., :d] + (out[..., d:].unsqueeze(-1) * diag_v).sum(-2)


def ttt_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          ttt_state: dict | None = None, **kwargs):
    kwargs.pop("softcap", None)  # Gemma-2 attention logit soft-capping: draft layers attend without it
    if ttt_state is None:
        return grouped_sdpa_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                    **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    sp = ttt_state.get(SEQUENCE_PARALLEL)
    if sp is not None:  # my rows, every head → every row, my heads
        query, key, value = sp.seq_to_heads(query), sp.seq_to_heads(key), sp.seq_to_heads(value)
    steps = ttt_state.setdefault(module.layer_idx, [])  # one list of (key, value) per unroll step, per layer
    steps.append((key, value))
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    keys, values = [k for k, _ in steps], [v for _, v in steps]
    if SEGMENTS in ttt_state:  # packed rows: causal attention inside each conversation only
        out = segmented_attention(query, keys, values, scale, ttt_state[SEGMENTS])
    else:
        out = unrolled_attention(query, keys, values, scale)
    if sp is not None:
        out = sp.heads_to_seq(out)
    return out.transpose(1, 2).contiguous(), None


def segmented_attention(query: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], scale: float,
                        spans: list[list[tuple[int, int]]]) -> torch.Tensor:
    """unrolled_attention within each [start, end) span of each row (rows packed with several conversations:
    data/packing.py); positions in no span (padding) get zeros. Still linear in length: one call per span."""
    out = torch.zeros_like(query)
    for b, row in enumerate(spans):
        for start, end in row:
            part = (slice(b, b + 1), slice(None), slice(start, end))
            out[part] = unrolled_attention(query[part], [k[part] for k in keys], [v[part] for v in values], scale)
    return out


AttentionInterface.register(NAME, ttt_attention_forward)
