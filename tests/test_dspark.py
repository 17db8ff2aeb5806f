"""DSpark: the DFlash backbone with a Markov head (slots drafted left to right) and a confidence head that cuts
the block — training, losslessness in every mode, exact sampling through the sequential draws, the cut."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specforge_het.algorithms import get_algorithm
from specforge_het.families.block_common.train import block_outputs
from specforge_het.evaluation import simulated_acceptance
from specforge_het.config.schema import AlgorithmSection, ConfigError, ModelingSection
from specforge_het.inference.accept import Sampling
from specforge_het.inference.engine import base_decode, speculative_decode
from specforge_het.modeling.drafter_base import load_drafter
from specforge_het.families.dspark.model import cut_depth

from test_algorithms import LAYERS, eagle3_batches, fit
from test_dflash import MORE_PROMPTS, assert_batched_matches_base
from test_hetero import EOS, PROMPTS, assert_lossless, tiny_base
from test_sampling import small_vocab_pair  # noqa: F401  (fixture)


def make(base, block_size=5, **modeling):
    torch.manual_seed(0)
    alg = get_algorithm("dspark")
    m = ModelingSection(draft_family="qwen3", block_size=block_size, draft_layers=2, markov_rank=16, **modeling)
    return alg.build(base, m, alg.feature_layers(base.num_layers, LAYERS), {"algorithm": "dspark"}, None)


@pytest.fixture(scope="module")
def base():
    return tiny_base("llama")


@pytest.fixture(scope="module")
def trained(base):
    drafter = make(base)
    data = eagle3_batches(base, 4)
    hits_before = sum(int(simulated_acceptance(drafter.eval(), b, 4)[0][0]) for b in data)
    alg = AlgorithmSection(name="dspark", num_anchors=8, confidence_weight=1.0)
    before, after, metrics = fit(drafter.train(), data, alg, steps=60)
    hits_after = sum(int(simulated_acceptance(drafter.eval(), b, 4)[0][0]) for b in data)
    return drafter.eval(), data, (before, after, metrics, hits_before, hits_after)


def test_dspark_trains_both_heads(trained):
    drafter, _, (before, after, metrics, hits_before, hits_after) = trained
    assert after < before
    assert hits_after >= hits_before + 20, (hits_before, hits_after)
    assert float(drafter.markov_head.markov_w2.weight.detach().abs().max()) > 0  # started at zero: it learned
    assert "confidence_loss" in metrics and float(metrics["confidence_loss"]) < 0.69  # below an uninformed BCE


def test_markov_head_makes_slots_depend_on_the_previous_draft(trained):
    """Slot i's logits change with the token drafted before it (DFlash's do not)."""
    drafter, data, _ = trained
    b = data[0]
    out = block_outputs(drafter, drafter.context(b["aux_hidden"]), b["input_ids"], torch.tensor([[4]] * 4))
    a, _ = drafter.markov_logits(out[:, 0, 1], torch.full((4,), 5))
    c, _ = drafter.markov_logits(out[:, 0, 1], torch.full((4,), 17))
    assert not torch.allclose(a, c)
    greedy = drafter.greedy_block(out[:1, 0], b["input_ids"][:1, 4])
    prev, manual = b["input_ids"][:1, 4], []
    for i in range(out.shape[2]):
        manual.append(drafter.markov_logits(out[:1, 0, i], prev)[0].argmax(-1))
        prev = manual[-1]
    assert torch.equal(greedy, torch.stack(manual, -1))


def test_greedy_lossless_chain_tree_budget(trained, base):
    drafter, _, _ = trained
    assert_lossless(base, drafter, MORE_PROMPTS)  # 10 prompts × chain, tree, budget


def test_batched_equals_base(trained, base):
    drafter, _, _ = trained
    assert_batched_matches_base(base, drafter)


def test_confidence_cut_verifies_fewer_tokens_and_stays_lossless(trained, base):
    """A head that expects every slot rejected cuts each block to its first draft; one that expects every slot
    accepted leaves the block whole; the trained head in between. All lossless."""
    drafter, _, _ = trained
    head = drafter.confidence_head.proj
    saved = (head.weight.detach().clone(), head.bias.detach().clone())

    def decode(cut):
        drafter.confidence_cut = cut
        runs = [speculative_decode(base, drafter, p, 16, EOS, depth=4, top_k=1, total_tokens=4) for p in MORE_PROMPTS]
        for p, r in zip(MORE_PROMPTS, runs):
            assert r.tokens == base_decode(base, p, 16, EOS).tokens
        return [a for r in runs for a in r.accepted]

    try:
        whole = decode(0.0)
        trained_cut = decode(0.9)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-10.0)
        assert max(decode(0.5)) <= 1 < max(whole)
        with torch.no_grad():
            head.bias.fill_(10.0)
        assert decode(0.5) == whole
        assert len(trained_cut) >= len(whole)  # shorter blocks: at least as many steps
    finally:
        drafter.confidence_cut = 0.0
        with torch.no_grad():
            head.weight.copy_(saved[0])
            head.bias.copy_(saved[1])


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 3), depth=st.integers(1, 7), cut=st.floats(0.0, 0.99), seed=st.integers(0, 999))
def test_cut_depth(rows, depth, cut, seed):
    conf = torch.rand(rows, depth, generator=torch.Generator().manual_seed(seed))
    keep = cut_depth(conf, cut)
    assert 1 <= keep <= depth
    if cut == 0.0:
        assert keep == depth
    running = conf.cumprod(1)
    if keep < depth:  # no row keeps its product ≥ cut one slot further
        assert bool((running[:, keep] < cut).all())
    if keep > 1:  # some row earns every kept slot
        assert bool((running[:, keep - 1] >= cut).any())
    assert cut_depth(conf, min(0.99, cut + 0.1)) <= keep


@pytest.mark.parametrize("strategy,cut", [("chain", 0.0), ("tree", 0.0), ("chain", 0.5)])
def test_sampling_is_exact(small_vocab_pair, strategy, cut):
    """T = 1 through the shared verifier with a strong random Markov head (q of slot i depends on slot i−1's
    draw) and the cut: the joint law of 3 sampled tokens equals base sampling's, within multinomial noise."""
    from test_sampling import assert_speculative_sampling_exact

    base, _ = small_vocab_pair
    torch.manual_seed(1)
    m = ModelingSection(block_size=4, markov_rank=4, confidence_cut=cut)
    drafter = get_algorithm("dspark").build(base, m, [0], {}, None).eval()
    with torch.no_grad():
        drafter.markov_head.markov_w2.weight.normal_(0, 3.0)
        drafter.confidence_head.proj.bias.fill_(0.5)
    params = dict(depth=3, top_k=1, total_tokens=3) if strategy == "chain" else dict(depth=3, top_k=3, total_tokens=7)
    sampling = Sampling(1.0, 1.0)
    assert_speculative_sampling_exact(base, drafter, params, sampling)


