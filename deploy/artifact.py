"""What an export folder promises, typed and read once.

An export folder (written by ``deploy/export.py``) holds ``model.nir``, ``model.net``,
``readout.npz`` (detectors), ``folded.pt`` and ``metadata.json``, committed by
``manifest.json`` (the SHA-256 and size of each).  Its contract, as data:

- :class:`GraphTiming`: how a NIR graph is run in time (its ``metadata``): ``timing`` (ideal or
  loihi), ``dt``, ``input_pad_steps`` (zero frames after the ``T`` input steps),
  ``readout_start`` (first step the readout averages), ``latency_steps`` (synaptic hops from
  input to readout), ``input_encoding``, ``output_nodes``, ``reset_steps`` (neuron node ->
  the step of each sample at which its current and voltage restart from 0).  Every field is
  optional in a graph of another tool (defaults: ideal, 1e-4 s, 0, 0, 0, none, none, none).
- :class:`LevelWindow` / :class:`DetectorReadout`: a detector's off-chip readout, per output
  level its source node, size and averaging window.
- :class:`ExportMeta`: ``metadata.json``: task, input shape, encoding, ``T``, the timing, the
  model spec and training config, files written and skipped, the detector readout.

Each is built by one reader (:meth:`GraphTiming.of`, :meth:`ExportMeta.read`) that validates
every field and raises ``BadInput`` (exit 2) naming the file and field; nothing else reads
these keys.  :func:`read_model` reads either an export folder or a bare ``.nir`` file.
``DEFAULT_T`` is the one default of T for inputs to a model that records none.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np

from spikeline import __version__
from spikeline.atomic import atomic_file
from spikeline.errors import BadInput, DataNotFound
from spikeline.pipeline.config import DEFAULT_T
from spikeline.pipeline.timing import TIMINGS

from .nir_check import DT, check_dt, graph_dt, read_nir

__all__ = ["DEFAULT_T", "DetectorReadout", "EXPORT_FILES", "ExportMeta", "GraphTiming",
           "LevelWindow", "MANIFEST", "RunRecord", "check_manifest", "graph_input_shape", "read_model",
           "spec_task", "write_manifest"]

MANIFEST = "manifest.json"
# the files the manifest covers
EXPORT_FILES = ("model.nir", "model.net", "readout.npz", "folded.pt", "metadata.json")
TASKS = ("classify", "detection")


# ---- field checks (each names where the value came from) -------------------------------------

def _int(value, where: str, *, minimum: int = 0, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise BadInput(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _str(value, where: str, choices=None, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (choices is not None and value not in choices):
        expected = f"one of {', '.join(choices)}" if choices else "a string"
        raise BadInput(f"{where}: expected {expected}, got {value!r}")
    return value


def _input_shape(shape, where: str) -> tuple[int, ...]:
    if not (isinstance(shape, (list, tuple)) and shape and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise BadInput(f"{where}: field 'input_shape' must be a list of positive integers, "
                       f"got {shape!r}")
    return tuple(shape)


def _dict(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


# ---- the graph's time contract ----------------------------------------------------------------

@dataclass(frozen=True)
class GraphTiming:
    """How a NIR graph runs in time; see the module docstring."""

    timing: str = "ideal"
    dt: float = DT
    input_pad_steps: int = 0
    readout_start: int = 0
    latency_steps: int = 0
    input_encoding: str | None = None
    output_nodes: tuple[str, ...] = ()
    reset_steps: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: nir.NIRGraph, where: str = "graph") -> GraphTiming:
        """The graph's ``metadata``, checked field by field (absent fields: defaults)."""
        meta = graph.metadata if isinstance(graph.metadata, dict) else {}
        at = f"{where}: NIR metadata"
        outs = meta.get("output_nodes")
        outs = () if outs is None else tuple(str(v) for v in np.atleast_1d(outs))
        return cls(
            timing=_str(meta.get("timing", "ideal"), f"{at} timing", TIMINGS),
            dt=graph_dt(graph, where),
            input_pad_steps=_int(meta.get("input_pad_steps", 0), f"{at} input_pad_steps"),
            readout_start=_int(meta.get("readout_start", 0), f"{at} readout_start"),
            latency_steps=_int(meta.get("latency_steps", 0), f"{at} latency_steps"),
            input_encoding=_str(meta.get("input_encoding"), f"{at} input_encoding",
                                optional=True),
            output_nodes=outs,
            reset_steps=_reset_steps(meta.get("reset_steps"), graph, f"{at} reset_steps"))


def _reset_steps(value, graph: nir.NIRGraph, where: str) -> dict[str, int]:
    """``{neuron node: step}``: each a CubaLIF/CubaLI node of ``graph`` and a step >= 0."""
    steps = {}
    for name, step in _dict(value, where).items():
        node = graph.nodes.get(name)
        if not isinstance(node, (nir.CubaLIF, nir.CubaLI)):
            raise BadInput(f"{where}: {name!r} is not a CubaLIF or CubaLI node of the graph")
        steps[name] = _int(step, f"{where}[{name!r}]")
    return steps


