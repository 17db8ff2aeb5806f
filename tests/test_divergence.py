"""The lossless check tells a near-tie from a bug: on a bf16 base every divergence from the reference is classified
by the base's own logit margins in several shapes, `inference` passes with "N near-ties" only when each is within
the dtype's rounding, and a deliberately broken verifier fails it."""
from __future__ import annotations

import pytest
import torch
from conftest import make_cfg

from specforge_het.inference import __main__ as inference
from specforge_het.inference import divergence, verify
from specforge_het.inference.accept import path_indices, take
from specforge_het.modeling.base import load_base
from specforge_het.families.eagle.model import build_drafter


def test_ulp_is_the_dtype_spacing():
    assert divergence.ulp(10.0, torch.bfloat16) == 0.0625  # bf16: 8 significand bits → 2^3 · 2^-7
    assert divergence.ulp(-1.5, torch.bfloat16) == 2 ** -7
    assert divergence.ulp(10.0, torch.float32) == 8 * 2 ** -23
    assert divergence.first_divergence([1, 2, 3, 4], [1, 2, 5, 4], 1) == 2
    assert divergence.first_divergence([1, 2, 3], [1, 2, 3], 0) is None
    assert divergence.first_divergence([1, 2], [1, 2, 3], 0) == 2


def test_classify_tells_a_tie_from_a_wrong_token():
    """Two tokens with identical lm_head rows tie exactly in every shape (a near-tie); the base's worst token at the
    same position is a mismatch with a margin of whole logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from specforge_het.modeling.base import FrozenBase, freeze

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=12, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    base = FrozenBase(model=freeze(model), tokenizer=None, device=torch.device("cpu"), dtype=torch.float32)
    prefix = [3, 1, 4, 1, 5]
    logits = divergence.logits_for_next(base, prefix, 1)
    best, worst = int(logits.argmax()), int(logits.argmin())
    twin = (best + 1) % 12
    with torch.no_grad():
        model.lm_head.weight[twin] = model.lm_head.weight[best]
    want = prefix + [best, 7]
    tie = divergence.classify(base, prefix + [twin, 2], want, 3, [1, 2, 4])
    assert tie.near_tie and tie.position == 5 and all(m == 0 for m in tie.margins.values())
    wrong = divergence.classify(base, prefix + [worst], want, 3, [1, 2, 4])
    assert not wrong.near_tie and min(wrong.margins.values()) > 100 * max(wrong.bounds.values())
    # fp32 stays strict: the shapes agree to ~1e-6, so the bound is the ulp one, not a noise-widened one
    assert wrong.noise < 1e-4 and all(b >= 2 * wrong.noise for b in wrong.bounds.values())
    assert divergence.classify(base, want, want, 3, [1]) is None
    assert divergence.verdict([None, tie]) == ("1 near-tie", True)
    assert divergence.verdict([tie, wrong])[1] is False


def _saved_drafter(base_path: str, dtype: str, out) -> str:
    from specforge_het.config.schema import BaseSection

    base = load_base(BaseSection(model_name_or_path=base_path, dtype=dtype, device="cpu"))
    torch.manual_seed(0)
    build_drafter(base).save_pretrained(out)
    return str(out)


def _cfg(tmp_path, tiny_base, tiny_conversations, dtype: str, **over):
    cfg = make_cfg(tmp_path, tiny_base, tiny_conversations, base__dtype=dtype, inference__strategy="both",
                   inference__prompts=tiny_conversations, inference__num_prompts=8, inference__prompt_offset=20,
                   inference__max_new_tokens=24, inference__depth=4, inference__top_k=4, inference__total_tokens=12,
                   **over)
    _saved_drafter(tiny_base, dtype, tmp_path / "drafter")
    return cfg


@pytest.fixture(scope="module")
def twin_base(tiny_base, tmp_path_factory) -> str:
    """The tiny base with lm_head rows in near-identical pairs (row 2i+1 = row 2i · (1 + 1e-3·noise)): the two best
    tokens are within bf16 rounding of each other at most positions, so decode and verify shapes disagree often."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("twin_base")
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    with torch.no_grad():
        w = model.lm_head.weight
        noise = torch.randn(w[1::2].shape, generator=torch.Generator().manual_seed(0))
        w[1::2] = w[0::2][: w[1::2].shape[0]] * (1 + 1e-3 * noise)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("verify_precision", ["model", "float32"])
def test_bf16_divergences_are_classified_near_ties(tmp_path, twin_base, tiny_conversations, verify_precision):
    """A tiny bf16 base (bf16 runs on any CPU; slowly on AVX2-only ones, so it stays tiny) full of near-ties: every
    divergence of the speculative output from the reference is classified a near-tie, reported, and passes. With
    the verify head in fp32 the reference is the base-only loop with the same head (generate's bf16 head then
    differs from both by near-ties only)."""
    cfg = _cfg(tmp_path, twin_base, tiny_conversations, "bfloat16", inference__verify_precision=verify_precision)
    report = inference.run(cfg, [])
    assert report["lossless"] is True
    spec_ties = sum(r["near_ties"] for r in report["strategies"])
    if verify_precision == "model":  # bf16 logits: the shapes round the twins differently somewhere
        assert spec_ties >= 1, "no divergence at all: the near-tie classification went unexercised"
    else:  # fp32 heads: generate's bf16 head picks the other twin somewhere
        assert report["base_loop_vs_generate"]["near_ties"] >= 1
    for row in report["strategies"] + [report["base_loop_vs_generate"]]:
        assert row["mismatches"] == 0
        assert row["identical"] + row["near_ties"] == 8
        assert row["verdict"] == "identical" or row["verdict"].endswith(("near-tie", "near-ties"))
        for d in row["divergences"]:
            assert d["near_tie"] and all(d["margins"][k] <= d["bounds"][k] for k in d["margins"])


def test_inference_dtype_decodes_an_fp32_base_in_bf16(tmp_path, twin_base, tiny_conversations):
    """inference.dtype bfloat16 over a base configured (and dumped, trained) in fp32: base and drafter decode in
    bf16, the report says so, and every divergence is a near-tie. `auto` resolves to one of the two by a probe."""
    from specforge_het.inference.measure import decode_base_section

    cfg = _cfg(tmp_path, twin_base, tiny_conversations, "float32", inference__dtype="bfloat16")
    report = inference.run(cfg, [])
    assert report["base_dtype"] == "bfloat16" and report["lossless"] is True
    assert all(r["mismatches"] == 0 for r in report["strategies"])
    cfg.inference.dtype = "auto"
    assert decode_base_section(cfg).dtype in ("float32", "bfloat16")
    cfg.inference.dtype = None
    assert decode_base_section(cfg).dtype == "float32"


def test_a_broken_verifier_fails_the_check(tmp_path, tiny_base, tiny_conversations, monkeypatch, capsys):
    """A verifier that accepts the path to the deepest draft node, whatever the base says, makes real mismatches:
    the run exits 1 and names them."""
    cfg = _cfg(tmp_path, tiny_base, tiny_conversations, "float32")

    def accept_everything(tree, anc, base_argmax):
        return path_indices(take(anc, tree.depths.argmax(1, keepdim=True))[:, 0])

    monkeypatch.setattr(verify, "greedy_accept", accept_everything)  # what the greedy verifier calls
    with pytest.raises(SystemExit) as exc:
        inference.run(cfg, [])
    assert exc.value.code == 1
    out = capsys.readouterr()
    assert "MISMATCH" in out.out and "LOSSLESS CHECK FAILED" in out.err
