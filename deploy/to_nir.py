"""Folded ``SpikingNet`` -> NIR graph, with the parameter convention other simulators import.

CUBA-LIF with 12-bit decays ``iDecay``, ``vDecay`` and threshold ``theta`` becomes (measured here;
SpikingJelly 2.0, snnTorch 1.0 and Norse 1.1 reproduce it exactly)::

    dt = 1e-4, tau_syn = dt * 4096 / iDecay, tau_mem = dt * 4096 / vDecay,
    w_in = tau_syn / dt, r = tau_mem / dt, v_threshold = theta, v_reset = 0,
    v_leak = bias * 4096 / vDecay        (Loihi's voltage bias; 0 where there is none)

so that forward Euler gives ``I[t] = (1 - iDecay/4096) I[t-1] + x[t]`` and
``v[t] = (1 - vDecay/4096) v[t-1] + I[t] + bias``.  The Affine readout becomes a CubaLI.
Residual sums are several edges into one node; a SEW ADD junction is both of its terms wired
into every consumer.  Block outputs are tracked as *lists* of node names for that reason.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import nir
import numpy as np
import torch
from torch import nn

from spikeline.errors import ExportUnsupported, SpikelineError
from spikeline.pipeline.blocks import (
    LIF, Affine, ConvSynapse, DenseSynapse, Dropout, Flatten, PoolSynapse, SpikingBlock,
)
from spikeline.pipeline.geometry import conv_output_size
from spikeline.pipeline.models import ResidualBlock, SpikingNet
from spikeline.pipeline.quantize import quantize_bias, quantize_weight

from .nir_check import DT
from .nir_params import cuba_to_nir


@dataclass
class _Builder:
    """Accumulates nodes and edges; ``modules`` maps neuron node names to torch modules."""

    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    modules: dict = field(default_factory=dict)
    resets: dict = field(default_factory=dict)  # neuron node -> its reset step (``LIF``)
    count: int = 0

    def add(self, kind: str, node: nir.NIRNode, sources: list[str], module=None) -> str:
        name = f"{self.count}_{kind}"
        self.count += 1
        self.nodes[name] = node
        self.edges += [(src, name) for src in sources]
        if module is not None:
            self.modules[name] = module
        return name


def _tensor(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)


def _conv_node(syn: ConvSynapse, shape):
    c, h, w = shape
    weight = _tensor(quantize_weight(syn.weight, syn.scale))
    node = nir.Conv2d(input_shape=(h, w), weight=weight, stride=syn.stride,
                      padding=syn.padding, dilation=syn.dilation, groups=syn.groups,
                      bias=np.zeros(weight.shape[0]))
    return node, _conv_out(shape, weight.shape[0], syn.kernel_size, syn.stride, syn.padding,
                           syn.dilation)


def _conv_out(shape, channels, kernel, stride, padding, dilation=(1, 1)):
    return (channels, *conv_output_size(shape[1:], kernel, stride, padding, dilation))


def _bias(syn) -> np.ndarray | None:
    if syn.norm is not None:
        raise SpikelineError("NIR export needs a folded model (BatchNorm still present): "
                             "call deploy.fold.fold_model first")
    return None if syn.bias is None else _tensor(quantize_bias(syn.bias, syn.scale))


class _Exporter:
    """Walks a folded model; ``synapse`` and ``module`` dispatch on the module's type
    (one registered function per block type, ``functools.singledispatchmethod``)."""

    def __init__(self):
        self.b = _Builder()

    def delay(self, sources: list[str], shape, steps: int) -> list[str]:
        """``sources`` (summed) delayed by ``steps`` time steps: one NIR ``Delay`` node."""
        if steps <= 0:
            return sources
        return [self.b.add("delay", nir.Delay(delay=np.full(shape, steps * DT)), sources)]

    @functools.singledispatchmethod
    def synapse(self, syn, sources, shape):
        """A synapse module -> (node name, output shape, voltage bias)."""
        raise ExportUnsupported(f"NIR export: unsupported synapse {type(syn).__name__}")

    @synapse.register
    def _(self, syn: ConvSynapse, sources, shape):
        node, out = _conv_node(syn, shape)
        return self.b.add("conv", node, sources), out, _bias(syn)

    @synapse.register
    def _(self, syn: DenseSynapse, sources, shape):
        weight = _tensor(quantize_weight(syn.weight, syn.scale))
        name = self.b.add("linear", nir.Linear(weight=weight), sources)
        return name, (weight.shape[0],), _bias(syn)

    @synapse.register
    def _(self, syn: PoolSynapse, sources, shape):
        _, h, w = shape
        if h % syn.kernel_size[0] or w % syn.kernel_size[1] or any(syn.padding):
            raise ExportUnsupported(
                f"NIR export: sum pooling of a {h}x{w} map with kernel "
                f"{syn.kernel_size} needs lava-dl's one-sided padding, which NIR's "
                "SumPool2d cannot express; choose an input size that keeps pooled maps even")
        node = nir.SumPool2d(kernel_size=np.array(syn.kernel_size),
                             stride=np.array(syn.stride), padding=np.array(syn.padding))
        out = _conv_out(shape, shape[0], syn.kernel_size, syn.stride, syn.padding)
        name = self.b.add("sumpool", node, sources)
        weight = float(quantize_weight(syn.weight.detach(), syn.scale))
        if weight != 1.0:  # a relaying pool (weight 84/64): the sums, then one Scale node
            name = self.b.add("scale", nir.Scale(scale=np.full(out, weight)), [name])
        return name, out, None

    def identity(self, sources, shape, weight: float) -> str:
        """``weight * x`` (a Spiking ResNet's identity shortcut of weight != 1): one NIR
        ``Scale`` node; Lava runs it as the last hop of the shortcut's identity line
        (``to_lava``), energy counts it as the plain edge it replaces."""
        return self.b.add("scale", nir.Scale(scale=np.full(shape, float(weight))), sources)

    def lif(self, lif: LIF, sources, shape, bias):
        # the node reproduces the population's spikes before its hop (``lif.spikes``)
        name = self.b.add("cubalif", cuba_to_nir(lif.neuron, shape, bias), sources, lif.spikes)
        if lif.reset_step:
            self.b.resets[name] = int(lif.reset_step)
        return self.delay([name], shape, int(lif.delay_shift))[0]

    @functools.singledispatchmethod
    def module(self, m: nn.Module, sources: list[str], shape):
        """Export ``m`` fed by the sum of ``sources``; returns (output sources, shape)."""
        raise ExportUnsupported(f"NIR export: unsupported module {type(m).__name__}; "
                                "supported: Conv, Dense, Pool, Flatten, Affine, residual blocks")

    @module.register
    def _(self, m: nn.Sequential, sources, shape):
        for child in m:
            sources, shape = self.module(child, sources, shape)
        return sources, shape

    @module.register
    def _(self, m: SpikingBlock, sources, shape):
        syn, shape, bias = self.synapse(m.synapse, sources, shape)
        return [self.lif(m.lif, [syn], shape, bias)], shape

    @module.register
    def _(self, m: Flatten, sources, shape):
        node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
        return [self.b.add("flatten", node, sources)], (int(np.prod(shape)),)

    @module.register
    def _(self, m: Dropout, sources, shape):
        return sources, shape

    @module.register
    def _(self, m: Affine, sources, shape):
        syn, out, _ = self.synapse(m.synapse, sources, shape)
        node = cuba_to_nir(m.neuron, out, None, spiking=False)
        name = self.b.add("cubali", node, [syn], m)
        if m.reset_step:
            self.b.resets[name] = int(m.reset_step)
        return [name], out

    @module.register
    def _(self, m: ResidualBlock, sources, shape):
        if m.gate is not None:
            raise SpikelineError("NIR export needs a folded model (ReZero gate still present)")
        if m.kind not in ("spiking", "ADD"):
            raise ExportUnsupported(
                f"NIR export: SEW connect function {m.kind} has no NIR node (ADD does: it is a "
                "sum of edges); export a Spiking ResNet or SEW ADD instead")
        c1, s1, b1 = self.synapse(m.conv1, sources, shape)
        h1 = self.lif(m.lif1, [c1], s1, b1)
        c2, s2, b2 = self.synapse(m.conv2, [h1], s1)
        if m.kind == "spiking":
            skip = self.delay(sources, shape, m.skip_delay)  # the shortcut's input, delayed
            into, bias = [c2], b2
            if m.down is None and m.identity_weight == 1.0:
                into += skip  # identity residual: the block input feeds the neuron directly
            elif m.down is None:  # identity of another weight: a Scale node
                into.append(self.identity(skip, shape, m.identity_weight))
            else:
                cd, _, bd = self.synapse(m.down, skip, shape)
                into.append(cd)
                bias = bd if b2 is None else (b2 if bd is None else b2 + bd)
            return [self.lif(m.lif2, into, s2, bias)], s2
        a = self.lif(m.lif2, [c2], s2, b2)
        if m.down is None:
            return [a] + self.delay(sources, shape, 2 * m.skip_delay), s2
        skip = self.delay(sources, shape, m.skip_delay)
        cd, sd, bd = self.synapse(m.down, skip, shape)
        return [a, self.lif(m.down_lif, [cd], sd, bd)], s2


def timing_metadata(model: SpikingNet) -> dict:
    """How the graph is run: ``input_pad_steps`` zero frames appended to the ``T`` input
    steps, the readout voltage averaged over steps ``[readout_start, T + input_pad_steps)``;
    ``latency_steps`` is the depth in synaptic hops (the chip's latency under ``loihi``)."""
    timing = getattr(model, "timing", "ideal")
    return {"timing": timing, "latency_steps": int(model.latency),
            "input_pad_steps": int(model.input_pad_steps),
            "readout_start": int(model.readout_start),
            "readout": "mean voltage over steps [readout_start, T + input_pad_steps)"}


def reset_metadata(resets: dict[str, int]) -> dict:
    """``reset_steps`` (neuron node -> step) for a graph whose neurons restart at their input's
    arrival (``pipeline/timing.py``; none: no entry, so bias-free graphs are unchanged)."""
    if not resets:
        return {}
    return {"reset_steps": dict(resets),
            "reset": "each node of reset_steps sets its current and voltage to 0 at the start "
                     "of that step of every sample (Lava's LIFReset: reset_interval = T + "
                     "input_pad_steps, reset_offset = step + 1)"}


@dataclass
class Export:
    """A NIR graph and, for each neuron node, the torch module whose output it reproduces."""

    graph: nir.NIRGraph
    modules: dict[str, nn.Module]


def model_to_nir(model: SpikingNet, input_shape: tuple[int, int, int],
                 metadata: dict | None = None) -> Export:
    """Export a folded ``SpikingNet`` taking ``[C, H, W]`` frames to a NIR graph."""
    ex = _Exporter()
    inp = ex.b.add("input", nir.Input(input_type={"input": np.array(input_shape)}), [])
    sources, shape = [inp], tuple(input_shape)
    loihi = getattr(model, "timing", "ideal") == "loihi"
    sources = ex.delay(sources, shape, int(loihi))  # the input's hop into the first synapse
    for stage in model.stages:
        sources, shape = ex.module(stage, sources, shape)
    sources, shape = ex.module(model.readout, sources, shape)
    out = ex.b.add("output", nir.Output(output_type={"output": np.array(shape)}), sources)
    meta = {"dt": DT, "input_encoding": model.encoding, "output_node": out,
            **timing_metadata(model), **reset_metadata(ex.b.resets), **(metadata or {})}
    graph = nir.NIRGraph(nodes=ex.b.nodes, edges=ex.b.edges, metadata=meta)
    return Export(graph, ex.b.modules)
