"""SLAYER-compatible CUBA-LIF blocks on time-first tensors ``[T, N, ...]``.

Each block is lava-dl's ``slayer.block.cuba`` block of the same name: same parameters, same
weight quantization (``quantize_weight``), same fixed-point neuron (``neuron.py``), same
``delay_shift`` (one step per layer, on by default as in lava-dl).  Time-first lets every
synapse run as one conv/matmul over ``T * N`` samples; ``to_lava``/``from_lava`` convert to
lava-dl's ``[N, C, H, W, T]`` at the boundary.

BatchNorm (``norm=True``) is placed so that it folds exactly into what Loihi runs: its scale
``s = gamma / sqrt(var + eps)`` multiplies the synaptic input, its shift ``beta - s * mean``
becomes the neuron's voltage bias (Loihi's ``bias``).  ``fold()`` returns the block with the
scale in the weights and the shift in ``bias``.  A scale-only BatchNorm (``BiasNorm`` with
``shift=None``, ``remove_norm_shifts``) writes no bias: what the chip then runs has no
input-independent drive at all (see ``timing.py``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import pair as _pair
from .kernels import int_synapse
from .neuron import CubaParams, cuba_spikes, cuba_spikes_padded, cuba_voltage
from .neuron import delay_shift as delay_one_step
from .quantize import quantize_bias, quantize_weight

__all__ = [
    "Affine", "BiasNorm", "Conv", "ConvSynapse", "Dense", "DenseSynapse", "Dropout", "Flatten",
    "LIF", "Pool", "PoolSynapse", "SpikingBlock", "Synapse", "from_lava", "remove_norm_shifts",
    "to_lava",
]


def to_lava(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, ...]`` -> lava-dl's ``[N, ..., T]``."""
    return x.movedim(0, -1)


def from_lava(x: torch.Tensor) -> torch.Tensor:
    """lava-dl's ``[N, ..., T]`` -> ``[T, N, ...]``."""
    return x.movedim(-1, 0).contiguous()


INIT_FLOOR_STEPS = 1.5


def grid_init_(weight: torch.Tensor, scale: int = 64) -> torch.Tensor:
    """Uniform init whose bound never falls below 1.5 steps of the 8-bit weight grid.

    ``U(-b, b)`` with ``b = max(1 / sqrt(fan_in), 1.5 * 2 / scale)``.  torch's default (and
    lava-dl's: ``kaiming_uniform_(a=sqrt(5))``, bound ``1 / sqrt(fan_in)``) falls under half a
    grid step (1/64) for ``fan_in > 4096``, and rounding then zeroes the whole layer.  With the
    floor, a fraction ``1 - (1/64) / b >= 2/3`` of the weights is nonzero after quantization at
    every size.  Measured at init on Spiking ResNet-18 48x48 (width 64, T=4, a random batch),
    torch's default vs lava-dl's ``weight_scale=2`` vs this floor: fewest nonzero quantized
    weights in a layer 0% / 0% / 66%, layers with zero gradient 20 / 20 / 0, main logits
    all zero / all zero / nonzero; VGG-11 48x48: 0% / 47% / 66%.  Layers followed by BatchNorm
    do not care about the larger scale; the readout's initial logits are larger (loss 9.4 at
    init on ResNet-18 48x48), which Adam absorbs in the first steps.
    """
    fan_in = weight[0].numel()
    bound = max(1.0 / math.sqrt(fan_in), INIT_FLOOR_STEPS * 2.0 / scale)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


