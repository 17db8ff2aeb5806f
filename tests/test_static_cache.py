"""inference.static_cache: the pre-allocated SlotCache keeps exactly each row's kept entries, in order (property-based),
and decoding over it gives the eager tokens: base-only, every proposer (tree, classic draft model, DFlash block),
eager and compiled on CPU, and with CUDA graphs where CUDA is present (skipped, visibly, elsewhere)."""
import copy
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specforge_het.config import ConfigError
from specforge_het.inference.compiled import check_compilable, compile_for_decoding
from specforge_het.inference.engine import base_decode_batch, speculative_decode_batch
from specforge_het.inference.slot_cache import SlotCache, slot_capacity

from test_batch import STRATEGIES, setup  # noqa: F401  (the module fixture: trained drafters, eager references)
from test_dflash import MORE_PROMPTS, make
from test_hetero import EOS, tiny_base


def decode_all(base, drafter, prompts, **params):
    return [r for i in range(0, len(prompts), 4)
            for r in speculative_decode_batch(base, drafter, prompts[i:i + 4], 16, EOS, **params)]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_slot_cache_keeps_each_rows_kept_entries_in_order(data):
    bsz, width, scratch = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4)), 5
    steps = data.draw(st.integers(1, 4))
    cache = SlotCache(width + steps * scratch, scratch)
    ids = itertools.count(1)

    def entries(q):  # [B, 1, q, 1], every entry a distinct id
        return torch.tensor([[next(ids) for _ in range(q)] for _ in range(bsz)], dtype=torch.float32)[:, None, :, None]

    prompt = entries(width)
    keys, _ = cache.update(prompt, prompt, 0)
    assert keys.shape[2] == width
    valid = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=width, max_size=width),
                                            min_size=bsz, max_size=bsz)))
    cache.start(valid)
    expected = [prompt[b, 0, valid[b], 0].tolist() for b in range(bsz)]
    for _ in range(steps):
        written = []
        for q in data.draw(st.lists(st.integers(1, 2), min_size=1, max_size=2)):  # one or two forwards
            new = entries(q)
            keys, _ = cache.update(new, new, 0)
            written.append(new)
            assert keys.shape[2] == cache.capacity + sum(w.shape[2] for w in written)
        new = torch.cat(written, 2)
        if data.draw(st.booleans()):
            cache.discard()
            continue
        n = new.shape[2]
        src = torch.tensor([data.draw(st.permutations(range(n))) for _ in range(bsz)])
        keep = torch.tensor([data.draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _ in range(bsz)])
        cache.commit(src, keep)
        for b in range(bsz):
            expected[b] += [new[b, 0, int(s), 0].item() for s, k in zip(src[b], keep[b]) if k]
    layer = cache.layers[0]
    for b in range(bsz):
        assert layer.keys[b, 0, :cache.capacity, 0][cache.committed_valid[b]].tolist() == expected[b]
        assert layer.values[b, 0, :cache.capacity, 0][cache.committed_valid[b]].tolist() == expected[b]
        assert int(cache.end[b]) == width + len(expected[b]) - int(valid[b].sum())
    rows = torch.arange(bsz - 1, -1, -1)
    cache.select_rows(rows)
    assert cache.layers[0].keys[0, 0, :cache.capacity, 0][cache.committed_valid[0]].tolist() == expected[-1]


def test_capacity_is_bucketed():
    assert slot_capacity(10, 16, 5) == 64 and slot_capacity(50, 16, 5) == 128


@pytest.fixture(scope="module")
def static(setup):  # noqa: F811
    base, drafters, prompts, refs = setup
    base.static_cache = True
    yield base, drafters, prompts, refs
    base.static_cache = False


def test_static_base_decoding_gives_the_eager_tokens(static):
    base, _, prompts, refs = static
    assert [r.tokens for i in range(0, 12, 4) for r in base_decode_batch(base, prompts[i:i + 4], 16, EOS)] == refs


@pytest.mark.parametrize("algorithm,strategy", [("eagle2", "chain"), ("eagle2", "budget"), ("eagle3", "tree"),
                                                ("classic_draft", "tree")])
def test_static_decoding_gives_the_eager_tokens(static, algorithm, strategy):
    base, drafters, prompts, refs = static
    results = decode_all(base, drafters[algorithm], prompts, **STRATEGIES[strategy])
    assert [r.tokens for r in results] == refs
    # Rows accepted different lengths and finished at different steps: the in-place compaction ran with ragged
    # paths, and rows left the static buffers.
    accepted = [a for r in results for a in r.accepted]
    assert sum(accepted) > 0 and len(set(accepted)) > 1
    assert any(r.steps != results[0].steps for r in results)


def test_static_block_drafter_gives_the_eager_tokens():
    base = tiny_base("llama")
    drafter = make(base).eval()
    refs = [r.tokens for r in speculative_decode_batch(base, drafter, MORE_PROMPTS, 12, EOS, depth=4, top_k=2,
                                                        total_tokens=6)]
    base.static_cache = True
    for params in (dict(depth=4, top_k=1, total_tokens=4), dict(depth=4, top_k=2, total_tokens=6)):
        got = speculative_decode_batch(base, drafter, MORE_PROMPTS, 12, EOS, **params)
        assert [r.tokens for r in got] == refs, params


def test_static_compiled_decoding_gives_the_eager_tokens(setup):  # noqa: F811
    base, drafters, prompts, refs = setup
    base, drafter = copy.deepcopy(base), copy.deepcopy(drafters["eagle2"])
    base.static_cache = True
    compile_for_decoding(base, drafter)
    results = decode_all(base, drafter, prompts[:4], **STRATEGIES["chain"])  # one batch: fewer shapes to compile
    assert [r.tokens for r in results] == refs[:4]
    assert base.compiled is not None and drafter.compiled_forward


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (none here)")
def test_cuda_graphs_give_the_eager_tokens(setup):  # noqa: F811
    base, drafters, prompts, _ = setup
    base, drafter = copy.deepcopy(base), copy.deepcopy(drafters["eagle3"])
    base.model.cuda()
    base.device = torch.device("cuda")
    drafter.cuda()
    refs = [r.tokens for r in decode_all(base, drafter, prompts, **STRATEGIES["tree"])]
    base.static_cache = True
    compile_for_decoding(base, drafter)  # mode reduce-overhead: CUDA graphs per bucket
    for _ in range(2):  # the first pass records the graphs, the second replays them
        assert [r.tokens for r in decode_all(base, drafter, prompts, **STRATEGIES["tree"])] == refs


def test_static_cache_refuses_plugins_in_one_line():
    with pytest.raises(ConfigError, match="inference.static_cache: not with plugins \\(subspec"):
        check_compilable(["subspec"], "model", "inference.static_cache")
