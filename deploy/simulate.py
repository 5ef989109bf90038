"""Reference simulator for NIR graphs, recording every node's activity.

Runs any graph of Input, Output, Affine, Linear, Conv1d, Conv2d, SumPool2d, AvgPool2d, Flatten,
Scale, Threshold, Delay, I, IF, LI, LIF, CubaLI and CubaLIF nodes.  A node with several incoming
edges sums them.  An edge that closes a cycle (a recurrent connection) carries the source's
output of the *previous* step, as in NIR's RNN examples; graphs with cycles run step by step,
DAGs run layer by layer over the whole sequence (one batched op per synapse).

Neurons, forward Euler with the graph's ``dt`` (``metadata['dt']``, else 1e-4)::

    CubaLIF  I += dt/tau_syn (-I + w_in x);  v += dt/tau_mem (v_leak - v + r I)
    LIF      v += dt/tau (v_leak - v + r x)             LI / CubaLI: the same, never spiking
    IF       v += r x                                    I: v += r x, output v
    spike where v > v_threshold, then v <- v_reset

``mode='loihi'`` runs CubaLIF/CubaLI nodes whose parameters encode 12-bit decays (what
``to_nir`` writes) with the fixed-point neuron of ``pipeline/neuron.py``, the same code the
network was trained with; ``'auto'`` does so wherever the parameters allow, ``'float'`` never.

A graph has one Input node and one or more Output nodes (a detector's spiking part ends in two,
the P4 and P5 spike maps its off-chip readout takes); every node's output is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch

import nir
import numpy as np
import torch
import torch.nn.functional as F

from spikeline.errors import SpikelineError
from spikeline.pipeline.kernels import int_synapse
from spikeline.pipeline.blocks import restarted
from spikeline.pipeline.neuron import bias_to_int, cuba_forward, cuba_step

from .artifact import GraphTiming
from .graph import gather, topological_order, walk  # noqa: F401  (re-exported)
from .nir_check import graph_dt  # noqa: F401  (re-exported: one graph_dt, nir_check's)
from .nir_params import nir_to_cuba

MODES = ("auto", "loihi", "float")


def _t(a, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype)


def _ints(a) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(a))


class _Stateless:
    """A node without state: ``fn(node, x)`` works on any leading ``[..., *shape]``."""

    stateful = False

    def __init__(self, name: str, node: nir.NIRNode, fn):
        self.name, self.node, self.fn = name, node, fn
        in_type = node.input_type.get("input") if hasattr(node, "input_type") else None
        self.in_dims = tuple(int(v) for v in in_type) if in_type is not None and len(in_type) \
            else ()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.node, x, self.in_dims)


def _per_sample(op):
    """Run ``op(node, flat)`` on ``[B, *in_dims]`` and restore the leading dimensions."""

    def apply(node, x, in_dims):
        lead = x.shape[:-len(in_dims)] if in_dims else x.shape
        y = op(node, x.reshape(-1, *x.shape[len(lead):]))
        return y.reshape(*lead, *y.shape[1:])

    return apply


def _padding(node):
    pad = node.padding
    return pad if isinstance(pad, str) else _ints(pad)


# --- the node table: one entry per NIR node type --------------------------------------------
# ``_runner(node, name, ctx)`` builds what simulates a node; ``ctx`` holds mode, dt and
# fire_at_threshold.  Adding a node type is one registration here (and, for its energy, one in
# ``deploy/energy/counts.py``'s ``layer_geometry`` when it is synaptic).

@dataclass(frozen=True)
class _Context:
    mode: str
    dt: float
    fire_at_threshold: bool = False


STATELESS = {
    nir.Input: lambda n, x, d: x,
    nir.Output: lambda n, x, d: x,
    nir.Linear: lambda n, x, d: F.linear(x, _t(n.weight)),
    nir.Affine: lambda n, x, d: F.linear(x, _t(n.weight), _t(n.bias)),
    nir.Scale: lambda n, x, d: x * _t(n.scale),
    nir.Threshold: lambda n, x, d: (x > _t(n.threshold)).to(x.dtype),
    nir.Flatten: lambda n, x, d: x.flatten(
        n.start_dim + x.dim() - len(d) if n.start_dim >= 0 else n.start_dim,
        n.end_dim + x.dim() - len(d) if n.end_dim >= 0 else n.end_dim),
    nir.Conv2d: _per_sample(lambda n, x: F.conv2d(
        x, _t(n.weight), _t(n.bias), _ints(n.stride), _padding(n), _ints(n.dilation),
        int(n.groups))),
    nir.Conv1d: _per_sample(lambda n, x: F.conv1d(
        x, _t(n.weight), _t(n.bias), _ints(n.stride), _padding(n), _ints(n.dilation),
        int(n.groups))),
    nir.SumPool2d: _per_sample(lambda n, x: F.avg_pool2d(
        x, _ints(n.kernel_size), _ints(n.stride), _ints(n.padding), divisor_override=1)),
    nir.AvgPool2d: _per_sample(lambda n, x: F.avg_pool2d(
        x, _ints(n.kernel_size), _ints(n.stride), _ints(n.padding))),
}
NEURONS = (nir.I, nir.IF, nir.LI, nir.LIF, nir.CubaLI, nir.CubaLIF)


@singledispatch
def _runner(node, name: str, ctx: _Context):
    fn = STATELESS.get(type(node))
    if fn is None:
        names = ", ".join(t.__name__ for t in SUPPORTED)
        raise SpikelineError(f"node {name!r} has type {type(node).__name__}, which the "
                             f"simulator does not support; supported: {names}")
    return _Stateless(name, node, fn)


class _Synaptic(_Stateless):
    """Linear, Affine and Conv2d nodes: weights converted once per simulation, and the integer
    synapse (``pipeline/kernels/int_synapse.py``) wherever it is exact: spikes times weights on
    the 8-bit grid, bit-identical to the float product.  Prepared per ``simulate`` call (never
    cached across calls: a graph edited in place must run with its new weights)."""

    def __init__(self, name: str, node: nir.NIRNode):
        super().__init__(name, node, None)
        self.weight = _t(node.weight)
        bias = getattr(node, "bias", None)
        self.bias = None if bias is None else _t(bias)
        if self.bias is not None and not bool((self.bias != 0).any()):
            self.bias = None  # a zero bias adds nothing (the exporter writes zeros for convs)
        self._prepared = None
        self.known_max = None  # set by simulate(): the input is a sum of this many spike trains
        if isinstance(node, nir.Conv2d):
            self.conf = (_ints(node.stride), _padding(node), _ints(node.dilation),
                         int(node.groups))

    def prepared(self):
        if self._prepared is None and int_synapse.mode() != "float":
            self._prepared = int_synapse.prepare_weight(self.weight)
        return self._prepared

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.node, nir.Conv2d):
            lead = x.shape[:-len(self.in_dims)] if self.in_dims else x.shape[:-3]
            flat = x.reshape(-1, *x.shape[len(lead):])
            y = int_synapse.conv2d(flat, self.weight, self.bias, *self.conf,
                                   prepared=self.prepared(), known_max=self.known_max)
            return y.reshape(*lead, *y.shape[1:])
        return int_synapse.linear(x, self.weight, self.bias, prepared=self.prepared(),
                                  known_max=self.known_max)


for _synaptic_type in (nir.Linear, nir.Affine, nir.Conv2d):
    _runner.register(_synaptic_type, lambda node, name, ctx: _Synaptic(name, node))


@_runner.register
def _(node: nir.Delay, name: str, ctx: _Context):
    return _Delay(name, node, ctx.dt)


def _neuron_runner(node, name: str, ctx: _Context):
    fixed = nir_to_cuba(node, ctx.dt) if ctx.mode != "float" else None
    if fixed is not None:
        return _FixedCuba(name, *fixed, spiking=isinstance(node, nir.CubaLIF))
    if ctx.mode == "loihi":
        raise SpikelineError(f"node {name!r} ({type(node).__name__}) has parameters with "
                             "no Loihi fixed-point form; run it with mode='float'")
    return _FloatNeuron(name, node, ctx.dt, ctx.fire_at_threshold)


for _neuron_type in NEURONS:
    _runner.register(_neuron_type, _neuron_runner)

SUPPORTED = (*STATELESS, nir.Delay, *NEURONS)


def _make_runner(name, node, mode, dt, fire_at_threshold=False):
    return _runner(node, name, _Context(mode, dt, fire_at_threshold))


class _Delay:
    stateful = True

    def __init__(self, name, node, dt):
        self.name = name
        steps = np.round(np.asarray(node.delay, dtype=np.float64) / dt)
        if steps.size and np.ptp(steps) > 0:
            raise SpikelineError(f"node {name!r}: Delay with different delays per neuron is "
                                 "not supported")
        self.steps = int(steps.flat[0]) if steps.size else 0

    def init(self, like):
        return [torch.zeros_like(like) for _ in range(self.steps)]

    def step(self, x, buffer):
        if not self.steps:
            return x, buffer
        return buffer[0], buffer[1:] + [x]


class _FixedCuba:
    """CubaLIF/CubaLI as Loihi runs them (``pipeline.neuron.cuba_step``)."""

    stateful = True

    def __init__(self, name, params, bias, spiking):
        self.name, self.p, self.spiking = name, params, spiking
        self.bias_float = None if bias is None else _t(bias)
        self.bias = None if bias is None else bias_to_int(self.bias_float, params)

    def run(self, x):
        """The whole sequence ``[T, ...]`` at once by ``cuba_forward`` (numba on CPU, Triton on
        CUDA: the same integers as ``step`` looped over time, bit for bit, without a dozen
        PyTorch calls per step)."""
        x, bias = x.to(torch.float32), self.bias_float
        channels_last = (x.dim() == 5 and not x.is_contiguous() and (bias is None or bias.dim() == 3)
                         and x.flatten(0, 1).is_contiguous(memory_format=torch.channels_last))
        if channels_last:
            # the integer conv's output: run the (element-wise) neuron on its contiguous
            # [T, N, H, W, C] view instead of copying it, and hand on channels-last spikes
            x = x.movedim(2, -1)
            bias = None if bias is None else bias.movedim(0, -1)
        spikes, voltage = cuba_forward(x, self.p, bias, self.spiking)
        out = spikes if self.spiking else voltage
        return out.movedim(-1, 2) if channels_last else out

    def init(self, like):
        zero = torch.zeros(like.shape, dtype=torch.int64)
        return zero, zero.clone()

    def step(self, x, state):
        spike, voltage, u, v = cuba_step(x.to(torch.float32), self.p, *state, self.bias,
                                         self.spiking)
        return (spike if self.spiking else voltage), (u, v)


class _Restarting:
    """A neuron whose current and voltage restart from 0 at step ``step`` of the sample (the
    graph's ``reset_steps``: Lava's ``LIFReset``)."""

    stateful = True

    def __init__(self, neuron, step: int):
        self.neuron, self.step_at = neuron, step
        self.name = neuron.name
        if hasattr(neuron, "run"):
            self.run = lambda x: restarted(neuron.run, x, step)

    def init(self, like):
        return 0, self.neuron.init(like)

    def step(self, x, state):
        t, inner = state
        if t == self.step_at:
            inner = self.neuron.init(x)
        y, inner = self.neuron.step(x, inner)
        return y, (t + 1, inner)


class _FloatNeuron:
    """IF, I, LI, LIF, CubaLI, CubaLIF in float, forward Euler (see the module docstring).

    Written as ``state * keep + gain * input (+ leak)`` with ``keep = 1 - dt/tau``,
    ``gain = dt/tau * r`` (or ``w_in``) and ``leak = dt/tau * v_leak``: the operation order of
    SpikingJelly's and snnTorch's steps, so the float semantics agree bit for bit.  Uniform
    parameters become Python scalars (cheaper than full-shape tensors).
    """

    stateful = True

    def __init__(self, name, node, dt, fire_at_threshold: bool = False):
        self.name, self.node, self.fire_at_threshold = name, node, fire_at_threshold
        get = lambda key, default: _param(getattr(node, key, None), default)  # noqa: E731
        r, v_leak = get("r", 1.0), get("v_leak", 0.0)
        self.v_th, self.v_reset = get("v_threshold", 0.0), get("v_reset", 0.0)
        self.cuba = isinstance(node, (nir.CubaLIF, nir.CubaLI))
        self.spiking = isinstance(node, (nir.CubaLIF, nir.LIF, nir.IF))
        if self.cuba:
            rate_i, rate_v = dt / get("tau_syn", 1.0), dt / get("tau_mem", 1.0)
            self.keep_i, self.gain_i = 1 - rate_i, rate_i * get("w_in", 1.0)
        elif isinstance(node, (nir.LIF, nir.LI)):
            rate_v = dt / get("tau", 1.0)
        else:  # IF, I: no time constant, one step integrates r * x
            rate_v = None
        if rate_v is None:
            self.keep_v, self.gain_v, self.leak = 1.0, r, 0.0
        else:
            self.keep_v, self.gain_v, self.leak = 1 - rate_v, rate_v * r, rate_v * v_leak

    def init(self, like):
        return torch.zeros_like(like), torch.zeros_like(like)

    def step(self, x, state):
        i, v = state
        if self.cuba:
            i = i * self.keep_i + _scaled(x, self.gain_i)
            drive = i
        else:
            drive = x
        v = v * self.keep_v + _scaled(drive, self.gain_v)
        if not _is_zero(self.leak):
            v = v + self.leak
        if not self.spiking:
            return v, (i, v)
        spike = v >= self.v_th if self.fire_at_threshold else v > self.v_th
        reset = self.v_reset if isinstance(self.v_reset, float) else self.v_reset.expand_as(v)
        return spike.to(x.dtype), (i, torch.where(spike, reset, v))


def _param(value, default):
    """A NIR parameter as a Python float when uniform, else a float32 tensor."""
    if value is None:
        return float(default)
    a = np.asarray(value, dtype=np.float64)
    if a.size == 0:
        return float(default)
    if np.ptp(a) == 0:
        return float(a.flat[0])
    return torch.as_tensor(a, dtype=torch.float32)


def _scaled(x, gain):
    # NIR's convention makes w_in * dt / tau_syn and r * dt / tau_mem equal 1, but only up to
    # float64 rounding (tau / dt = 3.9999999999999996); the importers check it is close to 1
    # and then add the input unscaled, and so do we.
    if isinstance(gain, float) and abs(gain - 1.0) < 1e-9:
        return x
    return x * gain


def _is_zero(value) -> bool:
    return value == 0.0 if isinstance(value, float) else not bool(torch.any(value != 0))


@dataclass
class Simulation:
    """Every node's output over time, ``[T, N, *shape]`` (spikes for spiking neurons).

    ``output_nodes``: the graph's Output nodes (a detector's spiking part has two: P4 and P5);
    ``output_node`` the first of them; ``output`` the value of the only one (an error when
    there are several: read ``outputs[name]`` for each of ``output_nodes``)."""

    outputs: dict[str, torch.Tensor]
    output_node: str
    output_nodes: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.output_nodes:
            self.output_nodes = (self.output_node,)

    @property
    def output(self) -> torch.Tensor:
        if len(self.output_nodes) > 1:
            raise SpikelineError(f"the graph has {len(self.output_nodes)} Output nodes "
                                 f"{list(self.output_nodes)}: read each one from `outputs`")
        return self.outputs[self.output_node]


def simulate(graph: nir.NIRGraph, x: torch.Tensor, mode: str = "auto",
             dt: float | None = None, fire_at_threshold: bool = False) -> Simulation:
    """Run ``graph`` on ``x`` of shape ``[T, N, *input_shape]``.

    ``fire_at_threshold``: float neurons spike at ``v >= v_threshold`` instead of NIR's
    ``v > v_threshold`` (SpikingJelly's Heaviside fires at 0; see ``deploy.peers``).
    """
    if mode not in MODES:
        raise SpikelineError(f"simulation mode must be one of {MODES}, got {mode!r}")
    dt = graph_dt(graph) if dt is None else dt
    steps = walk(graph)
    order, back = steps.order, steps.back
    inputs = [n for n in order if isinstance(graph.nodes[n], nir.Input)]
    outputs = [n for n in order if isinstance(graph.nodes[n], nir.Output)]
    if len(inputs) != 1 or not outputs:
        raise SpikelineError(f"the graph needs exactly one Input node and at least one Output "
                             f"node; it has inputs {inputs} and outputs {outputs}")
    named = list(GraphTiming.of(graph).output_nodes)
    if sorted(named) == sorted(outputs):  # the order the exporter gave them (e.g. P4, P5)
        outputs = named
    expected = tuple(int(v) for v in graph.nodes[inputs[0]].input_type["input"])
    x = torch.as_tensor(x, dtype=torch.float32)
    if tuple(x.shape[2:]) != expected:
        raise SpikelineError(f"input of shape {tuple(x.shape)} does not fit the graph's Input "
                             f"{expected}: expected [T, N, {', '.join(map(str, expected))}]")
    runners = {n: _make_runner(n, graph.nodes[n], mode, dt, fire_at_threshold) for n in order}
    for name, step in GraphTiming.of(graph).reset_steps.items():
        runners[name] = _Restarting(runners[name], step)
    preds = steps.preds
    _mark_spike_inputs(order, runners, preds)
    run = _run_steps if back else _run_layers
    return Simulation(run(order, runners, preds, inputs[0], x), outputs[0], tuple(outputs))


def _mark_spike_inputs(order, runners, preds):
    """Tell each synapse whose input is a sum of fixed-point neurons' spikes (0 or 1 each, by
    construction), through Delays, how large that sum can be: its integer path then skips
    checking the input (``int_synapse``'s ``known_max``)."""
    bound = {}
    for name in order:
        runner = runners[name]
        runner = runner.neuron if isinstance(runner, _Restarting) else runner
        if isinstance(runner, _FixedCuba):
            bound[name] = 1 if runner.spiking else None
            continue
        terms = [bound.get(src) for src, _ in preds[name]]
        total = sum(terms) if terms and None not in terms else None
        if isinstance(runner, _Synaptic):
            runner.known_max = total
        bound[name] = total if isinstance(runner, _Delay) else None


def _gather(name, preds, values, x, input_name, previous=None):
    return x if name == input_name else gather(name, preds[name], values, previous)


def _run_layers(order, runners, preds, input_name, x):
    """DAG: every node over the whole sequence at once."""
    values = {}
    for name in order:
        inp = _gather(name, preds, values, x, input_name)
        runner = runners[name]
        if not runner.stateful:
            values[name] = runner.apply(inp)
            continue
        if hasattr(runner, "run"):
            values[name] = runner.run(inp)
            continue
        state, steps = runner.init(inp[0]), []
        for t in range(inp.shape[0]):
            y, state = runner.step(inp[t], state)
            steps.append(y)
        values[name] = torch.stack(steps)
    return values


def _run_steps(order, runners, preds, input_name, x):
    """Graphs with cycles: one step at a time; back edges read the previous step."""
    states, previous, history = {}, {}, {name: [] for name in order}
    for t in range(x.shape[0]):
        values = {}
        for name in order:
            inp = _gather(name, preds, values, x[t], input_name, previous)
            runner = runners[name]
            if runner.stateful:
                if name not in states:
                    states[name] = runner.init(inp)
                values[name], states[name] = runner.step(inp, states[name])
            else:
                values[name] = runner.apply(inp)
            history[name].append(values[name])
        previous = values
    return {name: torch.stack(steps) for name, steps in history.items()}
