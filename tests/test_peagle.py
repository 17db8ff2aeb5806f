"""P-EAGLE (parallel EAGLE): training sees what one parallel forward computes at inference, the proposer drafts what
training predicts, decoding is lossless (greedy in every shape, sampling exact), checkpoints and the vLLM format."""
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from specforge_het.algorithms import check_options, get_algorithm
from specforge_het.config.schema import AlgorithmSection, ConfigError, ModelingSection
from specforge_het.evaluation import simulated_acceptance
from specforge_het.families.peagle.train import parallel_unroll
from specforge_het.inference.accept import Sampling
from specforge_het.inference.engine import base_decode, speculative_decode, speculative_decode_batch
from specforge_het.modeling.drafter_base import load_drafter
from specforge_het.modeling.masks import causal_mask

from test_algorithms import LAYERS, eagle3_batches, fit
from test_dflash import MORE_PROMPTS, assert_batched_matches_base
from test_hetero import EOS, PROMPTS, assert_lossless, tiny_base
from test_sampling import small_vocab_pair  # noqa: F401  (fixture)


def make(base, layers=LAYERS, **modeling):
    torch.manual_seed(0)
    alg = get_algorithm("peagle")
    m = ModelingSection(**{"draft_layers": 2, **modeling})
    return alg.build(base, m, alg.feature_layers(base.num_layers, layers), {"algorithm": "peagle"}, None)


@pytest.fixture(scope="module")
def base():
    return tiny_base("llama")


@pytest.fixture(scope="module")
def trained(base):
    drafter = make(base)
    data = eagle3_batches(base, 4)
    hits_before = sum(int(simulated_acceptance(drafter.eval(), b, 4)[0].sum()) for b in data)
    before, after, metrics = fit(drafter.train(), data, AlgorithmSection(name="peagle", parallel_depth=4), steps=80)
    hits_after = sum(int(simulated_acceptance(drafter.eval(), b, 4)[0].sum()) for b in data)
    return drafter.eval(), data, (before, after, metrics, hits_before, hits_after)


def test_peagle_trains_every_parallel_position(trained):
    drafter, _, (before, after, metrics, hits_before, hits_after) = trained
    assert after < before and hits_after > hits_before, (before, after, hits_before, hits_after)
    assert {f"acc_{i}" for i in range(4)} <= set(metrics)
    assert float((drafter.mask_hidden.detach() ** 2).sum()) > 0


@settings(max_examples=25, deadline=None)
@given(row=st.integers(0, 20), step=st.integers(0, 4), layers=st.integers(1, 3), seed=st.integers(0, 99))
def test_training_attends_as_one_parallel_forward_does(base, row, step, layers, seed):
    """Unroll step i at row t = the last output of one causal forward over rows 0..t (base features, next tokens)
    followed by i mask slots at positions t+1..t+i — what vLLM runs for a P-EAGLE draft."""
    drafter = make(base, draft_layers=layers).eval()
    with torch.no_grad():
        drafter.mask_hidden.normal_(generator=torch.Generator().manual_seed(seed))
    b = eagle3_batches(base, 1, seed=seed)[0]
    ids, feats = b["input_ids"][:1], b["aux_hidden"][:1]
    row = min(row, ids.shape[1] - 2)
    with torch.no_grad():
        unrolled = dict(parallel_unroll(drafter, feats, ids, step + 1))[step][:, row]
        x = torch.cat([feats[:, :row + 1], drafter.mask_features(1, step)], 1)
        tokens = torch.cat([ids[:, 1:row + 2], drafter.mask_ids(1, step, ids.device)], 1)
        n = x.shape[1]
        direct = drafter(x, tokens, torch.arange(n)[None], attention_mask=causal_mask(n, x.dtype, x.device))[:, -1]
    torch.testing.assert_close(unrolled, direct, rtol=1e-4, atol=1e-5)


