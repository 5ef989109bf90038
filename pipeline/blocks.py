"""SLAYER-compatible CUBA-LIF blocks on time-first tensors ``[T, N, ...]``.

Each block is lava-dl's ``slayer.block.cuba`` block of the same name: same parameters, same
weight quantization (``quantize_weight``), same fixed-point neuron (``neuron.py``), same
``delay_shift`` (one step per layer, on by default as in lava-dl).  Time-first lets every
synapse run as one conv/matmul over ``T * N`` samples; ``to_lava``/``from_lava`` convert to
lava-dl's ``[N, C, H, W, T]`` at the boundary.

BatchNorm (``norm=True``) is placed so that it folds exactly into what Loihi runs: its scale
``s = gamma / sqrt(var + eps)`` multiplies the synaptic input, its shift ``beta - s * mean``
becomes the neuron's voltage bias (Loihi's ``bias``).  ``fold()`` returns the block with the
scale in the weights and the shift in ``bias``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .neuron import CubaParams, cuba_spikes, cuba_voltage, delay_shift
from .quantize import quantize_bias, quantize_weight


def to_lava(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, ...]`` -> lava-dl's ``[N, ..., T]``."""
    return x.movedim(0, -1)


def from_lava(x: torch.Tensor) -> torch.Tensor:
    """lava-dl's ``[N, ..., T]`` -> ``[T, N, ...]``."""
    return x.movedim(-1, 0).contiguous()


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class BiasNorm(nn.Module):
    """BatchNorm over channels whose shift becomes the neuron's voltage bias.

    ``z -> s * z`` with ``s = gamma / sqrt(var + eps)``, and ``bias = beta - s * mean`` added to
    the voltage every step.  Statistics are taken over time, batch and space.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, z: torch.Tensor):
        """``z``: ``[T, N, C, ...]``; returns ``(scaled z, bias [C, 1, ...])``."""
        dims = [d for d in range(z.dim()) if d != 2]
        if self.training:
            mean = z.mean(dims)
            var = z.var(dims, unbiased=False)
            with torch.no_grad():
                n = z.numel() / z.shape[2]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight / torch.sqrt(var + self.eps)
        view = [-1] + [1] * (z.dim() - 3)
        return z * scale.view(view), (self.shift - scale * mean).view(view)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode ``(scale, bias)`` per channel."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return scale.detach(), (self.shift - scale * self.running_mean).detach()


class _SpikingBlock(nn.Module):
    """Synapse -> (BiasNorm) -> CUBA-LIF -> (delay shift).  Subclasses define ``synapse``."""

    def __init__(self, neuron: CubaParams, out_channels: int, norm: bool, bias: bool,
                 delay_shift: bool):
        super().__init__()
        self.neuron = neuron
        self.delay_shift = delay_shift
        self.norm = BiasNorm(out_channels) if norm else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def synapse(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _bias_view(self, like: torch.Tensor) -> torch.Tensor:
        return quantize_bias(self.bias, self.neuron.scale).view([-1] + [1] * (like.dim() - 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.synapse(x)
        bias = None
        if self.norm is not None:
            z, bias = self.norm(z)
        elif self.bias is not None:
            bias = self._bias_view(z)
        s = cuba_spikes(z, self.neuron, bias)
        return delay_shift(s) if self.delay_shift else s


class Conv(_SpikingBlock):
    """lava-dl ``block.cuba.Conv``: 2-D convolution (no synaptic bias) + CUBA-LIF."""

    def __init__(self, neuron: CubaParams, in_features: int, out_features: int, kernel_size,
                 stride=1, padding=0, dilation=1, groups: int = 1, weight_scale: float = 1,
                 norm: bool = False, bias: bool = False, delay_shift: bool = True):
        super().__init__(neuron, out_features, norm, bias, delay_shift)
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        weight = torch.empty(out_features, in_features // groups, *self.kernel_size)
        # torch.nn.Conv3d's default init with a (k, k, 1) kernel, as lava-dl's synapse has
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.weight = nn.Parameter(weight_scale * weight)

    def synapse(self, x):
        w = quantize_weight(self.weight, self.neuron.scale)
        z = F.conv2d(x.flatten(0, 1), w, None, self.stride, self.padding, self.dilation,
                     self.groups)
        return z.unflatten(0, x.shape[:2])


class Dense(_SpikingBlock):
    """lava-dl ``block.cuba.Dense``: fully connected (no synaptic bias) + CUBA-LIF."""

    def __init__(self, neuron: CubaParams, in_neurons: int, out_neurons: int,
                 weight_scale: float = 1, norm: bool = False, bias: bool = False,
                 delay_shift: bool = True):
        super().__init__(neuron, out_neurons, norm, bias, delay_shift)
        self.in_features, self.out_features = in_neurons, out_neurons
        weight = torch.empty(out_neurons, in_neurons)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.weight = nn.Parameter(weight_scale * weight)

    def synapse(self, x):
        return F.linear(x, quantize_weight(self.weight, self.neuron.scale))


class Pool(_SpikingBlock):
    """lava-dl ``block.cuba.Pool``: sum pooling (weight ``weight_scale``) + CUBA-LIF.

    Like lava-dl, a size not divisible by the kernel is padded at the bottom/right with
    ``size % kernel`` zeros.
    """

    def __init__(self, neuron: CubaParams, kernel_size, stride=None, padding=0,
                 weight_scale: float = 1, delay_shift: bool = True):
        super().__init__(neuron, 1, False, False, delay_shift)
        self.kernel_size = _pair(kernel_size)
        self.stride = self.kernel_size if stride is None else _pair(stride)
        self.padding = _pair(padding)
        self.weight = nn.Parameter(torch.tensor(float(weight_scale)), requires_grad=False)

    def synapse(self, x):
        kh, kw = self.kernel_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, w % kw, 0, h % kh))
        summed = F.avg_pool2d(x.flatten(0, 1), self.kernel_size, self.stride, self.padding,
                              divisor_override=1)
        return summed.unflatten(0, x.shape[:2]) * quantize_weight(self.weight, self.neuron.scale)


class Flatten(nn.Module):
    """``[T, N, C, H, W]`` -> ``[T, N, C*H*W]`` (lava-dl's C, H, W order)."""

    def forward(self, x):
        return x.flatten(2)


class Affine(nn.Module):
    """lava-dl ``block.cuba.Affine``: dense synapse + non-spiking CUBA; returns the voltage."""

    def __init__(self, neuron: CubaParams, in_neurons: int, out_neurons: int,
                 weight_scale: float = 1):
        super().__init__()
        self.neuron = neuron
        self.in_features, self.out_features = in_neurons, out_neurons
        weight = torch.empty(out_neurons, in_neurons)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.weight = nn.Parameter(weight_scale * weight)

    def forward(self, x):
        return cuba_voltage(F.linear(x, quantize_weight(self.weight, self.neuron.scale)),
                            self.neuron)


class Dropout(nn.Dropout):
    """Dropout on spikes, independently per step (identity at inference)."""
