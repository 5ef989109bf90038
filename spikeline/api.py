"""The Python API: ``import spikeline as sl``.

A notebook's path through the pipeline, one call a stage::

    run = sl.train(sl.TrainConfig(dataset="ndigits", model="cnn", epochs=1), "runs/demo")
    art = sl.export(run, "runs/demo/export")          # heads stripped, BN folded, quantized
    cert = sl.verify(art, "ndigits", backends=("nir",))  # spike for spike, or VerifyFailed
    report = sl.energy(art, "ndigits")                 # joules per inference, SNN vs ANN
    report.plot()

Each function calls ``spikeline.workflow`` (what the command line calls too) and returns a
result object of ``spikeline.results``.  *Inputs* (for ``verify``, ``energy``, ``simulate``) are
any of: a dataset name (its first ``samples`` of ``split``); a list of event files; a ``.npy``
file ``[T, (N,) *input_shape]`` fed as is; a ``torch.utils.data.Dataset`` of ``(frames,
label)``; or an array / tensor of event-count frames ``[T, N, *input_shape]`` (or ``[T,
*input_shape]``).  Frames of counts are encoded as the model was trained.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import nir
import numpy as np
import torch

from spikeline.datasets.detection import DETECTION_DATASETS, load_detection
from spikeline.datasets.inputs import fit_frames
from spikeline.datasets.registry import DATASETS
from spikeline.datasets.registry import load_dataset as _load_classification
from spikeline.deploy.artifact import ExportMeta, graph_input_shape, read_model
from spikeline.deploy.export import FORMATS, check_formats, export_model, export_run
from spikeline.deploy.nir_check import validate_graph
from spikeline.deploy.verify import BACKENDS, DEFAULT_SAMPLES, verify_export
from spikeline.errors import BadInput, SpikelineError, VerifyFailed
from spikeline.paths import output_dir
from spikeline.pipeline.config import Runtime, TrainConfig
from spikeline.pipeline.models import SpikingNet
from spikeline.pipeline.structure import describe
from spikeline.results import Artifact, Certificate, EnergyReport, Run, SimulationResult
from spikeline import workflow

__all__ = ["energy", "export", "load_dataset", "simulate", "train", "verify"]

Progress = bool | Callable[[dict], None] | None


def _fresh_dir(out, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix)) if out is None else output_dir(out, "out")


# ---- train ----------------------------------------------------------------------------------

def train(config: TrainConfig | None = None, out: str | os.PathLike | None = None, *,
          progress: Progress = None, max_steps: int | None = None,
          stop_after: int | None = None, device: str = "auto", workers: int = 0,
          data_dir=None, cache_dir=None, resume: bool = False) -> Run:
    """Train ``config`` (default ``TrainConfig()``: a small CNN on ndigits) into ``out`` (a new
    temporary folder when None); returns the :class:`~spikeline.results.Run`.

    ``progress``: None or True: progress bars; False: silent; a callable: called after each
    epoch with its record (``epoch``, ``train_loss``, ``val_acc`` ...), no bars.
    ``max_steps``: stop after N optimizer steps (smoke runs; schedules keep the full length).
    ``resume``: continue the run in ``out`` (``config``, when given, must be the run's)."""
    if resume:
        if out is None:
            raise BadInput("resume: name the run folder to continue (out)")
    else:
        out = _fresh_dir(out, "spikeline-run-")
        config = workflow.resolve_config(config if config is not None else TrainConfig())
    if resume and config is not None:
        config = workflow.resumed_config(out, workflow.resolve_config(config).to_dict())
    runtime = Runtime(out=out, device=device, workers=workers, data_dir=data_dir,
                      cache_dir=cache_dir, resume=resume, stop_after=stop_after,
                      max_steps=max_steps, progress=progress is None or progress is True)
    result = workflow.train(config, runtime, on_epoch=progress if callable(progress) else None)
    return Run.load(result.run_dir)


# ---- export ---------------------------------------------------------------------------------

def export(source: Run | SpikingNet | str | os.PathLike, out: str | os.PathLike | None = None,
           formats: Sequence[str] = FORMATS, *, checkpoint: str = "best",
           accuracy: bool = True, input_shape: Sequence[int] | None = None,
           T: int | None = None, data_dir=None, cache_dir=None) -> Artifact:
    """Strip the heads, fold BatchNorm, quantize and write ``formats`` (``nir``, ``netx``) to
    ``out`` (a new temporary folder when None); returns the :class:`Artifact`.

    ``source``: a :class:`Run` (or its folder): ``checkpoint`` best or last; with
    ``accuracy``, the deployed network's test score is measured beside the trained one's
    (``artifact.deployed``; a warning says why when it cannot be).  Or your own
    ``SpikingNet`` of spikeline blocks (``sl.models``): give its ``input_shape`` (C, H, W) and
    the ``T`` it runs for."""
    formats = check_formats(formats)
    if isinstance(source, torch.nn.Module):
        if input_shape is None:
            raise BadInput("export of a model: input_shape (C, H, W) is needed")
        spec = describe(source, input_shape)
        out = _fresh_dir(out, "spikeline-export-")
        export_model(source, spec, out, formats, {"T": T} if T is not None else None)
        return Artifact.load(out)
    run_dir = Path(source.path if isinstance(source, Run) else source)
    out = _fresh_dir(out, "spikeline-export-")
    result = export_run(run_dir, out, formats, which=checkpoint)
    deployed = None
    artifact = Artifact.load(out)
    if accuracy and checkpoint == "best" and "nir" in result.files:
        try:
            deployed = workflow.deployed_score(run_dir, out, data_dir, cache_dir)
        except SpikelineError as why:  # the export is complete; say what was not measured
            warnings.warn(f"deployed {artifact.meta.task} score: not measured ({why})",
                          stacklevel=2)
    artifact.deployed = deployed
    return artifact


# ---- inputs ---------------------------------------------------------------------------------

def _model(model) -> tuple[nir.NIRGraph, ExportMeta | None, str]:
    """(graph, export metadata, what to call it) of an Artifact, a folder, a file or a graph."""
    if isinstance(model, Artifact):
        return model.graph, model.meta, str(model.path)
    if isinstance(model, nir.NIRGraph):
        return validate_graph(model), None, "graph"
    graph, meta, path = read_model(model)
    return graph, meta, str(path)


def _inputs(graph, meta: ExportMeta | None, inputs, *, samples: int, split: str, T: int | None,
            data_dir, cache_dir, what: str) -> tuple[np.ndarray, dict]:
    kw = {"samples": samples, "split": split, "T": T, "data_dir": data_dir,
          "cache_dir": cache_dir, "what": what}
    if isinstance(inputs, str) and inputs in {**DATASETS, **DETECTION_DATASETS}:
        return workflow.model_inputs(graph, meta, dataset=inputs, **kw)
    if isinstance(inputs, (str, os.PathLike)):
        if str(inputs).endswith(".npy"):
            return workflow.model_inputs(graph, meta, array=inputs, **kw)
        return workflow.model_inputs(graph, meta, events=[inputs], **kw)
    if isinstance(inputs, (list, tuple)) and inputs and all(
            isinstance(v, (str, os.PathLike)) for v in inputs):
        return workflow.model_inputs(graph, meta, events=list(inputs), **kw)
    shape = graph_input_shape(graph)
    if isinstance(inputs, torch.utils.data.Dataset):
        count = min(samples, len(inputs))
        if count < 1:
            raise BadInput("inputs: the dataset is empty")
        frames = np.stack([fit_frames(np.asarray(inputs[i][0]), shape, f"inputs[{i}]")
                           for i in range(count)], axis=1)
        source = {"dataset": type(inputs).__name__}
    else:
        frames = np.asarray(torch.as_tensor(inputs).detach().cpu(), dtype=np.float32)
        if frames.shape[1:] == tuple(shape):
            frames = frames[:, None]
        if frames.ndim < 2 or frames.shape[2:] != tuple(shape):
            raise BadInput(f"inputs: shape {list(frames.shape)} does not fit the model input "
                           f"{list(shape)}; expected [T, N, {', '.join(map(str, shape))}]")
        if not np.all(np.isfinite(frames)):
            raise BadInput("inputs: hold NaN or Inf values; inputs must be finite")
        source = {"array": list(frames.shape)}
    workflow.check_activity(graph, frames.shape[0], frames.shape[1], what)
    encoding = workflow.input_encoding(graph, meta)
    source["encoding"] = encoding or "counts"
    return np.ascontiguousarray(workflow.encode(frames, encoding)), source


# ---- verify, energy, simulate ---------------------------------------------------------------

def verify(artifact: Artifact | str | os.PathLike, inputs, backends: Sequence[str] = BACKENDS,
           *, samples: int | None = None, lava_samples: int | None = None,
           split: str = "test", T: int | None = None, allow_skip: bool = False,
           lava_timeout: float = 300.0, check: bool = True, data_dir=None,
           cache_dir=None) -> Certificate:
    """Check the export: its parameters against the run it was made from, then ``inputs``
    through the reference network and each backend (``nir``, ``lava``, ``spikingjelly``,
    ``snntorch``), every spike compared; returns the :class:`Certificate`.  ``samples`` (of a
    dataset) and ``lava_samples`` (the first K also run in Lava) default to
    ``deploy.verify.DEFAULT_SAMPLES``, as ``spikeline verify``.  With ``check`` (default) a
    certificate that certifies nothing (a mismatch, an error, a skipped backend unless
    ``allow_skip``, a layer silent on every input) raises ``VerifyFailed`` naming why."""
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    samples = max(DEFAULT_SAMPLES.values()) if samples is None else samples
    x, _ = _inputs(art.graph, art.meta, inputs, samples=samples, split=split, T=T,
                   data_dir=data_dir, cache_dir=cache_dir, what=str(art.path))
    report = verify_export(art.path, x, tuple(backends), lava_timeout,
                           lava_samples=DEFAULT_SAMPLES["lava"] if lava_samples is None
                           else lava_samples)
    certificate = Certificate(report, allow_skip)
    if check and certificate.problems:
        raise VerifyFailed("verify: FAILED: " + "; ".join(certificate.problems))
    return certificate


def energy(model: Artifact | nir.NIRGraph | str | os.PathLike, inputs,
           convention: str | None = None, hardware: str | None = None, *,
           models: Sequence[str] | None = None, hardware_file=None,
           fanout: str = "structural", mode: str = "auto", batch_size: int = 8,
           samples: int = 16, split: str = "test", T: int | None = None, data_dir=None,
           cache_dir=None) -> EnergyReport:
    """Count the synaptic operations, MACs, neuron updates and spikes of ``model`` (an
    artifact, an export folder, a ``.nir`` file of any tool, or a ``nir.NIRGraph``) on
    ``inputs`` and price them per inference against the ANN of the same architecture.
    ``convention`` (event, ems, lemaire) and ``hardware`` (a model name of
    ``deploy/energy/hardware.toml`` or ``hardware_file``) pick one estimate; left None, every
    valid pairing is priced (the first is the headline)."""
    graph, meta, what = _model(model)
    chosen, memory = workflow.hardware_selection(hardware, hardware_file, models)
    x, source = _inputs(graph, meta, inputs, samples=samples, split=split, T=T,
                        data_dir=data_dir, cache_dir=cache_dir, what=what)
    report = workflow.energy_report(
        graph, meta, x, chosen, memory, convention=convention,
        single=bool(hardware), fanout=fanout, mode=mode, batch_size=batch_size,
        meta={"model": what, "source": source, "input_shape": list(graph_input_shape(graph))})
    return EnergyReport(report)


def simulate(graph_or_path: Artifact | nir.NIRGraph | str | os.PathLike, events_or_frames, *,
             mode: str = "auto", dt: float | None = None, samples: int = 1,
             split: str = "test", T: int | None = None, data_dir=None,
             cache_dir=None) -> SimulationResult:
    """Run a NIR graph (ours or another tool's, a file, an export folder or a
    ``nir.NIRGraph``) on inputs and record every node; ``mode``: Loihi fixed point where the
    parameters allow (auto), loihi, or float."""
    graph, meta, what = _model(graph_or_path)
    if dt is not None:
        validate_graph(graph, what, dt=dt)
    x, source = _inputs(graph, meta, events_or_frames, samples=samples, split=split, T=T,
                        data_dir=data_dir, cache_dir=cache_dir, what=what)
    sim, pad = workflow.simulate_model(graph, x, mode, dt)
    if pad > 0:
        source["input_pad_steps"] = pad
    return SimulationResult(sim, workflow.simulation_summary(graph, sim, what, source))


# ---- data -----------------------------------------------------------------------------------

def load_dataset(name: str, split: str = "train", *, T: int | None = None, size=None,
                 data_dir=None, cache_dir=None) -> torch.utils.data.Dataset:
    """Dataset ``name`` (classification: ``ndigits``, ``nmnist``, ``dvsgesture``,
    ``cifar10dvs``; detection: ``ndigits-detect``, ``gen1``) as frames of event counts
    ``[T, C, H, W]`` with their label (detection: their boxes)."""
    if name in DETECTION_DATASETS:
        return load_detection(name, split, T=T, size=size, data_dir=data_dir,
                              cache_dir=cache_dir)
    if name not in DATASETS:
        raise BadInput(f"unknown dataset {name!r}; known: "
                       f"{', '.join(sorted({**DATASETS, **DETECTION_DATASETS}))}")
    return _load_classification(name, split, T=T, size=size, data_dir=data_dir,
                                cache_dir=cache_dir)
