"""Algorithms behind one registry: EAGLE-3 (training-time test) next to EAGLE-2; the unrolled training attention
equals what inference computes; ttt_length=1 is the plain forward; simulated τ; lossless decoding; reload."""
import pytest
import torch
from transformers import DynamicCache

from specforge_het.algorithms import get_algorithm
from specforge_het.algorithms.unroll import unroll
from specforge_het.evaluation import simulated_acceptance, simulated_tau
from specforge_het.config.schema import AlgorithmSection, ConfigError, ModelingSection
from specforge_het.inference.engine import speculative_decode
from specforge_het.modeling.drafter_base import load_drafter
from specforge_het.families.eagle3.model import Eagle3Drafter
from specforge_het.modeling.feature_layers import default_feature_layers

from test_hetero import EOS, PROMPTS, assert_lossless, tiny_base

LAYERS = [0, 1, 1]


def eagle3_batches(base, n, seed=0):
    from test_hetero import batches

    out = []
    for b in batches(base, n, seed):
        _, aux = base.capture(b["input_ids"], aux_layer_ids=LAYERS)
        out.append({**b, "aux_hidden": aux})
    return out


def make(base, name, **modeling):
    torch.manual_seed(0)
    m = ModelingSection(**modeling)
    alg = get_algorithm(name)
    return alg.build(base, m, alg.feature_layers(base.num_layers, LAYERS if name == "eagle3" else []),
                     {"algorithm": name}, None)