class BiasNorm(nn.Module):
    """BatchNorm over channels whose shift becomes the neuron's voltage bias.

    ``z -> s * z`` with ``s = gamma / sqrt(var + eps)``, and ``bias = beta - s * mean`` added to
    the voltage every step.  Statistics are taken over time, batch and space.

    Scale-only (``shift`` is None, see ``remove_norm_shifts``): ``z -> s * z`` and no bias.
    ``mean`` and ``var`` are still the batch's (centred) statistics, so ``s`` normalises as
    BatchNorm does; only the shift, which the chip would run as a constant voltage bias from
    step 0, is gone.

    ``window = (head, tail)``: the statistics skip the first ``head`` and the last ``tail``
    steps of ``z`` (training and ``recalibrate_norms``), so that they cover the layer's own
    ``T`` steps ``[arrival, arrival + T)`` under ``loihi`` timing (set by ``set_timing``);
    ``(0, 0)``, every step, under ``ideal``.  The steps outside carry no input: before
    ``arrival`` the layer has only seen biases, after ``arrival + T`` only the tail of the
    input.
    """

    window = (0, 0)

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def windowed(self, z: torch.Tensor) -> torch.Tensor:
        """The steps of ``z`` (time first) that the statistics are taken over."""
        head, tail = self.window
        return z[head:z.shape[0] - tail] if head or tail else z

    def batch_stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(mean, biased var, count)`` per channel over ``z``'s window, in float32."""
        # float32 whatever the autocast dtype: the running buffers are float32, and lerp_
        # refuses a bfloat16 end (and bf16 sums of T*N*H*W terms are coarse)
        z32 = self.windowed(z).float()
        dims = [d for d in range(z32.dim()) if d != 2]
        return z32.mean(dims), z32.var(dims, unbiased=False), z32.numel() / z32.shape[2]

    def forward(self, z: torch.Tensor):
        """``z``: ``[T, N, C, ...]``; returns ``(scaled z, bias [C, 1, ...] or None)``."""
        if self.training:
            mean, var, n = self.batch_stats(z)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight / torch.sqrt(var + self.eps)
        view = [-1] + [1] * (z.dim() - 3)
        if self.shift is None:
            return z * scale.view(view), None
        return z * scale.view(view), (self.shift - scale * mean).view(view)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eval-mode ``(scale, bias or None)`` per channel."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        if self.shift is None:
            return scale.detach(), None
        return scale.detach(), (self.shift - scale * self.running_mean).detach()


def remove_norm_shifts(model: nn.Module) -> int:
    """Make every ``BiasNorm`` of ``model`` scale-only (drop its shift parameter); returns how
    many it changed.  Applied right after building, where every shift is still 0."""
    count = 0
    for m in model.modules():
        if isinstance(m, BiasNorm) and m.shift is not None:
            m.shift = None
            count += 1
    return count


def set_fold_aware(model: nn.Module, on: bool) -> int:
    """Switch every BiasNorm synapse of ``model`` to (or from) its deployed, folded form;
    returns how many synapses it switched."""
    count = 0
    for m in model.modules():
        if isinstance(m, Synapse) and m.norm is not None:
            m.fold_aware = on
            count += 1
    return count


