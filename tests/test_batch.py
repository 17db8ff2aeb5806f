"""Batch > 1 with per-sequence acceptance: ragged prompts decoded 4 at a time, each row token-identical to its own
batch-1 base greedy decode, for chain, tree and budget drafting and for the EAGLE-2 / EAGLE-3 / classic drafters;
rows finish at different times (EOS, max tokens) and leave the batch; batched sampling is exact too."""
import pytest
import torch

from specforge_het.config.schema import AlgorithmSection
from specforge_het.inference.engine import (Sampling, base_decode, base_decode_batch, hf_greedy, left_pad,
                                            speculative_decode_batch)

from test_algorithms import eagle3_batches, fit, make
from test_hetero import EOS, batches, tiny_base, train_steps

STRATEGIES = {"chain": dict(depth=4, top_k=1, total_tokens=4),
              "tree": dict(depth=4, top_k=3, total_tokens=12),
              "budget": dict(depth=5, top_k=3, total_tokens=16, best_first=True)}


def ragged_prompts(n=12, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 96, (int(length),), generator=g).tolist()
            for length in torch.randint(1, 13, (n,), generator=g)]


@pytest.fixture(scope="module")
def setup():
    base = tiny_base("llama")
    data = batches(base, 6, seed=3)
    eagle2 = make(base, "eagle2")
    train_steps(eagle2, data, 60)
    eagle3 = make(base, "eagle3")
    fit(eagle3, eagle3_batches(base, 6, seed=3), AlgorithmSection(name="eagle3", ttt_length=3), steps=60)
    classic = make(base, "classic_draft", draft_family="qwen3", draft_hidden_size=16, draft_layers=2)
    fit(classic, data, AlgorithmSection(name="classic_draft"), steps=60)
    prompts = ragged_prompts()
    refs = [base_decode(base, p, 16, EOS).tokens for p in prompts]
    return base, {"eagle2": eagle2.eval(), "eagle3": eagle3.eval(), "classic_draft": classic.eval()}, prompts, refs


def test_left_pad_positions_count_real_tokens():
    ids, valid, pos = left_pad([[5, 6, 7], [9]], torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert valid.tolist() == [[True, True, True], [False, False, True]]
    assert pos[0].tolist() == [0, 1, 2] and pos[1, 2] == 0


def test_batched_base_decode_matches_transformers(setup):
    base, _, prompts, refs = setup
    assert refs == [hf_greedy(base, p, 16, EOS) for p in prompts]
    out = [r.tokens for i in range(0, 12, 4) for r in base_decode_batch(base, prompts[i:i + 4], 16, EOS)]
    assert out == refs


@pytest.mark.parametrize("algorithm", ["eagle2", "eagle3", "classic_draft"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_batch4_ragged_greedy_is_identical_per_sequence(setup, algorithm, strategy):
    base, drafters, prompts, refs = setup
    results = [r for i in range(0, 12, 4)
               for r in speculative_decode_batch(base, drafters[algorithm], prompts[i:i + 4], 16, EOS,
                                                 **STRATEGIES[strategy])]
    assert [r.tokens for r in results] == refs
    # Acceptance is per sequence: rows of one step accepted different numbers of draft tokens, and some drafts
    # were accepted at all (otherwise the test would not exercise the ragged cache compaction).
    accepted = [a for r in results for a in r.accepted]
    assert sum(accepted) > 0 and len(set(accepted)) > 1
    assert any(r.steps != results[0].steps for r in results)  # rows finished at different steps


def test_rows_finishing_at_eos_leave_the_batch(setup):
    """A row whose continuation hits EOS early stops there; the others go on to max_new_tokens."""
    base, drafters, prompts, refs = setup
    long = 40
    refs = [base_decode(base, p, long, EOS).tokens for p in prompts[:4]]
    out = speculative_decode_batch(base, drafters["eagle2"], prompts[:4], long, EOS, **STRATEGIES["tree"])
    assert [r.tokens for r in out] == refs
    streamed = {}
    speculative_decode_batch(base, drafters["eagle2"], prompts[:4], long, EOS, **STRATEGIES["chain"],
                             on_tokens=lambda i, new: streamed.__setitem__(i, new))
    assert [prompts[i] + streamed[i] for i in range(4)] == refs


def test_batched_sampling_rows_are_independent_draws(setup):
    """Four copies of one prompt sampled in one batch are four independent samples: they differ, and each row's
    first token follows the base's next-token distribution (a chi-square style check over many batches)."""
    base, drafters, prompts, _ = setup
    prompt = prompts[0]
    sampling = dict(temperature=1.0, top_p=1.0)
    with torch.no_grad():
        probs = torch.softmax(base.model(torch.tensor([prompt])).logits[0, -1].float(), -1)
    counts = torch.zeros_like(probs)
    rows = []
    for seed in range(150):
        out = speculative_decode_batch(base, drafters["eagle2"], [prompt] * 4, 6, set(), **STRATEGIES["tree"],
                                       sampling=Sampling(**sampling, seed=seed))
        rows.append([tuple(r.tokens) for r in out])
        for r in out:
            counts[r.tokens[len(prompt)]] += 1
    assert sum(len(set(r)) > 1 for r in rows) > 100
    tv = 0.5 * float((counts / counts.sum() - probs).abs().sum())
    gen = torch.Generator().manual_seed(0)
    noise = max(0.5 * float((torch.bincount(torch.multinomial(probs, 600, True, generator=gen), minlength=probs.numel())
                             / 600 - probs).abs().sum()) for _ in range(20))
    assert tv <= noise * 1.25, (tv, noise)


def test_per_row_limits_and_cancellation(setup):
    """The server's batch: each row its own max_new_tokens (equal to that row decoded alone with that limit), and a
    row cancelled mid-way stops at the next step while the others go on untouched."""
    base, drafters, prompts, refs = setup
    limits = [3, 16, 9, 1]
    out = speculative_decode_batch(base, drafters["eagle2"], prompts[:4], limits, EOS, **STRATEGIES["tree"])
    for p, n, r in zip(prompts[:4], limits, out):
        assert r.tokens == base_decode(base, p, n, EOS).tokens
    seen = {}

    def watch(r, new):
        seen[r] = len(new)

    out = speculative_decode_batch(base, drafters["eagle2"], prompts[:4], 16, set(), **STRATEGIES["chain"],
                                   on_tokens=watch, cancelled=lambda r: r == 1 and seen.get(1, 0) >= 2)
    assert 2 <= out[1].new_tokens < 16 and out[1].tokens == base_decode(base, prompts[1], 16, set()).tokens[
        :len(out[1].tokens)]
    assert [r.new_tokens for i, r in enumerate(out) if i != 1] == [16, 16, 16]
