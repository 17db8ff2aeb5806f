"""Any HF base, heterogeneous drafters: generic layer capture over eight base families, every (base family × draft
family) pair trained a few steps and decoded losslessly, other widths, a reduced vocabulary, and clear errors."""
import pytest
import torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM

from specforge_het.algorithms import get_loss
from specforge_het.config.schema import AlgorithmSection, ConfigError
from specforge_het.inference.engine import base_decode, hf_greedy, speculative_decode
from specforge_het.modeling.base import FrozenBase, decoder_parts, freeze
from specforge_het.families.eagle.model import EagleDrafter, build_drafter
from specforge_het.modeling.vocab import d2t_t2d, top_tokens

V, H = 96, 32
SHAPE = dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
# name → (model_type, extra config fields)
BASES = {
    "llama": ("llama", {}),
    "mistral": ("mistral", {}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {"head_dim": 8}),
    "qwen3_moe": ("qwen3_moe", {"head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2,
                                "moe_intermediate_size": 32}),
    "gemma2": ("gemma2", {"head_dim": 8, "query_pre_attn_scalar": 8}),
    "gemma3": ("gemma3_text", {"head_dim": 8, "query_pre_attn_scalar": 8}),
    "phi3": ("phi3", {}),
    "qwen2_tied": ("qwen2", {"tie_word_embeddings": True}),
}
DRAFTS = ["llama", "qwen3", "qwen3_moe", "mistral", "gemma2", "gemma3_text"]
EOS = {2}  # the configs' eos_token_id (transformers' generate stops there whatever it is told)
PROMPTS = [[5, 17, 33, 8, 61], [70, 3, 3, 41], [12, 90, 44, 27, 6, 81, 19], [38]]


class VocabTokenizer:
    """The one tokenizer method the drafter's compatibility check reads."""

    def __init__(self, vocab: dict):
        self.vocab = vocab

    def get_vocab(self) -> dict:
        return dict(self.vocab)


def tiny_base(name: str, seed: int = 0) -> FrozenBase:
    model_type, extra = BASES[name]
    torch.manual_seed(seed)
    cfg = CONFIG_MAPPING[model_type](**{**SHAPE, **extra})
    model = AutoModelForCausalLM.from_config(cfg)
    tok = VocabTokenizer({f"t{i}": i for i in range(V)})
    return FrozenBase(model=freeze(model), tokenizer=tok, device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="module")
def bases():
    return {name: tiny_base(name) for name in BASES}


