"""Validation of a NIR graph read from a file, before anything runs or allocates from it.

A NIR file is data from anywhere; the simulator, the energy counter, verify and import trust
what this module let through:

- the HDF5 datasets of the file, summed, fit :func:`spikeline.errors.check_size` (a 20 KB
  gzip-compressed file can expand to gigabytes when ``nir.read`` loads it);
- ``dt`` (``metadata['dt']``, else 1e-4 s, the simulator's default) is a finite number > 0;
- every numeric parameter (weights, biases, thresholds, time constants, delays) is finite, and
  no parameter is a string;
- time constants (``tau``, ``tau_syn``, ``tau_mem``) are > 0;
- a ``Delay`` is >= 0 and its buffer (``delay / dt`` steps of its output) fits the size limit;
- the per-step state of all nodes (their output sizes), and with ``T`` steps and ``N``
  samples the recorded activity ``T N sum(sizes) 4 B``, fit the size limit.

Each failure is a :class:`~spikeline.errors.BadInput` naming the file and node.
NIR's node definitions: https://github.com/neuromorphs/NIR (docs/reference.md §5)
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from pathlib import Path

import h5py
import nir
import numpy as np

from spikeline.errors import BadInput, DataNotFound, check_size

__all__ = ["read_nir", "validate_graph", "graph_dt", "check_dt", "activity_bytes", "DT"]

# s; the one time step: what every graph spikeline writes records (deploy/nir_params.py maps
# the CUBA decays to time constants with it) and what the simulator assumes for a graph that
# records no dt
DT = 1e-4
_TAUS = ("tau", "tau_syn", "tau_mem")
_SKIP = ("input_type", "output_type", "metadata")


def _stateful():
    return (nir.CubaLIF, nir.CubaLI, nir.LIF, nir.LI, nir.IF, nir.I, nir.Delay,
            nir.NIRGraph)



def check_dt(value, where: str) -> float:
    """``value`` as a time step: a finite real number > 0 (not a string or bool)."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bytes, str, bool)) or not isinstance(value, numbers.Real):
        raise BadInput(f"{where}: dt must be a number of seconds, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise BadInput(f"{where}: dt must be finite and > 0, got {value!r}")
    return value


def graph_dt(graph, where: str = "graph") -> float:
    """The graph's ``metadata['dt']``, checked; ``DT`` when it records none."""
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    return DT if meta.get("dt") is None else check_dt(meta["dt"], f"{where}: metadata")


def _hdf5_bytes(path: Path) -> int:
    total = 0

    def visit(_name, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(np.prod(obj.shape or (1,), dtype=np.float64)) * obj.dtype.itemsize

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return total


def _file_nodes(path: Path) -> set[str]:
    """The names of the top-level nodes the file itself holds."""
    with h5py.File(path, "r") as f:
        nodes = f.get("node/nodes")
        return set(nodes.keys()) if nodes is not None else set()


def read_nir(path: str | Path):
    """Read and validate the NIR graph in ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFound(f"{path}: no such file")
    try:
        nbytes = _hdf5_bytes(path)
    except Exception as err:  # h5py raises OSError, KeyError, ValueError... for a bad file
        raise BadInput(f"{path}: not a readable NIR (HDF5) file ({type(err).__name__}: "
                       f"{err})") from None
    check_size(nbytes, f"{path}: the arrays of the NIR file")
    try:
        graph = nir.read(str(path))
    except Exception as err:  # nir raises many types for a bad file
        raise BadInput(f"{path}: cannot read as NIR ({type(err).__name__}: {err})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise BadInput(f"{path}: expected a NIR graph, got a single {type(graph).__name__}")
    added = sorted(set(graph.nodes) - _file_nodes(path))
    if added:  # nir.read makes up Input/Output nodes for dangling ends: say what is missing
        held = {n: node for n, node in graph.nodes.items() if n not in added}
        _check_structure(nir.NIRGraph(nodes=held, type_check=False, edges=[
            e for e in graph.edges if all(_names_a_node(str(v), held) for v in e)]), str(path))
        kinds = sorted({type(graph.nodes[n]).__name__ for n in added})
        raise BadInput(f"{path}: the graph has no {' or '.join(kinds)} node for "
                       f"{added} (the file does not hold them; nir.read would make them up)")
    validate_graph(graph, str(path))
    return graph


def _names_a_node(endpoint: str, nodes: dict) -> bool:
    """An edge end is a node's name, which may itself hold dots (flat graphs of recurrent
    layers, as snnTorch and Norse write them: 'rnn.lif', 'rnn.w_rec'), or ``node.port`` /
    ``subgraph.node``: some prefix up to a dot is a node."""
    parts = endpoint.split(".")
    return any(".".join(parts[:k]) in nodes for k in range(len(parts), 0, -1))


def _size(shape) -> int:
    try:
        return int(np.prod(np.asarray(shape, dtype=np.float64).reshape(-1)))
    except (TypeError, ValueError):
        return 0


def _node_size(node) -> int:
    types = getattr(node, "output_type", None) or {}
    return sum(_size(shape) for shape in types.values()) if isinstance(types, dict) else 0


def validate_graph(graph, where: str = "graph", dt: float | None = None):
    """Check ``graph`` (see the module docstring); ``dt`` overrides the graph's.  Returns the
    graph."""
    _validate(graph, where, dt)
    _check_structure(graph, where)
    return graph


def _base(endpoint: str, nodes: dict) -> str:
    parts = endpoint.split(".")
    return next(".".join(parts[:k]) for k in range(len(parts), 0, -1)
                if ".".join(parts[:k]) in nodes)


def _check_structure(graph, where: str) -> None:
    """One Input, at least one Output, every node reached from the Input (a missing edge is
    named as such), and every cycle through a node with state (a neuron or a delay): a loop of
    stateless nodes (``a -> b -> a``, a self-loop) has no meaning in NIR's semantics."""
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1:
        raise BadInput(f"{where}: the graph needs exactly one Input node, it has {inputs}")
    if not outputs:
        raise BadInput(f"{where}: the graph has no Output node: nothing it computes would be "
                       "read")
    succ = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        succ[_base(str(src), graph.nodes)].append(_base(str(dst), graph.nodes))
    reached, stack = set(), [inputs[0]]
    while stack:
        name = stack.pop()
        if name not in reached:
            reached.add(name)
            stack += succ[name]
    cut = [n for n in graph.nodes if n not in reached]
    if cut:
        raise BadInput(f"{where}: node(s) {cut} are not reached from the Input node "
                       f"{inputs[0]!r}: an edge into them is missing")
    stateless = {n for n, node in graph.nodes.items() if not isinstance(node, _stateful())}
    colour = {}
    for start in sorted(stateless):  # a cycle within the stateless nodes
        if start in colour:
            continue
        path, stack = [start], [iter(d for d in succ[start] if d in stateless)]
        colour[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour.get(nxt) == 1:
                loop = path[path.index(nxt):] + [nxt]
                raise BadInput(f"{where}: the cycle {' -> '.join(loop)} passes through no "
                               "neuron or delay: a loop of stateless nodes has no meaning in "
                               "NIR (each node's output would depend on itself in the same "
                               "step)")
            elif nxt not in colour:
                colour[nxt] = 1
                path.append(nxt)
                stack.append(iter(d for d in succ[nxt] if d in stateless))


def _validate(graph, where: str, dt: float | None) -> None:
    dt = graph_dt(graph, where) if dt is None else check_dt(dt, f"{where}: --dt")
    if not isinstance(graph.nodes, dict) or not graph.nodes:
        raise BadInput(f"{where}: the graph has no nodes")
    for edge in graph.edges:
        if len(edge) != 2 or not all(_names_a_node(str(e), graph.nodes) for e in edge):
            raise BadInput(f"{where}: edge {tuple(edge)} names a node that is not in the graph")
    state = 0
    for name, node in graph.nodes.items():
        at = f"{where}: node {name!r} ({type(node).__name__})"
        if isinstance(node, nir.NIRGraph):
            _validate(node, at, dt)
            continue
        for field in dataclasses.fields(node):
            if field.name in _SKIP:
                continue
            _check_values(getattr(node, field.name), f"{at} field {field.name!r}",
                          positive=field.name in _TAUS)
        size = _node_size(node)
        state += size
        if isinstance(node, nir.Delay):
            delay = np.asarray(node.delay, dtype=np.float64)
            if np.any(delay < 0):
                raise BadInput(f"{at}: delays must be >= 0 s, got min {delay.min()!r}")
            steps = float(delay.max(initial=0.0)) / dt
            check_size((steps + 1) * max(size, delay.size) * 4,
                       f"{at}: a delay of {float(delay.max(initial=0.0)):.3g} s "
                       f"({steps:.3g} steps of dt = {dt:g} s)")
    # per element: its output and up to two neuron states (CUBA current and voltage), float32
    check_size(state * 3 * 4, f"{where}: one step of all nodes' state")


def _check_values(value, where: str, positive: bool) -> None:
    if value is None or isinstance(value, (dict, list, tuple)) and not value:
        return
    if isinstance(value, (bytes, str)):
        raise BadInput(f"{where}: expected numbers, got the string {value!r}")
    if isinstance(value, (dict, list, tuple)) and not isinstance(value, np.ndarray):
        if isinstance(value, dict):
            return
        value = np.asarray(value)
    array = np.asarray(value)
    if array.dtype.kind in "SUO":
        raise BadInput(f"{where}: expected numbers, got {array.dtype} values")
    if array.dtype.kind not in "biuf":
        return
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)].reshape(-1)[0]
        raise BadInput(f"{where}: holds a non-finite value ({bad!r}); weights, thresholds and "
                       "time constants must be finite")
    if positive and np.any(array <= 0):
        raise BadInput(f"{where}: time constants must be > 0, got min {array.min()!r}")


def activity_bytes(graph, T: int, samples: int) -> int:
    """Bytes the simulator records: every node's output at every step, float32."""
    return T * samples * 4 * sum(_node_size(n) for n in graph.nodes.values())