def fit(drafter, data, alg, steps=20):
    """A few AdamW steps on the algorithm's loss → (eval loss before, eval loss after, last training metrics)."""
    loss_fn = get_algorithm(alg.name).loss
    opt = torch.optim.AdamW(drafter.parameters(), lr=3e-3)

    def evaluate():
        with torch.no_grad():
            return sum(float(loss_fn(drafter, b, alg, training=False)[0]) for b in data)

    start = evaluate()
    for i in range(steps):
        loss, metrics = loss_fn(drafter, data[i % len(data)], alg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return start, evaluate(), metrics


@pytest.fixture(scope="module")
def base():
    return tiny_base("llama")


def test_registry_names_closest():
    assert get_algorithm("eagle3").name == "eagle3"
    with pytest.raises(ConfigError, match="eagle3"):
        get_algorithm("eagle4")


def test_default_feature_layers():
    assert default_feature_layers(32) == [1, 15, 28]
    assert default_feature_layers(4) == [0, 1, 2]  # never the last block: SGLang cannot capture after it
    for n in range(1, 40):
        assert max(default_feature_layers(n)) <= max(0, n - 2)


@pytest.mark.parametrize("name,modeling", [("eagle3", dict(lm_head="own")),
                                           ("eagle3", dict(lm_head="own", embedding="own", draft_hidden_size=16,
                                                           draft_family="qwen3")),
                                           ("eagle3", dict(lm_head="own", fc_norm=True, norm_output=True)),
                                           ("eagle2", dict(draft_layers=2))])
def test_unrolled_training_attention_equals_inference(base, name, modeling):
    """Unroll step i at row t must equal the drafter run the inference way: cache over rows ≤ t from base
    features, then its own outputs fed one token at a time at positions t+1, t+2, ..."""
    drafter = make(base, name, **modeling).eval()
    batch = (eagle3_batches if name == "eagle3" else __import__("test_hetero").batches)(base, 1)[0]
    feats = batch["aux_hidden"] if name == "eagle3" else batch["hidden"]
    ids = batch["input_ids"][:1]
    feats = feats[:1]
    with torch.no_grad():
        steps = [out for _, out in unroll(drafter, feats, ids, 4)]
        for t in (3, 9, 15):
            cache = DynamicCache()
            out = drafter(feats[:, :t + 1], ids[:, 1:t + 2], torch.arange(t + 1)[None], past_key_values=cache)
            assert torch.allclose(out[0, t], steps[0][0, t], atol=1e-5)
            prev = out[:, -1:]
            for i in range(1, 4):
                prev = drafter(prev, ids[:, t + 1 + i:t + 2 + i], torch.tensor([[t + i]]), past_key_values=cache,
                               from_base=False)
                assert torch.allclose(prev[0, 0], steps[i][0, t], atol=1e-5), (t, i)


def test_ttt_length_one_is_the_plain_forward(base):
    drafter = make(base, "eagle3", lm_head="own")
    batch = eagle3_batches(base, 1)[0]
    alg = AlgorithmSection(name="eagle3", ttt_length=1)
    loss, _ = get_algorithm("eagle3").loss(drafter, batch, alg, training=False)
    ids, rows = batch["input_ids"], batch["input_ids"].shape[1] - 1
    out = drafter(batch["aux_hidden"][:, :rows], ids[:, 1:], torch.arange(rows)[None].expand(ids.shape[0], -1))
    target = drafter.target_logits(batch["hidden"][:, 1:])[0].float().softmax(-1)
    ce = -(target * drafter.logits(out).float().log_softmax(-1)).sum(-1)
    m = batch["loss_mask"][:, 1:].float()
    assert torch.allclose(loss, (ce * m).sum() / m.sum(), atol=1e-5)


@pytest.mark.parametrize("modeling", [dict(lm_head="own"),
                                      dict(lm_head="own", embedding="own", draft_hidden_size=16, draft_family="qwen3"),
                                      dict(lm_head="own", fc_norm=True, norm_output=True)])  # EAGLE-3.1
def test_eagle3_trains_decodes_losslessly_and_reloads(base, modeling, tmp_path):
    drafter = make(base, "eagle3", **modeling)
    data = eagle3_batches(base, 3, seed=3)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    start, end, metrics = fit(drafter, data, AlgorithmSection(name="eagle3", ttt_length=3))
    assert {"acc_0", "acc_2", "ploss_1"} <= metrics.keys() and end < start
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in before.items())
    assert_lossless(base, drafter)
    drafter.save_pretrained(tmp_path)
    again = load_drafter(tmp_path).attach_base(base.embed_tokens, base.lm_head).check_base(base).eval()
    assert isinstance(again, Eagle3Drafter) and again.feature_layers == LAYERS
    assert (again.fc_norm, again.norm_output) == (drafter.fc_norm, drafter.norm_output)
    for p in PROMPTS:
        a = speculative_decode(base, drafter.eval(), p, 10, EOS, depth=3, top_k=3, total_tokens=8)
        b = speculative_decode(base, again, p, 10, EOS, depth=3, top_k=3, total_tokens=8)
        assert a.tokens == b.tokens and a.accepted == b.accepted


def test_eagle3_1_flags_change_the_computation(base):
    """fc_norm normalises each fused feature before fc (a feature scaled by 10 gives the same fc input), and
    norm_output hands the next step norm(o) — the logits read it without a second norm."""
    plain = make(base, "eagle3", lm_head="own").eval()
    flagged = make(base, "eagle3", lm_head="own", fc_norm=True, norm_output=True).eval()
    assert set(flagged.state_dict()) - set(plain.state_dict()) == {f"fc_norms.{i}.weight" for i in range(3)}
    batch = eagle3_batches(base, 1)[0]
    feats, ids = batch["aux_hidden"][:1, :6], batch["input_ids"][:1, 1:7]
    pos = torch.arange(6)[None]
    with torch.no_grad():
        scaled = feats.clone()
        scaled[..., : base.hidden_size] *= 10  # the first feature only
        moved = lambda m: float((m(feats, ids, pos) - m(scaled, ids, pos)).abs().max())  # noqa: E731
        assert moved(flagged) < 0.02 * moved(plain), (moved(flagged), moved(plain))  # (rms eps: not exactly 0)
        out = flagged(feats, ids, pos)
        assert torch.allclose(out, flagged.norm(out), atol=1e-4)  # already normed (norm weights start at 1)
        assert torch.allclose(flagged.logits(out), flagged.lm_head(out), atol=1e-5)


