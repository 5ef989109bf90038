"""Spiking networks built from ``blocks.py``: a small CNN, VGG-11, Spiking and SEW ResNets.

Every model is a ``SpikingNet``: an encoder for the frames, a list of ``stages`` (the "blocks"
b_1..b_n of the shortcut-heads paper: each returns spikes ``[T, N, C, H, W]``, so a head can
attach after any of them) and a non-spiking ``readout`` giving the logits (mean voltage over
time of an Affine CUBA population fed by the flattened last spike map).

Residuals:
- Spiking ResNet (``resnet*``): ``o = SN(F(x) + shortcut(x))``, the residual is added *before*
  the neuron, so every stage outputs binary spikes: the deployable form.
- SEW ResNet (``sew_resnet*``): ``o = g(SN(F(x)), x)`` with g = ADD (``a + x``: integer counts,
  **not binary**, so the next layer does MACs rather than ACs), AND (``a * x``) or IAND
  (``(1 - a) * x``, binary).
- ``rezero=True`` gates each residual branch by a scalar initialised at 0 (ReZero).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import BATCHNORMS, DEFAULT_BATCHNORM
from .blocks import (Affine, BiasNorm, Conv, ConvSynapse, Dense, Flatten, LIF, Pool,
                     remove_norm_shifts)
from .geometry import conv_output_size
from .neuron import CubaParams
from .timing import (arrival, check_timing, has_voltage_bias, hops, keep_resets, pad_steps,
                     set_window, shift)

ENCODINGS = ("binary", "counts")
# BatchNorm forms (``build_model(batchnorm=...)``, ``config.BATCHNORMS``): ``scale`` multiplies
# only, so the folded net has no voltage bias; ``shift`` is the full BatchNorm, whose shift
# becomes each neuron's bias


def encode_frames(frames: torch.Tensor, encoding: str) -> torch.Tensor:
    """Frames of event counts -> what the input layer receives.

    ``binary``: a pixel spikes in a bin where it saw any event (``counts > 0``), so the input is
    spikes even for frames resized by interpolation (fractional counts); ``counts``: as is.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return (frames > 0).to(frames.dtype) if encoding == "binary" else frames