def unrolled_drafts(drafter, base, seq: list[int], row: int, depth: int) -> list[int]:
    """The greedy drafts the training unroll makes at `row` of `seq` for depths 1..depth."""
    _, aux = base.capture(torch.tensor([seq]), aux_layer_ids=drafter.feature_layers)
    with torch.no_grad():
        steps = dict(parallel_unroll(drafter, aux, torch.tensor([seq]), depth))
    return [int(drafter.draft_to_target(drafter.logits(steps[i][:, row]).argmax(-1))) for i in range(depth)]


@pytest.mark.parametrize("top_k", [1, 3])
def test_the_proposer_drafts_what_training_predicts(trained, base, top_k):
    """After the prefill, the parallel proposer's principal chain (depth i's best token) is the unroll's greedy
    draft at every depth: its cache, positions and mask slots are the training layout."""
    from specforge_het.inference.proposers import build_proposer

    drafter, _, _ = trained
    depth = 4
    for p in MORE_PROMPTS:
        root = base_decode(base, p, 1, set()).tokens[len(p)]
        _, aux = base.capture(torch.tensor([p]), aux_layer_ids=drafter.feature_layers)
        proposer = build_proposer(drafter, depth, top_k, 3 * depth)
        n = len(p)
        with torch.no_grad():
            proposer.start(aux, torch.tensor([p]), torch.tensor([root]), torch.arange(n)[None],
                           torch.ones(1, n, dtype=torch.bool), None)
            tree = proposer.propose(torch.tensor([root]), torch.tensor([n]), None, None)
        principal = [int(tree.tokens[0, (tree.depths[0] == i).nonzero()[0, 0]]) for i in range(1, depth + 1)]
        # the unroll at the prompt's last row, the root as its next token (the rest of seq is not read there)
        assert principal == unrolled_drafts(drafter, base, p + [root] * (depth + 1), n - 1, depth), p


def test_decoding_accepts_what_training_predicts(trained, base):
    """The first chain step accepts exactly the leading drafts the unroll gets right on the base's greedy text."""
    drafter, _, _ = trained
    depth, accepted = 4, 0
    for p in MORE_PROMPTS:
        run = speculative_decode(base, drafter, p, 12, EOS, depth=depth, top_k=1, total_tokens=depth)
        new = run.tokens[len(p):]  # the root, then what followed it
        drafts = unrolled_drafts(drafter, base, run.tokens[:len(p) + depth + 1], len(p) - 1, depth)
        expected = next((i for i, (d, t) in enumerate(zip(drafts, new[1:])) if d != t), depth)
        assert run.accepted[0] == expected, (drafts, new, run.accepted)
        accepted += expected
    assert accepted >= 2  # the check saw drafts accepted, not only rejections


def test_greedy_lossless_chain_tree_budget(trained, base):
    drafter, _, _ = trained
    assert_lossless(base, drafter, MORE_PROMPTS)  # 10 prompts × chain, tree, budget
    assert_lossless(base, make(base, draft_layers=1), PROMPTS[:2])  # one layer (the EAGLE-3 midlayer alone)


def test_batched_equals_base(trained, base):
    drafter, _, _ = trained
    assert_batched_matches_base(base, drafter)


@pytest.mark.parametrize("strategy", ["chain", "tree"])
def test_sampling_is_exact(small_vocab_pair, strategy):
    """T = 1 through the shared verifier: the joint law of 3 sampled tokens equals base sampling's."""
    from test_sampling import assert_speculative_sampling_exact

    base, _ = small_vocab_pair
    torch.manual_seed(1)
    drafter = get_algorithm("peagle").build(base, ModelingSection(mask_token_id=3), [0], {}, None).eval()
    with torch.no_grad():
        drafter.mask_hidden.normal_(0, 1.0)
    params = dict(depth=3, top_k=1, total_tokens=3) if strategy == "chain" else dict(depth=3, top_k=3, total_tokens=7)
    sampling = Sampling(1.0, 1.0)
    assert_speculative_sampling_exact(base, drafter, params, sampling)


