"""Sequence parallelism (Ulysses all-to-all in the TTT attention) over 2 gloo processes: each process holds half of
every sequence's rows, and the loss, metrics and data-parallel-averaged gradients equal one process's over the whole
batch — unpacked (an odd row count: the last rank's tail is padding), packed, with a reduced vocabulary, and for
every loss of the menu. The Trainer run (every rank of a group reads the same batch) is in test_training.py."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from specforge_het.families.eagle3.train import eagle3_loss
from specforge_het.config.schema import AlgorithmSection, ConfigError
from specforge_het.data.packing import PackedDataset
from specforge_het.data.shards import collate
from specforge_het.modeling.sequence_parallel import SequenceParallel, check_sizes, make_groups

CASES = {  # name → (modeling switches, algorithm switches, packed)
    "plain": ({"lm_head": "own"}, {"ttt_length": 4}, False),
    "packed": ({"lm_head": "own"}, {"ttt_length": 3}, True),
    "shared_head_tv": ({}, {"ttt_length": 2, "loss": "tv"}, False),
    "eagle3_1_jsd": ({"lm_head": "own", "fc_norm": True, "norm_output": True}, {"ttt_length": 3, "loss": "jsd"},
                     False),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch_for(base, packed: bool) -> dict:
    from test_packing import conversations

    if not packed:
        from test_algorithms import eagle3_batches

        return eagle3_batches(base, 1, seed=3)[0]  # 4 rows of 24 tokens: 23 rows, split 12 + 11 (+1 padding)
    samples = conversations(base, [24, 9, 17, 6, 12])
    return collate([PackedDataset(samples, capacity=30)[i] for i in range(3)])


def loss_and_grads(base, case: str, sp):
    from test_algorithms import make

    modeling, algorithm, packed = CASES[case]
    drafter = make(base, "eagle3", **modeling)
    loss, metrics = eagle3_loss(drafter, batch_for(base, packed), AlgorithmSection(name="eagle3", **algorithm), sp=sp)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in drafter.named_parameters() if p.grad is not None}
    return loss.detach(), {k: float(v) for k, v in metrics.items()}, grads


def worker(rank: int, port: int, case: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from test_hetero import tiny_base

        base = tiny_base("llama")
        ref_loss, ref_metrics, ref_grads = loss_and_grads(base, case, None)
        sp = make_groups(2)
        loss, metrics, grads = loss_and_grads(base, case, sp)
        # What the Trainer's data parallel does: average the losses (as logged) and gradients over the processes.
        dist.all_reduce(loss)
        torch.testing.assert_close(loss / 2, ref_loss, rtol=1e-5, atol=1e-6)
        for k, v in ref_metrics.items():
            assert metrics[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (k, metrics[k], v)
        assert ref_grads.keys() == grads.keys() and ref_grads
        for k, g in grads.items():
            dist.all_reduce(g)
            torch.testing.assert_close(g / 2, ref_grads[k], rtol=1e-4, atol=1e-6, msg=k)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_process_sequence_parallel_equals_one_process(case):
    mp.spawn(worker, args=(free_port(), case), nprocs=2)


def layout_worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        sp = make_groups(2)
        full = torch.arange(2 * 6 * 8 * 3, dtype=torch.float32).view(2, 6, 8, 3)  # [B, h, L, d]
        mine = full[:, :, rank * 4:(rank + 1) * 4].clone().requires_grad_()
        heads = sp.seq_to_heads(mine)
        assert torch.equal(heads, full[:, rank * 3:(rank + 1) * 3])  # my heads, every row
        back = sp.heads_to_seq(heads * 2)
        assert torch.equal(back, 2 * mine.detach())
        back.sum().backward()  # the adjoint routes every gradient back to the rows it came from
        assert torch.equal(mine.grad, torch.full_like(mine, 2.0))
    finally:
        dist.destroy_process_group()


def test_all_to_all_layouts_and_their_adjoint():
    mp.spawn(layout_worker, args=(free_port(),), nprocs=2)


def test_rows_split_and_size_checks():
    sp = SequenceParallel(group=None, rank=1, size=4)
    assert sp.rows(23) == (6, 6) and sp.rows(24) == (6, 6) and SequenceParallel(None, 3, 4).rows(23) == (18, 6)
    assert check_sizes(1, 1, 4) is None and check_sizes(2, 4, 4) is None
    assert "does not divide the 3 processes" in check_sizes(2, 3, 4)
    assert "does not divide the drafter's 6 attention heads" in check_sizes(4, 4, 6)
    assert "expected a group size ≥ 1" in check_sizes(0, 1, 4)
    assert make_groups(1) is None


def test_token_only_drafters_refuse_sequence_parallel():
    from specforge_het.algorithms.unroll import unroll
    from test_algorithms import make
    from test_hetero import tiny_base

    base = tiny_base("llama")
    drafter = make(base, "classic_draft", draft_layers=1)
    ids = torch.zeros(1, 8, dtype=torch.long)
    with pytest.raises(ConfigError, match="sequence_parallel"):
        next(unroll(drafter, None, ids, 2, sp=SequenceParallel(None, 0, 2)))