class SpikingNet(nn.Module):
    """Encoder -> stages -> readout.  ``forward(x [N, T, C, H, W]) -> logits [N, classes]``.

    ``timing`` (``pipeline/timing.py``): ``ideal``, or ``loihi`` (one step per synaptic hop;
    the input padded with ``latency`` zero frames and the readout averaged over steps
    ``[readout_start, T + input_pad_steps)``).  ``set_timing`` switches it, and gives every
    BatchNorm its layer's window and each stage output its first step (``stage_starts``).
    """

    timing = "ideal"
    stage_starts: tuple[int, ...] = ()
    # loihi timing with voltage biases: each neuron restarts at its input's arrival
    # (``LIF.reset_step``); False only to rebuild checkpoints trained before the reset existed
    resets_at_arrival = True

    def __init__(self, stages: list[nn.Module], readout: nn.Module, encoding: str,
                 stage_channels: list[int]):
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.encoding = encoding
        self.stages = nn.ModuleList(stages)
        self.readout = readout
        self.stage_channels = stage_channels
        self.stage_starts = (0,) * len(self.stages)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T, C, H, W]`` frames of event counts -> time-first network input (the
        ``T`` steps the chip receives, before any padding)."""
        return encode_frames(x.transpose(0, 1), self.encoding)

    @property
    def latency(self) -> int:
        """Synaptic hops from the input to the readout neurons (the chip's latency in steps
        under ``loihi`` timing)."""
        return sum(hops(stage) for stage in self.stages) + hops(self.readout)

    @property
    def input_pad_steps(self) -> int:
        """Zero frames appended to the ``T`` input steps."""
        return self.latency if self.timing == "loihi" else 0

    @property
    def readout_start(self) -> int:
        """First step of the readout voltage that the logits average."""
        return self.latency if self.timing == "loihi" else 0

    def set_timing(self, timing: str) -> "SpikingNet":
        """Switch every hop's delay on (``loihi``) or off (``ideal``), in place."""
        self.timing = check_timing(timing)
        loihi = timing == "loihi"
        for m in self.modules():
            if isinstance(m, LIF):
                m.delay_shift = loihi
            elif isinstance(m, ResidualBlock):
                m.skip_delay = int(loihi)
        start, starts = int(loihi), []  # the input's hop into the first synapse
        for stage in self.stages:
            start = arrival(stage, start, self.input_pad_steps)
            starts.append(start)
        arrival(self.readout, start, self.input_pad_steps)
        keep_resets(self, loihi and self.resets_at_arrival and has_voltage_bias(self))
        self.stage_starts = tuple(starts)
        return self

    def stage_window(self, index: int, h: torch.Tensor) -> torch.Tensor:
        """Stage ``index``'s output ``h`` over its own ``T`` steps
        ``[stage_starts[index], + T)`` (what a shortcut head averages)."""
        start = self.stage_starts[index]
        return h[start:start + h.shape[0] - self.input_pad_steps]

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded ``[T, N, ...]`` input, padded with ``input_pad_steps`` zero frames (what the
        exported graph is run on)."""
        return pad_steps(self.encode(x), self.input_pad_steps)

    def _hidden(self, x: torch.Tensor):
        h = self.network_input(x)
        if self.timing == "loihi":
            h = shift(h, 1)  # the input's hop into the first synapse
        return h

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.readout(h)[self.readout_start:].mean(0)

    def forward_stages(self, x: torch.Tensor):
        """Returns ``(stage outputs [T, N, ...] each, logits [N, classes])``."""
        h = self._hidden(x)
        outputs = []
        for stage in self.stages:
            h = stage(h)
            outputs.append(h)
        return outputs, self._logits(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._hidden(x)
        for stage in self.stages:
            h = stage(h)
        return self._logits(h)


def _flat_readout(neuron: CubaParams, channels: int, size: tuple[int, int],
                  num_classes: int) -> nn.Sequential:
    """Flatten the last spike map and read it out with an Affine CUBA population.

    Measured on ndigits (resnet20, 2 epochs): 83% test accuracy with this readout, 17% with a
    global average pool in front of the Affine, which shares each channel's gradient among
    all positions and starts from near-constant logits.  It is also what Loihi runs as is:
    one dense layer on spikes (netx), Flatten + Linear + CubaLI (NIR).
    """
    return nn.Sequential(Flatten(), Affine(neuron, channels * size[0] * size[1], num_classes))


# --- small CNN and VGG ----------------------------------------------------------------------

def _conv(neuron, cin, cout, k=3, stride=1, norm=True, delay_shift=False):
    return Conv(neuron, cin, cout, k, stride=stride, padding=k // 2, norm=norm,
                delay_shift=delay_shift)


def cnn(*, in_channels, num_classes, input_size, neuron, encoding, width=16,
        pool_weight: float | None = None, first_weight_scale: float = 2.0, **_):
    """Sequential net for small sensors (ndigits 34x34), netx-exportable.

    conv3x3(w) -> sumpool2 | conv3x3(2w) -> sumpool2 | dense(128) | affine readout.  The first
    conv drops its padding when that keeps both pooled sizes even (34 -> 32 -> 16 -> 8):
    Loihi/NIR have no counterpart of lava-dl's one-sided padding of odd sizes.

    Without BatchNorm, nothing brings the layers to threshold quickly, and at T=4 the dense
    layer and readout heard nothing at init.  Two changes fix it: the sum pools relay
    (``pool_weight``, default ``relay_weight_for(neuron)`` = 84/64: a lone spike crosses in the
    step it arrives, not one step later), and the first conv starts at twice the init scale
    (``first_weight_scale``).  ``make demo``'s command (4 epochs, evolutionary heads), test
    accuracy over seeds, 2026-12-07 (docs/training.md, "No dead layers at initialisation"):
    T=4 (3 seeds) 84.5 -> 88.8 (p = 0.003); T=8 (5 seeds) 91.5 -> 90.8 (p = 0.52); the relay
    alone gave 86.2 and 92.3, but left the readout without input at T=4 on random frames.
    """
    pool_weight = relay_weight_for(neuron) if pool_weight is None else pool_weight
    h, w = input_size
    pad = 1 if h % 4 == 0 and w % 4 == 0 else 0
    h, w = (h - 2 + 2 * pad, w - 2 + 2 * pad)
    for _ in range(2):  # sum pooling, with lava-dl's padding of odd sizes
        h, w = (h + h % 2) // 2, (w + w % 2) // 2
    stages = [
        nn.Sequential(Conv(neuron, in_channels, width, 3, padding=pad, delay_shift=False,
                           weight_scale=first_weight_scale),
                      Pool(neuron, 2, weight_scale=pool_weight, delay_shift=False)),
        nn.Sequential(_conv(neuron, width, 2 * width, norm=False),
                      Pool(neuron, 2, weight_scale=pool_weight, delay_shift=False)),
        nn.Sequential(Flatten(), Dense(neuron, 2 * width * h * w, 128, delay_shift=False)),
    ]
    return SpikingNet(stages, Affine(neuron, 128, num_classes), encoding,
                      [width, 2 * width, 128])


VGG11 = [[64], [128], [256, 256], [512, 512], [512, 512]]


def vgg11(*, in_channels, num_classes, input_size, neuron, encoding, width=64, **_):
    """VGG-11 with BatchNorm (folded into weights and voltage bias at export) and sum pooling.

    One stage per resolution; each but the last (the global readout follows it) ends in a
    spiking 2x2 sum pool: 48x48 -> 3x3, 32x32 -> 2x2.
    """
    stages, cin, size = [], in_channels, tuple(input_size)
    for i, widths in enumerate(VGG11):
        layers = []
        for c in widths:
            c = c * width // 64
            layers.append(_conv(neuron, cin, c))
            cin = c
        if i < len(VGG11) - 1:
            layers.append(Pool(neuron, 2, delay_shift=False))
            size = tuple((v + v % 2) // 2 for v in size)
        stages.append(nn.Sequential(*layers))
    channels = [widths[-1] * width // 64 for widths in VGG11]
    return SpikingNet(stages, _flat_readout(neuron, cin, size, num_classes), encoding, channels)


# --- residual networks ----------------------------------------------------------------------

# Initial BatchNorm gain of each residual branch's last synapse (torchvision's
# ``zero_init_residual``, kept just above 0 so that every layer has a gradient at init).  With
# gain 1, every block adds a unit-variance random current to the spikes it passes on, and the
# input is lost with depth.  Measured on resnet18 width 16 at init (ndigits, T=6; a linear probe
# fit on 400 samples' time-averaged stage outputs, accuracy on 200 others, stages 1-4):
# gain 1: 0.80 / 0.74 / 0.41 / 0.16; 0.5: 0.80 / 0.75 / 0.63 / 0.23; 0.2: 0.81 / 0.83 / 0.74 /
# 0.46; 0.05: 0.82 / 0.83 / 0.82 / 0.64; 0 (ReZero): 0.82 / 0.85 / 0.82 / 0.68.
BRANCH_GAMMA = 0.05

# Grid steps (of 1/64) above the threshold at which a relay passes one spike on: a Spiking
# ResNet's identity shortcut (``identity_weight``) and the cnn's sum pools (``pool_weight``).
# At weight 1 (below the threshold, 1.25) a lone spike crosses only on its current's tail, one
# step late, so every relay in a chain adds a step of lag (at T=4 the cnn's two pools and dense
# layer left the readout without input at init); at 84/64 it crosses in the step it arrives
# (tests/test_deploy_nir.py measures both).  Identity: at init on the
# issue-17 repro (resnet18 width 16, T=6) stages 2-4 were silent for steps 0-2 and the logits
# varied by 0.10 between samples; at 84/64 (4 steps above 80/64) every stage fired from step
# 0-1, the spread was 1.59, and the repro's validation accuracy went from 25.9% to 37.1%.
# Pools: see ``cnn``.
IDENTITY_MARGIN = 4


def relay_weight_for(neuron: CubaParams) -> float:
    """The weight at which one spike crosses a relay (an identity shortcut, a sum pool):
    ``IDENTITY_MARGIN`` grid steps above the threshold, rounded up to an even mantissa
    (lava-dl's weight grid; 84/64 for threshold 1.25)."""
    mant = neuron.v_th_mant + IDENTITY_MARGIN
    return (mant + mant % 2) / neuron.scale


# ``ResidualBlock.kind``: Spiking ResNet, or SEW with its connect function
RESIDUAL_KINDS = ("spiking", "ADD", "AND", "IAND")


class ResidualBlock(nn.Module):
    """Basic residual block; ``kind`` picks Spiking ResNet (``spiking``) or SEW (``ADD`` ...).

    Spiking:  ``s1 = SN(BN(conv1 x))``, ``o = SN(g * BN(conv2 s1) + shortcut(x))``
    SEW:      ``a = SN(g * BN(conv2 s1))``, ``o = connect(a, shortcut(x))``
    ``g`` is 1, or a learnable scalar initialised at 0 with ``rezero``.  The shortcut is the
    identity, or conv1x1 + BN (+ SN for SEW, whose shortcut must carry spikes) when the shape
    changes.  A Spiking ResNet's identity adds its input spikes with ``identity_weight``
    (``relay_weight_for(neuron)``, just above the threshold, so that one spike crosses the
    block; 1.0 in checkpoints written before it existed); it exports as a depthwise 1x1
    synapse of that weight.  ``skip_delay`` (1 under ``loihi`` timing, else 0) delays the shortcut's input by
    that many steps, and a SEW identity term by twice that, so that it arrives with the two-hop
    main path it joins.
    """

    skip_delay = 0

    def __init__(self, neuron: CubaParams, cin: int, cout: int, stride: int, kind: str,
                 rezero: bool, identity_weight: float | None = None):
        super().__init__()
        self.kind = kind
        self.identity_weight = float(relay_weight_for(neuron) if identity_weight is None
                                     else identity_weight)
        self.conv1 = ConvSynapse(cin, cout, 3, stride, 1, norm=True, scale=neuron.scale)
        self.lif1 = LIF(neuron, delay_shift=False)
        self.conv2 = ConvSynapse(cout, cout, 3, 1, 1, norm=True, scale=neuron.scale)
        with torch.no_grad():
            self.conv2.norm.weight.fill_(BRANCH_GAMMA)
        self.lif2 = LIF(neuron, delay_shift=False)
        self.gate = nn.Parameter(torch.zeros(())) if rezero else None
        self.down = None
        if stride != 1 or cin != cout:
            self.down = ConvSynapse(cin, cout, 1, stride, 0, norm=True, scale=neuron.scale)
            self.down_lif = LIF(neuron, delay_shift=False) if kind != "spiking" else None

    def _branch(self, x):
        z, bias = self.conv2(self.lif1(*self.conv1(x)))
        if self.gate is not None:
            z, bias = self.gate * z, None if bias is None else self.gate * bias
        return z, bias

    def forward(self, x):
        z, bias = self._branch(x)
        xs = shift(x, self.skip_delay)
        if self.kind == "spiking":
            if self.down is None:
                if self.identity_weight != 1.0:
                    xs = self.identity_weight * xs
                return self.lif2(z + xs, bias)
            zd, bias_d = self.down(xs)
            return self.lif2(z + zd, _add(bias, bias_d))
        a = self.lif2(z, bias)
        shortcut = (shift(x, 2 * self.skip_delay) if self.down is None
                    else self.down_lif(*self.down(xs)))
        if self.kind == "ADD":
            return a + shortcut
        if self.kind == "AND":
            return a * shortcut
        return (1 - a) * shortcut  # IAND


@dataclass(frozen=True)
class ResNetSpec:
    stem: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    strides: tuple[int, ...]


RESNETS = {
    "resnet18": ResNetSpec(64, (64, 128, 256, 512), (2, 2, 2, 2), (1, 2, 2, 2)),
    "resnet34": ResNetSpec(64, (64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2)),
    "resnet19": ResNetSpec(128, (128, 256, 512), (3, 3, 2), (1, 2, 2)),  # tdBN's ResNet-19
    "resnet20": ResNetSpec(16, (16, 32, 64), (3, 3, 3), (1, 2, 2)),  # He et al. CIFAR ResNet-20
}


def resnet(spec: ResNetSpec, kind: str, *, in_channels, num_classes, input_size, neuron,
           encoding, width=64, rezero=False, depths=None, identity_weight=None, **_):
    """Stem conv3x3 + BN + SN, then one stage per width, then the flat readout; ``width``
    scales channels (64 = paper)."""
    scaled = [c * width // 64 for c in spec.widths]
    depths = spec.depths if depths is None else tuple(depths)
    stem = nn.Sequential(_conv(neuron, in_channels, spec.stem * width // 64))
    cin, stages, size = spec.stem * width // 64, [], tuple(input_size)
    for i, (cout, depth, stride) in enumerate(zip(scaled, depths, spec.strides)):
        size = conv_output_size(size, 3, stride, 1)  # the stage's first 3x3 conv
        layers = [stem] if i == 0 else []
        for j in range(depth):
            layers.append(ResidualBlock(neuron, cin, cout, stride if j == 0 else 1, kind, rezero,
                                        identity_weight))
            cin = cout
        stages.append(nn.Sequential(*layers))
    return SpikingNet(stages, _flat_readout(neuron, cin, size, num_classes), encoding, scaled)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Sum of two voltage biases, either of which may be absent (scale-only BatchNorm)."""
    return b if a is None else (a if b is None else a + b)


def _resnet(name: str, kind: str) -> Callable[..., SpikingNet]:
    def build(connect=None, **kw):
        return resnet(RESNETS[name], kind if kind == "spiking" else connect or kind, **kw)

    build.__doc__ = f"{name} ({'Spiking ResNet' if kind == 'spiking' else 'SEW ResNet'})"
    return build


@hops.register
def _(module: ResidualBlock) -> int:
    return 2


@arrival.register
def _(module: ResidualBlock, start: int, pad: int) -> int:
    set_window(module.conv1, start, pad)
    module.lif1.reset_step = start
    branch = start + int(module.lif1.delay_shift)
    set_window(module.conv2, branch, pad)
    module.lif2.reset_step = branch
    if module.down is not None:
        set_window(module.down, start + module.skip_delay, pad)
        if module.down_lif is not None:
            module.down_lif.reset_step = start + module.skip_delay
    return branch + int(module.lif2.delay_shift)


MODELS: dict[str, Callable[..., SpikingNet]] = {
    "cnn": cnn,
    "vgg11": vgg11,
    "resnet18": _resnet("resnet18", "spiking"),
    "resnet19": _resnet("resnet19", "spiking"),
    "resnet20": _resnet("resnet20", "spiking"),
    "resnet34": _resnet("resnet34", "spiking"),
    "sew_resnet18": _resnet("resnet18", "ADD"),
    "sew_resnet34": _resnet("resnet34", "ADD"),
}

# lava-dl examples' CUBA-LIF dynamics (threshold 1.25, decays 0.25 / 0.03).  The surrogate is
# narrowed and raised to a peak slope of 1 (tau_rho = 0.5, scale_rho = 1): with the examples'
# tau_grad 0.03 / scale_grad 3 (peak slope 0.04) a 20-layer ResNet's first-layer gradient is
# ~1e-10 at init and a 44-layer one's 0 (measured), so deep nets could not train at all.
DEFAULT_NEURON = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03,
                            tau_grad=0.004, scale_grad=10.0)


def check_identity_weight(weight) -> None:
    """An identity weight must be a positive even multiple of 1/64 (the 8-bit weight grid,
    [2/64, 254/64]) or None (the default)."""
    if weight is None:
        return
    mant = float(weight) * 64
    if not (mant == round(mant) and round(mant) % 2 == 0 and 2 <= mant <= 254):
        raise ValueError(f"identity_weight must be an even multiple of 1/64 in [2/64, 254/64] "
                         f"(the weight grid), got {weight!r}")


def batchnorm_of(model: nn.Module) -> str | None:
    """``scale`` or ``shift``: the BatchNorm form of an unfolded ``model`` (None without
    BatchNorm), as its spec's ``batchnorm`` must say for the spec to rebuild it."""
    norms = [m for m in model.modules() if isinstance(m, BiasNorm)]
    if not norms:
        return None
    return "scale" if all(m.shift is None for m in norms) else "shift"


def build_model(name: str, *, in_channels: int = 2, num_classes: int = 10,
                input_size: tuple[int, int] = (34, 34), neuron: CubaParams | None = None,
                encoding: str = "binary", rezero: bool = False, timing: str = "ideal",
                batchnorm: str | None = None, resets_at_arrival: bool = True,
                **options) -> SpikingNet:
    """Build a registered model.  ``options``: ``width`` (channel scale; 64 = paper widths for
    ResNets/VGG), ``depths`` (ResNets: blocks per stage), ``connect`` (SEW: ADD, AND, IAND).
    ``timing``: ``ideal`` or ``loihi`` (``pipeline/timing.py``).  ``batchnorm``: ``scale`` or
    ``shift`` (``BATCHNORMS``; default ``DEFAULT_BATCHNORM``).  ``resets_at_arrival``:
    ``SpikingNet.resets_at_arrival``.  ``identity_weight``
    (Spiking ResNets): the identity shortcut's weight, default ``relay_weight_for(neuron)``;
    it must lie on the weight grid (even multiples of 1/64)."""
    check_timing(timing)
    check_identity_weight(options.get("identity_weight"))
    batchnorm = DEFAULT_BATCHNORM if batchnorm is None else batchnorm
    if batchnorm not in BATCHNORMS:
        raise ValueError(f"batchnorm must be one of {BATCHNORMS}, got {batchnorm!r}")
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if options.get("connect", "ADD") not in ("ADD", "AND", "IAND"):
        raise ValueError(f"connect must be ADD, AND or IAND, got {options['connect']!r}")
    model = MODELS[name](in_channels=in_channels, num_classes=num_classes,
                         input_size=tuple(input_size), neuron=neuron or DEFAULT_NEURON,
                         encoding=encoding, rezero=rezero, **options)
    if batchnorm == "scale":
        remove_norm_shifts(model)
    model.resets_at_arrival = bool(resets_at_arrival)
    return model.set_timing(timing)
