"""Operation counts of a simulated NIR graph and their price in joules on hardware models.

Counting (:func:`count_operations`) works on a NIR graph and the outputs of every node over time
(``sim.outputs[name]``: ``[T, N, *shape]``, as :func:`spikeline.deploy.simulate.simulate`
returns them).  All counts are **per inference**: summed over the T time steps of one sample
and averaged over the N samples.

Synaptic nodes ("layers"): ``Conv2d``, ``Conv1d``, ``Linear``, ``Affine`` and the pooling nodes
``SumPool2d`` / ``AvgPool2d`` (a pooling node is a grouped convolution with a ones kernel: every
input event is added into each window it falls in, which is synaptic work on any chip, so pooling
counts as synaptic here; NeuroBench does not count pooling).  The input of a layer is the sum of
its predecessors' outputs (NIR: several incoming edges add up, e.g. SEW ADD residuals); an edge
that closes a cycle delivers its source's output of the previous step, as in the simulator.

For a layer with input ``x_t`` (one sample, one step) and fan-out map ``F`` (``F_j`` = number of
synapses leaving input ``j``: ``out_features`` for Linear, the exact per-position count for
convolutions, borders / stride / padding / dilation / groups included, obtained as in Sinabs by
the transposed convolution of a ones output map with the (ones) kernel)::

    ops_t = sum_j [x_tj != 0] * F_j

A step is *binary* when every ``x_tj`` is in {-1, 0, 1} (NeuroBench 2.3's rule).  Binary steps
add ``ops_t`` to ``synops`` (accumulates, ACs); other steps (event counts on the first layer,
SEW ADD sums, LI voltages) add it to ``macs``.  The rule is applied per sample and per step,
which equals NeuroBench's ``SynapticOperations`` (Effective_ACs / Effective_MACs) at batch size
1 (NeuroBench decides per step for the whole batch).  ``fanout="nonzero"`` counts only synapses
whose weight is nonzero (NeuroBench binarises the weights, so pruned / quantised-to-zero
weights do not count there); the default ``"structural"`` counts every synapse (Sinabs).

Dense ANN equivalent, **once per inference** (an ANN runs each layer once, not T times;
REFERENCE §7 / Spikformer convention)::

    FLOPs_conv = k_h k_w * H_out W_out * C_in / groups * C_out      (MACs)
    FLOPs_fc   = in * out   (per position of any leading dims)      (MACs)
    adds_pool  = k_h k_w * H_out W_out * C                           (additions)

Neurons: every neuron node (CubaLIF, LIF, IF, Threshold spike; CubaLI, LI, I do not) is updated
once per step: ``neuron_updates = neurons * T``; ``active_neuron_updates`` counts the updates
in which the neuron received nonzero input; ``spikes`` = nonzero outputs of spiking neurons.
Each neuron node is attributed to the first synaptic node found upstream of it (through
Flatten / Scale / Delay / Identity); totals always include every neuron node.  Layers and neuron
nodes are listed in topological order (depth-first from the Input, as the simulator runs them).

Pricing (:func:`price`) uses a :class:`HardwareModel` from ``hardware.toml``
(:func:`load_hardware_models`); the formulas are in :func:`price`'s docstring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

import nir
import tomllib

from spikeline.errors import SpikelineError

from .simulate import topological_order

SYNAPTIC_NODES = (nir.Conv2d, nir.Conv1d, nir.Linear, nir.Affine, nir.SumPool2d, nir.AvgPool2d)
SPIKING_NEURONS = (nir.CubaLIF, nir.LIF, nir.IF, nir.Threshold)
NONSPIKING_NEURONS = (nir.CubaLI, nir.LI, nir.I)
NEURON_NODES = SPIKING_NEURONS + NONSPIKING_NEURONS
FANOUT_MODES = ("structural", "nonzero")
DEFAULT_HARDWARE_FILE = Path(__file__).with_name("hardware.toml")
DEFAULT_ANN_BASELINE = "cmos45_int8"  # prices the ANN equivalent of neuromorphic models
PJ = 1e-12


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------

def _check_nonneg(obj, names):
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{type(obj).__name__}.{name} must be a finite number >= 0, "
                             f"got {value!r}")


@dataclass(frozen=True)
class LayerCounts:
    """Counts of one synaptic node, per inference (T steps of one sample, mean over samples).

    - ``input_events`` = ``sum_t sum_j [x_tj != 0]``; ``firing_rate`` = ``input_events /
      (T * input_size)`` (fraction of nonzero inputs per step).
    - ``synops`` = ``sum_{binary t} sum_j [x_tj != 0] F_j`` (ACs);
      ``macs`` = the same sum over non-binary steps; ``binary_fraction`` = share of (sample,
      step) pairs that were binary.
    - ``connections`` = ``sum_j F_j`` (synapses; ops of one step with every input active).
    - ``dense_ops`` = ANN operations once per inference, of kind ``dense_op_kind`` ("mac" for
      Conv/Linear, "add" for pooling).
    - ``neuron_updates``, ``active_neuron_updates``, ``spikes``, ``neurons`` of the neuron
      nodes ``neuron_nodes`` attributed to this layer.
    """

    name: str
    op: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    T: int
    input_events: float
    firing_rate: float
    synops: float
    macs: float
    binary_fraction: float
    connections: int
    dense_ops: int
    dense_op_kind: str
    neuron_nodes: tuple[str, ...] = ()
    neurons: int = 0
    neuron_updates: float = 0.0
    active_neuron_updates: float = 0.0
    spikes: float = 0.0

    def __post_init__(self):
        if self.op not in {c.__name__ for c in SYNAPTIC_NODES}:
            raise ValueError(f"LayerCounts.op must name a synaptic NIR node, got {self.op!r}")
        if self.dense_op_kind not in ("mac", "add"):
            raise ValueError(f"dense_op_kind must be 'mac' or 'add', got {self.dense_op_kind!r}")
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {self.T}")
        _check_nonneg(self, ("input_events", "firing_rate", "synops", "macs", "binary_fraction",
                             "connections", "dense_ops", "neurons", "neuron_updates",
                             "active_neuron_updates", "spikes"))
        if self.firing_rate > 1 + 1e-9 or self.binary_fraction > 1 + 1e-9:
            raise ValueError("firing_rate and binary_fraction must be <= 1")
        if self.active_neuron_updates > self.neuron_updates + 1e-6:
            raise ValueError("active_neuron_updates must be <= neuron_updates")
        object.__setattr__(self, "neuron_nodes", tuple(self.neuron_nodes))

    @property
    def event_ops(self) -> float:
        """``synops + macs``: every event-driven operation of the layer."""
        return self.synops + self.macs


@dataclass(frozen=True)
class NeuronCounts:
    """One neuron node, per inference: ``updates = neurons * T``; ``active_updates`` = updates
    with nonzero input; ``spikes`` = ``sum_t sum_i [s_ti != 0]`` (0 for non-spiking LI/CubaLI/I);
    ``firing_rate = spikes / updates``; ``layer`` = the synaptic node it is attributed to."""

    name: str
    op: str
    neurons: int
    T: int
    updates: float
    active_updates: float
    spikes: float
    spiking: bool
    layer: str | None = None

    def __post_init__(self):
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {self.T}")
        _check_nonneg(self, ("neurons", "updates", "active_updates", "spikes"))
        if self.active_updates > self.updates + 1e-6:
            raise ValueError("active_updates must be <= updates")
        if not self.spiking and self.spikes:
            raise ValueError(f"non-spiking neuron node {self.name!r} cannot emit spikes")

    @property
    def firing_rate(self) -> float:
        return self.spikes / self.updates if self.updates else 0.0


TOTAL_KEYS = ("input_events", "synops", "macs", "connections", "ann_macs", "ann_adds",
              "neurons", "neuron_updates", "active_neuron_updates", "spikes")


@dataclass(frozen=True)
class EnergyCounts:
    """Per-inference counts of a whole graph: ``layers`` (synaptic nodes, graph order),
    ``neuron_nodes`` (every neuron node), ``T`` steps, ``samples`` averaged over,
    ``network_input_events`` = nonzero entries of the graph input, ``fanout`` mode.

    ``totals()`` sums layers (synaptic keys) and neuron nodes (neuron keys);
    ``ann_macs`` / ``ann_adds`` split the dense ANN ops by kind."""

    layers: tuple[LayerCounts, ...]
    neuron_nodes: tuple[NeuronCounts, ...]
    T: int
    samples: int
    network_input_events: float
    fanout: str = "structural"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "neuron_nodes", tuple(self.neuron_nodes))
        if self.T < 1 or self.samples < 1:
            raise ValueError(f"T and samples must be >= 1, got T={self.T}, samples={self.samples}")
        if self.fanout not in FANOUT_MODES:
            raise ValueError(f"fanout must be one of {FANOUT_MODES}, got {self.fanout!r}")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate layer names in {names}")

    def layer(self, name: str) -> LayerCounts:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def totals(self) -> dict[str, float]:
        out = dict.fromkeys(TOTAL_KEYS, 0.0)
        for layer in self.layers:
            out["input_events"] += layer.input_events
            out["synops"] += layer.synops
            out["macs"] += layer.macs
            out["connections"] += layer.connections
            out["ann_macs" if layer.dense_op_kind == "mac" else "ann_adds"] += layer.dense_ops
        for node in self.neuron_nodes:
            out["neurons"] += node.neurons
            out["neuron_updates"] += node.updates
            out["active_neuron_updates"] += node.active_updates
            out["spikes"] += node.spikes
        return out


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------

def _pair(value, name: str, node: str) -> tuple[int, int]:
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        return int(arr[0]), int(arr[0])
    if arr.size == 2:
        return int(arr[0]), int(arr[1])
    raise SpikelineError(f"node {node!r}: {name} must be one or two integers, got {value!r}")


def _padding(padding, kernel: tuple[int, int], dilation: tuple[int, int],
             node: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right); 'same' as torch: total d(k-1), the extra one at the end."""
    if isinstance(padding, bytes):
        padding = padding.decode()
    if isinstance(padding, np.ndarray) and padding.dtype.kind in "US":
        padding = str(padding.reshape(-1)[0])
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        raise SpikelineError(f"node {node!r}: padding must be 'same', 'valid' or integers, "
                             f"got {padding!r}")
    ph, pw = _pair(padding, "padding", node)
    return ph, ph, pw, pw


