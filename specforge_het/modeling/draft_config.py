"""The HF config of the draft decoder: any decoder family, any width, derived from the base's config.

Same family as the base: a copy of the base's text config. Another family: that family's config class, with
the shape fields the two share copied over (heads, head_dim, KV heads, MLP width, rope theta, norm eps), so
"a Qwen3 layer over a Llama base" means a Qwen3 layer of the base's shape. Another width: head_dim is kept,
the head count, KV heads and MLP width scale with the width. A MoE family drafting for a dense base is sized by
active FLOPs: `num_experts_per_tok * moe_intermediate_size` = the dense MLP width. `overrides` (from
`modeling.draft_config_overrides`) apply last; the result is checked so impossible shapes fail here, clearly.
"""
from __future__ import annotations

import copy
from typing import Optional

from ..config.errors import ConfigError

# Shape fields copied from the base into another family's config when both define them.
SHARED_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                 "max_position_embeddings", "rms_norm_eps", "hidden_act", "attention_bias")
DEFAULT_DRAFT_EXPERTS, DEFAULT_DRAFT_EXPERTS_PER_TOKEN = 8, 2


def config_class(family: str):
    from transformers import CONFIG_MAPPING

    from ..config.errors import closest

    if family not in CONFIG_MAPPING:
        raise ConfigError(f"modeling.draft_family: unknown HF model_type {family!r}; "
                          f"{closest(family, CONFIG_MAPPING.keys())}")
    return CONFIG_MAPPING[family]


def _rope_theta(cfg) -> Optional[float]:
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:
        return rp["rope_theta"]
    return getattr(cfg, "rope_theta", None)


def _set_rope_theta(cfg, theta: float) -> None:
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:  # plain format; per-layer-type dicts (Gemma-3) keep their own
        cfg.rope_parameters = {**rp, "rope_theta": theta}
    elif hasattr(cfg, "rope_theta"):
        cfg.rope_theta = theta


def head_dim_of(cfg) -> int:
    hd = getattr(cfg, "head_dim", None)
    return hd if hd else cfg.hidden_size // cfg.num_attention_heads


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _resize(cfg, base_text, width: int) -> None:
    """Scale the attention heads and MLP of `cfg` (shaped like the base) to hidden size `width`."""
    hd = head_dim_of(base_text)
    if width % hd:
        raise ConfigError(f"modeling.draft_hidden_size {width} is not a multiple of the base head_dim {hd}; choose "
                          f"a multiple of {hd}, or set num_attention_heads/head_dim in modeling.draft_config_overrides")
    ratio = width / base_text.hidden_size
    cfg.hidden_size = width
    cfg.num_attention_heads = width // hd
    cfg.head_dim = hd
    kv = getattr(base_text, "num_key_value_heads", None) or base_text.num_attention_heads
    cfg.num_key_value_heads = _largest_divisor_at_most(cfg.num_attention_heads, kv)
    if getattr(cfg, "intermediate_size", None):
        cfg.intermediate_size = max(16, int(round(base_text.intermediate_size * ratio / 16)) * 16)
    if getattr(cfg, "moe_intermediate_size", None) and getattr(base_text, "moe_intermediate_size", None):
        cfg.moe_intermediate_size = max(8, int(round(base_text.moe_intermediate_size * ratio / 8)) * 8)


