"""SDPA that keeps grouped-query attention grouped on CPU when a mask is given.

transformers' SDPA path (integrations/sdpa_attention.py) hands torch the key/value heads as they are
(`enable_gqa`) only when no mask is given; with a mask and more than one query it first copies every key/value head
`num_key_value_groups` times (`repeat_kv`) — the whole KV cache, in every layer, at every forward. Speculative
verification is exactly that case (a tree or chain of queries under a 4-D mask): on SmolLM2-135M (9 query heads over
3 KV heads, bf16, 2 AMX cores) a 9-token verify cost 47 ms against 40 ms for one token, and 42.5 ms without the
copies. torch's CPU SDPA takes the mask and `enable_gqa` together, so on CPU this calls it directly; on other
devices, under autograd (training keeps the path it was measured with), without a mask, with one query
(transformers already avoids the copy there) or with position biases / soft-capping it is transformers' own
function, unchanged. Same attention, summed in another order: tokens may differ
from the copying path only where a bf16 rounding does (the decoder's near-tie rule).

`use_grouped_sdpa(model)` switches a loaded model from "sdpa" to it; the mask preparation stays SDPA's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "specforge_grouped_sdpa"
_TORCH_HAS_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)  # SDPA's enable_gqa


def groups_copied(module, query: torch.Tensor, attention_mask, kwargs: dict) -> bool:
    """Would transformers copy the key/value heads for this call, where torch could attend to them grouped?"""
    return (_TORCH_HAS_GQA and query.device.type == "cpu" and not torch.is_grad_enabled()
            and attention_mask is not None and query.shape[2] > 1
            and getattr(module, "num_key_value_groups", 1) > 1 and kwargs.get("position_bias") is None
            and kwargs.get("softcap") is None and not kwargs.get("output_attentions", False))


def grouped_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                         is_causal=None, **kwargs):
    if not groups_copied(module, query, attention_mask, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_sdpa(model) -> bool:
    """Switch a model that attends with "sdpa" to grouped_sdpa_forward (→ True); any other implementation (eager,
    flash-attention, a kernel) is left as it is (→ False)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME


AttentionInterface.register(NAME, grouped_sdpa_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)  # masks are prepared exactly as for "sdpa"
