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
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F

from spikeline.errors import SpikelineError
from spikeline.pipeline.neuron import bias_to_int, cuba_step

from .to_nir import DT, nir_to_cuba

MODES = ("auto", "loihi", "float")


def _t(a, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype)


def _ints(a) -> tuple[int, ...]:
    return tuple(int(v) for v in np.atleast_1d(a))


class _Stateless:
    """A node without state: ``apply`` works on any leading ``[..., *shape]``."""

    stateful = False

    def __init__(self, name: str, node: nir.NIRNode):
        self.name, self.node = name, node

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n = self.node
        lead = x.shape[:-len(self.in_dims)] if self.in_dims else x.shape
        if isinstance(n, (nir.Input, nir.Output)):
            return x
        if isinstance(n, (nir.Linear, nir.Affine)):
            bias = _t(n.bias) if isinstance(n, nir.Affine) else None
            return F.linear(x, _t(n.weight), bias)
        if isinstance(n, nir.Scale):
            return x * _t(n.scale)
        if isinstance(n, nir.Threshold):
            return (x > _t(n.threshold)).to(x.dtype)
        if isinstance(n, nir.Flatten):
            start = n.start_dim + x.dim() - len(self.in_dims) if n.start_dim >= 0 else n.start_dim
            end = n.end_dim + x.dim() - len(self.in_dims) if n.end_dim >= 0 else n.end_dim
            return x.flatten(start, end)
        flat = x.reshape(-1, *x.shape[len(lead):])
        if isinstance(n, nir.Conv2d):
            y = F.conv2d(flat, _t(n.weight), _t(n.bias), _ints(n.stride), self._padding(),
                         _ints(n.dilation), int(n.groups))
        elif isinstance(n, nir.Conv1d):
            y = F.conv1d(flat, _t(n.weight), _t(n.bias), _ints(n.stride), self._padding(),
                         _ints(n.dilation), int(n.groups))
        elif isinstance(n, nir.SumPool2d):
            y = F.avg_pool2d(flat, _ints(n.kernel_size), _ints(n.stride), _ints(n.padding),
                             divisor_override=1)
        elif isinstance(n, nir.AvgPool2d):
            y = F.avg_pool2d(flat, _ints(n.kernel_size), _ints(n.stride), _ints(n.padding))
        else:  # pragma: no cover - _make_runner only builds the types above
            raise AssertionError(type(n))
        return y.reshape(*lead, *y.shape[1:])

    def _padding(self):
        pad = self.node.padding
        return pad if isinstance(pad, str) else _ints(pad)


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
        self.bias = None if bias is None else bias_to_int(_t(bias), params)

    def init(self, like):
        zero = torch.zeros(like.shape, dtype=torch.int64)
        return zero, zero.clone()

    def step(self, x, state):
        spike, voltage, u, v = cuba_step(x.to(torch.float32), self.p, *state, self.bias,
                                         self.spiking)
        return (spike if self.spiking else voltage), (u, v)


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


SUPPORTED = (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d,
             nir.SumPool2d, nir.AvgPool2d, nir.Flatten, nir.Scale, nir.Threshold, nir.Delay,
             nir.I, nir.IF, nir.LI, nir.LIF, nir.CubaLI, nir.CubaLIF)


def _make_runner(name, node, mode, dt, fire_at_threshold=False):
    if not isinstance(node, SUPPORTED):
        names = ", ".join(t.__name__ for t in SUPPORTED)
        raise SpikelineError(f"node {name!r} has type {type(node).__name__}, which the "
                             f"simulator does not support; supported: {names}")
    if isinstance(node, nir.Delay):
        return _Delay(name, node, dt)
    if isinstance(node, (nir.I, nir.IF, nir.LI, nir.LIF, nir.CubaLI, nir.CubaLIF)):
        fixed = nir_to_cuba(node, dt) if mode != "float" else None
        if fixed is not None:
            return _FixedCuba(name, *fixed, spiking=isinstance(node, nir.CubaLIF))
        if mode == "loihi":
            raise SpikelineError(f"node {name!r} ({type(node).__name__}) has parameters with "
                                 "no Loihi fixed-point form; run it with mode='float'")
        return _FloatNeuron(name, node, dt, fire_at_threshold)
    runner = _Stateless(name, node)
    in_type = node.input_type.get("input") if hasattr(node, "input_type") else None
    runner.in_dims = tuple(int(v) for v in in_type) if in_type is not None and len(in_type) else ()
    return runner