@torch.no_grad()
def recalibrate_norms(model: nn.Module, loader, device: torch.device, max_batches: int) -> int:
    """Recompute every BiasNorm's running mean and variance as plain averages over up to
    ``max_batches`` training batches, with the weights as they are now ("precise BN").

    The exponential running averages lag behind weights that move fast; through spiking
    thresholds the lag compounds layer by layer (measured: a 20-layer ResNet at 94% train-mode
    vs 47% eval-mode accuracy on the same batch).  Eval mode, and the folded export, then see
    the statistics the final weights produce.  Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, BiasNorm)]
    if not norms or max_batches < 1 or any(getattr(m, "fold_aware", False)
                                           for m in model.modules()):
        return 0  # folded synapses do not run their norms: the statistics stay frozen
    sums = {m: [0.0, 0.0] for m in norms}

    def record(module, inputs, _output):
        mean, var, n = module.batch_stats(inputs[0])  # over the norm's own window
        sums[module][0] = sums[module][0] + mean
        sums[module][1] = sums[module][1] + var * n / max(n - 1, 1)

    hooks = [m.register_forward_hook(record) for m in norms]
    was_training, used = model.training, 0
    model.train()
    try:
        for x, _ in loader:
            if used >= max_batches:
                break
            model(x.to(device))
            used += 1
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if used:
        for m, (mean, var) in sums.items():
            m.running_mean.copy_(mean / used)
            m.running_var.copy_(var / used)
    return used


class Synapse(nn.Module):
    """Weights -> synaptic input ``z``, then the optional BiasNorm or voltage bias.

    ``forward`` returns ``(z, bias)``; ``bias`` (or None) is added to the voltage each step.

    ``fold_aware`` (set by training for its last ``--fold-finetune-epochs``): a synapse with a
    BiasNorm computes exactly what the export deploys, ``z = x * q(s * q(W))`` and bias
    ``qb(beta - s * mean)`` with the frozen running statistics (``deploy/fold.py``'s
    expressions), with straight-through gradients into ``W``, ``gamma`` and ``beta``: the
    network is fine-tuned in the form it is deployed in.
    """

    fold_aware = False

    def __init__(self, out_channels: int, norm: bool, bias: bool, scale: int):
        super().__init__()
        self.scale = scale
        self.norm = BiasNorm(out_channels) if norm else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def weighted(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_weight(x, quantize_weight(self.weight, self.scale))

    def apply_weight(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def grid_shift(self) -> int | None:
        """``j`` with weight grid ``2 / scale = 2**-j`` (None if not a power of two)."""
        half = self.scale / 2
        return int(math.log2(half)) if half >= 1 and 2 ** int(math.log2(half)) == half \
            else None

    def _folded_forward(self, x: torch.Tensor):
        norm = self.norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        w = quantize_weight(self.weight, self.scale)
        w = quantize_weight(w * scale.view([-1] + [1] * (w.dim() - 1)), self.scale)
        z = self.apply_weight(x, w)
        if norm.shift is None:
            return z, None
        bias = quantize_bias(norm.shift - scale * norm.running_mean, self.scale)
        return z, bias.view([-1] + [1] * (z.dim() - 3))

    def forward(self, x: torch.Tensor):
        if self.norm is not None and self.fold_aware:
            return self._folded_forward(x)
        z = self.weighted(x)
        if self.norm is not None:
            return self.norm(z)
        if self.bias is None:
            return z, None
        return z, quantize_bias(self.bias, self.scale).view([-1] + [1] * (z.dim() - 3))


class ConvSynapse(Synapse):
    """2-D convolution without synaptic bias (lava-dl's ``synapse.Conv``), weights quantized."""

    def __init__(self, in_features: int, out_features: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, weight_scale: float = 1, norm: bool = False,
                 bias: bool = False, scale: int = 64):
        super().__init__(out_features, norm, bias, scale)
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        weight = grid_init_(torch.empty(out_features, in_features // groups, *self.kernel_size),
                            scale)
        self.weight = nn.Parameter(weight_scale * weight)

    def apply_weight(self, x, w):
        # Channels-last: oneDNN's float convolution is 1.6-1.9x faster on it (forward; 1.5x
        # forward + backward, measured in benchmarks/bench_blocks.py's conv case), its output
        # stays channels-last, and the neuron runs in any dense layout without a copy, so
        # only a network's first convolution converts.  Integer arithmetic where it is exact
        # and pays (kernels/int_synapse.py), else F.conv2d.  CPU only: on CUDA the Triton
        # neuron wants contiguous input, and channels-last was not measured there.
        frames = x.flatten(0, 1)
        if frames.device.type == "cpu":
            frames = frames.contiguous(memory_format=torch.channels_last)
        z = int_synapse.conv2d(frames, w, None, self.stride, self.padding, self.dilation,
                               self.groups, grid_shift=self.grid_shift)
        return z.unflatten(0, x.shape[:2])


class DenseSynapse(Synapse):
    """Fully connected without synaptic bias (lava-dl's ``synapse.Dense``), weights quantized."""

    def __init__(self, in_neurons: int, out_neurons: int, weight_scale: float = 1,
                 norm: bool = False, bias: bool = False, scale: int = 64):
        super().__init__(out_neurons, norm, bias, scale)
        self.in_features, self.out_features = in_neurons, out_neurons
        weight = grid_init_(torch.empty(out_neurons, in_neurons), scale)
        self.weight = nn.Parameter(weight_scale * weight)

    def apply_weight(self, x, w):
        return int_synapse.linear(x, w, grid_shift=self.grid_shift)


class PoolSynapse(Synapse):
    """Sum pooling with one weight (lava-dl's ``synapse.Pool``).

    Like lava-dl, a size not divisible by the kernel is padded at the bottom/right with
    ``size % kernel`` zeros.
    """

    def __init__(self, kernel_size, stride=None, padding=0, weight_scale: float = 1,
                 scale: int = 64):
        super().__init__(1, False, False, scale)
        self.kernel_size = _pair(kernel_size)
        self.stride = self.kernel_size if stride is None else _pair(stride)
        self.padding = _pair(padding)
        self.weight = nn.Parameter(torch.tensor(float(weight_scale)), requires_grad=False)

    def apply_weight(self, x, weight):
        kh, kw = self.kernel_size
        h, w = x.shape[-2:]
        if h % kh or w % kw:  # F.pad copies even when it pads nothing
            x = F.pad(x, (0, w % kw, 0, h % kh))
        summed = F.avg_pool2d(x.flatten(0, 1), self.kernel_size, self.stride, self.padding,
                              divisor_override=1)
        return summed.unflatten(0, x.shape[:2]) * weight


def restarted(run, z: torch.Tensor, reset_step: int) -> torch.Tensor:
    """``run`` (a neuron over time) on ``z``, with current and voltage set to 0 at the start of
    step ``reset_step``: Lava's ``LIFReset`` (``deploy/to_lava.py``), the state before that step
    forgotten, gradient included."""
    if not 0 < reset_step < z.shape[0]:
        return run(z)
    return torch.cat([run(z[:reset_step]), run(z[reset_step:])])


class LIF(nn.Module):
    """A CUBA-LIF population: ``(z, bias) -> spikes``, then the optional one-step delay.

    ``reset_step`` (set by ``SpikingNet.set_timing``; 0: never): under ``loihi`` timing with
    voltage biases, the step at which this layer's input arrives.  Its state restarts there,
    so the steps before, when only the bias drove it, leave no trace (``pipeline/timing.py``).
    """

    reset_step = 0

    def __init__(self, neuron: CubaParams, delay_shift: bool = True):
        super().__init__()
        self.neuron, self.delay_shift = neuron, delay_shift
        # the spikes before the delay: a probe point for forward hooks (no parameters)
        self.spikes = nn.Identity()

    def forward(self, z: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.reset_step:
            spikes = self.spikes(restarted(lambda part: cuba_spikes(part, self.neuron, bias), z,
                                           self.reset_step))
            return delay_one_step(spikes) if self.delay_shift else spikes
        if not self.delay_shift:
            return self.spikes(cuba_spikes(z, self.neuron, bias))
        padded = cuba_spikes_padded(z, self.neuron, bias)
        self.spikes(padded[1:])
        return padded[:-1]


class SpikingBlock(nn.Module):
    """lava-dl's block: synapse -> CUBA-LIF -> (delay shift)."""

    def __init__(self, synapse: Synapse, neuron: CubaParams, delay_shift: bool):
        super().__init__()
        self.synapse = synapse
        self.lif = LIF(neuron, delay_shift)

    @property
    def neuron(self) -> CubaParams:
        return self.lif.neuron

    @property
    def weight(self) -> nn.Parameter:
        return self.synapse.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(*self.synapse(x))


class Conv(SpikingBlock):
    """lava-dl ``block.cuba.Conv``: 2-D convolution + CUBA-LIF."""

    def __init__(self, neuron: CubaParams, in_features: int, out_features: int, kernel_size,
                 stride=1, padding=0, dilation=1, groups: int = 1, weight_scale: float = 1,
                 norm: bool = False, bias: bool = False, delay_shift: bool = True):
        synapse = ConvSynapse(in_features, out_features, kernel_size, stride, padding, dilation,
                              groups, weight_scale, norm, bias, neuron.scale)
        super().__init__(synapse, neuron, delay_shift)


class Dense(SpikingBlock):
    """lava-dl ``block.cuba.Dense``: fully connected + CUBA-LIF."""

    def __init__(self, neuron: CubaParams, in_neurons: int, out_neurons: int,
                 weight_scale: float = 1, norm: bool = False, bias: bool = False,
                 delay_shift: bool = True):
        synapse = DenseSynapse(in_neurons, out_neurons, weight_scale, norm, bias, neuron.scale)
        super().__init__(synapse, neuron, delay_shift)


class Pool(SpikingBlock):
    """lava-dl ``block.cuba.Pool``: sum pooling + CUBA-LIF."""

    def __init__(self, neuron: CubaParams, kernel_size, stride=None, padding=0,
                 weight_scale: float = 1, delay_shift: bool = True):
        synapse = PoolSynapse(kernel_size, stride, padding, weight_scale, neuron.scale)
        super().__init__(synapse, neuron, delay_shift)


class Flatten(nn.Module):
    """``[T, N, C, H, W]`` -> ``[T, N, C*H*W]`` (lava-dl's C, H, W order)."""

    def forward(self, x):
        return x.flatten(2)


class Affine(nn.Module):
    """lava-dl ``block.cuba.Affine``: dense synapse + non-spiking CUBA; returns the voltage."""

    reset_step = 0  # as ``LIF.reset_step``: the readout restarts when its input arrives

    def __init__(self, neuron: CubaParams, in_neurons: int, out_neurons: int,
                 weight_scale: float = 1):
        super().__init__()
        self.neuron = neuron
        self.synapse = DenseSynapse(in_neurons, out_neurons, weight_scale, scale=neuron.scale)

    @property
    def weight(self) -> nn.Parameter:
        return self.synapse.weight

    def forward(self, x):
        return restarted(lambda part: cuba_voltage(part, self.neuron), self.synapse(x)[0],
                         self.reset_step)


class Dropout(nn.Dropout):
    """Dropout on spikes, independently per step (identity at inference)."""


