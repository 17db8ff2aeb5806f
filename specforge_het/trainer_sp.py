"""The Trainer's side of sequence parallelism (`training.sequence_parallel = P`): groups of P consecutive processes
share each sequence (modeling/sequence_parallel.py), so every process of a group must read the same batch.

accelerate shards the training data over every process; here it is sharded over the groups instead (process r reads
the shard of data-parallel rank r // P), so one epoch is still every sample once and a step consumes
(processes ÷ P) × per_device_train_batch_size sequences.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Optional

from .algorithms import ALGORITHMS
from .config.errors import ConfigError
from .modeling.sequence_parallel import SequenceParallel, check_sizes, make_groups

log = logging.getLogger(__name__)


def check_algorithm(algorithm, size: int) -> None:
    """Only losses that split their rows over a group (`Algorithm.sequence_parallel`) can honour P > 1."""
    if size > 1 and not algorithm.sequence_parallel:
        able = ALGORITHMS.where(lambda a: a.sequence_parallel)
        raise ConfigError(f"training.sequence_parallel: not supported by the {algorithm.name} algorithm (supported: "
                          f"{', '.join(able)}); use 1")


def setup(size: int, world_size: int, heads: int, deepspeed: Optional[dict]) -> Optional[SequenceParallel]:
    """This process's group (None for P = 1), after checking P against the launch and the drafter."""
    problem = check_sizes(size, world_size, heads)
    if problem:
        raise ConfigError(problem)
    if size == 1:
        return None
    if deepspeed and deepspeed.get("zero_optimization", {}).get("stage", 0) == 3:
        raise ConfigError("training.sequence_parallel does not combine with DeepSpeed ZeRO-3 (its head is "
                          "gathered only inside its own forward); use --@fsdp or ZeRO-2")
    sp = make_groups(size)
    log.info(f"train: sequence parallel, {world_size // size} group(s) of {size} processes; each process trains "
             f"1/{size} of every sequence's rows")
    return sp


def prepare_per_group(accelerator, sp: SequenceParallel, data_loader, device_placement=None,
                      slice_fn_for_dispatch=None):
    """accelerate's Accelerator.prepare_data_loader, with the processes of a group counted as one data-parallel
    rank."""
    from accelerate.data_loader import prepare_data_loader

    prepared = prepare_data_loader(
        data_loader, accelerator.device, num_processes=accelerator.num_processes // sp.size,
        process_index=accelerator.process_index // sp.size, split_batches=accelerator.split_batches,
        put_on_device=accelerator.device_placement if device_placement is None else device_placement,
        rng_types=accelerator.rng_types.copy(), dispatch_batches=accelerator.dispatch_batches,
        even_batches=accelerator.even_batches, slice_fn_for_dispatch=slice_fn_for_dispatch,
        use_seedable_sampler=accelerator.use_seedable_sampler, data_seed=accelerator.dataloader_config.data_seed,
        non_blocking=accelerator.non_blocking, use_stateful_dataloader=accelerator.use_stateful_dataloader)
    accelerator._dataloaders.append(prepared)  # what accelerate's own method does: saved/restored with the state
    return prepared


@contextmanager
def data_per_group(accelerator, sp: Optional[SequenceParallel]):
    """Within the block, data loaders the accelerator prepares are sharded per group (no-op without sp)."""
    if sp is None:
        yield
        return
    accelerator.prepare_data_loader = lambda loader, **kw: prepare_per_group(accelerator, sp, loader, **kw)
    try:
        yield
    finally:
        del accelerator.prepare_data_loader  # back to the class's method