# ---- a detector's off-chip readout ------------------------------------------------------------

@dataclass(frozen=True)
class LevelWindow:
    """One output level of a detector: the neuron node feeding it, its map size, the readout's
    output channels and the first of the ``T`` steps its readout averages."""

    level: str
    source_node: str
    in_channels: int
    out_channels: int
    height: int
    width: int
    readout_start: int = 0


@dataclass(frozen=True)
class DetectorReadout:
    """``metadata.json``'s ``readout``: per level a :class:`LevelWindow`, and the zero steps
    the graph's input carries after the ``T`` input steps."""

    levels: tuple[LevelWindow, ...]
    num_classes: int
    input_pad_steps: int = 0

    @classmethod
    def parse(cls, raw, where: str) -> DetectorReadout:
        at = f"{where} field 'readout'"
        raw = _dict(raw, at)
        try:
            levels = tuple(LevelWindow(
                _str(lv["level"], f"{at} level"), _str(lv["source_node"], f"{at} source_node"),
                _int(lv["in_channels"], f"{at} in_channels", minimum=1),
                _int(lv["out_channels"], f"{at} out_channels", minimum=1),
                _int(lv["height"], f"{at} height", minimum=1),
                _int(lv["width"], f"{at} width", minimum=1),
                _int(lv.get("readout_start", 0), f"{at} readout_start"))
                for lv in raw["levels"])
        except (KeyError, TypeError) as err:
            raise BadInput(f"{at} is malformed ({type(err).__name__}: {err})") from None
        return cls(levels, _int(raw.get("num_classes", 0), f"{at} num_classes"),
                   _int(raw.get("input_pad_steps", 0) or 0, f"{at} input_pad_steps"))


# ---- the training run an export was made from --------------------------------------------------

@dataclass(frozen=True)
class RunRecord:
    """``metadata.json``'s ``run`` (written by ``export_run``, ``certificate.run_record``): the
    run folder relative to the export and absolute, the checkpoint's file name in it and its
    SHA-256 at export time; verify rebuilds the reference from it."""

    dir: str
    dir_absolute: str
    checkpoint: str
    sha256: str

    @classmethod
    def parse(cls, record, where: str) -> RunRecord:
        names = ("dir", "dir_absolute", "checkpoint", "sha256")
        if not (isinstance(record, dict) and all(isinstance(record.get(k), str) for k in names)):
            raise BadInput(f"{where}: field 'run' must hold the strings dir, dir_absolute, "
                           f"checkpoint, sha256; got {record!r}")
        return cls(*(record[k] for k in names))


# ---- metadata.json ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportMeta:
    """``metadata.json`` of an export folder, checked (see the module docstring).  ``raw`` is
    the whole file, for reports that record it."""

    path: Path
    task: str
    input_shape: tuple[int, ...] | None  # None: a folder made by hand (see require_shape)
    input_encoding: str | None
    T: int | None
    dataset: str | None
    timing: GraphTiming
    chip_steps_per_sample: int | None = None
    model_spec: dict = field(default_factory=dict, hash=False)
    training_config: dict = field(default_factory=dict, hash=False)
    files: dict = field(default_factory=dict, hash=False)
    skipped: dict = field(default_factory=dict, hash=False)
    readout: DetectorReadout | None = None
    run: RunRecord | None = None
    raw: dict = field(default_factory=dict, hash=False, repr=False)

    def require_shape(self) -> tuple[int, ...]:
        """The input shape, which reading ``folded.pt`` needs (a folder of only a graph and
        its T runs without it)."""
        return _input_shape(self.input_shape, str(self.path))

    def steps(self, T: int | None = None) -> int:
        """``T`` as asked, else the export's, else ``DEFAULT_T``."""
        return T if T is not None else (self.T if self.T is not None else DEFAULT_T)

    @classmethod
    def parse(cls, raw, path: Path) -> ExportMeta:
        at = str(path)
        if not isinstance(raw, dict):
            raise BadInput(f"{at}: expected a JSON object")
        shape = raw.get("input_shape")
        if shape is not None:
            shape = _input_shape(shape, at)
        spec = _dict(raw.get("model_spec"), f"{at} field 'model_spec'")
        task = _str(raw["task"], f"{at} field 'task'", TASKS) if raw.get("task") \
            else spec_task(spec)
        timing = GraphTiming(
            timing=_str(raw.get("timing", "ideal"), f"{at} field 'timing'", TIMINGS),
            dt=DT if raw.get("dt") is None else check_dt(raw["dt"], f"{at} field 'dt'"),
            input_pad_steps=_int(raw.get("input_pad_steps", 0), f"{at} field 'input_pad_steps'"),
            readout_start=_int(raw.get("readout_start", 0), f"{at} field 'readout_start'"),
            latency_steps=_int(0 if raw.get("latency_steps") is None else raw["latency_steps"],
                               f"{at} field 'latency_steps'"),
            input_encoding=_str(raw.get("input_encoding"), f"{at} field 'input_encoding'",
                                optional=True),
            output_nodes=tuple(str(v) for v in raw.get("output_nodes") or ()))
        readout = raw.get("readout")
        return cls(
            path=path, task=task, input_shape=shape,
            input_encoding=timing.input_encoding,
            T=_int(raw.get("T"), f"{at} field 'T'", minimum=1, optional=True),
            dataset=_str(raw.get("dataset"), f"{at} field 'dataset'", optional=True),
            timing=timing,
            chip_steps_per_sample=_int(raw.get("chip_steps_per_sample"),
                                       f"{at} field 'chip_steps_per_sample'", optional=True),
            model_spec=spec,
            training_config=_dict(raw.get("training_config"), f"{at} field 'training_config'"),
            files=_dict(raw.get("files"), f"{at} field 'files'"),
            skipped=_dict(raw.get("skipped"), f"{at} field 'skipped'"),
            readout=None if not isinstance(readout, dict)
            else DetectorReadout.parse(readout, at),
            run=None if raw.get("run") is None else RunRecord.parse(raw["run"], at), raw=raw)

    @classmethod
    def read(cls, export_dir) -> ExportMeta:
        """``export_dir/metadata.json``, checked."""
        path = Path(export_dir) / "metadata.json"
        try:
            raw = json.loads(path.read_text())
        except OSError as err:
            raise BadInput(f"{path}: cannot read ({err.strerror or err})") from None
        except ValueError as err:
            raise BadInput(f"{path}: not valid JSON ({err})") from None
        return cls.parse(raw, path)


