"""Layer offloading: the base's first N decoder blocks stay on the accelerator; the others live in pinned CPU memory
and are streamed in for their forward, with the next block's copy started (on a side CUDA stream) while the
current block runs, and dropped again afterwards. Large verification trees pay off most here: one streamed pass
over the weights verifies a whole tree.

On CPU the same hooks run with a no-op device move (the "host" copy already is the compute copy), so the
code path is exercised by the tests; the byte counts and fetch counts are kept either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config.errors import ConfigError
from .registry import Plugin, register_plugin


@dataclass
class OffloadStats:
    fetches: int = 0  # blocks brought onto the compute device
    prefetched: int = 0  # of which were already on their way (copy overlapped with the previous block)
    bytes_moved: int = 0  # host → device bytes (0 on CPU: the move is a no-op)
    offloaded_blocks: int = 0
    offloaded_bytes: int = 0  # weight bytes kept off the compute device


@dataclass
class _Block:
    module: torch.nn.Module
    host: dict  # parameter name → host tensor (pinned on CUDA)
    pending: dict | None = None  # parameter name → device tensor being copied in
    event: object = None  # CUDA event that completes the pending copy
    params: dict = field(default_factory=dict)  # parameter name → Parameter


class LayerOffloader:
    """Offloads base blocks keep_first_n.. of `blocks` (a ModuleList) with forward hooks; `remove()` undoes it."""

    def __init__(self, blocks: torch.nn.ModuleList, device: torch.device, keep_first_n: int, prefetch: bool = True):
        if not 0 <= keep_first_n <= len(blocks):
            raise ConfigError(f"plugins.keep_first_n_layers_on_gpu: expected 0..{len(blocks)} (the base has "
                              f"{len(blocks)} blocks), got {keep_first_n}")
        self.device, self.prefetch = torch.device(device), prefetch
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.stats = OffloadStats()
        self.blocks: list[_Block] = []
        self.handles = []
        for module in list(blocks)[keep_first_n:]:
            params = dict(module.named_parameters())
            host = {}
            for name, p in params.items():
                h = p.detach().to("cpu")
                host[name] = h.pin_memory() if self.cuda else h
                self.stats.offloaded_bytes += h.numel() * h.element_size()
            block = _Block(module, host, params=params)
            self.blocks.append(block)
            self._release(block)
        self.stats.offloaded_blocks = len(self.blocks)
        for i, block in enumerate(self.blocks):
            self.handles.append(block.module.register_forward_pre_hook(self._before(i)))
            self.handles.append(block.module.register_forward_hook(self._after(i)))
        if self.cuda:
            torch.cuda.empty_cache()

    def _release(self, block: _Block) -> None:
        for name, p in block.params.items():
            p.data = block.host[name]  # on CUDA this frees the device copy; on CPU it is the same tensor

    def _start_copy(self, block: _Block) -> None:
        if block.pending is not None:
            return
        if self.cuda:
            self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.copy_stream):
                block.pending = {n: h.to(self.device, non_blocking=True) for n, h in block.host.items()}
                block.event = torch.cuda.Event()
                block.event.record(self.copy_stream)
            self.stats.bytes_moved += sum(h.numel() * h.element_size() for h in block.host.values())
        else:
            block.pending = {n: h.to(self.device) for n, h in block.host.items()}  # no-op move on CPU

    def _before(self, i: int):
        def hook(module, args):
            block = self.blocks[i]
            self.stats.prefetched += block.pending is not None
            self._start_copy(block)
            if self.cuda:
                torch.cuda.current_stream(self.device).wait_event(block.event)
            for name, p in block.params.items():
                p.data = block.pending[name]
                if self.cuda:  # the copy stream allocated it; the compute stream now uses it
                    p.data.record_stream(torch.cuda.current_stream(self.device))
            block.pending = None
            self.stats.fetches += 1
            if self.prefetch:  # the next offloaded block (the first again, for the next forward)
                self._start_copy(self.blocks[(i + 1) % len(self.blocks)])
        return hook

    def _after(self, i: int):
        def hook(module, args, output):
            self._release(self.blocks[i])
        return hook

    def remove(self) -> None:
        """Put every block back on the compute device and drop the hooks."""
        for h in self.handles:
            h.remove()
        for block in self.blocks:
            for name, p in block.params.items():
                p.data = block.host[name].to(self.device)
            block.pending = None


def offload_base(base, keep_first_n: int, prefetch: bool = True) -> LayerOffloader:
    """Offload a FrozenBase's blocks keep_first_n.. (its embedding, final norm and lm_head stay on the device)."""
    from ..modeling.base import decoder_parts

    blocks, _ = decoder_parts(base.model)
    return LayerOffloader(blocks, base.device, keep_first_n, prefetch)


def apply(spec, cfg, base, enabled):
    p = cfg.plugins
    spec.offloader = offload_base(base, p.keep_first_n_layers_on_gpu, p.offload_prefetch)
    return spec


register_plugin(Plugin(
    "offload", 2,
    "base blocks from plugins.keep_first_n_layers_on_gpu on live in CPU memory, streamed in with prefetch", apply))
