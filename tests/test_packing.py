"""Sequence packing (data/packing.py): LPT bins are valid, and a packed batch gives the same loss and gradients as
the same conversations unpacked — EAGLE-2, EAGLE-3 (fused and per-step), DFlash, DSpark, classic drafts, and the
online base forward — because attention, positions and targets stay inside each conversation."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from specforge_het.algorithms import check_packing, get_algorithm
from specforge_het.families.eagle3.train import eagle3_loss, eagle3_loss_per_step
from specforge_het.config.schema import AlgorithmSection, ConfigError, DataSection
from specforge_het.algorithms.unroll import same_segment
from specforge_het.data.packing import PackedDataset, lpt_bins, padding_fraction, segments_of
from specforge_het.data.shards import collate

from test_algorithms import LAYERS, eagle3_batches, make
from test_hetero import tiny_base


@pytest.fixture(scope="module")
def base():
    return tiny_base("llama")


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), min_size=1, max_size=60), capacity=st.integers(64, 200))
def test_lpt_bins_hold_every_sample_once_within_capacity(lengths, capacity):
    bins = lpt_bins(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in b) for b in bins]
    assert all(0 < load <= capacity for load in loads)
    # A row opens only when the sample fits none: at most one row is at most half full, so rows ≤ 2·total/cap + 1.
    assert len(bins) <= 2 * math.ceil(sum(lengths) / capacity) + 1
    assert sum(load <= capacity / 2 for load in loads) <= 1


def test_a_sample_longer_than_a_row_is_one_line():
    with pytest.raises(ConfigError, match="does not fit a packed row of 10"):
        lpt_bins([4, 11], 10)


def test_segments_and_targets_stay_inside_a_conversation():
    seg = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
    assert segments_of(seg) == [[(0, 3), (3, 5)], [(0, 6)]]
    assert same_segment(seg, 1, 5).tolist() == [[True, True, False, True, False], [True] * 5]
    assert same_segment(seg, 2, 5).tolist() == [[True, False, False, False, False], [True, True, True, True, False]]
    assert padding_fraction([[3, 1], [2, 2]]) == pytest.approx(1 - 8 / 10)


def conversations(base, lengths):
    """EAGLE-3-ready samples of different lengths (loss on every token after the 4th)."""
    rows = eagle3_batches(base, 1, seed=5)[0]
    out = []
    for j, n in enumerate(lengths):
        sample = {k: v[j % v.shape[0], :n] for k, v in rows.items()}
        out.append(sample)
    return out


def grads_of(drafter) -> dict:
    return {k: p.grad.clone() for k, p in drafter.named_parameters() if p.grad is not None}


def run_loss(name: str, alg: AlgorithmSection):
    algorithm = get_algorithm(alg.name)
    return lambda d, b: algorithm.loss(d, b, alg, training=False)


# Every anchor of every row (num_anchors ≥ row length), so the block drafters see the same blocks both ways.
LOSSES = {"eagle2": run_loss("eagle2", AlgorithmSection(name="eagle2")),
          "eagle3": lambda d, b: eagle3_loss(d, b, AlgorithmSection(name="eagle3", ttt_length=4)),
          "eagle3_per_step": lambda d, b: eagle3_loss_per_step(d, b, AlgorithmSection(name="eagle3", ttt_length=4)),
          "dflash": run_loss("dflash", AlgorithmSection(name="dflash", num_anchors=64)),
          "dspark": run_loss("dspark", AlgorithmSection(name="dspark", num_anchors=64)),
          "classic_draft": run_loss("classic_draft", AlgorithmSection(name="classic_draft"))}
MODELING = {"eagle3": {"lm_head": "own"}, "dflash": {"block_size": 4}, "dspark": {"block_size": 4},
            "classic_draft": {"draft_layers": 1}}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_packed_batch_gives_the_unpacked_loss_and_gradients(base, name):
    samples = conversations(base, [24, 9, 17, 6, 12])
    packed_set = PackedDataset(samples, capacity=30)
    assert len(packed_set) < len(samples)  # several conversations share a row
    algorithm = "eagle3" if name.startswith("eagle3") else name
    results = []
    for batch in (collate(samples), collate([packed_set[i] for i in range(len(packed_set))])):
        drafter = make(base, algorithm, **MODELING.get(algorithm, {}))
        loss, metrics = LOSSES[name](drafter, batch)
        loss.backward()
        results.append((loss.detach(), {k: float(v) for k, v in metrics.items()}, grads_of(drafter)))
    (plain, plain_metrics, plain_grads), (packed, packed_metrics, packed_grads) = results
    assert torch.allclose(packed, plain, rtol=1e-5), (packed, plain)
    for k in plain_metrics:
        assert packed_metrics[k] == pytest.approx(plain_metrics[k], rel=1e-4, abs=1e-6), k
    assert plain_grads
    for k in plain_grads:
        assert torch.allclose(packed_grads[k], plain_grads[k], rtol=1e-3, atol=1e-6), k


def test_online_features_of_a_packed_row_are_each_conversations_own(base):
    """Online training runs the base on packed rows: block-diagonal attention, positions from 0 per conversation."""
    samples = conversations(base, [24, 9, 17, 6, 12])
    packed_set = PackedDataset(samples, capacity=30)
    batch = collate([packed_set[i] for i in range(len(packed_set))])
    tokens_only = {k: batch[k] for k in ("input_ids", "loss_mask", "attention_mask", "segment_ids", "position_ids")}
    base.add_features(tokens_only, LAYERS)
    for row, spans in enumerate(segments_of(batch["segment_ids"])):
        for (start, end), j in zip(spans, packed_set.bins[row]):
            alone, aux = base.capture(samples[j]["input_ids"][None], None, LAYERS)
            assert torch.allclose(tokens_only["hidden"][row, start:end], alone[0], atol=1e-5)
            assert torch.allclose(tokens_only["aux_hidden"][row, start:end], aux[0], atol=1e-5)


def test_packing_without_boundaries_would_differ(base):
    """The equality above is not vacuous: read as one conversation, a packed row's second conversation attends to
    the first and gets other drafter outputs (and another loss)."""
    from specforge_het.algorithms.unroll import drafter_features, packed, unroll

    samples = conversations(base, [24, 9, 17, 6, 12])
    packed_set = PackedDataset(samples, capacity=30)
    batch = collate([packed_set[i] for i in range(len(packed_set))])
    drafter = make(base, "eagle3", lm_head="own")
    feats, ids = drafter_features(drafter, batch), batch["input_ids"]
    with torch.no_grad():
        kept = next(unroll(drafter, feats, ids, 1, packed(batch)))[1]
        leaky = next(unroll(drafter, feats, ids, 1))[1]
    row, spans = next((r, s) for r, s in enumerate(segments_of(batch["segment_ids"])) if len(s) > 1)
    (a, b), (c, d) = spans[:2]
    assert torch.allclose(kept[row, a:b], leaky[row, a:b], atol=1e-5)  # the first conversation sees nothing else
    assert (kept[row, c:d - 1] - leaky[row, c:d - 1]).abs().max() > 1e-2


def test_an_algorithm_that_cannot_pack_refuses_it():
    from specforge_het.algorithms import Algorithm

    unpacking = Algorithm("toy", loss=None, build=None)
    with pytest.raises(ConfigError, match="data.packing: not supported by the toy algorithm.*classic_draft, dflash"):
        check_packing(unpacking, DataSection(packing=True))
    check_packing(unpacking, DataSection(packing=False))
    for name in ("eagle2", "eagle3", "dflash", "dspark", "classic_draft"):
        check_packing(get_algorithm(name), DataSection(packing=True, mode="online"))