def conv_fanout(in_shape: tuple[int, int, int], mask: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int, int, int], dilation: tuple[int, int],
                groups: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Exact fan-out map ``[C_in, H, W]`` of a 2-D convolution and its output size (H_out, W_out).

    ``mask`` is the ``[C_out, C_in/groups, k_h, k_w]`` kernel of synapses (ones, or
    ``weight != 0``).  As in Sinabs: ``conv_transpose2d(ones[1, C_out, H_out, W_out], mask)`` is,
    at each position of the padded input, the number of (output, kernel tap) pairs reading it;
    positions beyond the last window (floor in the output size) and the padding are cut off.
    """
    c_in, height, width = in_shape
    top, bottom, left, right = padding
    hp, wp = height + top + bottom, width + left + right
    kh, kw = mask.shape[-2:]
    h_out = (hp - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (wp - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"kernel {kh}x{kw} does not fit the padded input {hp}x{wp}")
    ones = torch.ones(1, mask.shape[0], h_out, w_out, dtype=torch.float64)
    reached = F.conv_transpose2d(ones, mask.to(torch.float64), stride=stride, dilation=dilation,
                                 groups=groups)[0]
    full = torch.zeros(c_in, hp, wp, dtype=torch.float64)
    full[:, :reached.shape[1], :reached.shape[2]] = reached
    return full[:, top:top + height, left:left + width], (h_out, w_out)


def _as_2d(shape: tuple[int, ...], node: str, op: str) -> tuple[int, int, int]:
    if op == "Conv1d":
        if len(shape) != 2:
            raise SpikelineError(f"node {node!r} (Conv1d): input must be [C, L] per sample, "
                                 f"got {list(shape)}")
        return shape[0], 1, shape[1]
    if len(shape) != 3:
        raise SpikelineError(f"node {node!r} ({op}): input must be [C, H, W] per sample, "
                             f"got {list(shape)}")
    return shape


def _layer_geometry(name: str, node, in_shape: tuple[int, ...], fanout: str):
    """Fan-out map (shaped like one input sample), output shape, dense ops and their kind."""
    op = type(node).__name__
    if isinstance(node, (nir.Linear, nir.Affine)):
        weight = torch.as_tensor(np.asarray(node.weight), dtype=torch.float64)
        if weight.ndim != 2:
            raise SpikelineError(f"node {name!r} ({op}): weight must be [out, in], "
                                 f"got {list(weight.shape)}")
        n_out, n_in = weight.shape
        if not in_shape or in_shape[-1] != n_in:
            raise SpikelineError(f"node {name!r} ({op}): input has shape {list(in_shape)}, "
                                 f"expected last dimension {n_in} (weight [out, in] = "
                                 f"{list(weight.shape)})")
        per_input = (weight != 0).sum(0) if fanout == "nonzero" else torch.full((n_in,), n_out)
        fan = per_input.to(torch.float64).expand(in_shape).contiguous()
        positions = math.prod(in_shape[:-1])
        return fan, (*in_shape[:-1], n_out), n_in * n_out * positions, "mac"

    c, h, w = _as_2d(tuple(in_shape), name, op)
    if isinstance(node, (nir.Conv2d, nir.Conv1d)):
        weight = torch.as_tensor(np.asarray(node.weight), dtype=torch.float64)
        if op == "Conv1d":
            weight = weight.unsqueeze(-2)
            stride = (1, _pair(node.stride, "stride", name)[0])
            dilation = (1, _pair(node.dilation, "dilation", name)[0])
            if isinstance(node.padding, (str, bytes)):
                pads = _padding(node.padding, (1, weight.shape[-1]), dilation, name)
            else:
                pad = _pair(node.padding, "padding", name)[0]
                pads = (0, 0, pad, pad)
        else:
            stride = _pair(node.stride, "stride", name)
            dilation = _pair(node.dilation, "dilation", name)
            pads = _padding(node.padding, tuple(weight.shape[-2:]), dilation, name)
        groups = int(np.asarray(node.groups).reshape(-1)[0])
        if weight.ndim != 4 or c != weight.shape[1] * groups or weight.shape[0] % groups:
            raise SpikelineError(f"node {name!r} ({op}): weight {list(node.weight.shape)} with "
                                 f"groups={groups} does not fit an input of {c} channels")
        mask = (weight != 0).to(torch.float64) if fanout == "nonzero" else torch.ones_like(weight)
        kind, c_out = "mac", weight.shape[0]
        dense_per_out = weight.shape[1] * weight.shape[2] * weight.shape[3]
    else:  # SumPool2d / AvgPool2d: grouped convolution with a ones kernel
        kernel = _pair(node.kernel_size, "kernel_size", name)
        stride = _pair(node.stride, "stride", name)
        dilation = (1, 1)
        pads = _padding(node.padding, kernel, dilation, name)
        groups, c_out = c, c
        mask = torch.ones(c, 1, *kernel, dtype=torch.float64)
        kind, dense_per_out = "add", kernel[0] * kernel[1]
    try:
        fan, (h_out, w_out) = conv_fanout((c, h, w), mask, stride, pads, dilation, groups)
    except ValueError as err:
        raise SpikelineError(f"node {name!r} ({op}): {err}") from None
    out_shape = (c_out, w_out) if op == "Conv1d" else (c_out, h_out, w_out)
    return fan.reshape(in_shape), out_shape, dense_per_out * c_out * h_out * w_out, kind


def _edges(graph: nir.NIRGraph) -> list[tuple[str, str]]:
    def base(name: str) -> str:
        if name in graph.nodes:
            return name
        head = name.split(".", 1)[0]
        if head in graph.nodes:
            return head
        raise SpikelineError(f"graph edge names {name!r}, which is not a node of the graph")

    return [(base(src), base(dst)) for src, dst in graph.edges]


def _predecessors(graph: nir.NIRGraph) -> tuple[list[str], dict[str, list[tuple[str, bool]]]]:
    """(topological order, node -> [(predecessor, is_back_edge)] in that order)."""
    edges = _edges(graph)
    topo, back = topological_order(graph, edges)
    order = {name: i for i, name in enumerate(topo)}
    preds: dict[str, list[tuple[str, bool]]] = {name: [] for name in graph.nodes}
    for src, dst in edges:
        preds[dst].append((src, (src, dst) in back))
    for name in preds:
        preds[name].sort(key=lambda p: order.get(p[0], len(order)))
    return topo, preds


def _node_input(name: str, preds: list[tuple[str, bool]],
                outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the predecessors' outputs; a recurrent (back) edge delivers step t-1."""
    if not preds:
        raise SpikelineError(f"node {name!r} has no incoming edge")
    terms = []
    for pred, is_back in preds:
        if pred not in outputs:
            raise SpikelineError(f"the simulation has no output for node {pred!r} (input of "
                                 f"{name!r})")
        value = torch.as_tensor(outputs[pred]).detach()
        if value.ndim < 3:
            raise SpikelineError(f"output of node {pred!r} must be [T, N, ...], got "
                                 f"{list(value.shape)}")
        if is_back:
            value = torch.cat([torch.zeros_like(value[:1]), value[:-1]])
        terms.append(value)
    if len(terms) == 1:
        return terms[0]
    try:
        return torch.stack(torch.broadcast_tensors(*terms)).sum(0)
    except RuntimeError:
        shapes = [list(t.shape) for t in terms]
        raise SpikelineError(f"node {name!r}: incoming outputs have shapes {shapes}, which do "
                             f"not add up") from None