def spec_task(spec) -> str:
    """The task a ``model_spec`` was trained for (``classify`` when it names none)."""
    task = spec.get("task", "classify") if isinstance(spec, dict) else "classify"
    return _str(task, "model_spec field 'task'", TASKS)


# ---- the manifest -----------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (memory stays bounded)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(export_dir, version: str = __version__) -> Path:
    """Commit ``export_dir``: record the hash and size of each export file present in it."""
    export_dir = Path(export_dir)
    files = {name: {"sha256": sha256_file(export_dir / name), "bytes": (export_dir / name).stat()
                    .st_size} for name in EXPORT_FILES if (export_dir / name).is_file()}
    manifest = {"spikeline_version": version, "files": files}
    with atomic_file(export_dir / MANIFEST, fsync=True) as fh:
        fh.write(json.dumps(manifest, indent=2).encode())
    return export_dir / MANIFEST


def check_manifest(export_dir) -> dict:
    """Refuse an export folder whose files are not the ones its manifest records."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST
    if not path.is_file():
        raise BadInput(f"{export_dir}: no {MANIFEST}, so its files may come from different "
                       "exports (an interrupted export, or one made before manifests); run "
                       "`spikeline export` again, or pass the .nir file itself")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        assert isinstance(files, dict) and all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values())
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise BadInput(f"{path}: not a valid export manifest ({type(err).__name__}: "
                       f"{err})") from None
    for name in EXPORT_FILES:
        file = export_dir / name
        if name not in files:
            if file.exists():
                raise BadInput(f"{file}: not part of this export (absent from {MANIFEST}): "
                               "a file of another export; re-export")
            continue
        if not file.is_file():
            raise BadInput(f"{file}: missing, but {MANIFEST} lists it; re-export")
        if file.stat().st_size != files[name].get("bytes") or sha256_file(file) != \
                files[name]["sha256"]:
            raise BadInput(f"{file}: does not match {MANIFEST} (changed, truncated or from "
                           "another export); re-export")
    return manifest


# ---- reading a model to run -------------------------------------------------------------------

def read_model(target: str | Path) -> tuple[nir.NIRGraph, ExportMeta | None, Path]:
    """``(graph, export metadata, path of the .nir file)`` of an export folder or a .nir file
    (a bare .nir file, or a folder without ``metadata.json``: metadata None)."""
    target = Path(target)
    meta = None
    if target.is_dir():
        path = target / "model.nir"
        if not path.is_file():
            raise DataNotFound(f"{target}: no model.nir in this folder (expected an export "
                               f"folder with model.nir and metadata.json, or a .nir file)")
        check_manifest(target)
        if (target / "metadata.json").is_file():
            meta = ExportMeta.read(target)
    else:
        path = target
        if not path.is_file():
            raise DataNotFound(f"{path}: no such file or folder")
    return read_nir(path), meta, path


def graph_input_shape(graph: nir.NIRGraph) -> tuple[int, ...]:
    """The input shape of the graph's one ``Input`` node."""
    inputs = [(n, node) for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise BadInput(f"the graph needs exactly one Input node, it has "
                       f"{[n for n, _ in inputs]}")
    shape = inputs[0][1].input_type.get("input")
    if shape is None or not len(shape):
        raise BadInput(f"the graph's Input node {inputs[0][0]!r} has no input shape")
    return tuple(int(v) for v in np.asarray(shape).reshape(-1))