def _size_moe_by_active_flops(cfg, base_text) -> None:
    """A MoE draft for a dense base: experts whose active MLP width matches the dense one."""
    if not hasattr(cfg, "moe_intermediate_size") or getattr(base_text, "moe_intermediate_size", None):
        return
    cfg.num_experts = DEFAULT_DRAFT_EXPERTS
    cfg.num_experts_per_tok = DEFAULT_DRAFT_EXPERTS_PER_TOKEN
    cfg.moe_intermediate_size = max(8, cfg.intermediate_size // DEFAULT_DRAFT_EXPERTS_PER_TOKEN)
    if hasattr(cfg, "decoder_sparse_step"):
        cfg.decoder_sparse_step = 1
    if hasattr(cfg, "mlp_only_layers"):
        cfg.mlp_only_layers = []


def draft_hf_config(base_config, draft_layers: int, family: Optional[str] = None, hidden_size: Optional[int] = None,
                    overrides: Optional[dict] = None):
    """The draft decoder's config (see the module docstring). All layers use full attention."""
    base_text = base_config.get_text_config()
    if draft_layers < 1:
        raise ConfigError(f"modeling.draft_layers: expected >= 1, got {draft_layers}")
    family = family or base_text.model_type
    if family == base_text.model_type:
        cfg = copy.deepcopy(base_text)
    else:
        cfg = config_class(family)()
        for name in SHARED_FIELDS:
            if hasattr(cfg, name) and getattr(base_text, name, None) is not None:
                setattr(cfg, name, getattr(base_text, name))
        # Always explicit: HF attention reads `getattr(config, "head_dim", hidden // heads)`, and bases like
        # Qwen3-30B-A3B have head_dim ≠ hidden / heads.
        cfg.head_dim = head_dim_of(base_text)
        theta = _rope_theta(base_text)
        if theta is not None:
            _set_rope_theta(cfg, theta)
        if hasattr(cfg, "query_pre_attn_scalar"):  # Gemma scales attention by this instead of head_dim
            cfg.query_pre_attn_scalar = head_dim_of(cfg)
        _size_moe_by_active_flops(cfg, base_text)
    if hidden_size is not None and hidden_size != base_text.hidden_size:
        _resize(cfg, base_text, hidden_size)
    cfg.num_hidden_layers = draft_layers
    # A drafter attends over the whole (short) draft context: no sliding windows, one layer type.
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = ["full_attention"] * draft_layers
    if hasattr(cfg, "sliding_window"):
        cfg.sliding_window = None
    if hasattr(cfg, "use_sliding_window"):
        cfg.use_sliding_window = False
    for key, value in (overrides or {}).items():
        if not hasattr(cfg, key):
            raise ConfigError(f"modeling.draft_config_overrides: {type(cfg).__name__} has no field {key!r}")
        setattr(cfg, key, value)
    cfg.use_cache = True
    _pick_attention(cfg)
    check_draft_config(cfg)
    return cfg


def check_draft_config(cfg) -> None:
    """Impossible head/width combinations fail here with the numbers, not deep inside torch."""
    name = type(cfg).__name__
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    explicit_hd = getattr(cfg, "head_dim", None)
    if not explicit_hd and cfg.hidden_size % heads:
        raise ConfigError(f"draft config ({name}): hidden_size {cfg.hidden_size} is not divisible by "
                          f"num_attention_heads {heads}; set head_dim or change the head count")
    if heads % kv:
        raise ConfigError(f"draft config ({name}): num_attention_heads {heads} is not a multiple of "
                          f"num_key_value_heads {kv}")
    if getattr(cfg, "num_experts_per_tok", None) and getattr(cfg, "num_experts", None):
        if cfg.num_experts_per_tok > cfg.num_experts:
            raise ConfigError(f"draft config ({name}): num_experts_per_tok {cfg.num_experts_per_tok} exceeds "
                              f"num_experts {cfg.num_experts}")
    if heads <= 0 or cfg.hidden_size <= 0:
        raise ConfigError(f"draft config ({name}): hidden_size {cfg.hidden_size} and num_attention_heads {heads} "
                          "must be positive")


def hf_config_from_dict(d: dict):
    model_type = d.get("model_type")
    cfg = config_class(model_type).from_dict(d)
    _pick_attention(cfg)
    return cfg


def _pick_attention(cfg) -> None:
    """Tree drafting passes additive 4D masks, which sdpa and eager take (flash kernels do not); None lets HF
    choose sdpa where the family supports it (Gemma-2 does not) and eager otherwise."""
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager"):
        cfg._attn_implementation = None