def _owner_layer(name: str, graph: nir.NIRGraph, preds: dict[str, list[str]]) -> str | None:
    """First synaptic node upstream of neuron node ``name`` (through pass-through nodes)."""
    frontier, seen = [p for p, _ in preds[name]], set()
    while frontier:
        nxt = []
        for pred in frontier:
            if pred in seen:
                continue
            seen.add(pred)
            node = graph.nodes[pred]
            if isinstance(node, SYNAPTIC_NODES):
                return pred
            if isinstance(node, (nir.Flatten, nir.Scale, nir.Delay, nir.Identity)):
                nxt.extend(p for p, _ in preds[pred])
        frontier = nxt
    return None


@torch.no_grad()
def count_operations(graph: nir.NIRGraph, sim: Any, *, fanout: str = "structural") -> EnergyCounts:
    """Count per-inference operations of ``graph`` on the activity in ``sim.outputs``.

    ``sim`` is anything with ``outputs``: a mapping node name -> ``[T, N, *shape]`` tensor of
    that node's output over time (the result of ``simulate(graph, x)``, or a plain dict).
    ``fanout`` is ``"structural"`` (every synapse, as Sinabs) or ``"nonzero"`` (nonzero weights
    only, as NeuroBench).  See the module docstring for every formula.
    """
    if fanout not in FANOUT_MODES:
        raise SpikelineError(f"fanout must be one of {', '.join(FANOUT_MODES)}, got {fanout!r}")
    outputs = sim.outputs if hasattr(sim, "outputs") else sim
    if not isinstance(outputs, Mapping):
        raise SpikelineError("sim must have an `outputs` mapping node name -> [T, N, ...] tensor")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise SpikelineError(f"node {name!r} is a nested NIRGraph; energy counting needs a "
                                 f"flat graph")
    topo, preds = _predecessors(graph)
    unreachable = sorted(set(graph.nodes) - set(topo))
    if unreachable:
        raise SpikelineError(f"nodes {unreachable} cannot be reached from the graph input")

    T = N = None

    def check_tn(name: str, tensor: torch.Tensor):
        nonlocal T, N
        if T is None:
            T, N = int(tensor.shape[0]), int(tensor.shape[1])
        elif tuple(tensor.shape[:2]) != (T, N):
            raise SpikelineError(f"node {name!r}: activity has [T, N] = "
                                 f"{list(tensor.shape[:2])}, other nodes have {[T, N]}")
        if T < 1 or N < 1:
            raise SpikelineError(f"node {name!r}: activity has T={T}, N={N}; need >= 1 each")

    layers, owners = [], {}
    nodes = [(name, graph.nodes[name]) for name in topo]
    for name, node in nodes:
        if isinstance(node, NEURON_NODES):
            owners[name] = _owner_layer(name, graph, preds)

    neuron_counts = []
    for name, node in nodes:
        if not isinstance(node, NEURON_NODES):
            continue
        x = _node_input(name, preds[name], outputs)
        check_tn(name, x)
        if name not in outputs:
            raise SpikelineError(f"the simulation has no output for neuron node {name!r}")
        out = torch.as_tensor(outputs[name]).detach()
        check_tn(name, out)
        neurons = math.prod(out.shape[2:])
        spiking = isinstance(node, SPIKING_NEURONS)
        if x.shape != out.shape:
            try:
                x = torch.broadcast_to(x, out.shape)
            except RuntimeError:
                raise SpikelineError(f"neuron node {name!r}: input {list(x.shape)} does not "
                                     f"match its output {list(out.shape)}") from None
        neuron_counts.append(NeuronCounts(
            name=name, op=type(node).__name__, neurons=neurons, T=T,
            updates=float(neurons * T),
            active_updates=float((x != 0).sum().item()) / N,
            spikes=float((out != 0).sum().item()) / N if spiking else 0.0,
            spiking=spiking, layer=owners[name]))

    by_layer: dict[str, list[NeuronCounts]] = {}
    for nc in neuron_counts:
        if nc.layer is not None:
            by_layer.setdefault(nc.layer, []).append(nc)

    for name, node in nodes:
        if not isinstance(node, SYNAPTIC_NODES):
            continue
        x = _node_input(name, preds[name], outputs)
        check_tn(name, x)
        in_shape = tuple(int(s) for s in x.shape[2:])
        fan, out_shape, dense, kind = _layer_geometry(name, node, in_shape, fanout)
        fan_flat = fan.reshape(-1)
        ops = torch.empty(T, N, dtype=torch.float64)
        binary = torch.empty(T, N, dtype=torch.bool)
        events = 0.0
        for t in range(T):
            step = x[t].reshape(N, -1)
            nonzero = step != 0
            binary[t] = ((step == 1) | (step == -1) | ~nonzero).all(dim=1)
            ops[t] = nonzero.to(torch.float64) @ fan_flat
            events += float(nonzero.sum().item())
        owned = by_layer.get(name, [])
        layers.append(LayerCounts(
            name=name, op=type(node).__name__, input_shape=in_shape, output_shape=out_shape,
            T=T, input_events=events / N, firing_rate=events / (N * T * max(1, fan_flat.numel())),
            synops=float(ops[binary].sum().item()) / N, macs=float(ops[~binary].sum().item()) / N,
            binary_fraction=float(binary.to(torch.float64).mean().item()),
            connections=int(round(float(fan_flat.sum().item()))), dense_ops=int(dense),
            dense_op_kind=kind, neuron_nodes=tuple(n.name for n in owned),
            neurons=sum(n.neurons for n in owned),
            neuron_updates=sum(n.updates for n in owned),
            active_neuron_updates=sum(n.active_updates for n in owned),
            spikes=sum(n.spikes for n in owned)))
    if not layers:
        raise SpikelineError("the graph has no synaptic node (Conv1d/Conv2d/Linear/Affine/"
                             "SumPool2d/AvgPool2d): nothing to count")

    network_events = 0.0
    for name, node in graph.nodes.items():
        if isinstance(node, nir.Input) and name in outputs:
            network_events += float((torch.as_tensor(outputs[name]) != 0).sum().item()) / N
    return EnergyCounts(layers=tuple(layers), neuron_nodes=tuple(neuron_counts), T=T,
                        samples=N, network_input_events=network_events, fanout=fanout)


