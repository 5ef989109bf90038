"""The parameter certificate: every number of an export equals what its training run gives.

Checked before any spike is simulated.  The reference is rebuilt from the run's checkpoint
(``best.pt`` unless the export names another), folded and quantized again (``fold.py``) and
exported again in memory; it is *not* the export's own ``folded.pt``, which travels with the
files it certifies and could be changed with them.  Compared exactly, entry by entry:

- ``model.nir``: every node (type, weights, biases, decays, thresholds, resets, delays, shapes),
  every edge, and the metadata that says how the graph runs (``dt``, timing, padding, readout);
- ``model.net`` (netx HDF5): every dataset;
- the Lava process graph that ``to_lava`` builds from ``model.nir`` (residual and
  ``--timing loihi`` nets): every neuron's decays, threshold and bias mantissas, every synapse's
  weight mantissas and geometry, every delay line and edge;
- ``folded.pt`` (its model spec and every tensor) and, for detectors, ``readout.npz``.

Any difference is a ``mismatch`` naming the artifact, node, field, index and both values.
An export that records no run (``metadata.json`` field ``run``, written by ``export_run``), or
whose run is not where it records, is ``not_checked``: its spikes are then compared with
``folded.pt`` only, and the report says so.  A run that is there but whose checkpoint cannot be
read is an error (``BadInput``), never replaced.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nir
import numpy as np
import torch

from spikeline.errors import BadInput, ExportUnsupported
from spikeline.pipeline.checkpoint import load_checkpoint, model_from_checkpoint

from .artifact import sha256_file
from .detector import readout_arrays
from .fold import fold_model
from .tasks import to_nir
from .to_lava import lower
from .to_netx import write_netx

RUN_FIELD = "run"
SHOWN = 10  # differences listed in full; all are counted


def run_record(run_dir, checkpoint, out_dir) -> dict:
    """``metadata.json``'s ``run``: where the checkpoint the export was made from lies (relative
    to the export folder, and absolute), and its SHA-256 at export time."""
    run_dir, checkpoint = Path(run_dir).resolve(), Path(checkpoint).resolve()
    out_dir = Path(out_dir).resolve()
    try:
        name = str(checkpoint.relative_to(run_dir))
    except ValueError:
        name = str(checkpoint)
    return {"dir": os.path.relpath(run_dir, out_dir), "dir_absolute": str(run_dir),
            "checkpoint": name, "sha256": sha256_file(checkpoint)}


@dataclass
class Difference:
    """One differing entry (the first of its field); ``count``: entries of that field that
    differ."""

    artifact: str
    node: str
    field: str
    index: list[int] | None
    found: object
    expected: object
    count: int = 1

    def __str__(self) -> str:
        at = f"[{', '.join(map(str, self.index))}]" if self.index else ""
        more = f" ({self.count} entries differ)" if self.count > 1 else ""
        return (f"{self.artifact}: node {self.node!r} {self.field}{at} is {self.found!r}, the "
                f"run's checkpoint gives {self.expected!r}{more}")


@dataclass
class ParameterCertificate:
    status: str  # ok | mismatch | not_checked
    reference: str = ""
    artifacts: list[str] = field(default_factory=list)
    compared: int = 0  # entries compared
    differences: int = 0  # entries that differ
    shown: list[Difference] = field(default_factory=list)
    note: str = ""

    def __post_init__(self):
        if self.status not in ("ok", "mismatch", "not_checked"):
            raise ValueError(f"unknown status {self.status!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shown"] = [str(s) for s in self.shown]
        return d


class _Comparison:
    def __init__(self):
        self.compared, self.diffs = 0, []

    def values(self, artifact, node, name, expected, found) -> None:
        """Compare two values exactly (arrays entry by entry, shapes first)."""
        if expected is None or found is None:
            self.compared += 1
            if (expected is None) != (found is None):
                self.diffs.append(Difference(artifact, node, name, None, _show(found),
                                             _show(expected)))
            return
        if isinstance(expected, dict) or isinstance(found, dict):
            if not (isinstance(expected, dict) and isinstance(found, dict)):
                self.diffs.append(Difference(artifact, node, name, None, _show(found),
                                             _show(expected)))
                return
            for key in sorted(set(expected) | set(found), key=str):
                self.values(artifact, node, f"{name}.{key}", expected.get(key),
                            found.get(key))
            return
        a, b = _array(expected), _array(found)
        self.compared += max(a.size, 1)
        if a.shape != b.shape:
            self.diffs.append(Difference(artifact, node, f"{name} shape", None,
                                         list(b.shape), list(a.shape), max(a.size, 1)))
            return
        if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
            differ = a.astype(np.float64) != b.astype(np.float64)
        else:
            differ = np.asarray(a.astype(str) != b.astype(str))
        if np.any(differ):
            where = np.argwhere(differ)[0] if differ.ndim else np.zeros(0, dtype=int)
            idx = tuple(int(i) for i in where)
            self.diffs.append(Difference(artifact, node, name, list(idx) or None,
                                         _show(b[idx] if idx else b), _show(a[idx] if idx else a),
                                         int(np.sum(differ))))


def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, bytes):
        return np.asarray(value.decode(errors="replace"))
    return np.asarray(value)


def _show(value):
    a = _array(value)
    if a.dtype.kind == "f" and a.size == 1:
        return float(a.reshape(()))
    if a.dtype.kind in "biu" and a.size == 1:
        return int(a.reshape(()))
    return a.tolist() if a.size <= 8 else f"array of shape {list(a.shape)}"


# --- the reference, from the run's checkpoint ----------------------------------------------

def reference_from_run(export_dir, meta):
    """``(folded model, description)`` rebuilt from the run the export records, or
    ``(None, why not)`` when the export records no run or the run is not there.  A checkpoint
    that is there but cannot be read, or does not build its network, raises ``BadInput``."""

    export_dir = Path(export_dir)
    record = meta.run
    if record is None:
        return None, ("the export records no training run (metadata.json has no 'run'): the "
                      "parameters were not checked against a checkpoint; spikes are compared "
                      "with the export's own folded.pt")
    run_dir = next((d for d in (export_dir / record.dir, Path(record.dir_absolute))
                    if d.is_dir()), None)
    if run_dir is None:
        return None, (f"the training run {record.dir_absolute} that the export records is "
                      "not here: the parameters were not checked against a checkpoint; spikes "
                      "are compared with the export's own folded.pt")
    path = run_dir / record.checkpoint
    if not path.exists():
        return None, (f"{path}, the checkpoint the export was made from, is gone: the "
                      "parameters were not checked; spikes are compared with folded.pt")
    try:
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, path)
    except BadInput:
        raise
    except Exception as err:  # noqa: BLE001 - a checkpoint that is there must load
        raise BadInput(f"{path}: the checkpoint this export was made from cannot be read "
                       f"({err}); verify will not fall back to folded.pt") from None
    stale = sha256_file(path) != record.sha256
    description = (f"{path}, folded and quantized again"
                   + (" (it changed since the export: its SHA-256 differs)" if stale else ""))
    return fold_model(model), description


# --- the comparison ------------------------------------------------------------------------

def _graph(comparison: _Comparison, artifact: str, expected, found) -> None:

    for name in sorted(set(expected.nodes) | set(found.nodes)):
        ours, theirs = expected.nodes.get(name), found.nodes.get(name)
        if ours is None or theirs is None or type(ours) is not type(theirs):
            comparison.compared += 1
            comparison.diffs.append(Difference(
                artifact, name, "node", None, type(theirs).__name__ if theirs else "absent",
                type(ours).__name__ if ours else "absent"))
            continue
        if isinstance(ours, nir.NIRGraph):
            _graph(comparison, artifact, ours, theirs)
            continue
        for f in dataclasses.fields(ours):
            if f.name != "metadata":
                comparison.values(artifact, name, f.name, getattr(ours, f.name),
                                  getattr(theirs, f.name))
    ours = sorted(tuple(map(str, e)) for e in expected.edges)
    theirs = sorted(tuple(map(str, e)) for e in found.edges)
    comparison.compared += len(ours)
    for edge in sorted(set(ours) ^ set(theirs)):
        comparison.diffs.append(Difference(artifact, "->".join(edge), "edge", None,
                                           "present" if edge in theirs else "absent",
                                           "present" if edge in ours else "absent"))
    meta_e, meta_f = dict(expected.metadata or {}), dict(found.metadata or {})
    for key in meta_e:  # how the graph runs; the version and other notes are not parameters
        if key != "spikeline_version":
            comparison.values(artifact, "metadata", key, meta_e[key], meta_f.get(key))


def _hdf5(comparison: _Comparison, artifact: str, expected: Path, found: Path) -> None:

    def datasets(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, o: out.__setitem__(n, o[()])
                         if isinstance(o, h5py.Dataset) else None)
        return out

    try:
        theirs = datasets(found)
    except Exception as err:  # noqa: BLE001 - the manifest passed it, but it must parse
        comparison.compared += 1
        comparison.diffs.append(Difference(artifact, "file", "HDF5", None,
                                           f"unreadable ({err})", "readable"))
        return
    ours = datasets(expected)
    for name in sorted(set(ours) | set(theirs)):
        comparison.values(artifact, name.rsplit("/", 1)[0], name.rsplit("/", 1)[-1],
                          ours.get(name), theirs.get(name))


def _process_graph(comparison: _Comparison, expected_graph, found_graph) -> str:
    """The Lava process graph of both; returns a note when none is built."""
    artifact = "Lava process graph"
    try:
        ours = lower(expected_graph)
    except ExportUnsupported as why:
        return f"no Lava process graph ({why})"
    try:
        theirs = lower(found_graph)
    except ExportUnsupported as why:
        comparison.compared += 1
        comparison.diffs.append(Difference(artifact, "graph", "lowering", None,
                                           f"refused ({why})", "built"))
        return ""
    for kind in ("lifs", "synapses", "lines"):
        a, b = getattr(ours, kind), getattr(theirs, kind)
        for name in sorted(set(a) | set(b)):
            if name not in a or name not in b:
                comparison.compared += 1
                comparison.diffs.append(Difference(artifact, name, kind, None,
                                                   "present" if name in b else "absent",
                                                   "present" if name in a else "absent"))
                continue
            for f in dataclasses.fields(a[name]):
                comparison.values(artifact, name, f.name, getattr(a[name], f.name),
                                  getattr(b[name], f.name))
    for f in ("input_name", "input_shape", "graded_input", "pad_steps", "readout_start"):
        comparison.values(artifact, "net", f, getattr(ours, f), getattr(theirs, f))
    edges = lambda net: sorted((e.src, e.dst) for e in net.edges)  # noqa: E731
    comparison.values(artifact, "net", "edges", np.asarray(edges(ours), dtype=str).reshape(-1),
                      np.asarray(edges(theirs), dtype=str).reshape(-1))
    return ""


def certify_parameters(export_dir, meta: dict, folded_model, folded_spec: dict,
                       reference, description: str) -> ParameterCertificate:
    """Compare every artifact of ``export_dir`` with ``reference`` (the folded network rebuilt
    from the run; None when there is no run: ``description`` then says why)."""

    export_dir = Path(export_dir)
    if reference is None:
        return ParameterCertificate("not_checked", note=description)
    spec = meta.model_spec
    input_shape = meta.require_shape()
    comparison = _Comparison()
    artifacts = ["folded.pt"]
    comparison.values("folded.pt", "model_spec", "spec", spec, folded_spec)
    expected_state, found_state = reference.state_dict(), folded_model.state_dict()
    for name in sorted(set(expected_state) | set(found_state)):
        comparison.values("folded.pt", name, "tensor", expected_state.get(name),
                          found_state.get(name))
    expected_graph = to_nir(reference, spec, input_shape).graph
    found_graph = nir.read(export_dir / "model.nir")
    _graph(comparison, "model.nir", expected_graph, found_graph)
    artifacts.append("model.nir")
    if (export_dir / "readout.npz").is_file():
        arrays, _ = readout_arrays(reference, expected_graph)
        with np.load(export_dir / "readout.npz", allow_pickle=False) as found:
            theirs = {k: found[k] for k in found.files}
        for key in sorted(set(arrays) | set(theirs)):
            comparison.values("readout.npz", key, "array", arrays.get(key), theirs.get(key))
        artifacts.append("readout.npz")
    note = ""
    if (export_dir / "model.net").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            try:
                write_netx(reference, input_shape, Path(tmp) / "model.net")
            except ExportUnsupported as why:
                comparison.compared += 1
                comparison.diffs.append(Difference("model.net", "file", "present", None,
                                                   "present", f"none ({why})"))
            else:
                _hdf5(comparison, "model.net", Path(tmp) / "model.net",
                      export_dir / "model.net")
        artifacts.append("model.net")
    else:
        note = _process_graph(comparison, expected_graph, found_graph)
        if not note:
            artifacts.append("Lava process graph")
    differences = sum(d.count for d in comparison.diffs)
    return ParameterCertificate("mismatch" if comparison.diffs else "ok", description,
                                artifacts, comparison.compared, differences,
                                comparison.diffs[:SHOWN], note)
