"""A trained run directory -> an export directory (NIR, netx, the folded model, metadata).

``EXPORT_DIR`` holds::

    model.nir       the whole graph (residual edges included), NIR 1.0.8
    model.net       lava-dl netx HDF5, for sequential networks
    readout.npz     detectors only: the off-chip Detect readout (``deploy/detector.py``)
    folded.pt       the folded, quantized network: the reference every backend is checked
                    against (``torch.load(..., weights_only=True)``)
    metadata.json   spikeline version, training config, model spec, quantization, formats
    manifest.json   the SHA-256 and size of each file above, written last

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
The manifest makes the folder one unit: a new export first removes the old manifest, writes
its files, removes files of formats it did not write, and commits by writing the manifest.
Readers (:func:`check_manifest`, called by :func:`load_folded` and the CLI's model loading)
refuse a folder without a manifest (an interrupted export) or whose files do not match it (a
mix of two exports, or a file edited since).
"""
from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import torch

from spikeline import __version__
from spikeline.atomic import atomic_path
from spikeline.errors import BadInput, DataNotFound, ExportUnsupported, SpikelineError, check_size
from spikeline.pipeline.checkpoint import (build_from_spec, load_checkpoint,
                                          model_from_checkpoint, resolve_checkpoint)
from spikeline.pipeline.models import ResidualBlock, SpikingNet, batchnorm_of

from .artifact import (
    EXPORT_FILES, MANIFEST, ExportMeta, GraphTiming, check_manifest, spec_task, write_manifest,
)
from .detector import (
    check_deployable, detector_timing, detector_to_nir, readout_arrays,
)
from .certificate import run_record
from .fold import fold_model
from .tasks import to_nir
from .to_netx import write_netx
from .nir_check import DT
from .to_nir import Export, model_to_nir, timing_metadata

log = logging.getLogger(__name__)

FORMATS = ("nir", "netx")
FILES = {"nir": "model.nir", "netx": "model.net"}
QUANTIZATION = {
    "weights": "8-bit mantissas on the 2/64 grid, in [-256, 254]/64 (lava-dl quantize_8bit)",
    "weight_scale": 64,
    "voltage_bias": "1/64 grid (Loihi bias mantissa x 2^6)",
    "decays": "12-bit (iDecay, vDecay out of 4096)",
    "threshold": "vThMant = int(threshold * 64)",
    "batchnorm": "scale folded into weights, shift into the voltage bias",
}


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why


def check_formats(formats) -> tuple[str, ...]:
    """``formats`` as a non-empty tuple of known format names (BadInput otherwise)."""
    formats = tuple(formats)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise BadInput(f"--format: unknown export format(s) {sorted(unknown)}; supported: "
                       f"{', '.join(FORMATS)}")
    if not formats:
        raise BadInput(f"--format: no format given; choose from {', '.join(FORMATS)}")
    return formats


def with_batchnorm(spec: dict, model) -> dict:
    """``spec`` with what ``model`` was built with where older specs mean something else:
    its ``batchnorm`` form (absent: ``shift``) and its residual blocks' ``identity_weight``
    (absent: 1.0).  ``folded.pt`` is rebuilt from the spec it stores."""
    extra = {}
    form = batchnorm_of(model)
    if form is not None:
        extra["batchnorm"] = form
    weights = {m.identity_weight for m in model.modules() if isinstance(m, ResidualBlock)}
    if len(weights) == 1:
        extra["identity_weight"] = weights.pop()
    return spec if all(spec.get(k) == v for k, v in extra.items()) else {**spec, **extra}


def export_model(model: SpikingNet, spec: dict, out_dir, formats=FORMATS,
                 config: dict | None = None, run: dict | None = None) -> ExportResult:
    """Fold ``model`` (built from ``spec``) and write the requested formats to ``out_dir``.

    ``run``: where the checkpoint came from (``certificate.run_record``), recorded so that
    verify can rebuild the reference from it (absent: verify says the parameters were not
    checked against a run).

    Two phases: every file is first written beside its target; only when all are written is
    the old manifest removed, the files renamed into place, stale files of formats not
    written removed, and the new manifest written.  A failure while writing (a full disk, an
    internal error) leaves the previous export untouched and valid."""
    spec = with_batchnorm(spec, model)
    return EXPORTERS[spec_task(spec)](model, spec, out_dir, check_formats(formats), config,
                                      run)