# --------------------------------------------------------------------------------------------
# Hardware models
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Constant:
    """One energy figure: ``joules`` (the file stores ``pj``), its ``source`` and whether it
    comes from pre-silicon simulation (``pre_silicon``; None = not stated)."""

    joules: float
    source: str
    pre_silicon: bool | None = None

    def __post_init__(self):
        if not (math.isfinite(self.joules) and self.joules >= 0):
            raise ValueError(f"energy must be finite and >= 0, got {self.joules}")
        if not self.source.strip():
            raise ValueError("source must be a non-empty string")


MODEL_KINDS = {
    # kind: (required priced constants, optional priced constants)
    "cmos": (("mac", "ac"), ()),
    "neuromorphic": (("synop",), ("synop_conv", "neuron_active", "neuron_inactive", "spike")),
}


@dataclass(frozen=True)
class HardwareModel:
    """A hardware energy model: ``kind`` "cmos" (constants ``mac``, ``ac``) or "neuromorphic"
    (``synop`` [+ ``synop_conv``, ``neuron_active``, ``neuron_inactive``, ``spike``]);
    ``unpriced`` constants are recorded for reference only (learning, routing).
    ``ann_baseline`` is the CMOS model that prices the ANN equivalent (itself for CMOS models).
    """

    name: str
    kind: str
    description: str
    constants: Mapping[str, Constant]
    ann_baseline: str
    unpriced: Mapping[str, Constant] = field(default_factory=dict)
    ann_mac: float = 0.0
    ann_ac: float = 0.0

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {sorted(MODEL_KINDS)}, got {self.kind!r}")
        required, optional = MODEL_KINDS[self.kind]
        missing = [c for c in required if c not in self.constants]
        unknown = [c for c in self.constants if c not in required + optional]
        if missing or unknown:
            raise ValueError(f"constants missing {missing} / unknown {unknown}; kind "
                             f"{self.kind!r} takes {list(required)} and optionally {list(optional)}")

    def joules(self, key: str) -> float:
        c = self.constants.get(key)
        return c.joules if c is not None else 0.0

    @property
    def pre_silicon(self) -> bool | None:
        """True if any priced constant is pre-silicon; None if no constant says."""
        flags = [c.pre_silicon for c in self.constants.values() if c.pre_silicon is not None]
        return any(flags) if flags else None


