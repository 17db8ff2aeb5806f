"""Low-bit weight quantization for substitute drafters: group-wise asymmetric round-to-nearest in plain torch (works
on CPU, any device), or HQQ (half-quadratic quantization, better at 4 bits and with fast GPU kernels) when installed.

`quantize_linears(module, bits, group_size, backend)` replaces every nn.Linear inside `module` by its quantized
substitute, in place. The torch path stores packed codes (two 4-bit codes per byte) plus a per-group scale and
minimum, and dequantizes on the fly in forward.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from ..config.errors import ConfigError

BACKENDS = ("auto", "hqq", "torch")


class GroupQuantLinear(torch.nn.Module):
    """y = x · dequant(W)ᵀ + b with W stored as `bits`-bit codes per group of `group_size` input columns."""

    def __init__(self, linear: torch.nn.Linear, bits: int = 4, group_size: int = 64):
        super().__init__()
        if bits not in (2, 4, 8):
            raise ConfigError(f"plugins.quant_bits: expected 2, 4 or 8, got {bits}")
        w = linear.weight.detach()
        out_f, in_f = w.shape
        g = group_size if group_size > 0 and in_f % group_size == 0 else in_f  # whole rows when it does not divide
        self.in_features, self.out_features, self.bits, self.group_size = in_f, out_f, bits, g
        self.dtype = w.dtype
        groups = w.float().reshape(out_f, in_f // g, g)
        lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        levels = 2 ** bits - 1
        scale = ((hi - lo) / levels).clamp_min(1e-8)
        codes = ((groups - lo) / scale).round().clamp(0, levels).to(torch.uint8).reshape(out_f, in_f)
        per_byte = 8 // bits
        codes = codes.reshape(out_f, in_f // per_byte, per_byte)
        shifts = torch.arange(per_byte, dtype=torch.uint8, device=w.device) * bits
        self.register_buffer("packed", (codes << shifts).sum(-1, dtype=torch.uint8))
        self.register_buffer("shifts", shifts)
        self.register_buffer("scale", scale.to(torch.float16 if w.dtype == torch.float16 else torch.float32))
        self.register_buffer("minimum", lo.to(self.scale.dtype))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(),
                                                                        requires_grad=False)

    def dequantize(self) -> torch.Tensor:
        mask = 2 ** self.bits - 1
        codes = (self.packed[..., None] >> self.shifts) & mask
        codes = codes.reshape(self.out_features, self.in_features // self.group_size, self.group_size)
        w = codes.to(self.scale.dtype) * self.scale + self.minimum
        return w.reshape(self.out_features, self.in_features).to(self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bits={self.bits}, group_size={self.group_size}"


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"plugins.quant_backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    have_hqq = importlib.util.find_spec("hqq") is not None
    if backend == "hqq" and not have_hqq:
        raise ConfigError("plugins.quant_backend hqq: HQQ is not installed: pip install 'specforge_het[quant]' "
                          "(or quant_backend torch)")
    return ("hqq" if have_hqq else "torch") if backend == "auto" else backend


def _hqq_linear(linear: torch.nn.Linear, bits: int, group_size: int) -> torch.nn.Module:
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    in_f = linear.in_features
    g = group_size if group_size > 0 and in_f % group_size == 0 else in_f
    copy = torch.nn.Linear(in_f, linear.out_features, bias=linear.bias is not None, device=linear.weight.device,
                           dtype=linear.weight.dtype)
    with torch.no_grad():  # HQQ consumes (frees) the layer it is given; the base's own must stay
        copy.weight.copy_(linear.weight)
        if linear.bias is not None:
            copy.bias.copy_(linear.bias)
    return HQQLinear(copy, BaseQuantizeConfig(nbits=bits, group_size=g), compute_dtype=linear.weight.dtype,
                     device=str(linear.weight.device))


def quantize_linears(module: torch.nn.Module, bits: int, group_size: int, backend: str = "auto") -> int:
    """Replace every nn.Linear under `module` by a `bits`-bit substitute → how many were replaced."""
    backend = resolve_backend(backend)
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            q = _hqq_linear(child, bits, group_size) if backend == "hqq" else GroupQuantLinear(child, bits, group_size)
            setattr(module, name, q)
            replaced += 1
        else:
            replaced += quantize_linears(child, bits, group_size, backend)
    return replaced