def batches(base: FrozenBase, n: int, seed: int = 0):
    """Training batches: the base's own greedy continuations of random prefixes (learnable, like real data)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prefix = torch.randint(3, V, (4, 6), generator=g)
        with torch.no_grad():
            ids = base.model.generate(prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=18,
                                      do_sample=False, pad_token_id=0, eos_token_id=None)
        hidden, _ = base.capture(ids)
        mask = torch.ones_like(ids)
        mask[:, :6] = 0
        out.append({"input_ids": ids, "loss_mask": mask, "hidden": hidden})
    return out


def train_steps(drafter, data, steps: int) -> list[float]:
    loss_fn, alg = get_loss("eagle2"), AlgorithmSection(noise_std=0.0)
    opt = torch.optim.AdamW([p for p in drafter.parameters() if p.requires_grad], lr=3e-3)
    drafter.train()
    losses = []
    for i in range(steps):
        loss, _ = loss_fn(drafter, data[i % len(data)], alg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def eval_loss(drafter, data) -> float:
    loss_fn, alg = get_loss("eagle2"), AlgorithmSection(noise_std=0.0)
    drafter.eval()
    with torch.no_grad():
        return sum(float(loss_fn(drafter, b, alg, training=False)[0]) for b in data) / len(data)


def assert_lossless(base, drafter, prompts=PROMPTS, new=14):
    drafter.eval()
    for p in prompts:
        ref = base_decode(base, p, new, EOS).tokens
        assert ref == hf_greedy(base, p, new, EOS)
        for params in (dict(depth=4, top_k=1, total_tokens=4), dict(depth=3, top_k=3, total_tokens=10),
                       dict(depth=4, top_k=3, total_tokens=16, best_first=True)):
            out = speculative_decode(base, drafter, p, new, EOS, **params)
            assert out.tokens == ref, params


@pytest.mark.parametrize("name", list(BASES))
def test_capture_matches_output_hidden_states(bases, name):
    base = bases[name]
    ids = torch.randint(3, V, (2, 9), generator=torch.Generator().manual_seed(1))
    last, aux = base.capture(ids, aux_layer_ids=[0, 1])
    ref = base.model(ids, output_hidden_states=True).hidden_states
    assert torch.allclose(last, ref[-1], atol=1e-5)
    assert torch.allclose(aux[..., :H], ref[1], atol=1e-5)
    _, norm = decoder_parts(base.model)  # HF reports the last block after the final norm; we keep the block's own
    assert torch.allclose(norm(aux[..., H:]), ref[2], atol=1e-5)
    assert all(not p.requires_grad for p in base.model.parameters()) and not base.model.training
    with pytest.raises(ConfigError, match="out of range"):
        base.check_layer_ids([0, 2], "data.aux_layer_ids")


@pytest.mark.parametrize("base_name", list(BASES))
def test_every_draft_family_trains_and_decodes_losslessly(bases, base_name):
    base = bases[base_name]
    data = batches(base, 3)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    for family in DRAFTS:
        torch.manual_seed(0)
        drafter = build_drafter(base, family=family, overrides={"intermediate_size": 64})
        assert type(drafter.layers[0]).__module__.split(".")[-1] == f"modeling_{family.replace('_text', '')}"
        start = eval_loss(drafter, data)
        train_steps(drafter, data, 12)
        assert eval_loss(drafter, data) < start, family
        assert_lossless(base, drafter, PROMPTS[:2], new=10)
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in before.items()), "the base changed"


@pytest.mark.parametrize("base_name,family,width", [("llama", "qwen3", 16), ("qwen3", "llama", 64),
                                                     ("qwen3_moe", "llama", 16), ("llama", "qwen3_moe", 16)])
def test_other_width_drafter(bases, base_name, family, width, tmp_path):
    base = bases[base_name]
    data = batches(base, 3, seed=1)
    torch.manual_seed(0)
    drafter = build_drafter(base, family=family, hidden_size=width)
    assert drafter.hf_config.hidden_size == width and drafter.out_proj.weight.shape == (H, width)
    assert drafter.hf_config.num_attention_heads == width // 8  # head_dim 8 kept
    start = eval_loss(drafter, data)
    train_steps(drafter, data, 15)
    assert eval_loss(drafter, data) < start
    assert_lossless(base, drafter)
    drafter.save_pretrained(tmp_path)
    again = EagleDrafter.from_pretrained(tmp_path).attach_base(base.embed_tokens, base.lm_head).check_base(base)
    h, ids = data[0]["hidden"], data[0]["input_ids"]
    pos = torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1)
    assert torch.equal(drafter.eval()(h, ids, pos), again.eval()(h, ids, pos))


def test_moe_draft_for_a_dense_base_is_sized_by_active_flops(bases):
    drafter = build_drafter(bases["llama"], family="qwen3_moe")
    c = drafter.hf_config
    assert c.num_experts_per_tok * c.moe_intermediate_size == SHAPE["intermediate_size"]
    c = build_drafter(bases["llama"], family="qwen3_moe",
                      overrides={"num_experts": 4, "moe_intermediate_size": 16}).hf_config
    assert (c.num_experts, c.moe_intermediate_size) == (4, 16)


def test_reduced_vocab_own_head_and_embedding(bases, tmp_path):
    base = bases["llama"]
    data = batches(base, 3, seed=2)
    counts = torch.zeros(V, dtype=torch.long)
    for b in data:
        counts += torch.bincount(b["input_ids"][b["loss_mask"].bool()], minlength=V)
    used, coverage = top_tokens(counts, 48)
    assert used.numel() == 48 and torch.equal(used, used.sort().values) and 0 < coverage <= 1
    d2t, t2d = d2t_t2d(used, V)
    assert torch.equal(torch.arange(48) + d2t, used) and int(t2d.sum()) == 48 and d2t.dtype == torch.long
    torch.manual_seed(0)
    drafter = build_drafter(base, family="qwen3", hidden_size=16, own_embedding=True, draft_vocab=used)
    assert drafter.lm_head.weight.shape == (48, H) and drafter.embed.weight.shape == (V, 16)
    assert torch.equal(drafter.d2t, d2t) and torch.equal(drafter.t2d, t2d)
    # The own head starts at the base's rows of the draft vocabulary.
    assert torch.equal(drafter.lm_head.weight, base.lm_head.weight[used])
    start = eval_loss(drafter, data)
    train_steps(drafter, data, 15)
    assert eval_loss(drafter, data) < start
    # Draft ids map back to target ids: every drafted token lies in the draft vocabulary.
    out = speculative_decode(base, drafter.eval(), PROMPTS[0], 12, EOS, depth=3, top_k=3, total_tokens=8)
    assert out.tokens == base_decode(base, PROMPTS[0], 12, EOS).tokens
    assert_lossless(base, drafter)
    drafter.save_pretrained(tmp_path)
    again = EagleDrafter.from_pretrained(tmp_path).attach_base(base.embed_tokens, base.lm_head).check_base(base)
    assert torch.equal(again.d2t, d2t) and again.draft_vocab_size == 48


def test_clear_errors(bases):
    base = bases["llama"]
    with pytest.raises(ConfigError, match="not a multiple of the base head_dim 8"):
        build_drafter(base, hidden_size=36)
    with pytest.raises(ConfigError, match="not a multiple of num_key_value_heads"):
        build_drafter(base, overrides={"num_key_value_heads": 3})
    with pytest.raises(ConfigError, match="qwen3"):
        build_drafter(base, family="qwen33")
    with pytest.raises(ConfigError, match="has no field 'num_expertz'"):
        build_drafter(base, family="qwen3_moe", overrides={"num_expertz": 4})
    with pytest.raises(ConfigError, match="exceeds num_experts"):
        build_drafter(base, family="qwen3_moe", overrides={"num_experts": 2, "num_experts_per_tok": 4})
    # A drafter made for one base, checked against bases with another vocabulary or tokenizer.
    drafter = build_drafter(base)
    other_vocab = FrozenBase(model=base.model, tokenizer=base.tokenizer, device=base.device, dtype=base.dtype)
    other_vocab.model = AutoModelForCausalLM.from_config(CONFIG_MAPPING["llama"](**{**SHAPE, "vocab_size": V + 8}))
    with pytest.raises(ConfigError, match="tokenizers differ"):
        drafter.check_base(other_vocab)
    swapped = dict(base.tokenizer.get_vocab())
    swapped["t5"], swapped["t6"] = 6, 5
    other_tok = FrozenBase(model=base.model, tokenizer=VocabTokenizer(swapped), device=base.device, dtype=base.dtype)
    with pytest.raises(ConfigError, match="another tokenizer"):
        drafter.check_base(other_tok)


# Published shapes of the hub models the pair presets name (their weights are never needed for this check).
REAL_BASES = {
    "llama31_8b_qwen3_draft": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                            num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)),
    "qwen3_30b_a3b_llama_half_width": ("qwen3_moe", dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
                                                         num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                                                         moe_intermediate_size=768, num_experts=128,
                                                         num_experts_per_tok=8, vocab_size=151936)),
    "qwen3_8b_qwen3_moe_draft": ("qwen3", dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                                              num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                              vocab_size=151936)),
}


@pytest.mark.parametrize("preset", list(REAL_BASES))
def test_realistic_pair_presets_derive_sensible_drafters(preset):
    """The pair presets on the real bases' shapes: the drafter builds (on the meta device) with sane heads and size."""
    from specforge_het.config.cli import resolve_config
    from specforge_het.modeling.draft_config import draft_hf_config

    cfg, _ = resolve_config(["--@eagle2", f"--@{preset}"])
    model_type, shape = REAL_BASES[preset]
    base_cfg = CONFIG_MAPPING[model_type](**shape)
    m = cfg.modeling
    draft = draft_hf_config(base_cfg, m.draft_layers, m.draft_family, m.draft_hidden_size, m.draft_config_overrides)
    assert draft.model_type == m.draft_family and draft.num_hidden_layers == 1
    assert draft.hidden_size == (m.draft_hidden_size or shape["hidden_size"])
    assert draft.head_dim == 128 and draft.num_attention_heads == draft.hidden_size // 128
    assert draft.num_attention_heads % draft.num_key_value_heads == 0
    with torch.device("meta"):
        drafter = EagleDrafter(draft, shape["hidden_size"], shape["vocab_size"], shape["hidden_size"],
                               own_lm_head=m.lm_head == "own", draft_vocab_size=m.draft_vocab_size)
    n = sum(p.numel() for p in drafter.parameters())
    assert 0.05e9 < n < 1.2e9, f"{preset}: {n / 1e9:.2f}B drafter parameters"
