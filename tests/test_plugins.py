"""Inference plugins keep decoding lossless: layer offloading, SubSpec substitute drafters (torch and HQQ 4-bit),
asynchronous (SSD-style) drafting and the draft router — greedy output token-identical to base-only greedy on
12 prompts, sampling exact in distribution through the shared verifier."""
import importlib.util

import pytest
import torch

from specforge_het.config import RunConfig
from specforge_het.config.schema import ConfigError
from specforge_het.inference.engine import Sampling, base_decode, speculative_decode, speculative_decode_batch
from specforge_het.modeling.base import decoder_parts
from specforge_het.plugins import Speculator, check_enabled
from specforge_het.plugins.async_draft import AsyncDrafting
from specforge_het.plugins.offload import offload_base
from specforge_het.plugins.quantize import GroupQuantLinear
from specforge_het.plugins.routing import Router, fit, fit_classifier, load_router
from specforge_het.plugins.subspec import build_subspec_drafter

from test_algorithms import make
from test_batch import STRATEGIES, setup  # noqa: F401  (the batch tests' base, trained drafters and prompts)
from test_hetero import EOS
from test_sampling import PROMPT, N_TOKENS, VOCAB, draw, empirical, exact_joint, small_vocab_pair, tv  # noqa: F401

BACKENDS = ["torch"] + (["hqq"] if importlib.util.find_spec("hqq") else [])


def assert_identical(spec, prompts, refs, strategies=("chain", "tree", "budget"), batch=4):
    for s in strategies:
        for i in range(0, len(prompts), batch):
            out = spec(prompts[i:i + batch], 16, EOS, **STRATEGIES[s])
            assert [r.tokens for r in out] == refs[i:i + batch], s


def test_quantizer_round_trips_within_half_a_step():
    torch.manual_seed(0)
    for bits in (2, 4, 8):
        lin = torch.nn.Linear(128, 24)
        q = GroupQuantLinear(lin, bits, 32)
        err = (q.dequantize() - lin.weight).abs().reshape(24, 4, 32)
        assert bool((err <= q.scale / 2 + 1e-6).all()), bits
        assert q.packed.numel() == 24 * 128 * bits // 8  # codes really packed
        x = torch.randn(3, 128)
        assert torch.allclose(q(x), torch.nn.functional.linear(x, q.dequantize(), lin.bias), atol=1e-5)


