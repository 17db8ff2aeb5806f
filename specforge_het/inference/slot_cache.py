"""A static (pre-allocated) KV cache for speculative decoding: fixed shapes every step, in-place tree compaction.

Per layer one buffer [B, heads, capacity + scratch, head_dim], allocated at the first write (the prefill) and
never reallocated while the batch keeps its rows, so a compiled or CUDA-graph-captured forward sees the same
addresses and shapes every step:

    slots [0, capacity)                       committed tokens, per row; `valid` [B, capacity] marks the real ones
                                              (left padding stays invalid) and `end` [B] is each row's next free slot
    slots [capacity, capacity + scratch)      this step's new entries: a verify step's tree, a drafter's fed nodes

The prefill writes slots [0, T). Every later forward writes its q new entries into the scratch after the ones
written since the last commit (`fill`) and attends to keys [0, capacity + fill + q): the caller's mask is the
committed slots' validity plus its own pattern over the scratch. `commit(src, keep)` then moves, per row, the kept
scratch entries to that row's next free slots (one gather and one scatter per layer, no host synchronisation)
and empties the scratch; `discard()` empties it without keeping anything (a drafter's tree after a proposal).
Rows accept different lengths, so rows fill at different speeds: each keeps its own `end`.
Attention reads all `capacity` committed slots every step (masked), the price of fixed shapes.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


def _static_address(*tensors: torch.Tensor) -> None:
    """Tell dynamo these buffers keep their address (mutated in place): CUDA graphs may capture them."""
    if not torch.compiler.is_compiling():
        for t in tensors:
            torch._dynamo.mark_static_address(t)


class SlotLayer(CacheLayerMixin):
    """One decoder layer's buffers; where it writes is the owning SlotCache's bookkeeping plus its own fill."""

    is_compileable = True

    def __init__(self, owner: "SlotCache"):
        super().__init__()
        self.owner = owner
        self.fill = 0  # scratch entries written since the last commit / discard

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        bsz, heads, _, _ = key_states.shape
        size = self.owner.capacity + self.owner.scratch
        self.keys = key_states.new_zeros(bsz, heads, size, key_states.shape[-1])
        self.values = value_states.new_zeros(bsz, heads, size, value_states.shape[-1])
        _static_address(self.keys, self.values)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:  # the prefill: slots [0, T)
            self.lazy_initialization(key_states, value_states)
            width = key_states.shape[2]
            if width > self.owner.capacity:
                raise ValueError(f"prompt width {width} exceeds the static cache's capacity {self.owner.capacity}")
            self.keys[:, :, :width] = key_states
            self.values[:, :, :width] = value_states
            return self.keys[:, :, :width], self.values[:, :, :width]
        q = key_states.shape[2]
        start = self.owner.capacity + self.fill
        if self.fill + q > self.owner.scratch:
            raise ValueError(f"static cache: {self.fill + q} scratch entries needed, {self.owner.scratch} allocated")
        self.keys[:, :, start:start + q] = key_states
        self.values[:, :, start:start + q] = value_states
        self.fill += q
        return self.keys[:, :, :start + q], self.values[:, :, :start + q]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.capacity + self.fill + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.capacity + self.fill if self.is_initialized else 0

    def get_max_length(self) -> int:
        return self.owner.capacity + self.owner.scratch


class SlotCache(Cache):
    """See the module docstring. capacity: committed slots per row (prompt width + every token the row may still
    commit); scratch: the most entries written between two commits."""

    def __init__(self, capacity: int, scratch: int):
        super().__init__(layer_class_to_replicate=lambda: SlotLayer(self))
        self.capacity, self.scratch = capacity, scratch
        self.valid = self.end = None  # [B, capacity + scratch] bool (the scratch part stays False), [B] long

    def start(self, valid: torch.Tensor) -> None:
        """After the prefill: which of the prompt's T slots are real [B, T]; every row continues at slot T."""
        bsz, width = valid.shape
        self.valid = torch.zeros(bsz, self.capacity + self.scratch, dtype=torch.bool, device=valid.device)
        self.valid[:, :width] = valid
        self.end = torch.full((bsz,), width, dtype=torch.long, device=valid.device)
        _static_address(self.valid, self.end)

    @property
    def committed_valid(self) -> torch.Tensor:
        """[B, capacity] which committed slots are real: the prefix part of every attention mask."""
        return self.valid[:, :self.capacity]

    def commit(self, src: torch.Tensor, keep: torch.Tensor) -> None:
        """Per row, move the scratch entries src [B, W] (scratch-relative) whose keep [B, W] is True to the row's
        next free slots, in order, and empty the scratch. Entries not kept are written back onto themselves (a
        no-op with a static shape)."""
        src = src + self.capacity
        dst = torch.where(keep, self.end[:, None] + keep.long().cumsum(1) - 1, src)
        for layer in self.layers:
            heads, dim = layer.keys.shape[1], layer.keys.shape[-1]
            src_idx = src[:, None, :, None].expand(-1, heads, -1, dim)
            dst_idx = dst[:, None, :, None].expand(-1, heads, -1, dim)
            layer.keys.scatter_(2, dst_idx, layer.keys.gather(2, src_idx))
            layer.values.scatter_(2, dst_idx, layer.values.gather(2, src_idx))
            layer.fill = 0
        self.valid.scatter_(1, dst, keep)
        self.end.add_(keep.sum(1))

    def discard(self) -> None:
        """Empty the scratch: nothing written since the last commit is kept."""
        for layer in self.layers:
            layer.fill = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the sequences `rows` (finished ones leave the batch): new, smaller buffers — another shape
        bucket for compiled graphs."""
        for layer in self.layers:
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
            _static_address(layer.keys, layer.values)
        if self.valid is not None:
            self.valid, self.end = self.valid.index_select(0, rows), self.end.index_select(0, rows)
            _static_address(self.valid, self.end)


def started(cache, prompt_valid: torch.Tensor) -> torch.Tensor:
    """After a prefill into `cache`: the committed slots' validity the next masks start from — a SlotCache's live
    view, or for a growing cache the prefill's own mask (its caller appends to it)."""
    if isinstance(cache, SlotCache):
        cache.start(prompt_valid)
        return cache.committed_valid
    return prompt_valid


def kept_valid(cache, valid: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The committed slots' validity after `select_rows(cache, rows)`: a started SlotCache's (already selected),
    else `valid`'s rows."""
    if isinstance(cache, SlotCache) and cache.valid is not None:
        return cache.committed_valid
    return valid[rows]


def slot_capacity(prompt_width: int, max_new_tokens: int, scratch: int, bucket: int = 64) -> int:
    """Committed slots a row can need: its prompt, the tokens it commits before it finishes (fewer than
    max_new_tokens), and one more step's worth (the last step can commit up to a whole path) — rounded up to a
    multiple of `bucket`, so that batches of similar lengths share compiled graphs."""
    need = prompt_width + max_new_tokens + scratch
    return -(-need // bucket) * bucket
