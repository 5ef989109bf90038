"""Folded ``SpikingNet`` -> NIR graph, with the parameter convention other simulators import.

CUBA-LIF with 12-bit decays ``iDecay``, ``vDecay`` and threshold ``theta`` becomes (REFERENCE §5;
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

from dataclasses import dataclass, field

import nir
import numpy as np
import torch
from torch import nn

from spikeline.errors import SpikelineError
from spikeline.pipeline.blocks import (
    LIF, Affine, ConvSynapse, DenseSynapse, Dropout, Flatten, PoolSynapse, _SpikingBlock,
)
from spikeline.pipeline.models import ResidualBlock, SpikingNet
from spikeline.pipeline.quantize import quantize_bias, quantize_weight

from .nir_params import DT, cuba_to_nir, nir_to_cuba  # noqa: F401  (re-exported)


@dataclass
class _Builder:
    """Accumulates nodes and edges; ``modules`` maps neuron node names to torch modules."""

    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    modules: dict = field(default_factory=dict)
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
    _, h, w = shape
    out = [(size + 2 * p - d * (k - 1) - 1) // s + 1
           for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation)]
    return (channels, *out)


def _bias(syn) -> np.ndarray | None:
    if syn.norm is not None:
        raise SpikelineError("NIR export needs a folded model (BatchNorm still present): "
                             "call deploy.fold.fold_model first")
    return None if syn.bias is None else _tensor(quantize_bias(syn.bias, syn.scale))


class _Exporter:
    def __init__(self):
        self.b = _Builder()

    def synapse(self, syn, sources, shape):
        """A synapse module -> (node name, output shape, voltage bias)."""
        if isinstance(syn, ConvSynapse):
            node, out = _conv_node(syn, shape)
            return self.b.add("conv", node, sources), out, _bias(syn)
        if isinstance(syn, DenseSynapse):
            weight = _tensor(quantize_weight(syn.weight, syn.scale))
            name = self.b.add("linear", nir.Linear(weight=weight), sources)
            return name, (weight.shape[0],), _bias(syn)
        if isinstance(syn, PoolSynapse):
            _, h, w = shape
            if h % syn.kernel_size[0] or w % syn.kernel_size[1] or any(syn.padding):
                raise SpikelineError(
                    f"NIR export: sum pooling of a {h}x{w} map with kernel "
                    f"{syn.kernel_size} needs lava-dl's one-sided padding, which NIR's "
                    "SumPool2d cannot express; choose an input size that keeps pooled maps even")
            if syn.weight.item() != 1:
                raise SpikelineError("NIR export: sum pooling with a weight other than 1")
            node = nir.SumPool2d(kernel_size=np.array(syn.kernel_size),
                                 stride=np.array(syn.stride), padding=np.array(syn.padding))
            out = _conv_out(shape, shape[0], syn.kernel_size, syn.stride, syn.padding)
            return self.b.add("sumpool", node, sources), out, None
        raise SpikelineError(f"NIR export: unsupported synapse {type(syn).__name__}")

    def lif(self, lif: LIF, sources, shape, bias):
        name = self.b.add("cubalif", cuba_to_nir(lif.neuron, shape, bias), sources, lif)
        if lif.delay_shift:
            name = self.b.add("delay", nir.Delay(delay=np.full(shape, DT)), [name])
        return name

    def module(self, m: nn.Module, sources: list[str], shape):
        """Export ``m`` fed by the sum of ``sources``; returns (output sources, shape)."""
        if isinstance(m, nn.Sequential):
            for child in m:
                sources, shape = self.module(child, sources, shape)
            return sources, shape
        if isinstance(m, _SpikingBlock):
            syn, shape, bias = self.synapse(m.synapse, sources, shape)
            return [self.lif(m.lif, [syn], shape, bias)], shape
        if isinstance(m, Flatten):
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
            return [self.b.add("flatten", node, sources)], (int(np.prod(shape)),)
        if isinstance(m, Dropout):
            return sources, shape
        if isinstance(m, Affine):
            syn, out, _ = self.synapse(m.synapse, sources, shape)
            node = cuba_to_nir(m.neuron, out, None, spiking=False)
            return [self.b.add("cubali", node, [syn], m)], out
        if isinstance(m, ResidualBlock):
            return self.residual(m, sources, shape)
        raise SpikelineError(f"NIR export: unsupported module {type(m).__name__}; supported: "
                             "Conv, Dense, Pool, Flatten, Affine, residual blocks")

    def residual(self, m: ResidualBlock, sources, shape):
        if m.gate is not None:
            raise SpikelineError("NIR export needs a folded model (ReZero gate still present)")
        c1, s1, b1 = self.synapse(m.conv1, sources, shape)
        h1 = self.lif(m.lif1, [c1], s1, b1)
        c2, s2, b2 = self.synapse(m.conv2, [h1], s1)
        if m.kind == "spiking":
            into, bias = [c2], b2
            if m.down is None:
                into += sources  # identity residual: the block input feeds the neuron directly
            else:
                cd, _, bd = self.synapse(m.down, sources, shape)
                into.append(cd)
                bias = bd if b2 is None else (b2 if bd is None else b2 + bd)
            return [self.lif(m.lif2, into, s2, bias)], s2
        if m.kind != "ADD":
            raise SpikelineError(
                f"NIR export: SEW connect function {m.kind} has no NIR node (ADD does: it is a "
                "sum of edges); export a Spiking ResNet or SEW ADD instead")
        a = self.lif(m.lif2, [c2], s2, b2)
        if m.down is None:
            return [a] + sources, s2
        cd, sd, bd = self.synapse(m.down, sources, shape)
        return [a, self.lif(m.down_lif, [cd], sd, bd)], s2


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
    for stage in model.stages:
        sources, shape = ex.module(stage, sources, shape)
    sources, shape = ex.module(model.readout, sources, shape)
    out = ex.b.add("output", nir.Output(output_type={"output": np.array(shape)}), sources)
    meta = {"dt": DT, "input_encoding": model.encoding, "readout": "mean voltage over time",
            "output_node": out, **(metadata or {})}
    graph = nir.NIRGraph(nodes=ex.b.nodes, edges=ex.b.edges, metadata=meta)
    return Export(graph, ex.b.modules)
