"""Membrane-shortcut networks: MS-ResNet, EMS-ResNet and the EMS-YOLO detector.

Built from the descriptions of the papers' official code (MS-ResNet, Hu et al. 2024; EMS-YOLO,
Su et al. ICCV 2023) with our CUBA-LIF neuron in place of theirs; tdBN is BatchNorm over
(T, N, H, W) per channel, here ``BiasNorm`` with its shift added to the values (``TdBN``).

As published, the signal between blocks is real-valued (a membrane potential): ::

    MS block        y = BN(conv(LIF(BN(conv_s(LIF(x)))))) + sc(x)
    EMS-Block1      r = BN(conv_k(LIF(BN(conv_k,s(LIF(x))))))   hidden width C_out / 2
                    y = r + sc(x),  sc = identity or BN(conv1x1(maxpool_s(x)))
    EMS-Block2      y = r + maxpool_s(concat_C[BN(conv1x1(LIF(x))), x])

Real values cannot travel between cores of a binary-spike chip, so ``deployable=True`` builds
the same layout with spikes between blocks: each block is a Spiking-ResNet block
(``models.ResidualBlock``: the residual enters the output neuron, ``o = LIF(r + sc(x))``) with
EMS's hidden width and kernel, and a strided 1x1 conv + BN in place of the max pooling and the
channel concat.  Those export, simulate and verify like every Spiking ResNet.  The top-down
path of the neck (nearest x2 upsampling, which NIR cannot express) is dropped: P4 is a block on
the stride-16 backbone map.  The ``Detect`` readout stays off-chip in both forms.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from spikeline.errors import BadInput

from .blocks import LIF, Conv, ConvSynapse, remove_norm_shifts
from .detection import Anchors, Detect
from .models import (BATCHNORMS, DEFAULT_NEURON, ResidualBlock, SpikingNet, DEFAULT_BATCHNORM,
                     encode_frames)
from .neuron import CubaParams
from .timing import arrival, check_timing, has_voltage_bias, hops, keep_resets, pad_steps, shift

__all__ = ["TdBN", "MSBlock", "EMSBlock1", "EMSBlock2", "DeployableEMSBlock", "ms_resnet",
           "SpikingDetector", "ems_detector", "DETECTORS"]


def _conv_bn(neuron: CubaParams, cin: int, cout: int, k: int, stride: int = 1,
             gamma: float = 1.0) -> ConvSynapse:
    syn = ConvSynapse(cin, cout, k, stride, k // 2, norm=True, scale=neuron.scale)
    with torch.no_grad():
        syn.norm.weight.fill_(gamma)
    return syn


class TdBN(nn.Module):
    """``conv`` then tdBN, real-valued out: ``s * conv(x) + (beta - s * mean)``."""

    def __init__(self, synapse: ConvSynapse):
        super().__init__()
        self.synapse = synapse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, bias = self.synapse(x)
        return z + bias


def _maxpool(x: torch.Tensor, stride: int) -> torch.Tensor:
    if stride == 1:
        return x
    return F.max_pool2d(x.flatten(0, 1), stride, stride).unflatten(0, x.shape[:2])


class MSBlock(nn.Module):
    """MS-ResNet basic block (membrane shortcut); the last BN starts at gamma 0 as in MS."""

    def __init__(self, neuron: CubaParams, cin: int, cout: int, stride: int):
        super().__init__()
        self.lif1, self.lif2 = LIF(neuron, delay_shift=False), LIF(neuron, delay_shift=False)
        self.conv1 = TdBN(_conv_bn(neuron, cin, cout, 3, stride))
        self.conv2 = TdBN(_conv_bn(neuron, cout, cout, 3, 1, gamma=0.0))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = TdBN(_conv_bn(neuron, cin, cout, 1, stride))

    def forward(self, x):
        u = self.conv2(self.lif2(self.conv1(self.lif1(x))))
        return u + (x if self.down is None else self.down(x))


class EMSBlock1(nn.Module):
    """EMS-Block1: identity shortcut, or BN(conv1x1(maxpool_s(x))) when the shape changes."""

    def __init__(self, neuron: CubaParams, cin: int, cout: int, stride: int = 1, k: int = 3):
        super().__init__()
        hidden = max(cout // 2, 1)
        self.lif1, self.lif2 = LIF(neuron, delay_shift=False), LIF(neuron, delay_shift=False)
        self.conv1 = TdBN(_conv_bn(neuron, cin, hidden, k, stride))
        self.conv2 = TdBN(_conv_bn(neuron, hidden, cout, k, 1, gamma=0.1))
        self.stride = stride
        self.down = None
        if stride != 1 or cin != cout:
            self.down = TdBN(_conv_bn(neuron, cin, cout, 1))

    def forward(self, x):
        r = self.conv2(self.lif2(self.conv1(self.lif1(x))))
        return r + (x if self.down is None else self.down(_maxpool(x, self.stride)))


class EMSBlock2(nn.Module):
    """EMS-Block2 (channels grow): ``r + maxpool_s(concat[BN(conv1x1(LIF(x))), x])``."""

    def __init__(self, neuron: CubaParams, cin: int, cout: int, stride: int = 1, k: int = 3):
        super().__init__()
        if cout <= cin:
            raise ValueError(f"EMS-Block2 grows channels: needs cout > cin, got {cin}->{cout}")
        hidden = max(cout // 2, 1)
        self.lif1, self.lif2 = LIF(neuron, delay_shift=False), LIF(neuron, delay_shift=False)
        self.conv1 = TdBN(_conv_bn(neuron, cin, hidden, k, stride))
        self.conv2 = TdBN(_conv_bn(neuron, hidden, cout, k, 1, gamma=0.1))
        self.grow = TdBN(_conv_bn(neuron, cin, cout - cin, 1))
        self.stride = stride

    def forward(self, x):
        spikes = self.lif1(x)
        r = self.conv2(self.lif2(self.conv1(spikes)))
        z = torch.cat([self.grow(spikes), x], dim=2)
        return r + _maxpool(z, self.stride)


class DeployableEMSBlock(ResidualBlock):
    """An EMS block with spikes in and out: ``o = LIF(BN(conv_k(LIF(BN(conv_k,s(x))))) + sc)``,
    hidden width C_out / 2, ``sc`` the identity or BN(conv1x1_s(x)) (strided conv in place of
    max pooling and concat).  A ``ResidualBlock``, so it folds, exports and verifies as one."""

    def __init__(self, neuron: CubaParams, cin: int, cout: int, stride: int = 1, k: int = 3,
                 identity_weight: float | None = None):
        super().__init__(neuron, cin, cout, stride, "spiking", rezero=False,
                         identity_weight=identity_weight)
        hidden = max(cout // 2, 1)
        self.conv1 = ConvSynapse(cin, hidden, k, stride, k // 2, norm=True, scale=neuron.scale)
        self.conv2 = ConvSynapse(hidden, cout, k, 1, k // 2, norm=True, scale=neuron.scale)


def _scaled(channels: int, width: int) -> int:
    return max(channels * width // 64, 1)


class _MeanOverSpace(nn.Module):
    def forward(self, x):
        return x.mean((-2, -1))


def ms_resnet(depths, *, in_channels, num_classes, input_size, neuron, encoding, width=64,
              **_) -> SpikingNet:
    """MS-ResNet-18/34 classifier: stem BN(conv3x3) without LIF, stages 64/128/256/512 (first
    block of each later stage strided), then LIF -> global average pool -> FC, mean over T.

    The stem is 3x3 stride 1 rather than ImageNet's 7x7 stride 2: event frames here are 34-48
    px.  Real-valued between blocks: trains and evaluates, does not export (see module doc)."""
    widths = [_scaled(c, width) for c in (64, 128, 256, 512)]
    stem = TdBN(_conv_bn(neuron, in_channels, widths[0], 3))
    stages, cin = [], widths[0]
    for i, (cout, depth) in enumerate(zip(widths, depths)):
        blocks = [stem] if i == 0 else []
        for j in range(depth):
            blocks.append(MSBlock(neuron, cin, cout, 2 if (j == 0 and i > 0) else 1))
            cin = cout
        stages.append(nn.Sequential(*blocks))
    readout = nn.Sequential(LIF(neuron, delay_shift=False), _MeanOverSpace(),
                            nn.Linear(cin, num_classes))
    return SpikingNet(stages, readout, encoding, widths)


class SpikingDetector(nn.Module):
    """``forward(x [N, T, C, H, W]) -> raw head outputs per level`` (see ``detection``).

    ``stem`` -> ``backbone`` (stages; the outputs at strides 16 and 32 feed the neck) ->
    ``neck`` -> features ``[P4, P5]`` ``[T, N, C, H, W]`` -> ``head`` (off-chip).

    ``timing`` (``pipeline/timing.py``; deployable form only for ``loihi``): under ``loihi``
    every synaptic hop delays one step and skip edges are delayed to match (as in
    ``SpikingNet``); the P4 and P5 neurons feed the off-chip readout, not a synapse, so their
    spikes are not delayed.  Level ``l``'s neurons are ``level_latency[l]`` hops deep, so they
    first see input step 0 at that step: the input is padded with ``input_pad_steps`` (the
    deeper level's latency) zero frames and each level's readout averages its own window
    ``[readout_starts[l], T + readout_starts[l])`` of its feature map (``readout_window``).
    """

    timing = "ideal"
    resets_at_arrival = True  # as ``SpikingNet.resets_at_arrival``
    LEVELS = ("p4", "p5")

    def __init__(self, stem, backbone, neck: nn.ModuleDict, head: Detect, encoding: str,
                 deployable: bool):
        super().__init__()
        self.stem, self.backbone, self.neck, self.head = stem, backbone, neck, head
        self.encoding, self.deployable = encoding, deployable

    @property
    def level_latency(self) -> tuple[int, int]:
        """Synaptic hops from the input to the P4 and P5 neurons (deployable form): under
        ``loihi`` timing, the step at which each level first sees input step 0."""
        trunk = hops(self.stem) + sum(hops(s) for s in self.backbone)
        p5 = trunk + hops(self.neck["reduce"]) + hops(self.neck["p5"])
        p4 = trunk - hops(self.backbone[-1]) + hops(self.neck["p4"])
        return int(p4), int(p5)

    @property
    def latency(self) -> int:
        """Hops to the deeper level (P5): the chip's latency in steps under ``loihi``."""
        return max(self.level_latency)

    @property
    def input_pad_steps(self) -> int:
        """Zero frames appended to the ``T`` input steps."""
        return self.latency if self.timing == "loihi" else 0

    @property
    def readout_starts(self) -> tuple[int, ...]:
        """Per level, the first step of its feature map that its readout averages."""
        if self.timing == "loihi":
            return self.level_latency
        return (0,) * len(self.LEVELS)

    def set_timing(self, timing: str) -> "SpikingDetector":
        """Switch every hop's delay on (``loihi``) or off (``ideal``), in place; ``loihi``
        needs the deployable (all-spike) form."""
        check_timing(timing)
        loihi = timing == "loihi"
        if loihi and not self.deployable:
            raise BadInput("--timing (timing): loihi timing needs the deployable detector "
                           "(deployable = true): the published form passes membrane "
                           "potentials between blocks, which no chip's synapses carry, so it "
                           "has no per-hop timing to train")
        for m in self.modules():
            if isinstance(m, LIF):
                m.delay_shift = loihi
            elif isinstance(m, ResidualBlock):
                m.skip_delay = int(loihi)
        if loihi:  # the outputs feed the off-chip readout, not a synapse: no hop after them
            for level in self.LEVELS:
                self.neck[level].lif2.delay_shift = False
        self.timing = timing
        if self.deployable:
            self._set_windows()
        return self

    def _set_windows(self) -> None:
        """Each BatchNorm's statistics over its own layer's ``T`` steps (``timing.arrival``)."""
        pad = self.input_pad_steps
        start = arrival(self.stem, int(self.timing == "loihi"), pad)
        starts = []
        for stage in self.backbone:
            start = arrival(stage, start, pad)
            starts.append(start)
        arrival(self.neck["p5"], arrival(self.neck["reduce"], starts[-1], pad), pad)
        arrival(self.neck["p4"], starts[-2], pad)
        keep_resets(self, self.timing == "loihi" and self.resets_at_arrival
                    and has_voltage_bias(self))

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T, C, H, W]`` event counts -> ``[T + input_pad_steps, N, ...]``: what the
        exported graph is run on."""
        return pad_steps(encode_frames(x.transpose(0, 1), self.encoding), self.input_pad_steps)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[P4, P5]`` spike maps over all ``T + input_pad_steps`` steps (what the graph's
        Output nodes carry)."""
        h = self.network_input(x)
        if self.timing == "loihi":
            h = shift(h, 1)  # the input's hop into the stem's synapse
        h = self.stem(h)
        maps = []
        for stage in self.backbone:
            h = stage(h)
            maps.append(h)
        s16, s32 = maps[-2], maps[-1]
        n = self.neck
        top = n["reduce"](s32)
        p5 = n["p5"](top)
        if self.deployable:
            p4 = n["p4"](s16)
        else:
            lateral = n["lateral"](top)
            up = F.interpolate(lateral.flatten(0, 1), scale_factor=2, mode="nearest")
            up = up.unflatten(0, lateral.shape[:2])
            p4 = n["p4"](torch.cat([up, s16], dim=2))
        return [p4, p5]

    def readout_window(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each level's ``T`` steps that its readout averages: ``[start_l, T + start_l)``."""
        steps = features[0].shape[0] - self.input_pad_steps
        return [f[s:s + steps] for f, s in zip(features, self.readout_starts)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.readout_window(self.features(x)))


# (w, h) anchors for 64 px frames of ndigits-detect, whose boxes are 14-28 px
NDIGITS_ANCHORS = Anchors((((12, 18), (16, 22), (20, 26)), ((24, 28), (28, 32), (34, 36))))


def ems_detector(depth: int, *, in_channels: int, num_classes: int, neuron: CubaParams,
                 encoding: str = "binary", width: int = 64, deployable: bool = False,
                 anchors: Anchors = NDIGITS_ANCHORS, timing: str = "ideal",
                 batchnorm: str | None = None, identity_weight: float | None = None,
                 resets_at_arrival: bool = True) -> SpikingDetector:
    """EMS-Res10 (``depth=10``) or EMS-Res18 (``depth=18``: an identity Block1 after each
    backbone Block2) with EMS-YOLO's two-level neck and head; ``timing`` as in
    ``SpikingDetector`` (``loihi`` for the deployable form only); ``batchnorm`` as in
    ``models.build_model`` (``scale`` for the deployable form only: the published form adds
    tdBN's shift to real values); ``identity_weight`` and ``resets_at_arrival`` as in
    ``models.build_model``."""
    if depth not in (10, 18):
        raise ValueError(f"EMS-ResNet depth must be 10 or 18, got {depth}")
    check_timing(timing)
    batchnorm = DEFAULT_BATCHNORM if batchnorm is None else batchnorm
    if batchnorm not in BATCHNORMS:
        raise ValueError(f"batchnorm must be one of {BATCHNORMS}, got {batchnorm!r}")
    if batchnorm == "scale" and not deployable:
        raise BadInput("--batchnorm (batchnorm): scale-only BatchNorm needs the deployable "
                       "detector (deployable = true): the published form's tdBN shifts the "
                       "real values it passes between blocks")
    c = [_scaled(v, width) for v in (32, 64, 128, 256, 512)]
    if deployable:
        block1 = lambda cin, cout, k=3: DeployableEMSBlock(  # noqa: E731
            neuron, cin, cout, 1, k, identity_weight=identity_weight)
        block2 = lambda cin, cout, s: DeployableEMSBlock(  # noqa: E731
            neuron, cin, cout, s, identity_weight=identity_weight)
        stem = Conv(neuron, in_channels, c[0], 3, stride=2, padding=1, norm=True,
                    delay_shift=False)
    else:
        block1 = lambda cin, cout, k=3: EMSBlock1(neuron, cin, cout, 1, k)  # noqa: E731
        block2 = lambda cin, cout, s: EMSBlock2(neuron, cin, cout, s)  # noqa: E731
        stem = TdBN(_conv_bn(neuron, in_channels, c[0], 3, 2))
    stages = []
    for cin, cout in zip(c[:-1], c[1:]):
        blocks = [block2(cin, cout, 2)]
        if depth == 18:
            blocks.append(block1(cout, cout))
        stages.append(nn.Sequential(*blocks))
    half = _scaled(256, width)
    neck = {"reduce": block1(c[4], half), "p5": block2(half, c[4], 1)}
    if deployable:
        neck["p4"] = block1(c[3], half)
    else:
        quarter = _scaled(128, width)
        neck["lateral"] = block1(half, quarter, 1)
        neck["p4"] = block1(quarter + c[3], half)
    head = Detect([half, c[4]], num_classes, anchors)
    detector = SpikingDetector(stem, nn.ModuleList(stages), nn.ModuleDict(neck), head,
                               encoding, deployable)
    if batchnorm == "scale":
        remove_norm_shifts(detector)
    detector.resets_at_arrival = bool(resets_at_arrival)
    return detector.set_timing(timing)


def _detector(depth: int):
    def build(*, in_channels=2, num_classes=10, neuron=None, encoding="binary", width=64,
              deployable=False, anchors=NDIGITS_ANCHORS, timing="ideal", batchnorm=None,
              identity_weight=None, **_):
        return ems_detector(depth, in_channels=in_channels, num_classes=num_classes,
                            neuron=neuron or detector_neuron(), encoding=encoding, width=width,
                            deployable=deployable, anchors=anchors, timing=timing,
                            batchnorm=batchnorm, identity_weight=identity_weight)

    build.__doc__ = f"EMS-Res{depth} with EMS-YOLO's two-level head"
    return build


# The detectors' default neuron: the classifiers' (models.DEFAULT_NEURON) with a surrogate 5x
# wider (tau_grad 0.02, tau_rho 2.5 at threshold 1.25).  With the classifiers' 0.004 the class
# loss of the deployable detector does not leave its prior (measured, 6-epoch probes on
# ndigits-detect: class-only loss 0.492 -> 0.486 with 0.004, -> 0.460 with 0.02); the Spiking
# ResNet repro does not want it (chance with 0.02 at branch gain 1, see the README).
def detector_neuron() -> CubaParams:
    return dataclasses.replace(DEFAULT_NEURON, tau_grad=0.02)


# Detection models by name (classifiers live in models.MODELS)
DETECTORS = {"ems_res10": _detector(10), "ems_res18": _detector(18)}

