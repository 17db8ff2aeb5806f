"""The DFlash block drafter: training, losslessness in every mode, the block proposer's trees, simulated τ."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specforge_het.algorithms import get_algorithm
from specforge_het.families.block_common.train import block_outputs, eligible_anchors
from specforge_het.evaluation import simulated_acceptance, simulated_tau
from specforge_het.config.schema import AlgorithmSection, ConfigError, ModelingSection
from specforge_het.inference.accept import Sampling
from specforge_het.inference.engine import base_decode, speculative_decode, speculative_decode_batch
from specforge_het.families.block_common.proposer import caterpillar_tree
from specforge_het.inference.tree import ancestor_matrix
from specforge_het.modeling.drafter_base import load_drafter

from test_algorithms import LAYERS, eagle3_batches, fit
from test_hetero import EOS, PROMPTS, assert_lossless, tiny_base
from test_sampling import small_vocab_pair  # noqa: F401  (fixture)

MORE_PROMPTS = PROMPTS + [[9, 9, 9], [90, 7, 55, 31], [4, 20, 18], [61, 62, 63, 64, 65], [30], [7, 7, 15, 12]]


def make(base, family="qwen3", block_size=5, **modeling):
    torch.manual_seed(0)
    alg = get_algorithm("dflash")
    m = ModelingSection(draft_family=family, block_size=block_size, draft_layers=2, **modeling)
    return alg.build(base, m, alg.feature_layers(base.num_layers, LAYERS), {"algorithm": "dflash"}, None)


@pytest.fixture(scope="module")
def base():
    return tiny_base("llama")


def first_position_hits(drafter, data) -> int:
    return sum(int(simulated_acceptance(drafter.eval(), b, 4)[0][0]) for b in data)


@pytest.fixture(scope="module")
def trained(base):
    drafter = make(base)
    data = eagle3_batches(base, 4)
    hits_before = first_position_hits(drafter, data)
    before, after, metrics = fit(drafter.train(), data, AlgorithmSection(name="dflash", num_anchors=8), steps=60)
    return drafter.eval(), data, (before, after, metrics, hits_before, first_position_hits(drafter, data))


def test_dflash_trains(trained):
    """The random test base's distributions are nearly flat (soft CE can fall only a little), but its greedy
    choices are learnable: the simulated first-draft acceptance must rise well above chance."""
    _, _, (before, after, metrics, hits_before, hits_after) = trained
    assert after < before
    assert hits_after >= hits_before + 20, (hits_before, hits_after)
    assert {"acc_0", "acc_3"} <= metrics.keys()


@pytest.mark.parametrize("loss", ["forward_kl", "lk"])
def test_loss_menu_applies(base, loss):
    drafter = make(base)
    before, after, _ = fit(drafter, eagle3_batches(base, 2), AlgorithmSection(name="dflash", num_anchors=6, loss=loss),
                           steps=10)
    assert after < before


def test_greedy_lossless_chain_tree_budget(trained, base):
    drafter, _, _ = trained
    assert_lossless(base, drafter, MORE_PROMPTS)  # 10 prompts × chain, tree, budget


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_other_draft_families_lossless(base, family):
    assert_lossless(base, make(base, family=family, block_size=4), PROMPTS[:2])


def assert_batched_matches_base(base, drafter):
    """One left-padded batch of MORE_PROMPTS decodes each row exactly as the base alone does."""
    got = speculative_decode_batch(base, drafter, MORE_PROMPTS, 12, EOS, depth=4, top_k=2, total_tokens=6)
    for p, r in zip(MORE_PROMPTS, got):
        assert r.tokens == base_decode(base, p, 12, EOS).tokens


def test_batched_equals_single_and_base(trained, base):
    drafter, _, _ = trained
    assert_batched_matches_base(base, drafter)


def test_chain_accepts_what_the_drafter_predicts(trained, base):
    """A drafter that learned the base accepts drafts, and never more than B − 1 per step."""
    drafter, _, _ = trained
    runs = [speculative_decode(base, drafter, p, 16, EOS, depth=8, top_k=1, total_tokens=8) for p in MORE_PROMPTS]
    accepted = [a for r in runs for a in r.accepted]
    assert max(accepted) <= drafter.block_size - 1
    assert sum(accepted) > 0


@pytest.mark.parametrize("strategy,temperature,top_p,draft", [("chain", 0.8, 1.0, "sampled"),
                                                             ("tree", 1.0, 0.9, "sampled"),
                                                             ("tree", 1.0, 1.0, "greedy")])
def test_sampling_is_exact(small_vocab_pair, strategy, temperature, top_p, draft):
    """T > 0 through the shared verifier: the joint law of 3 sampled tokens equals base sampling's (exactly
    enumerated, over a 12-token vocabulary), within the noise of a multinomial sample of the same size."""
    from test_sampling import PROMPT, assert_speculative_sampling_exact

    base, _ = small_vocab_pair
    torch.manual_seed(1)
    drafter = get_algorithm("dflash").build(base, ModelingSection(block_size=4), [0], {}, None).eval()
    params = dict(depth=3, top_k=1, total_tokens=3) if strategy == "chain" else dict(depth=3, top_k=3, total_tokens=7)
    sampling = Sampling(temperature, top_p, draft=draft)
    assert_speculative_sampling_exact(base, drafter, params, sampling)
    runs = [speculative_decode(base, drafter, PROMPT, 12, set(), **params,
                               sampling=Sampling(temperature, top_p, seed=s, draft=draft)) for s in range(10)]
    accepted = [a for r in runs for a in r.accepted]
    assert 0 < sum(accepted) and min(accepted) == 0  # the drafter was exercised: drafts accepted and rejected


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 6), k=st.integers(1, 4), total=st.integers(1, 20), bsz=st.integers(1, 3),
       sampled=st.booleans(), seed=st.integers(0, 1000))
def test_caterpillar_tree_shape(trained, depth, k, total, bsz, sampled, seed):
    """Any shape: parents precede children, depths step by one, siblings distinct, the principal chain is kept
    first, and sampled trees index q consistently."""
    drafter, _, _ = trained
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(bsz, depth, drafter.base_vocab_size, generator=g)
    sampling = Sampling(temperature=1.0, seed=seed) if sampled else None
    tree = caterpillar_tree(drafter, torch.zeros(bsz, dtype=torch.long), logits, k, total, sampling, g)
    n = tree.size - 1
    assert n == min(total, depth * k)
    for b in range(bsz):
        par, dep, tok = tree.parents[b].tolist(), tree.depths[b].tolist(), tree.tokens[b].tolist()
        for i in range(1, n + 1):
            assert 0 <= par[i] < i and dep[i] == dep[par[i]] + 1
        kids = {}
        for i in range(1, n + 1):
            kids.setdefault(par[i], []).append(tok[i])
        assert all(len(v) == len(set(v)) for v in kids.values())
        assert dep[1: 1 + min(n, depth)] == list(range(1, 1 + min(n, depth))) or k > 1
    anc = ancestor_matrix(tree.parents)
    assert bool(anc.diagonal(dim1=1, dim2=2).all())
    if sampled:
        rows = tree.q_index[tree.q_index >= 0]
        assert int(rows.max()) < tree.q.shape[1]


def test_simulated_tau_and_saved_drafter(trained, base, tmp_path):
    drafter, data, _ = trained
    accepted, eligible = simulated_acceptance(drafter, data[0], depth=6)
    assert int(eligible[drafter.block_size - 1:].sum()) == 0  # beyond the block: never reached
    assert int(eligible[0]) == int(eligible_anchors(data[0]["loss_mask"])[:, :-1].sum()) or int(eligible[0]) > 0
    tau, _ = simulated_tau(accepted, eligible)
    assert tau >= 1.0
    again = load_drafter(drafter.save_pretrained(tmp_path / "d")).attach_base(base.embed_tokens, base.lm_head).eval()
    assert (again.block_size, again.mask_token_id, again.feature_layers) == (
        drafter.block_size, drafter.mask_token_id, drafter.feature_layers)
    b = data[0]
    anchors = torch.tensor([[2, 5]]).expand(b["input_ids"].shape[0], -1)
    x = block_outputs(drafter, drafter.context(b["aux_hidden"]), b["input_ids"], anchors)
    y = block_outputs(again, again.context(b["aux_hidden"]), b["input_ids"], anchors)
    assert torch.equal(x, y)


def test_block_outputs_see_only_the_past(trained):
    """A block anchored at a reads no context at or after a: changing the future leaves it unchanged."""
    drafter, data, _ = trained
    b = data[0]
    ctx = drafter.context(b["aux_hidden"])
    anchors = torch.full((ctx.shape[0], 1), 7)
    x = block_outputs(drafter, ctx, b["input_ids"], anchors)
    ctx2, ids2 = ctx.clone(), b["input_ids"].clone()
    ctx2[:, 7:] += 1.0
    ids2[:, 8:] = 3
    assert torch.allclose(x, block_outputs(drafter, ctx2, ids2, anchors), atol=1e-6)


def test_clear_errors(base):
    with pytest.raises(ConfigError, match="modeling.mask_token_id"):
        make(base, mask_token_id=10**6)
    with pytest.raises(ConfigError, match="modeling.fc_norm.*eagle3"):
        make(base, fc_norm=True)
    with pytest.raises(ConfigError, match="pre-norm layout"):
        make(base, family="gemma2")
