"""Loihi weight quantization (lava-dl's ``quantize_8bit`` pre-hook), shared by training and export.

Weights live on the grid ``2 / scale`` (even integers once multiplied by ``scale = 64``) and are
clamped to ``[-256, 254] / scale``: 8-bit signed mantissas on Loihi.  In training the rounding
passes gradients straight through and the clamp blocks them outside the range, as in lava-dl.
"""
from __future__ import annotations

import torch


class _RoundToStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, step):
        return torch.round(x / step) * step  # the exact expression lava-dl evaluates

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def quantize_weight(weight: torch.Tensor, scale: int = 64) -> torch.Tensor:
    """``round(w / (2/scale)) * (2/scale)`` clamped to ``[-256/scale, 254/scale]``."""
    return _RoundToStep.apply(weight, 2 / scale).clamp(-256 / scale, 254 / scale)


def weight_mantissa(weight: torch.Tensor, scale: int = 64) -> torch.Tensor:
    """Integer weights as Loihi stores them (``quantize_weight * scale``, even, in [-256, 254])."""
    return torch.round(quantize_weight(weight.detach(), scale) * scale).to(torch.int32)


def quantize_bias(bias: torch.Tensor, scale: int = 64) -> torch.Tensor:
    """Neuron bias on the ``1/scale`` grid (Loihi: mantissa x 2^6 on the 4096-scaled voltage)."""
    return _RoundToStep.apply(bias, 1 / scale)