def export_classifier(model: SpikingNet, spec: dict, out_dir, formats=FORMATS,
                      config: dict | None = None, run: dict | None = None) -> ExportResult:
    """``export_model`` of a classifier: ``model.nir``, ``model.net`` (sequential networks),
    ``folded.pt``, ``metadata.json``."""
    out = Path(out_dir)
    folded = fold_model(model)  # before touching the folder: a failure here changes nothing
    input_shape = (int(spec.get("in_channels", 2)), *(int(v) for v in spec["input_size"]))
    nir_export = model_to_nir(folded, input_shape, metadata={"spikeline_version": __version__})
    result = ExportResult(out)
    meta = {"spikeline_version": __version__, "model_spec": spec, "training_config": config or {},
            "input_shape": list(input_shape), "input_encoding": folded.encoding,
            "T": (config or {}).get("T"), "dataset": (config or {}).get("dataset"),
            "dt": DT, "quantization": QUANTIZATION, "heads": "removed",
            **chip_timing(folded, (config or {}).get("T")), **({"run": run} if run else {})}
    with ExitStack() as staged:  # on leaving it, each staged file replaces its target
        if "nir" in formats:
            nir.write(staged.enter_context(atomic_path(out / "model.nir")), nir_export.graph)
            result.files["nir"] = "model.nir"
        if "netx" in formats:
            netx = ExitStack()
            tmp = netx.enter_context(atomic_path(out / "model.net"))
            try:
                write_netx(folded, input_shape, tmp)
            except ExportUnsupported as why:  # anything else is a bug and propagates
                netx.close()  # the staged file is removed; nothing replaced
                result.skipped["netx"] = str(why)
                log.info("netx not written: %s", why)
            else:
                staged.push(netx)
                result.files["netx"] = "model.net"
        _stage_folded_and_metadata(staged, out, spec, folded, meta, result)
    return _commit(out, result)



def _stage_folded_and_metadata(staged: ExitStack, out: Path, spec: dict, folded, meta: dict,
                               result) -> None:
    """Stage ``folded.pt`` and ``metadata.json`` (listing ``result``'s files and skips) beside
    the other staged files, and drop the manifest: the folder is uncommitted from here until
    ``_commit`` writes the new one."""
    torch.save({"model_spec": spec, "state_dict": folded.state_dict()},
               staged.enter_context(atomic_path(out / "folded.pt")))
    result.files["folded"] = "folded.pt"
    meta["files"], meta["skipped"] = result.files, result.skipped
    staged.enter_context(atomic_path(out / "metadata.json")).write_text(
        json.dumps(meta, indent=2, default=str))
    (out / MANIFEST).unlink(missing_ok=True)


def _commit(out: Path, result):
    """After the staged files are in place: remove files of an older export, write the
    manifest."""
    _remove_stale(out, result.files.values())
    write_manifest(out)
    return result

def _remove_stale(out: Path, written) -> None:
    """A file of an earlier export must not pass for one of this export."""
    written = {*written, "metadata.json"}
    for name in EXPORT_FILES:
        if name not in written and (out / name).exists():
            (out / name).unlink()


def _input_shape(spec: dict, config: dict | None) -> tuple[int, int, int]:
    size = spec.get("input_size") or (config or {}).get("size")
    if size is None:
        raise BadInput("the model spec has no input_size and the training config no size: "
                       "the export needs the input's height and width")
    return (int(spec.get("in_channels", 2)), *(int(v) for v in size))