def test_eagle3_1_flags_are_refused_on_other_algorithms(base):
    with pytest.raises(ConfigError, match="modeling.fc_norm.*eagle3"):
        make(base, "eagle2", fc_norm=True)


class PerfectDrafter:
    """Predicts the base's own next feature exactly (it reads it from the batch): every chain is accepted."""

    feature_layers, token_only = None, False

    def __init__(self, base, last):
        self.base_lm_head, self.last = base.lm_head, last

    def __call__(self, hidden, ids, pos, from_base=True, ttt_state=None):
        i, rows = int(pos[0, 0]), ids.shape[1]
        return torch.cat([self.last[:, 1 + i:], self.last[:, :1 + i]], 1)[:, :rows]

    def logits(self, out):
        return self.base_lm_head(out)

    def draft_to_target(self, x):
        return x


def test_simulated_acceptance_counts_greedy_matches(base):
    from test_hetero import batches

    batch = batches(base, 1)[0]  # the base's greedy continuations: every data token is the base's choice
    accepted, eligible = simulated_acceptance(PerfectDrafter(base, batch["hidden"]), batch, 3)
    n = int(eligible[0])
    assert n > 0 and accepted.tolist() == eligible.tolist() == [n, n, n]
    assert simulated_tau(accepted, eligible)[0] == 4.0
    weak, weak_eligible = simulated_acceptance(make(base, "eagle2").eval(), batch, 3)
    assert weak_eligible[0] == n and weak[0] < n
    # Greedy data: a position is reached exactly when the previous one was accepted.
    assert weak_eligible[1:].tolist() == weak[:-1].tolist()
    assert 1.0 <= simulated_tau(weak, weak_eligible)[0] < 4.0


def test_classic_draft_trains_decodes_losslessly_and_reloads(base, tmp_path):
    from test_hetero import batches

    drafter = make(base, "classic_draft", draft_family="qwen3", draft_hidden_size=16, draft_layers=2)
    assert drafter.lm.config.num_hidden_layers == 2 and drafter.lm.get_input_embeddings().weight.shape == (96, 16)
    data = batches(base, 3, seed=4)
    start, end, metrics = fit(drafter, data, AlgorithmSection(name="classic_draft", distill_alpha=0.5))
    assert end < start and {"ce", "kd", "acc"} <= metrics.keys()
    drafter.eval()
    # The engine's way (prefill with the first token, then one token at a time) equals the teacher-forced unroll.
    ids = data[0]["input_ids"][:1]
    with torch.no_grad():
        steps = [out for _, out in unroll(drafter, data[0]["hidden"][:1], ids, 3)]
        t = 8
        cache = DynamicCache()
        out, _ = drafter.prefill(None, ids[:, :1], ids[:, 1:t + 2], torch.arange(t + 1)[None], cache)
        assert torch.allclose(out[0, t], steps[0][0, t], atol=1e-5)
        for i in range(1, 3):
            out = drafter(None, ids[:, t + 1 + i:t + 2 + i], torch.tensor([[t + i]]), past_key_values=cache,
                          from_base=False)
            assert torch.allclose(out[0, 0], steps[i][0, t], atol=1e-5)
    assert_lossless(base, drafter)
    drafter.save_pretrained(tmp_path)
    again = load_drafter(tmp_path).attach_base(base.embed_tokens, base.lm_head).check_base(base).eval()
    a = speculative_decode(base, drafter, PROMPTS[0], 12, EOS, depth=3, top_k=3, total_tokens=8)
    b = speculative_decode(base, again, PROMPTS[0], 12, EOS, depth=3, top_k=3, total_tokens=8)
    assert a.tokens == b.tokens and a.accepted == b.accepted