def test_offloading_is_lossless_and_streams_every_block(setup):
    base, drafters, prompts, refs = setup
    offloader = offload_base(base, keep_first_n=1)
    try:
        assert offloader.stats.offloaded_blocks == len(decoder_parts(base.model)[0]) - 1
        assert_identical(Speculator(base, drafters["eagle2"]), prompts, refs)
        s = offloader.stats
        assert s.fetches > 0 and s.prefetched == s.fetches - 1  # every fetch after the first was prefetched
        assert s.bytes_moved == 0 and s.offloaded_bytes > 0  # CPU: the device move is a no-op
    finally:
        offloader.remove()
    with pytest.raises(ConfigError, match="keep_first_n_layers_on_gpu: expected 0..2"):
        offload_base(base, keep_first_n=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_subspec_substitute_is_lossless_and_shares_the_base(setup, backend):
    base, _, prompts, refs = setup
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    drafter = build_subspec_drafter(base, keep_first_n=1, bits=4, group_size=16, backend=backend)
    lm_blocks, base_blocks = decoder_parts(drafter.lm)[0], decoder_parts(base.model)[0]
    assert lm_blocks[0] is not base_blocks[0] and lm_blocks[0].mlp.up_proj.weight is base_blocks[0].mlp.up_proj.weight
    assert drafter.lm.get_input_embeddings().weight is base.embed_tokens.weight
    assert not isinstance(lm_blocks[1].mlp.up_proj, torch.nn.Linear)  # substituted
    assert drafter.meta["quantized_linears"] == 7
    assert_identical(Speculator(base, drafter), prompts, refs)
    deep = dict(depth=12, top_k=3, total_tokens=24)  # deep trees, as the subspec preset uses
    assert [speculative_decode(base, drafter, p, 16, EOS, **deep).tokens for p in prompts] == refs
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base is untouched
    with pytest.raises(ConfigError, match="nothing to save"):
        drafter.save_pretrained("unused")


def test_subspec_sharing_the_kept_blocks_kv_cache(setup):
    """Kept block 0 shared with the base, cache included: lossless, the same acceptance as the unshared substitute
    (it computes the same thing), and the shared cache layer holds only the drafter's lead token at rest."""
    base, _, prompts, refs = setup
    shared = build_subspec_drafter(base, keep_first_n=1, bits=4, group_size=16, backend="torch", share_kv=True)
    plain = build_subspec_drafter(base, keep_first_n=1, bits=4, group_size=16, backend="torch")
    assert shared.feature_layers == [0] and not shared.token_only
    caches = []
    new_cache = shared.new_cache
    shared.new_cache = lambda base_cache: caches.append(new_cache(base_cache)) or caches[-1]
    for s in ("chain", "tree", "budget"):
        for p, ref in zip(prompts, refs):
            a = speculative_decode(base, shared, p, 16, EOS, **STRATEGIES[s])
            b = speculative_decode(base, plain, p, 16, EOS, **STRATEGIES[s])
            assert a.tokens == ref and a.accepted == b.accepted, (s, p)
            own = caches[-1].layers[0]._own["keys"]
            assert own.shape[-2] == 1  # the lead token; every verified entry is read from the base's cache
            assert caches[-1].layers[1].get_seq_length() == caches[-1].layers[0].keys.shape[-2]
    with pytest.raises(ConfigError, match="one unpadded sequence at a time"):
        speculative_decode_batch(base, shared, prompts[:2], 8, EOS, **STRATEGIES["chain"])


@pytest.mark.parametrize("which", ["subspec", "classic_draft"])
def test_async_drafting_is_lossless_and_hits(setup, which):
    base, drafters, prompts, refs = setup
    drafter = build_subspec_drafter(base, 0, 8, 16, "torch") if which == "subspec" else drafters["classic_draft"]
    spec = Speculator(base, drafter, async_branches=3)
    assert_identical(spec, prompts, refs, batch=1)
    stats = spec.stats["async"]
    assert stats.steps > 0 and stats.drafted == 3 * stats.steps
    if which == "subspec":  # an 8-bit copy of the base: its likeliest outcomes are the base's
        assert stats.hit_rate > 0.5, stats
    with pytest.raises(ConfigError, match="reads no base features"):
        speculative_decode_batch(base, drafters["eagle2"], prompts[:1], 8, EOS, **STRATEGIES["chain"],
                                 drafting=AsyncDrafting(2))


def test_plugins_sampling_is_exact(small_vocab_pair):  # noqa: F811
    """SubSpec + asynchronous drafting over an offloaded base, sampled: the 3-token joint is the base's."""
    base, _ = small_vocab_pair
    drafter = build_subspec_drafter(base, 0, 4, 16, "torch")
    offloader = offload_base(base, keep_first_n=0)
    try:
        spec = Speculator(base, drafter, async_branches=2)
        sampling = Sampling(0.9, 1.0)
        exact = exact_joint(base, sampling)
        n = 1200
        samples = draw(lambda s: spec([PROMPT], N_TOKENS, set(), depth=3, top_k=2, total_tokens=5, sampling=s)[0],
                       n, sampling)
        g = torch.Generator().manual_seed(0)
        noise = [tv(empirical([divmod_(int(i)) for i in torch.multinomial(exact, n, True, generator=g)]), exact)
                 for _ in range(3)]
        assert tv(empirical(samples), exact) < 1.3 * max(noise), (tv(empirical(samples), exact), noise)
    finally:
        offloader.remove()


def divmod_(i: int) -> list[int]:
    """Flat index of the 3-token joint → the tokens."""
    return [i // (VOCAB * VOCAB), (i // VOCAB) % VOCAB, i % VOCAB]


def test_router_learns_which_drafter_to_use_and_stays_lossless(setup, tmp_path):
    base, drafters, prompts, refs = setup
    good, bad = drafters["eagle2"], make(base, "eagle2").eval()  # trained vs random weights
    router, report = fit(base, [bad, good], ["random", "trained"], prompts[:8], prompts[8:], 12, EOS,
                         STRATEGIES["chain"])
    assert report["tau_single"]["trained"] > report["tau_single"]["random"]
    assert report["tau_routed"] >= report["tau_single"]["trained"] - 1e-6 or report["routed_counts"][1] >= 3
    router.save(tmp_path / "router")
    again = load_router(str(tmp_path / "router"), base, ["random", "trained"])
    assert again.choose(prompts) == router.choose(prompts)
    with pytest.raises(ConfigError, match="trained for drafters"):
        load_router(str(tmp_path / "router"), base, ["a", "b"])
    spec = Speculator(base, bad, route=router.choose, drafters=[bad, good])
    assert_identical(spec, prompts, refs, strategies=("tree",))
    assert sum(spec.stats["routed"]) == len(prompts)


def test_classifier_separates_what_is_separable():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    labels = (x[:, 2] > 0).long()
    params = fit_classifier(x, labels, 2)
    router = Router(None, params, ["a", "b"])
    pred = (((x - params["mean"]) / params["std"]) @ params["weight"] + params["bias"]).argmax(-1)
    assert (pred == labels).float().mean() > 0.95
    assert router.drafters == ["a", "b"]


def test_plugin_names_are_checked():
    assert check_enabled(["async_draft", "subspec"]) == ["subspec", "async_draft"]
    with pytest.raises(ConfigError, match="did you mean 'offload'"):
        check_enabled(["ofload"])
    cfg = RunConfig()
    assert cfg.plugins.enabled == [] and cfg.plugins.quant_bits == 4


def test_build_speculator_applies_plugins_from_the_config(tiny_base, tmp_path):
    from specforge_het.modeling.base import load_base
    from specforge_het.plugins import build_speculator

    from conftest import make_cfg

    cfg = make_cfg(tmp_path, tiny_base, plugins__enabled=["async_draft", "offload", "subspec"],
                   plugins__keep_first_n_layers_on_gpu=1, plugins__quant_backend="torch")
    base = load_base(cfg.base)
    ref = base_decode(base, [5, 9, 11, 40], 12, {base.tokenizer.eos_token_id}).tokens
    spec = build_speculator(cfg, base)
    try:
        assert spec.name("unused") == ("subspec 4-bit (torch, 1 blocks kept) + offload (1 blocks) "
                                       "+ async drafting (3 branches)")
        out = spec([[5, 9, 11, 40]], 12, {base.tokenizer.eos_token_id}, depth=6, top_k=1, total_tokens=6)
        assert out[0].tokens == ref
        stats = spec.take_stats()
        assert stats["offload"]["fetches"] > 0 and "async_hit_rate" in stats
    finally:
        spec.offloader.remove()
    cfg.plugins.enabled = ["subspec", "router"]
    with pytest.raises(ConfigError, match="enable one of them"):
        build_speculator(cfg, base)
