"""A trained run directory -> an export directory (NIR, netx, the folded model, metadata).

``EXPORT_DIR`` holds::

    model.nir       the whole graph (residual edges included), NIR 1.0.8
    model.net       lava-dl netx HDF5, for sequential networks
    folded.pt       the folded, quantized network: the reference every backend is checked
                    against (``torch.load(..., weights_only=True)``)
    metadata.json   spikeline version, training config, model spec, quantization, formats

Every file is written to a temporary name and renamed, so a crash never leaves half an export.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nir
import torch

from spikeline import __version__
from spikeline.atomic import atomic_file, atomic_path
from spikeline.errors import SpikelineError
from spikeline.pipeline.checkpoint import build_from_spec, load_run_model
from spikeline.pipeline.models import SpikingNet

from .fold import fold_model
from .to_netx import write_netx
from .to_nir import DT, Export, model_to_nir, timing_metadata

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


def export_model(model: SpikingNet, spec: dict, out_dir, formats=FORMATS,
                 config: dict | None = None) -> ExportResult:
    """Fold ``model`` (built from ``spec``) and write the requested formats to ``out_dir``."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise SpikelineError(f"unknown export format(s) {sorted(unknown)}; supported: "
                             f"{', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folded = fold_model(model)
    input_shape = (int(spec.get("in_channels", 2)), *(int(v) for v in spec["input_size"]))
    result = ExportResult(out)
    meta = {"spikeline_version": __version__, "model_spec": spec, "training_config": config or {},
            "input_shape": list(input_shape), "input_encoding": folded.encoding,
            "T": (config or {}).get("T"), "dataset": (config or {}).get("dataset"),
            "dt": DT, "quantization": QUANTIZATION, "heads": "removed",
            **chip_timing(folded, (config or {}).get("T"))}
    if "nir" in formats:
        export = model_to_nir(folded, input_shape, metadata={"spikeline_version": __version__})
        with atomic_path(out / "model.nir") as tmp:
            nir.write(tmp, export.graph)
        result.files["nir"] = "model.nir"
    if "netx" in formats:
        try:
            with atomic_path(out / "model.net") as tmp:
                write_netx(folded, input_shape, tmp)
            result.files["netx"] = "model.net"
        except SpikelineError as why:
            result.skipped["netx"] = str(why)
    for fmt, name in FILES.items():  # a file of an earlier export must not pass for this one
        if fmt not in result.files and (out / name).exists():
            (out / name).unlink()
    with atomic_file(out / "folded.pt") as fh:
        torch.save({"model_spec": spec, "state_dict": folded.state_dict()}, fh)
    result.files["folded"] = "folded.pt"
    meta["files"], meta["skipped"] = result.files, result.skipped
    with atomic_file(out / "metadata.json") as fh:
        fh.write(json.dumps(meta, indent=2, default=str).encode())
    return result


def chip_timing(model: SpikingNet, T: int | None) -> dict:
    """``latency_steps``: the network's depth in synaptic hops, i.e. the steps before input
    step 0 reaches the readout on a chip with one step per hop; ``chip_steps_per_sample``:
    ``T + latency_steps``, the steps a sample occupies the chip (the last input step must
    reach the readout).  Plus the graph's ``timing``, ``input_pad_steps``, ``readout_start``."""
    meta = timing_metadata(model)
    meta["chip_steps_per_sample"] = None if T is None else int(T) + meta["latency_steps"]
    del meta["readout"]
    return meta


def export_run(run_dir, out_dir, formats=FORMATS, which: str = "best") -> ExportResult:
    """Export the stripped network of a training run (``best.pt`` by default)."""
    model, ckpt = load_run_model(run_dir, which)
    return export_model(model, ckpt["model_spec"], out_dir, formats, ckpt.get("config"))


def load_folded(export_dir) -> tuple[SpikingNet, dict, Export]:
    """The folded reference network of an export, its metadata, and its NIR node mapping."""
    export_dir = Path(export_dir)
    path, meta_path = export_dir / "folded.pt", export_dir / "metadata.json"
    for p in (path, meta_path):
        if not p.is_file():
            raise SpikelineError(f"{export_dir}: no {p.name} (expected a folder written by "
                                 "`spikeline export`)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as err:
        raise SpikelineError(f"{meta_path}: not valid JSON ({err})") from None
    saved = torch.load(path, weights_only=True)
    model = fold_model(build_from_spec(saved["model_spec"]))  # same structure as saved
    model.load_state_dict(saved["state_dict"])
    return model, meta, model_to_nir(model, tuple(meta["input_shape"]))
