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
docs/reference.md §7 / Spikformer convention)::

    FLOPs_conv = k_h k_w * H_out W_out * C_in / groups * C_out      (MACs)
    FLOPs_fc   = in * out   (per position of any leading dims)      (MACs)
    adds_pool  = k_h k_w * H_out W_out * C                           (additions)

Neurons: every neuron node (CubaLIF, LIF, IF, Threshold spike; CubaLI, LI, I do not) is updated
once per step: ``neuron_updates = neurons * (T + latency_steps)`` (``latency_steps``: the extra
steps a chip runs while the last input crosses the network's depth, from the export's
``metadata.json``; 0 when absent).  ``active_neuron_updates`` counts the updates in which the
neuron has work to do: its input is nonzero, or, for a CUBA neuron (CubaLIF / CubaLI), its
synaptic current is nonzero (the current keeps decaying into the voltage after the input
stops; the current is rebuilt from the node's input with the same fixed-point decay as the
simulator, or in float64 when the parameters have no fixed-point form).  ``spikes`` = nonzero
outputs of spiking neurons.  Each neuron node is attributed to the first synaptic node found
upstream of it (through Flatten / Scale / Delay / Identity); totals always include every neuron
node.  Layers and neuron nodes are listed in topological order (the simulator's walk,
:mod:`spikeline.deploy.graph`).