def export_detector(model, spec: dict, out_dir, formats=FORMATS,
                    config: dict | None = None, run: dict | None = None) -> ExportResult:
    """Export a deployable detector (``deploy/detector.py``): ``model.nir`` holds the spiking
    part (stem, backbone, neck) with two Output nodes, P4 and P5; ``readout.npz`` the off-chip
    Detect readout; ``folded.pt`` and ``metadata.json`` as for classifiers.  The published
    (real-valued) form is refused (``ExportUnsupported``).  Written in the same two phases as
    ``export_model``."""
    spec = with_batchnorm(spec, model)
    check_deployable(model)
    if "nir" not in formats:
        raise ExportUnsupported("a detector exports through NIR: --format must include nir")
    out = Path(out_dir)
    folded = fold_model(model)
    input_shape = _input_shape(spec, config)
    nir_export = detector_to_nir(folded, input_shape,
                                 metadata={"spikeline_version": __version__})
    arrays, readout_meta = readout_arrays(folded, nir_export.graph)
    result = ExportResult(out)
    if "netx" in formats:
        result.skipped["netx"] = ("netx HDF5 holds one sequential chain of layers ending in one "
                                  "output; the detector has residual shortcut edges and two "
                                  "outputs (P4, P5)")
    graph_timing = GraphTiming.of(nir_export.graph)
    meta = {"spikeline_version": __version__, "task": "detection", "model_spec": spec,
            "training_config": config or {}, "input_shape": list(input_shape),
            "input_encoding": folded.encoding, "T": (config or {}).get("T"),
            "dataset": (config or {}).get("dataset"), "dt": DT, "quantization": QUANTIZATION,
            "heads": "removed", "output_nodes": list(graph_timing.output_nodes),
            "readout": readout_meta, **detector_timing(folded),
            "chip_steps_per_sample": None if (config or {}).get("T") is None
            else int(config["T"]) + graph_timing.latency_steps,
            **({"run": run} if run else {})}
    with ExitStack() as staged:
        nir.write(staged.enter_context(atomic_path(out / "model.nir")), nir_export.graph)
        result.files["nir"] = "model.nir"
        with open(staged.enter_context(atomic_path(out / "readout.npz")), "wb") as fh:
            np.savez(fh, **arrays)
        result.files["readout"] = "readout.npz"
        _stage_folded_and_metadata(staged, out, spec, folded, meta, result)
    return _commit(out, result)


def chip_timing(model: SpikingNet, T: int | None) -> dict:
    """``latency_steps``: the network's depth in synaptic hops, i.e. the steps before input
    step 0 reaches the readout on a chip with one step per hop; ``chip_steps_per_sample``:
    ``T + latency_steps``, the steps a sample occupies the chip (the last input step must
    reach the readout).  Plus the graph's ``timing``, ``input_pad_steps``, ``readout_start``."""
    meta = timing_metadata(model)
    meta["chip_steps_per_sample"] = None if T is None else int(T) + meta["latency_steps"]
    del meta["readout"]
    return meta


# what each task exports (one dispatch, on the spec's task)
EXPORTERS = {"classify": export_classifier, "detection": export_detector}


def export_run(run_dir, out_dir, formats=FORMATS, which: str = "best") -> ExportResult:
    """Export the stripped network of a training run (``best.pt`` by default)."""
    formats = check_formats(formats)
    path = resolve_checkpoint(run_dir, which)
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    return export_model(model, ckpt["model_spec"], out_dir, formats, ckpt.get("config"),
                        run=run_record(run_dir, path, out_dir))


# ---- reading an export ----------------------------------------------------------------------

def read_metadata(export_dir) -> ExportMeta:
    """``metadata.json`` of an export, checked, with the input shape ``folded.pt`` needs."""
    meta = ExportMeta.read(export_dir)
    meta.require_shape()
    return meta


def load_folded(export_dir) -> tuple[SpikingNet, ExportMeta, Export]:
    """The folded reference network of an export, its metadata, and its NIR node mapping."""
    export_dir = Path(export_dir)
    path, meta_path = export_dir / "folded.pt", export_dir / "metadata.json"
    for p in (path, meta_path):
        if not p.is_file():
            raise DataNotFound(f"{export_dir}: no {p.name} (expected a folder written by "
                               "`spikeline export`)")
    check_manifest(export_dir)
    meta = read_metadata(export_dir)
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # truncated zip, refused pickle, ...
        raise BadInput(f"{path}: not a readable folded model ({type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("model_spec"), dict)
            and isinstance(saved.get("state_dict"), dict)):
        raise BadInput(f"{path}: expected a dict with 'model_spec' and 'state_dict'")
    try:
        with torch.device("meta"):  # count first: the spec is data from a file
            shapes = fold_model(build_from_spec(saved["model_spec"])).state_dict()
        check_size(sum(t.numel() * 4 for t in shapes.values()), f"{path}: the model")
        model = fold_model(build_from_spec(saved["model_spec"]))  # same structure as saved
        model.load_state_dict(saved["state_dict"])
    except SpikelineError:
        raise
    except Exception as err:
        raise BadInput(f"{path}: the model spec and weights do not build a network "
                       f"({type(err).__name__}: {err})") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BadInput(f"{path}: parameter {name!r} holds NaN or Inf")
    try:
        export = to_nir(model, saved["model_spec"], meta.input_shape)
    except SpikelineError:
        raise
    except Exception as err:
        raise BadInput(f"{meta_path}: input_shape {list(meta.input_shape)} does not fit the "
                       f"model ({type(err).__name__}: {err})") from None
    return model, meta, export