def test_saved_drafter_round_trip(trained, base, tmp_path):
    drafter, _, _ = trained
    again = load_drafter(drafter.save_pretrained(tmp_path / "d")).attach_base(base.embed_tokens, base.lm_head).eval()
    assert type(again).__name__ == "PEagleDrafter" and again.mask_token_id == drafter.mask_token_id
    assert torch.equal(again.mask_hidden, drafter.mask_hidden)
    for p in PROMPTS[:3]:
        assert (speculative_decode(base, again, p, 12, EOS, depth=4, top_k=1, total_tokens=4).accepted
                == speculative_decode(base, drafter, p, 12, EOS, depth=4, top_k=1, total_tokens=4).accepted)


def test_vllm_format(trained, tmp_path):
    """The speculators `peagle` layout vLLM 0.32 reads (vLLM itself loads and serves it: tests/test_serving.py)."""
    from specforge_het.export.to_vllm import export_vllm

    drafter, _, _ = trained
    out = export_vllm(drafter, tmp_path / "vl", None, "BASE", 4)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["speculators_model_type"], cfg["mask_token_id"]) == ("peagle", drafter.mask_token_id)
    assert cfg["transformer_layer_config"]["num_hidden_layers"] == 2 and cfg["norm_before_residual"] is False
    assert cfg["eagle_aux_hidden_state_layer_ids"] == [k + 1 for k in drafter.feature_layers]
    weights = load_file(str(out / "model.safetensors"))
    width = drafter.hf_config.hidden_size
    assert weights["mask_hidden"].shape == (1, len(drafter.feature_layers) * drafter.base_hidden_size)
    assert weights["layers.0.self_attn.q_proj.weight"].shape[1] == 2 * width  # layer 0 reads [embedding, hidden]
    assert weights["layers.1.self_attn.q_proj.weight"].shape[1] == width
    assert "layers.0.hidden_norm.weight" in weights and "layers.1.hidden_norm.weight" not in weights
    spec = json.loads((out / "speculative_config.json").read_text())
    assert spec == {"method": "eagle3", "parallel_drafting": True, "model": str(out), "num_speculative_tokens": 4}


def test_clear_errors(base):
    with pytest.raises(ConfigError, match="algorithm.parallel_depth: not read by the eagle3 algorithm.*--@peagle"):
        check_options(get_algorithm("eagle3"), {"algorithm": AlgorithmSection(parallel_depth=3)})
    check_options(get_algorithm("peagle"), {"algorithm": AlgorithmSection(parallel_depth=3),
                                            "modeling": ModelingSection(mask_token_id=2)})
    with pytest.raises(ConfigError, match="modeling.mask_token_id: expected 0..*a base token id"):
        make(base, mask_token_id=10 ** 6)
    with pytest.raises(ConfigError, match="P-EAGLE layers of the llama and qwen3 families"):
        from specforge_het.export.to_vllm import export_vllm

        export_vllm(make(base, draft_family="qwen2"), __import__("pathlib").Path("/nonexistent"), None, "B", 3)


def test_static_cache_gives_the_eager_tokens(trained):
    """inference.static_cache: the mask slots go through the SlotCache's scratch and are dropped with it."""
    drafter, _, _ = trained
    base = tiny_base("llama")
    params = [dict(depth=4, top_k=1, total_tokens=4), dict(depth=4, top_k=2, total_tokens=6)]
    refs = [[r.tokens for r in speculative_decode_batch(base, drafter, MORE_PROMPTS, 12, EOS, **p)] for p in params]
    base.static_cache = True
    for p, ref in zip(params, refs):
        got = speculative_decode_batch(base, drafter, MORE_PROMPTS, 12, EOS, **p)
        assert [r.tokens for r in got] == ref == [base_decode(base, q, 12, EOS).tokens for q in MORE_PROMPTS], p
