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

import numpy as np

from spikeline.errors import BadInput, DataNotFound, check_size

__all__ = ["read_nir", "validate_graph", "graph_dt", "check_dt", "activity_bytes",
           "DEFAULT_DT"]

DEFAULT_DT = 1e-4  # s; what the simulator assumes for a graph that records no dt
_TAUS = ("tau", "tau_syn", "tau_mem")
_SKIP = ("input_type", "output_type", "metadata")


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
    """The graph's ``metadata['dt']``, checked; ``DEFAULT_DT`` when it records none."""
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    return DEFAULT_DT if meta.get("dt") is None else check_dt(meta["dt"], f"{where}: metadata")


def _hdf5_bytes(path: Path) -> int:
    import h5py

    total = 0

    def visit(_name, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(np.prod(obj.shape or (1,), dtype=np.float64)) * obj.dtype.itemsize

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return total


def read_nir(path: str | Path):
    """Read and validate the NIR graph in ``path`` (see the module docstring)."""
    import nir

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
    validate_graph(graph, str(path))
    return graph


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
    import nir

    dt = graph_dt(graph, where) if dt is None else check_dt(dt, f"{where}: --dt")
    if not isinstance(graph.nodes, dict) or not graph.nodes:
        raise BadInput(f"{where}: the graph has no nodes")
    for edge in graph.edges:
        if len(edge) != 2 or any(str(e).split(".")[0] not in graph.nodes for e in edge):
            raise BadInput(f"{where}: edge {tuple(edge)} names a node that is not in the graph")
    state = 0
    for name, node in graph.nodes.items():
        at = f"{where}: node {name!r} ({type(node).__name__})"
        if isinstance(node, nir.NIRGraph):
            validate_graph(node, at, dt)
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
    return graph


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