def _parse_constant(raw, where: str) -> Constant:
    if not isinstance(raw, dict):
        raise SpikelineError(f"{where}: expected a table {{ pj = <number>, source = \"...\" "
                             f"[, pre_silicon = true|false] }}, got {raw!r}")
    extra = set(raw) - {"pj", "source", "pre_silicon"}
    if extra:
        raise SpikelineError(f"{where}: unknown key(s) {sorted(extra)}; expected pj, source, "
                             f"pre_silicon")
    pj, source, pre = raw.get("pj"), raw.get("source"), raw.get("pre_silicon")
    if isinstance(pj, bool) or not isinstance(pj, (int, float)) or not math.isfinite(pj) or pj < 0:
        raise SpikelineError(f"{where}.pj: expected a number of picojoules >= 0, got {pj!r}")
    if not isinstance(source, str) or not source.strip():
        raise SpikelineError(f"{where}.source: expected a non-empty string naming where the "
                             f"figure comes from, got {source!r}")
    if pre is not None and not isinstance(pre, bool):
        raise SpikelineError(f"{where}.pre_silicon: expected true or false, got {pre!r}")
    return Constant(joules=float(pj) * PJ, source=source, pre_silicon=pre)


def _parse_models(path: Path) -> dict[str, dict]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SpikelineError(f"{path}: no such hardware model file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpikelineError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise SpikelineError(f"{path}: cannot read ({err})") from None
    extra = set(data) - {"models"}
    if extra:
        raise SpikelineError(f"{path}: unknown top-level key(s) {sorted(extra)}; expected "
                             f"[models.NAME] tables")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise SpikelineError(f"{path}: expected at least one [models.NAME] table")
    parsed = {}
    for name, raw in models.items():
        where = f"{path}: models.{name}"
        if not isinstance(raw, dict):
            raise SpikelineError(f"{where}: expected a table")
        kind = raw.get("kind")
        if kind not in MODEL_KINDS:
            raise SpikelineError(f"{where}.kind: expected one of {sorted(MODEL_KINDS)}, "
                                 f"got {kind!r}")
        required, optional = MODEL_KINDS[kind]
        allowed = {"kind", "description", "ann_baseline", "unpriced", *required, *optional}
        extra = set(raw) - allowed
        if extra:
            raise SpikelineError(f"{where}: unknown key(s) {sorted(extra)}; a {kind!r} model "
                                 f"takes {sorted(allowed)}")
        missing = [k for k in required if k not in raw]
        if missing:
            raise SpikelineError(f"{where}: missing constant(s) {missing} (a {kind!r} model "
                                 f"needs {list(required)})")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise SpikelineError(f"{where}.description: expected a string")
        baseline = raw.get("ann_baseline", name if kind == "cmos" else DEFAULT_ANN_BASELINE)
        if not isinstance(baseline, str):
            raise SpikelineError(f"{where}.ann_baseline: expected the name of a cmos model that "
                                 f"prices the ANN equivalent, got {baseline!r}")
        unpriced = raw.get("unpriced", {})
        if not isinstance(unpriced, dict):
            raise SpikelineError(f"{where}.unpriced: expected a table of constants")
        parsed[name] = {
            "name": name, "kind": kind, "description": description, "ann_baseline": baseline,
            "constants": {k: _parse_constant(raw[k], f"{where}.{k}")
                          for k in (*required, *optional) if k in raw},
            "unpriced": {k: _parse_constant(v, f"{where}.unpriced.{k}")
                         for k, v in unpriced.items()},
            "file": path,
        }
    return parsed


def load_hardware_models(path: str | Path | None = None) -> dict[str, HardwareModel]:
    """The bundled models of ``deploy/hardware.toml``, extended / overridden by ``path``.

    ``path``'s ``[models.NAME]`` tables add models, or replace a bundled model of the same name.
    A malformed file raises :class:`SpikelineError` naming the file, the field and what was
    expected.  A neuromorphic model's ``ann_baseline`` (default ``cmos45_int8``) must name a
    ``cmos`` model (from either file), whose ``mac``/``ac`` energies price the ANN equivalent.
    """
    raw = _parse_models(DEFAULT_HARDWARE_FILE)
    if path is not None:
        raw.update(_parse_models(Path(path)))
    models = {}
    for name, entry in raw.items():
        base = raw.get(entry["ann_baseline"])
        if base is None or base["kind"] != "cmos":
            raise SpikelineError(f"{entry['file']}: models.{name}.ann_baseline: "
                                 f"{entry['ann_baseline']!r} is not a cmos model; expected one "
                                 f"of {sorted(k for k, v in raw.items() if v['kind'] == 'cmos')}")
        models[name] = HardwareModel(
            name=name, kind=entry["kind"], description=entry["description"],
            constants=entry["constants"], ann_baseline=entry["ann_baseline"],
            unpriced=entry["unpriced"], ann_mac=base["constants"]["mac"].joules,
            ann_ac=base["constants"]["ac"].joules)
    return models


def select_models(models: Mapping[str, HardwareModel], names) -> list[HardwareModel]:
    """The models called ``names`` (all when ``names`` is empty); unknown names raise."""
    if not names:
        return list(models.values())
    unknown = [n for n in names if n not in models]
    if unknown:
        raise SpikelineError(f"unknown hardware model(s) {unknown}; expected one of "
                             f"{sorted(models)} (add models with --hardware FILE)")
    return [models[n] for n in names]


# --------------------------------------------------------------------------------------------
# Pricing
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnergyEstimate:
    """Joules per inference on ``model``: ``snn``, ``ann`` (dense equivalent), ``ratio`` =
    ann / snn (None when snn is 0); ``layers`` maps layer name -> (snn J, ann J) (a layer's
    SNN energy includes its attributed neuron nodes); ``breakdown`` splits the SNN energy
    into synaptic / neuron / spike joules."""

    model: str
    snn: float
    ann: float
    ratio: float | None
    layers: Mapping[str, tuple[float, float]]
    breakdown: Mapping[str, float]

    def __post_init__(self):
        if not (self.snn >= 0 and self.ann >= 0):
            raise ValueError("energies must be >= 0")


def price(counts: EnergyCounts, model: HardwareModel) -> EnergyEstimate:
    """Price ``counts`` on ``model``, joules per inference.

    ANN equivalent (every model; ``E_MAC``/``E_AC`` of the model's ``ann_baseline``)::

        E_ANN = E_MAC * sum_l dense_MACs_l + E_AC * sum_l dense_pool_adds_l

    CMOS models (``kind = "cmos"``; REFERENCE §7, e.g. Spikformer)::

        E_SNN = E_MAC * sum_l macs_l + E_AC * sum_l synops_l

    (arithmetic only: neuron-state updates, memory and data movement are not priced, which
    favours the SNN; see arXiv 2409.08290).

    Neuromorphic models (``kind = "neuromorphic"``)::

        E_SNN = sum_l E_synop(l) * (synops_l + macs_l)
              + E_neuron_active * active_updates + E_neuron_inactive * (updates - active_updates)
              + E_spike * spikes

    with ``E_synop(l) = synop_conv`` for Conv layers when given, else ``synop``; a non-binary
    input entry is priced as one (graded) event per synapse.  Missing optional constants are 0
    (TrueNorth's 26 pJ per synaptic event is all-in).
    """
    totals_ann = 0.0
    totals_syn = 0.0
    per_layer = {}
    for layer in counts.layers:
        e_dense = model.ann_mac if layer.dense_op_kind == "mac" else model.ann_ac
        ann = e_dense * layer.dense_ops
        if model.kind == "cmos":
            syn = model.joules("mac") * layer.macs + model.joules("ac") * layer.synops
        else:
            e_syn = model.joules("synop")
            if layer.op in ("Conv2d", "Conv1d") and "synop_conv" in model.constants:
                e_syn = model.joules("synop_conv")
            syn = e_syn * layer.event_ops
        per_layer[layer.name] = [syn, ann]
        totals_ann += ann
        totals_syn += syn

    e_neuron = e_spike = 0.0
    if model.kind == "neuromorphic":
        for node in counts.neuron_nodes:
            neuron = (model.joules("neuron_active") * node.active_updates
                      + model.joules("neuron_inactive") * (node.updates - node.active_updates))
            spike = model.joules("spike") * node.spikes
            e_neuron += neuron
            e_spike += spike
            if node.layer in per_layer:
                per_layer[node.layer][0] += neuron + spike
    snn = totals_syn + e_neuron + e_spike
    ratio = totals_ann / snn if snn > 0 else None
    return EnergyEstimate(model=model.name, snn=snn, ann=totals_ann, ratio=ratio,
                          layers={k: (v[0], v[1]) for k, v in per_layer.items()},
                          breakdown={"synaptic": totals_syn, "neuron": e_neuron,
                                     "spike": e_spike})


def combine_counts(parts: list[EnergyCounts]) -> EnergyCounts:
    """Merge counts of disjoint sample batches of the same graph, T and fan-out mode.

    Per-inference quantities are averages, so each is the sample-weighted mean
    ``sum_b n_b q_b / sum_b n_b``; structural ones (shapes, connections, dense ops, neurons) must
    agree.  Because the binary rule is applied per sample and step, counting a run in batches
    and combining gives the same numbers as counting it at once.
    """
    if not parts:
        raise ValueError("combine_counts needs at least one EnergyCounts")
    first = parts[0]
    for part in parts[1:]:
        if (part.T, part.fanout) != (first.T, first.fanout) or \
                [l.name for l in part.layers] != [l.name for l in first.layers] or \
                [n.name for n in part.neuron_nodes] != [n.name for n in first.neuron_nodes]:
            raise ValueError("combine_counts: parts differ in T, fan-out mode, layers or neurons")
    total = sum(p.samples for p in parts)

    def mean(getter):
        return sum(getter(p) * p.samples for p in parts) / total

    layers = []
    for i, layer in enumerate(first.layers):
        avg = {key: mean(lambda p, k=key: getattr(p.layers[i], k))
               for key in ("input_events", "firing_rate", "synops", "macs", "binary_fraction",
                           "neuron_updates", "active_neuron_updates", "spikes")}
        layers.append(replace(layer, **avg))
    neurons = []
    for i, node in enumerate(first.neuron_nodes):
        avg = {key: mean(lambda p, k=key: getattr(p.neuron_nodes[i], k))
               for key in ("updates", "active_updates", "spikes")}
        neurons.append(replace(node, **avg))
    return EnergyCounts(layers=tuple(layers), neuron_nodes=tuple(neurons), T=first.T,
                        samples=total,
                        network_input_events=mean(lambda p: p.network_input_events),
                        fanout=first.fanout)