def topological_order(graph: nir.NIRGraph, edges=None):
    """Depth-first topological order from the Input nodes (then from nodes without
    predecessors), following ``edges`` (default: the graph's) in order.  Edges that close a
    cycle are returned as 'back' edges: they deliver the source's previous step."""
    edges = graph.edges if edges is None else edges
    succ = {name: [] for name in graph.nodes}
    for src, dst in edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise SpikelineError(f"edge ({src!r}, {dst!r}) names {end!r}, which is not a "
                                     "node of the graph")
        succ[src].append(dst)
    has_pred = {dst for _, dst in edges}
    starts = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    starts += [n for n in graph.nodes if n not in has_pred and n not in starts]
    state, post, back = {}, [], set()
    for start in starts:
        if start in state:
            continue
        stack = [(start, iter(succ[start]))]
        state[start] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "done"
                post.append(node)
                stack.pop()
            elif state.get(child) == "open":
                back.add((node, child))
            elif child not in state:
                state[child] = "open"
                stack.append((child, iter(succ[child])))
    missing = set(graph.nodes) - set(state)
    if missing:
        raise SpikelineError(f"nodes {sorted(missing)} cannot be reached from the input")
    return post[::-1], back


@dataclass
class Simulation:
    """Every node's output over time, ``[T, N, *shape]`` (spikes for spiking neurons)."""

    outputs: dict[str, torch.Tensor]
    output_node: str

    @property
    def output(self) -> torch.Tensor:
        return self.outputs[self.output_node]


def graph_dt(graph: nir.NIRGraph) -> float:
    return float(graph.metadata.get("dt", DT)) if graph.metadata else DT


def simulate(graph: nir.NIRGraph, x: torch.Tensor, mode: str = "auto",
             dt: float | None = None, fire_at_threshold: bool = False) -> Simulation:
    """Run ``graph`` on ``x`` of shape ``[T, N, *input_shape]``.

    ``fire_at_threshold``: float neurons spike at ``v >= v_threshold`` instead of NIR's
    ``v > v_threshold`` (SpikingJelly's Heaviside fires at 0; see ``deploy.peers``).
    """
    if mode not in MODES:
        raise SpikelineError(f"simulation mode must be one of {MODES}, got {mode!r}")
    dt = graph_dt(graph) if dt is None else dt
    order, back = topological_order(graph)
    inputs = [n for n in order if isinstance(graph.nodes[n], nir.Input)]
    outputs = [n for n in order if isinstance(graph.nodes[n], nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise SpikelineError(f"the graph needs exactly one Input and one Output node; it has "
                             f"inputs {inputs} and outputs {outputs}")
    expected = tuple(int(v) for v in graph.nodes[inputs[0]].input_type["input"])
    x = torch.as_tensor(x, dtype=torch.float32)
    if tuple(x.shape[2:]) != expected:
        raise SpikelineError(f"input of shape {tuple(x.shape)} does not fit the graph's Input "
                             f"{expected}: expected [T, N, {', '.join(map(str, expected))}]")
    runners = {n: _make_runner(n, graph.nodes[n], mode, dt, fire_at_threshold) for n in order}
    preds = {n: [] for n in order}
    for src, dst in graph.edges:
        preds[dst].append((src, (src, dst) in back))
    run = _run_steps if back else _run_layers
    return Simulation(run(order, runners, preds, inputs[0], x), outputs[0])


def _gather(name, preds, values, x, input_name, previous=None):
    if name == input_name:
        return x
    terms = []
    for src, is_back in preds[name]:
        value = (previous or {}).get(src) if is_back else values[src]
        if value is not None:
            terms.append(value)
    if not terms:
        raise SpikelineError(f"node {name!r} has no input")
    try:
        return terms[0] if len(terms) == 1 else torch.stack(torch.broadcast_tensors(*terms)).sum(0)
    except RuntimeError as err:
        shapes = [tuple(t.shape) for t in terms]
        raise SpikelineError(f"node {name!r}: incoming edges have shapes {shapes}, which "
                             "do not add up") from err


def _run_layers(order, runners, preds, input_name, x):
    """DAG: every node over the whole sequence at once."""
    values = {}
    for name in order:
        inp = _gather(name, preds, values, x, input_name)
        runner = runners[name]
        if not runner.stateful:
            values[name] = runner.apply(inp)
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