def test_saved_drafter_round_trip(trained, base, tmp_path):
    drafter, data, _ = trained
    drafter.confidence_cut = 0.25
    again = load_drafter(drafter.save_pretrained(tmp_path / "d")).attach_base(base.embed_tokens, base.lm_head).eval()
    drafter.confidence_cut = 0.0
    assert type(again).__name__ == "DSparkDrafter"
    assert (again.markov_rank, again.confidence_cut, again.block_size) == (16, 0.25, drafter.block_size)
    b = data[0]
    out = block_outputs(again, again.context(b["aux_hidden"]), b["input_ids"], torch.tensor([[3]] * 4))
    assert torch.equal(drafter.greedy_block(out[:, 0], b["input_ids"][:, 3]),
                       again.greedy_block(out[:, 0], b["input_ids"][:, 3]))


def test_clear_errors(base):
    with pytest.raises(ConfigError, match="modeling.markov_rank.*--@dspark"):
        get_algorithm("dflash").build(base, ModelingSection(markov_rank=8), LAYERS, {}, None)
    with pytest.raises(ConfigError, match="modeling.block_size.*--@dflash or --@dspark"):
        get_algorithm("eagle3").build(base, ModelingSection(block_size=4), LAYERS, {}, None)
    with pytest.raises(ConfigError, match="modeling.confidence_cut"):
        make(base, confidence_cut=1.0)
    assert_lossless(base, make(base, block_size=3), PROMPTS[:1])  # a small block works too


@pytest.mark.parametrize("name", ["dflash", "dspark"])
def test_block_exports_layout_and_refusals(base, name, tmp_path):
    """The engine layouts (the engines' own loaders check them in tests/test_serving.py): SGLang's DFlashDraftModel /
    Qwen3DSparkModel and the speculators dflash / dspark formats; DSpark's block_size counts its drafts."""
    import json

    from specforge_het.export.to_sglang import export_sglang
    from specforge_het.export.to_vllm import export_vllm, speculative_config

    alg = get_algorithm(name)
    drafter = alg.build(base, ModelingSection(draft_family="qwen3", block_size=5, draft_layers=2), LAYERS, {}, None)
    sg = json.loads((export_sglang(drafter, tmp_path / "sg", None, "BASE", 4, 1, 5) / "config.json").read_text())
    vl = json.loads((export_vllm(drafter, tmp_path / "vl", None, "BASE", 4) / "config.json").read_text())
    assert sg["dflash_config"]["target_layer_ids"] == list(drafter.feature_layers)
    assert vl["aux_hidden_state_layer_ids"] == [k + 1 for k in drafter.feature_layers]
    assert speculative_config(vl, tmp_path, 99)["num_speculative_tokens"] == 4  # the trained block's drafts
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "sg" / "model.safetensors")))
    if name == "dspark":
        assert sg["architectures"] == ["Qwen3DSparkModel"] and sg["block_size"] == 4 and not sg["sample_from_anchor"]
        assert (vl["speculators_model_type"], vl["block_size"], vl["markov_rank"]) == ("dspark", 4, 64)
        assert {"markov_head.markov_w1.weight", "markov_head.markov_w2.weight", "confidence_head.proj.weight",
                "confidence_head.proj.bias"} <= keys
        assert "DSPARK" in (tmp_path / "sg" / "README.md").read_text()
    else:
        assert sg["architectures"] == ["DFlashDraftModel"] and sg["block_size"] == 5
        assert not any(k.startswith(("markov", "confidence")) for k in keys)
    assert not any(k.startswith(("embed", "lm_head")) for k in keys)  # SGLang shares the target's
    llama = alg.build(base, ModelingSection(draft_family="llama", block_size=5), LAYERS, {}, None)
    with pytest.raises(ConfigError, match="Qwen3 layers"):
        export_sglang(llama, tmp_path / "x", None, "BASE", 4, 1, 5)
    own = alg.build(base, ModelingSection(draft_family="qwen3", block_size=5, lm_head="own"), LAYERS, {}, None)
    with pytest.raises(ConfigError, match="target's embedding and lm_head"):
        export_sglang(own, tmp_path / "y", None, "BASE", 4, 1, 5)