Shortcut adds: a node fed by several edges (a Spiking ResNet's identity shortcut into a
neuron, a SEW ADD junction into the next synapse) adds its terms.  Event-driven, that is one
addition per nonzero term beyond the first at each position and step::

    shortcut_adds = sum_t sum_j (#{terms k: x_ktj != 0} - [any term nonzero])

and the dense ANN equivalent adds ``(terms - 1) * size`` once per inference.  Both are
attributed to the node's layer (the node itself, or the layer owning the neuron node).

Pricing lives in :mod:`.conventions`; hardware models in :mod:`.hardware`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import singledispatch
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

import nir

from spikeline.errors import SpikelineError
from spikeline.pipeline.geometry import conv_output_size, pair
from spikeline.pipeline.neuron import integrate

from ..graph import recorded_input, upstream, walk
from ..nir_check import graph_dt
from ..nir_params import nir_to_cuba

SYNAPTIC_NODES = (nir.Conv2d, nir.Conv1d, nir.Linear, nir.Affine, nir.SumPool2d, nir.AvgPool2d)
SPIKING_NEURONS = (nir.CubaLIF, nir.LIF, nir.IF, nir.Threshold)
NONSPIKING_NEURONS = (nir.CubaLI, nir.LI, nir.I)
NEURON_NODES = SPIKING_NEURONS + NONSPIKING_NEURONS
CUBA_NEURONS = (nir.CubaLIF, nir.CubaLI)
# nodes a neuron's input passes through unchanged in kind (nir 1.0.8 has no Identity node;
# later versions do)
PASS_THROUGH = tuple(t for t in (nir.Flatten, nir.Scale, nir.Delay, getattr(nir, "Identity", None))
                     if t is not None)
FANOUT_MODES = ("structural", "nonzero")


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
    - ``spike_events`` = the part of ``input_events`` on binary steps (what a spike-driven
      model addresses); ``first_layer``: fed by the graph Input (through pass-through nodes
      only); ``has_bias``: the node adds a nonzero bias each step.
    - ``params`` = stored weights (+ bias when nonzero: a zero bias is neither added nor
      stored) of the node; ``kernel_fanout`` = ``C_out/groups *
      k_h * k_w`` for convolution and pooling (pooling: ``k_h * k_w``), ``out_features`` for
      Linear/Affine: the synapses one input reaches in a border-free window, which Lemaire et
      al. use for addressing; ``taps`` = ``k_h * k_w`` (1 for Linear/Affine).
    - ``shortcut_adds`` / ``dense_shortcut_adds``: additions forming the sum of several
      incoming edges, event-driven / dense once per inference (module docstring).
    - ``leaks`` = state decays per neuron update of the owned neurons, summed:
      ``sum_nodes updates * leak_terms`` (1 for LIF/LI, 2 for CubaLIF/CubaLI, 0 for IF/I).
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
    spike_events: float | None = None
    first_layer: bool = False
    has_bias: bool = False
    params: int = 0
    kernel_fanout: int = 0
    shortcut_adds: float = 0.0
    dense_shortcut_adds: int = 0
    leaks: float = 0.0
    taps: int = 1

    def __post_init__(self):
        if self.spike_events is None:  # every event on a binary step unless told otherwise
            object.__setattr__(self, "spike_events",
                               self.input_events if self.binary_fraction >= 1 else 0.0)
        if self.op not in {c.__name__ for c in SYNAPTIC_NODES}:
            raise ValueError(f"LayerCounts.op must name a synaptic NIR node, got {self.op!r}")
        if self.dense_op_kind not in ("mac", "add"):
            raise ValueError(f"dense_op_kind must be 'mac' or 'add', got {self.dense_op_kind!r}")
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {self.T}")
        _check_nonneg(self, ("input_events", "firing_rate", "synops", "macs", "binary_fraction",
                             "connections", "dense_ops", "neurons", "neuron_updates",
                             "active_neuron_updates", "spikes", "spike_events", "params",
                             "kernel_fanout", "shortcut_adds", "dense_shortcut_adds", "leaks",
                             "taps"))
        if self.firing_rate > 1 + 1e-9 or self.binary_fraction > 1 + 1e-9:
            raise ValueError("firing_rate and binary_fraction must be <= 1")
        if self.active_neuron_updates > self.neuron_updates + 1e-6:
            raise ValueError("active_neuron_updates must be <= neuron_updates")
        object.__setattr__(self, "neuron_nodes", tuple(self.neuron_nodes))

    @property
    def event_ops(self) -> float:
        """``synops + macs``: every event-driven operation of the layer."""
        return self.synops + self.macs

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_size(self) -> int:
        return math.prod(self.output_shape)

    @property
    def graded(self) -> bool:
        """Some step delivers non-binary (integer or real) values into this layer."""
        return self.binary_fraction < 1 - 1e-12


@dataclass(frozen=True)
class NeuronCounts:
    """One neuron node, per inference: ``updates = neurons * (T + latency steps)``;
    ``active_updates`` = updates with nonzero input (or nonzero synaptic current, CUBA);
    ``leak_terms`` = decaying state variables per update; ``spikes`` =
    ``sum_t sum_i [s_ti != 0]`` (0 for non-spiking LI/CubaLI/I);
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
    leak_terms: int = 1

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
              "neurons", "neuron_updates", "active_neuron_updates", "spikes", "shortcut_adds",
              "dense_shortcut_adds")


@dataclass(frozen=True)
class EnergyCounts:
    """Per-inference counts of a whole graph: ``layers`` (synaptic nodes, graph order),
    ``neuron_nodes`` (every neuron node), ``T`` steps, ``samples`` averaged over,
    ``network_input_events`` = nonzero entries of the graph input, ``fanout`` mode.

    ``latency_steps`` extra steps of neuron updates (a chip's pipeline depth).

    ``totals()`` sums layers (synaptic keys) and neuron nodes (neuron keys);
    ``ann_macs`` / ``ann_adds`` split the dense ANN ops by kind."""

    layers: tuple[LayerCounts, ...]
    neuron_nodes: tuple[NeuronCounts, ...]
    T: int
    samples: int
    network_input_events: float
    fanout: str = "structural"
    latency_steps: int = 0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "neuron_nodes", tuple(self.neuron_nodes))
        if self.T < 1 or self.samples < 1:
            raise ValueError(f"T and samples must be >= 1, got T={self.T}, samples={self.samples}")
        if self.fanout not in FANOUT_MODES:
            raise ValueError(f"fanout must be one of {FANOUT_MODES}, got {self.fanout!r}")
        if self.latency_steps < 0:
            raise ValueError(f"latency_steps must be >= 0, got {self.latency_steps}")
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
            out["shortcut_adds"] += layer.shortcut_adds
            out["dense_shortcut_adds"] += layer.dense_shortcut_adds
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
    try:
        return pair(value)
    except ValueError:
        raise SpikelineError(f"node {node!r}: {name} must be one or two integers, got "
                             f"{value!r}") from None


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
    h_out, w_out = conv_output_size((hp, wp), (kh, kw), stride, 0, dilation)
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


@dataclass(frozen=True)
class Geometry:
    """What a synaptic node's structure gives, independent of activity: the fan-out map
    ``fan`` (shaped like one input sample), ``out_shape``, ``dense_ops`` once per inference of
    kind ``dense_op_kind``, stored ``params``, ``kernel_fanout`` (see :class:`LayerCounts`)
    and ``has_bias``."""

    fan: torch.Tensor
    out_shape: tuple[int, ...]
    dense_ops: int
    dense_op_kind: str
    params: int
    kernel_fanout: int
    has_bias: bool
    taps: int = 1


def _nonzero(array) -> bool:
    return array is not None and bool(np.any(np.asarray(array) != 0))


@singledispatch
def layer_geometry(node, name: str, in_shape: tuple[int, ...], fanout: str) -> Geometry:
    """The :class:`Geometry` of synaptic ``node`` fed ``in_shape`` per sample; one
    registration per synaptic NIR node type (the energy side of the simulator's node table)."""
    raise SpikelineError(f"node {name!r}: {type(node).__name__} is not a synaptic node")


@layer_geometry.register(nir.Linear)
@layer_geometry.register(nir.Affine)
def _(node, name, in_shape, fanout):
    op = type(node).__name__
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
    bias = getattr(node, "bias", None)
    return Geometry(fan, (*in_shape[:-1], n_out), n_in * n_out * positions, "mac",
                    params=n_in * n_out + (n_out if _nonzero(bias) else 0),
                    kernel_fanout=n_out, has_bias=_nonzero(bias))


@layer_geometry.register(nir.Conv2d)
@layer_geometry.register(nir.Conv1d)
def _(node, name, in_shape, fanout):
    op = type(node).__name__
    c, h, w = _as_2d(tuple(in_shape), name, op)
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
    c_out = weight.shape[0]
    taps = weight.shape[2] * weight.shape[3]
    fan, (h_out, w_out) = _fanout(name, op, (c, h, w), mask, stride, pads, dilation, groups)
    out_shape = (c_out, w_out) if op == "Conv1d" else (c_out, h_out, w_out)
    bias = getattr(node, "bias", None)
    return Geometry(fan.reshape(in_shape), out_shape,
                    weight.shape[1] * taps * c_out * h_out * w_out, "mac",
                    params=int(weight.numel()) + (c_out if _nonzero(bias) else 0),
                    kernel_fanout=c_out // groups * taps, has_bias=_nonzero(bias), taps=taps)


@layer_geometry.register(nir.SumPool2d)
@layer_geometry.register(nir.AvgPool2d)
def _(node, name, in_shape, fanout):
    """Pooling: a grouped convolution with a ones kernel (no stored weights)."""
    op = type(node).__name__
    c, h, w = _as_2d(tuple(in_shape), name, op)
    kernel = _pair(node.kernel_size, "kernel_size", name)
    stride = _pair(node.stride, "stride", name)
    pads = _padding(node.padding, kernel, (1, 1), name)
    mask = torch.ones(c, 1, *kernel, dtype=torch.float64)
    fan, (h_out, w_out) = _fanout(name, op, (c, h, w), mask, stride, pads, (1, 1), c)
    taps = kernel[0] * kernel[1]
    return Geometry(fan.reshape(in_shape), (c, h_out, w_out), taps * c * h_out * w_out, "add",
                    params=0, kernel_fanout=taps, has_bias=False, taps=taps)


def _fanout(name, op, shape, mask, stride, pads, dilation, groups):
    try:
        return conv_fanout(shape, mask, stride, pads, dilation, groups)
    except ValueError as err:
        raise SpikelineError(f"node {name!r} ({op}): {err}") from None


def _leak_terms(node) -> int:
    if isinstance(node, CUBA_NEURONS):
        return 2
    if isinstance(node, (nir.LIF, nir.LI)):
        return 1
    return 0


def _cuba_active(node, x: torch.Tensor, dt: float) -> torch.Tensor:
    """``[T, N, ...]`` mask of steps whose synaptic current is nonzero, the current rebuilt
    from the node's input ``x``: fixed point as ``pipeline.neuron`` runs it
    (``u = trunc(u (4096 - iDecay) / 4096) + trunc(s x)``) when the parameters have that form,
    else forward Euler in float64 (``I = (1 - dt/tau_syn) I + w_in dt/tau_syn x``)."""
    fixed = nir_to_cuba(node, dt)
    active = torch.empty(x.shape, dtype=torch.bool)
    if fixed is not None:
        p = fixed[0]
        u = torch.zeros(x.shape[1:], dtype=torch.int64)
        for t in range(x.shape[0]):
            u = integrate(x[t].to(torch.float32), p.i_decay, p.s_scale, u)
            active[t] = u != 0
        return active
    rate = torch.as_tensor(dt / np.asarray(node.tau_syn, dtype=np.float64))
    gain = rate * torch.as_tensor(np.asarray(node.w_in, dtype=np.float64))
    current = torch.zeros(x.shape[1:], dtype=torch.float64)
    for t in range(x.shape[0]):
        current = current * (1 - rate) + gain * x[t].to(torch.float64)
        active[t] = current != 0
    return active


def _shortcut_adds(name, preds, outputs, N) -> tuple[float, int]:
    """(event-driven adds per inference, dense adds once per inference) forming the sum of a
    node's incoming edges; (0, 0) for a single edge."""
    if len(preds) < 2:
        return 0.0, 0
    nonzero, size = [], 0
    for pred, is_back in preds:
        value = torch.as_tensor(outputs[pred]).detach()
        if is_back:
            value = torch.cat([torch.zeros_like(value[:1]), value[:-1]])
        nonzero.append(value != 0)
    nonzero = torch.broadcast_tensors(*nonzero)
    size = math.prod(nonzero[0].shape[2:])
    stacked = torch.stack(nonzero).to(torch.int64)
    adds = (stacked.sum(0) - stacked.amax(0)).sum().item()
    return float(adds) / N, (len(preds) - 1) * size


@torch.no_grad()
def count_operations(graph: nir.NIRGraph, sim: Any, *, fanout: str = "structural",
                     latency_steps: int = 0) -> EnergyCounts:
    """Count per-inference operations of ``graph`` on the activity in ``sim.outputs``.

    ``sim`` is anything with ``outputs``: a mapping node name -> ``[T, N, *shape]`` tensor of
    that node's output over time (the result of ``simulate(graph, x)``, or a plain dict).
    ``fanout`` is ``"structural"`` (every synapse, as Sinabs) or ``"nonzero"`` (nonzero weights
    only, as NeuroBench).  ``latency_steps`` adds that many input-free neuron updates per
    neuron (a chip's pipeline depth).  See the module docstring for every formula.
    """
    if fanout not in FANOUT_MODES:
        raise SpikelineError(f"fanout must be one of {', '.join(FANOUT_MODES)}, got {fanout!r}")
    if isinstance(latency_steps, bool) or not isinstance(latency_steps, int) or latency_steps < 0:
        raise SpikelineError(f"latency_steps must be an integer >= 0, got {latency_steps!r}")
    outputs = sim.outputs if hasattr(sim, "outputs") else sim
    if not isinstance(outputs, Mapping):
        raise SpikelineError("sim must have an `outputs` mapping node name -> [T, N, ...] tensor")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise SpikelineError(f"node {name!r} is a nested NIRGraph; energy counting needs a "
                                 f"flat graph")
    steps = walk(graph)
    topo, preds = steps.order, steps.preds
    dt = graph_dt(graph)

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

    def is_synaptic(node):
        return isinstance(node, SYNAPTIC_NODES)

    def passes(node):
        return isinstance(node, PASS_THROUGH)

    layers = []
    nodes = [(name, graph.nodes[name]) for name in topo]
    owners = {name: upstream(name, graph, preds, is_synaptic, passes)
              for name, node in nodes if isinstance(node, NEURON_NODES)}

    neuron_counts, node_adds = [], {}
    for name, node in nodes:
        if not isinstance(node, NEURON_NODES):
            continue
        x = recorded_input(name, preds[name], outputs)
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
        active = _cuba_active(node, x, dt) if isinstance(node, CUBA_NEURONS) else x != 0
        node_adds[name] = _shortcut_adds(name, preds[name], outputs, N)
        neuron_counts.append(NeuronCounts(
            name=name, op=type(node).__name__, neurons=neurons, T=T,
            updates=float(neurons * (T + latency_steps)),
            active_updates=float(active.sum().item()) / N,
            spikes=float((out != 0).sum().item()) / N if spiking else 0.0,
            spiking=spiking, layer=owners[name], leak_terms=_leak_terms(node)))

    by_layer: dict[str, list[NeuronCounts]] = {}
    for nc in neuron_counts:
        if nc.layer is not None:
            by_layer.setdefault(nc.layer, []).append(nc)

    for name, node in nodes:
        if not isinstance(node, SYNAPTIC_NODES):
            continue
        x = recorded_input(name, preds[name], outputs)
        check_tn(name, x)
        in_shape = tuple(int(s) for s in x.shape[2:])
        geo = layer_geometry(node, name, in_shape, fanout)
        fan_flat = geo.fan.reshape(-1)
        ops = torch.empty(T, N, dtype=torch.float64)
        binary = torch.empty(T, N, dtype=torch.bool)
        nonzero_counts = torch.empty(T, N, dtype=torch.float64)
        for t in range(T):
            step = x[t].reshape(N, -1)
            nonzero = step != 0
            binary[t] = ((step == 1) | (step == -1) | ~nonzero).all(dim=1)
            ops[t] = nonzero.to(torch.float64) @ fan_flat
            nonzero_counts[t] = nonzero.sum(dim=1).to(torch.float64)
        events = float(nonzero_counts.sum().item())
        owned = by_layer.get(name, [])
        adds, dense_adds = _shortcut_adds(name, preds[name], outputs, N)
        for n in owned:
            adds += node_adds[n.name][0]
            dense_adds += node_adds[n.name][1]
        fed_by_input = upstream(name, graph, preds,
                                lambda n: isinstance(n, nir.Input), passes) is not None
        layers.append(LayerCounts(
            name=name, op=type(node).__name__, input_shape=in_shape, output_shape=geo.out_shape,
            T=T, input_events=events / N, firing_rate=events / (N * T * max(1, fan_flat.numel())),
            synops=float(ops[binary].sum().item()) / N, macs=float(ops[~binary].sum().item()) / N,
            binary_fraction=float(binary.to(torch.float64).mean().item()),
            connections=int(round(float(fan_flat.sum().item()))), dense_ops=int(geo.dense_ops),
            dense_op_kind=geo.dense_op_kind, neuron_nodes=tuple(n.name for n in owned),
            neurons=sum(n.neurons for n in owned),
            neuron_updates=sum(n.updates for n in owned),
            active_neuron_updates=sum(n.active_updates for n in owned),
            spikes=sum(n.spikes for n in owned),
            spike_events=float(nonzero_counts[binary].sum().item()) / N,
            first_layer=fed_by_input, has_bias=geo.has_bias, params=geo.params,
            kernel_fanout=geo.kernel_fanout, shortcut_adds=adds, dense_shortcut_adds=dense_adds,
            leaks=sum(n.updates * n.leak_terms for n in owned), taps=geo.taps))
    if not layers:
        raise SpikelineError("the graph has no synaptic node (Conv1d/Conv2d/Linear/Affine/"
                             "SumPool2d/AvgPool2d): nothing to count")

    network_events = 0.0
    for name, node in graph.nodes.items():
        if isinstance(node, nir.Input) and name in outputs:
            network_events += float((torch.as_tensor(outputs[name]) != 0).sum().item()) / N
    return EnergyCounts(layers=tuple(layers), neuron_nodes=tuple(neuron_counts), T=T,
                        samples=N, network_input_events=network_events, fanout=fanout,
                        latency_steps=latency_steps)


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
        if (part.T, part.fanout, part.latency_steps) != \
                (first.T, first.fanout, first.latency_steps) or \
                [x.name for x in part.layers] != [x.name for x in first.layers] or \
                [n.name for n in part.neuron_nodes] != [n.name for n in first.neuron_nodes]:
            raise ValueError("combine_counts: parts differ in T, fan-out mode, layers or neurons")
    total = sum(p.samples for p in parts)

    def mean(getter):
        return sum(getter(p) * p.samples for p in parts) / total

    layers = []
    for i, layer in enumerate(first.layers):
        avg = {key: mean(lambda p, k=key: getattr(p.layers[i], k))
               for key in ("input_events", "firing_rate", "synops", "macs", "binary_fraction",
                           "neuron_updates", "active_neuron_updates", "spikes", "spike_events",
                           "shortcut_adds", "leaks")}
        layers.append(replace(layer, **avg))
    neurons = []
    for i, node in enumerate(first.neuron_nodes):
        avg = {key: mean(lambda p, k=key: getattr(p.neuron_nodes[i], k))
               for key in ("updates", "active_updates", "spikes")}
        neurons.append(replace(node, **avg))
    return EnergyCounts(layers=tuple(layers), neuron_nodes=tuple(neurons), T=first.T,
                        samples=total,
                        network_input_events=mean(lambda p: p.network_input_events),
                        fanout=first.fanout, latency_steps=first.latency_steps)
