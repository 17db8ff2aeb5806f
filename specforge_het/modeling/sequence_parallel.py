"""Ulysses sequence parallelism for the training-time-test unroll: one sequence split over the P ranks of a group.

Every rank of a group reads the same batch and owns a contiguous slice of its rows (`rows`): the drafter's row-wise
parts (fc, embedding, MLP, norms, head and loss) run on that slice alone, so activation and teacher memory are 1/P
of one process's. Attention is the one place rows meet: before it, an all-to-all over the group turns
[B, h, L/P, d] (all heads, my rows) into [B, h/P, L, d] (my heads, all rows); each rank attends over the whole
sequence for its share of heads (the TTT diagonals are per row, so they come along), and a second all-to-all turns
the result back (DeepSpeed-Ulysses, Jacobs et al. 2023). The adjoint of an equal-split all-to-all is the same
all-to-all, which is the backward here.

Loss scaling: each rank's loss is its rows' share of the batch loss (local sum ÷ the group's all-reduced
denominator), multiplied by P, because data parallel averages gradients over every process: the average over the
P ranks of P·(share) is the sum of the shares, the gradient of the whole batch's loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

NAME = "sequence_parallel"  # ttt_state key holding the SequenceParallel of the unroll


class _AllToAll(torch.autograd.Function):
    """Equal-split all-to-all over dim 0 ([P, ...]: slice j goes to rank j), differentiable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        x = x.contiguous()  # slices are taken by memory order: a permuted view would send the wrong rows
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        out = torch.empty_like(grad)
        dist.all_to_all_single(out, grad, group=ctx.group)
        return out, None


@dataclass(frozen=True)
class SequenceParallel:
    """A group of `size` ranks sharing one sequence; `rank` is this process's index inside the group."""

    group: object
    rank: int
    size: int

    def rows(self, total: int) -> tuple[int, int]:
        """(start, count) of this rank's rows when `total` rows are split (the last rank's tail is padding)."""
        count = -(-total // self.size)
        return self.rank * count, count

    def seq_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, h, L/P, d] (every head, my rows) → [B, h/P, L, d] (my heads, every row)."""
        B, h, c, d = x.shape
        parts = x.reshape(B, self.size, h // self.size, c, d).permute(1, 0, 2, 3, 4)  # [P: dest rank, B, h/P, c, d]
        got = _AllToAll.apply(parts, self.group)  # [P: source rank = row block, B, h/P, c, d]
        return got.permute(1, 2, 0, 3, 4).reshape(B, h // self.size, self.size * c, d)

    def heads_to_seq(self, x: torch.Tensor) -> torch.Tensor:
        """[B, h/P, L, d] → [B, h, L/P, d]: the inverse of seq_to_heads."""
        B, hp, L, d = x.shape
        parts = x.reshape(B, hp, self.size, L // self.size, d).permute(2, 0, 1, 3, 4)  # [P: dest = row block, ...]
        got = _AllToAll.apply(parts, self.group)  # [P: source rank = head group, B, h/P, c, d]
        return got.permute(1, 0, 2, 3, 4).reshape(B, hp * self.size, L // self.size, d)

    @torch.no_grad()
    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """The group's sums of scalar statistics (denominators, counts), one all-reduce for all of them."""
        stacked = torch.stack([v.detach().float() for v in values])
        dist.all_reduce(stacked, group=self.group)
        return list(stacked.unbind())


def make_groups(size: int) -> Optional[SequenceParallel]:
    """Split the world into consecutive groups of `size` ranks (rank r is in group r // size) → this process's
    group, or None when size is 1. Every process must call it (group creation is collective)."""
    if size == 1:
        return None
    world, me = dist.get_world_size(), dist.get_rank()
    mine = None
    for first in range(0, world, size):  # its own communicator even when it spans the world: the gradient
        ranks = list(range(first, first + size))  # all-reduce of data parallel never interleaves with it
        group = dist.new_group(ranks)
        if me in ranks:
            mine = SequenceParallel(group, me - first, size)
    return mine


def check_sizes(size: int, world_size: int, heads: int) -> Optional[str]:
    """Why `training.sequence_parallel = size` cannot run here, or None."""
    if size < 1:
        return f"training.sequence_parallel: expected a group size ≥ 1, got {size}"
    if size == 1:
        return None
    if world_size % size:
        return (f"training.sequence_parallel: {size} does not divide the {world_size} processes launched "
                f"(launch a multiple of {size}: accelerate launch --num_processes N)")
    if heads % size:
        return (f"training.sequence_parallel: {size} does not divide the drafter's {heads} attention heads "
                "(Ulysses splits heads over the group)")
    return None
