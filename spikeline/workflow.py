"""The workflow: event data -> trained network -> export -> deployed accuracy -> verify ->
energy, as functions of config objects and paths that return data (no argparse, no printing).

``datasets/``, ``pipeline/`` and ``deploy/`` each do one thing; this module composes them.  The
command line (``spikeline/cli``) parses flags, calls these functions and prints; the Python API
(``spikeline.api``, ``import spikeline as sl``) calls them and wraps what they return in result
objects.  Nothing below this module imports it.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nir
import numpy as np
import torch

from spikeline.atomic import atomic_text
from spikeline.datasets import gen1
from spikeline.datasets.detection import (
    DETECTION_DATASETS, detection_collate, load_detection,
)
from spikeline.datasets.inputs import inputs_from_array, inputs_from_dataset, inputs_from_events
from spikeline.datasets.registry import DATASETS, load_dataset, load_splits, make_loader
from spikeline.deploy.accuracy import deployed_accuracy
from spikeline.deploy.artifact import DEFAULT_T, ExportMeta, GraphTiming, graph_input_shape
from spikeline.deploy.detector import deployed_detections, load_readout
from spikeline.deploy.energy import (
    CONVENTIONS, count_in_batches, load_hardware_models, load_memory, price, price_table,
    select_models,
)
from spikeline.deploy.energy.readout import readout_report
from spikeline.deploy.energy.report import build_report, write_report
from spikeline.deploy.export import export_run
from spikeline.deploy.nir_check import activity_bytes
from spikeline.deploy.simulate import Simulation, simulate
from spikeline.deploy.verify import BACKENDS, DEFAULT_SAMPLES, verify_export
from spikeline.errors import BadInput, SpikelineError, VerifyFailed, check_size
from spikeline.paths import output_dir
from spikeline.pipeline.blocks import set_fold_aware
from spikeline.pipeline.checkpoint import load_checkpoint, load_run_model
from spikeline.pipeline.config import Runtime, TrainConfig, resolve
from spikeline.pipeline.detect_train import predict, score_detections
from spikeline.pipeline.precision import exact_fp32
from spikeline.pipeline.tasks import task_for
from spikeline.pipeline.models import encode_frames
from spikeline.pipeline.train import TrainResult, resolve_device
from spikeline.pipeline.train import train as train_loop

__all__ = [
    "DEFAULT_T", "DEPLOYED_SCORES", "RUN_DEFAULTS", "class_names", "deployed_map",
    "deployed_score", "detect_boxes", "deployed_test_accuracy", "encode",
    "energy_report", "evaluate_run", "hardware_selection", "latency_steps", "load_data",
    "loader_factory", "model_inputs", "resolve_T", "resolve_config", "resumed_config",
    "run_config", "run_pipeline", "simulate_model", "simulation_summary", "train",
]

# `spikeline run` trains a demo by default: evolutionary heads, 4 epochs (train's otherwise)
RUN_DEFAULTS = {"heads": "evolutionary", "epochs": 4}


# ---- config and data ------------------------------------------------------------------------

def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill in the dataset's T and size (from the registry's metadata: nothing is loaded);
    a dataset or model of the other task is refused naming the option."""
    task = task_for(config)
    if config.dataset not in {**DATASETS, **DETECTION_DATASETS}:
        raise BadInput(f"--dataset (dataset): unknown dataset {config.dataset!r}; known: "
                       f"{', '.join(sorted(task.datasets))}")
    task.check(config)
    info = task.datasets[config.dataset]
    return resolve(config, info.default_T, info.default_size)


def load_data(config: TrainConfig, data_dir=None, cache_dir=None):
    """The run's ``Splits``, as its task loads them (classification: train with augmentation,
    a fixed validation split carved from it, test; detection: the set's own three splits)."""
    return task_for(config).load_splits(config, data_dir, cache_dir)


def loader_factory(config: TrainConfig | None = None):
    """``make_loader`` of the run's task (detection batches with ``detection_collate``)."""
    return task_for(config if config is not None else "classify").make_loader


# ---- training ------------------------------------------------------------------------------

def resumed_config(run_dir, wanted: dict | None = None) -> TrainConfig:
    """The stored config of the run in ``run_dir`` (its ``last.pt``); ``wanted`` (fields asked
    for now) must agree with it, else the error names each difference."""
    stored = TrainConfig.from_dict(load_checkpoint(Path(run_dir) / "last.pt")["config"])
    diffs = [f"{k}: run has {getattr(stored, k)!r}, asked {v!r}"
             for k, v in (wanted or {}).items() if v != getattr(stored, k)
             and not (k == "size" and list(v) == list(stored.size))]
    if diffs:
        raise SpikelineError(f"--resume of {run_dir} with options that differ from the "
                             "run's config (" + "; ".join(diffs) + "); drop them or "
                             "train into a new --out")
    return stored


def train(config: TrainConfig | None, runtime: Runtime,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Load the config's data and train into ``runtime.out`` (``runtime.resume``: continue
    the run there; ``config`` is then its stored one or None).  ``on_epoch(record)`` is called
    after each epoch with its metrics record.  Returns ``pipeline.train.TrainResult``."""
    if runtime.resume:
        config = resumed_config(runtime.out) if config is None else config
    else:
        output_dir(runtime.out, "--out")
        config = resolve_config(config)
    data = load_data(config, runtime.data_dir, runtime.cache_dir)
    return train_loop(config if not runtime.resume else None, runtime, data,
                      loader_factory(config), on_epoch=on_epoch)


def as_trained(model, ckpt: dict):
    """``model`` (rebuilt from ``ckpt``) in the form it was trained in at that checkpoint: its
    folded form when the checkpoint comes from a ``--fold-finetune-epochs`` epoch."""
    if TrainConfig.from_dict(ckpt.get("config") or {}).folded_epoch(int(ckpt["epoch"])):
        set_fold_aware(model, True)
    return model


def evaluate_run(run_dir, which: str = "best", device: str = "auto", data_dir=None,
                 cache_dir=None, batch_size: int | None = None, limit_test: int | None = None,
                 workers: int = 0) -> dict:
    """Test score of a run's stripped main network (what export deploys): accuracy, or for a
    detector mAP@0.5 and mAP@0.5:0.95."""
    dev = resolve_device(device)
    model, ckpt = load_run_model(run_dir, which)
    config = TrainConfig.from_dict(ckpt["config"])
    if limit_test is not None:
        config.limit_test = limit_test if limit_test > 0 else None
    test = load_data(config, data_dir, cache_dir).test
    loader = loader_factory(config)(test, batch_size or config.batch_size, shuffle=False,
                                    workers=workers, seed=config.seed)
    as_trained(model, ckpt)
    model.to(dev)
    about = {"run_dir": str(run_dir), "checkpoint": which, "epoch": int(ckpt["epoch"]),
             "dataset": config.dataset, "model": config.model}
    if config.task == "classify":
        about["heads"] = config.heads
    return {**about, **task_for(config).test_scores(model, loader, dev)}


def recorded_batch(dataset: str, *, T: int, size, batch_size: int, seed: int = 0,
                   data_dir=None, cache_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` recordings of ``dataset``'s training split (no augmentation), binned
    into ``T`` frames at ``size``, picked by ``seed``: a realistic input for
    ``pipeline.diagnose.diagnose_init``."""
    train = load_dataset(dataset, "train", T=T, size=tuple(size), data_dir=data_dir,
                         cache_dir=cache_dir)
    picks = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    samples = [train[int(i)] for i in picks[:batch_size]]
    frames = torch.stack([torch.as_tensor(x, dtype=torch.float32) for x, _ in samples])
    return frames, torch.tensor([int(y) for _, y in samples])


# ---- deployed accuracy ----------------------------------------------------------------------

def _read_summary(summary_path: Path, missing_ok: bool) -> dict:
    try:
        if missing_ok and not summary_path.is_file():
            return {}
        return json.loads(summary_path.read_text())
    except (OSError, ValueError) as err:
        hint = "" if missing_ok else (": train the run to its end, or export with "
                                      "--no-accuracy")
        raise BadInput(f"{summary_path}: cannot read the run's summary ({err}){hint}") from None


def deployed_test_accuracy(run_dir, export_dir, data_dir=None, cache_dir=None) -> dict:
    """The exported graph's accuracy on the run's whole test split (fixed-point simulator,
    which equals Lava), next to the trained network's (best.pt, from summary.json), both
    written into the run's summary.json.  Returns those fields."""
    run_dir = Path(run_dir)
    config = TrainConfig.from_dict(load_checkpoint(run_dir / "best.pt")["config"])
    summary_path = run_dir / "summary.json"
    summary = _read_summary(summary_path, missing_ok=False)
    test = load_splits(config.dataset, T=config.T, size=tuple(config.size), augment=False,
                       val_fraction=config.val_fraction, limit_test=config.limit_test,
                       data_dir=data_dir, cache_dir=cache_dir).test
    deployed = deployed_accuracy(nir.read(Path(export_dir) / "model.nir"),
                                 make_loader(test, config.batch_size, shuffle=False),
                                 config.encoding)
    trained = summary.get("test_acc")
    fields = {"trained_test_acc": trained, "deployed_test_acc": deployed.accuracy,
              "deployed_minus_trained": None if trained is None
              else deployed.accuracy - trained, "deployed_num_test": deployed.count}
    summary.update(fields)
    atomic_text(summary_path, json.dumps(summary, indent=2) + "\n")
    return fields


def deployed_map(run_dir, export_dir, data_dir=None, cache_dir=None, limit: int | None = None,
                 batch_size: int = 50) -> dict:
    """A detector's mAP on the run's test split, deployed (``model.nir`` in the fixed-point
    simulator + the off-chip ``readout.npz``, decode, NMS, pycocotools) next to the trained
    network's (``best.pt`` as trained: float, folded only if it comes from a fold-aware epoch;
    the same decode / NMS / scorer), both written
    into the run's ``summary.json`` (created when absent).  ``limit``: the first K scenes."""
    run_dir, export_dir = Path(run_dir), Path(export_dir)
    model, ckpt = load_run_model(run_dir)
    as_trained(model, ckpt)
    config, spec = ckpt.get("config") or {}, ckpt["model_spec"]
    if not config.get("dataset") or not config.get("T"):
        raise BadInput(f"{run_dir / 'best.pt'}: the training config names no dataset or T")
    size = tuple(int(v) for v in (config.get("size") or spec.get("input_size")))
    test = load_detection(config["dataset"], "test", T=int(config["T"]), size=size,
                          data_dir=data_dir, cache_dir=cache_dir)
    if limit is not None:
        test = torch.utils.data.Subset(test, range(min(limit, len(test))))
    loader = torch.utils.data.DataLoader(test, batch_size=batch_size,
                                         collate_fn=detection_collate)
    graph, readout = nir.read(export_dir / "model.nir"), load_readout(export_dir / "readout.npz")
    encoding = spec.get("encoding", "binary")
    nc = readout.num_classes
    deployed = score_detections(lambda f: deployed_detections(graph, readout, f, encoding),
                                loader, nc)
    trained = score_detections(lambda f: predict(model, f), loader, nc)
    fields = {"trained_test_mAP50": trained["mAP50"], "trained_test_mAP50_95": trained["mAP50_95"],
              "deployed_test_mAP50": deployed["mAP50"],
              "deployed_test_mAP50_95": deployed["mAP50_95"],
              "deployed_minus_trained_mAP50": deployed["mAP50"] - trained["mAP50"],
              "deployed_num_test": deployed["count"]}
    summary_path = run_dir / "summary.json"
    summary = _read_summary(summary_path, missing_ok=True)
    summary.update(fields)
    atomic_text(summary_path, json.dumps(summary, indent=2) + "\n")
    return fields


# what each task measures of its deployed network (one dispatch, on the export's task)
DEPLOYED_SCORES = {"classify": deployed_test_accuracy, "detection": deployed_map}


def deployed_score(run_dir, export_dir, data_dir=None, cache_dir=None) -> dict:
    """The deployed network's test score beside the trained one's, as the export's task
    measures it (accuracy; a detector: mAP), written into the run's summary.json."""
    task = ExportMeta.read(export_dir).task
    return DEPLOYED_SCORES[task](run_dir, export_dir, data_dir, cache_dir)


# ---- inputs for simulate / verify / energy --------------------------------------------------

def resolve_T(T: int | None, meta: ExportMeta | None) -> int:
    """``T`` as asked, else the export's ``metadata.json`` T, else ``DEFAULT_T``."""
    return meta.steps(T) if meta is not None else (DEFAULT_T if T is None else T)


def input_encoding(graph: nir.NIRGraph, meta: ExportMeta | None) -> str | None:
    """How frames of counts become the model's input: the export's, else the graph's."""
    return (meta.input_encoding if meta is not None else None) or \
        GraphTiming.of(graph).input_encoding


def encode(frames: np.ndarray, encoding: str | None) -> np.ndarray:
    """Frames of event counts -> what the network's input layer receives (see
    ``pipeline.models.encode_frames``); no encoding recorded: as is."""
    return frames if encoding is None else encode_frames(torch.from_numpy(frames), encoding).numpy()


def check_activity(graph, T: int, samples: int, what: str) -> None:
    """Refuse a run whose recorded activity (every node, every step) would not fit in memory."""
    check_size(activity_bytes(graph, T, samples),
               f"{what}: simulating {samples} sample(s) of T = {T} steps")


def model_inputs(graph: nir.NIRGraph, meta: ExportMeta | None, *,
                 events: Sequence | None = None,
                 array=None, dataset: str | None = None, samples: int = 1, split: str = "test",
                 T: int | None = None, data_dir=None, cache_dir=None,
                 what: str = "model") -> tuple[np.ndarray, dict]:
    """``(x [T, N, *input_shape] float32, description of the source)`` for ``graph``, from one
    of: event files (binned into T frames and fitted), a ``.npy`` array (fed as is) or the
    first ``samples`` of a dataset split.  Frames of counts are encoded as the model was
    trained (``input_encoding``)."""
    shape = graph_input_shape(graph)
    if array is not None:
        x = inputs_from_array(array, shape,
                              lambda dims: check_activity(graph, dims[0], dims[1], str(array)))
        return x, {"input": str(array)}
    T = resolve_T(T, meta)
    check_activity(graph, T, len(events) if events else int(samples), what)
    if events:
        x, source = inputs_from_events(events, T, shape), {"events": [str(e) for e in events]}
    elif dataset is not None:
        x = inputs_from_dataset(dataset, samples, T, shape, split, data_dir, cache_dir)
        source = {"dataset": dataset, "split": split}
    else:
        raise BadInput(f"{what}: no input given (event files, an array or a dataset)")
    encoding = input_encoding(graph, meta)
    source["encoding"] = encoding or "counts"
    return encode(x, encoding), source


# ---- simulate -------------------------------------------------------------------------------

def simulate_model(graph: nir.NIRGraph, x: np.ndarray, mode: str = "auto",
                   dt: float | None = None) -> tuple[Simulation, int]:
    """Run ``graph`` on ``x [T, N, ...]``; a graph trained with hardware timing first gets its
    ``input_pad_steps`` zero steps appended (the last input step needs them to reach the
    readout).  Returns ``(simulation, pad steps appended)``."""
    pad = GraphTiming.of(graph).input_pad_steps
    if pad > 0:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)])
    with torch.no_grad():
        sim = simulate(graph, torch.from_numpy(np.ascontiguousarray(x)), mode, dt)
    return sim, pad


def _is_spiking(node) -> bool:
    return isinstance(node, (nir.CubaLIF, nir.LIF, nir.IF, nir.Threshold))


def simulation_summary(graph: nir.NIRGraph, sim: Simulation, model: str, source: dict) -> dict:
    """What ``spikeline simulate`` prints: the output(s) per sample and spikes per node."""
    first = sim.outputs[sim.output_nodes[0]]
    T, N = int(first.shape[0]), int(first.shape[1])
    spikes = {n: int(v.sum()) for n, v in sim.outputs.items() if _is_spiking(graph.nodes[n])}
    if len(sim.output_nodes) > 1:  # a detector's spiking part: P4 and P5 spike maps
        return {
            "model": model, "source": source, "T": T, "samples": N,
            "output_nodes": list(sim.output_nodes),
            "outputs": {n: {"shape": list(sim.outputs[n].shape[2:]),
                            "spikes_per_sample": sim.outputs[n].flatten(2).sum(-1).sum(0)
                            .tolist()} for n in sim.output_nodes},
            "spikes_per_node": spikes,
        }
    out = sim.output
    return {
        "model": model, "source": source, "T": T, "samples": N,
        "output_node": sim.output_node, "output_shape": list(out.shape[2:]),
        "output_sum_per_sample": out.sum(dim=tuple(range(2, out.dim()))).sum(0).tolist(),
        "output_mean_over_time": out.mean(0).reshape(out.shape[1], -1).tolist(),
        "spikes_per_node": spikes,
    }


# ---- energy ---------------------------------------------------------------------------------

def latency_steps(meta: ExportMeta | None) -> int:
    """``metadata.json``'s ``latency_steps`` (extra steps a chip runs while the input crosses the
    network's depth), 0 without an export's metadata."""
    return 0 if meta is None else meta.timing.latency_steps


def hardware_selection(hardware: str | None = None, hardware_file=None,
                       models: Sequence[str] | None = None):
    """``(chosen hardware models, memory table)``: ``hardware`` names one model, ``models``
    several (default all); ``hardware_file`` adds or replaces models (TOML)."""
    known = load_hardware_models(hardware_file)  # fail early on a bad file or model name
    memory = load_memory(hardware_file)
    return select_models(known, [hardware] if hardware else models), memory


def energy_report(graph: nir.NIRGraph, meta_in: ExportMeta | None, x: np.ndarray, chosen,
                  memory, *,
                  convention: str | None = None, single: bool = False,
                  fanout: str = "structural", mode: str = "auto", batch_size: int = 8,
                  meta: dict | None = None) -> dict:
    """Count ``graph``'s operations on ``x`` and price them: ``single`` (one named hardware
    model and a convention): that one estimate; else every valid pairing of ``convention``
    (default all) and ``chosen``.  A detector's off-chip readout is priced beside.  Returns
    the report (``deploy.energy.report.build_report``)."""
    counts = count_in_batches(graph, x, batch_size, mode, fanout, latency_steps(meta_in))
    if convention and single:
        estimates, refused = [price(counts, chosen[0], convention, memory)], {}
    else:
        conventions = (convention,) if convention else CONVENTIONS
        estimates, refused = price_table(counts, chosen, conventions, memory)
        if not estimates:
            raise SpikelineError(f"no pricing possible: {refused or 'no model fits'}; the "
                                 "ems and lemaire conventions need a cmos model")
    given = dict(meta or {})
    meta = {k: given.pop(k) for k in ("model", "source") if k in given}
    meta["simulator_mode"] = mode
    meta["input_shape"] = given.pop("input_shape", list(graph_input_shape(graph)))
    meta["memory_model"] = memory.source
    meta.update(given)
    if meta_in is not None and meta_in.raw:
        meta["export_metadata"] = meta_in.raw
    by_name = {m.name: m for m in chosen}
    readout = None
    if meta_in is not None and meta_in.readout is not None:  # a detector's off-chip readout
        readout = readout_report(meta_in.readout, counts, estimates, by_name)
    return build_report(counts, estimates, by_name, meta, refused, readout)


# ---- the whole pipeline ---------------------------------------------------------------------

def run_pipeline(config: TrainConfig, runtime: Runtime, *, verify_samples: int | None = None,
                 lava_samples: int | None = None, energy_samples: int = 16,
                 backends: Sequence[str] = BACKENDS,
                 on_event: Callable[[str, object], None] | None = None) -> dict:
    """Train, strip the heads and export, measure the deployed accuracy, verify every backend
    spike for spike, price the energy; write ``verify.json``, ``energy/`` and
    ``pipeline.json`` (the summary, returned) into ``runtime.out``.  ``verify_samples`` and
    ``lava_samples`` default to ``deploy.verify.DEFAULT_SAMPLES`` (as ``spikeline verify``).

    ``on_event(kind, data)`` hears of each stage as it happens: ``("step", name)``,
    ``("export", ExportResult)``, ``("accuracy", fields)``, ``("backend", name)``,
    ``("verify", VerifyReport)``, ``("energy", report)``.  A backend that cannot take the
    graph is reported as skipped and the run goes on; a mismatch raises ``VerifyFailed``."""
    say = on_event or (lambda kind, data: None)
    started = time.time()
    if verify_samples is None:
        verify_samples = max(DEFAULT_SAMPLES.values())
    if lava_samples is None:
        lava_samples = DEFAULT_SAMPLES["lava"]
    run_dir = Path(runtime.out)
    say("step", "train")
    result = train(config, runtime)
    config = TrainConfig.from_dict(load_checkpoint(run_dir / "best.pt")["config"])

    say("step", "export (heads stripped, BatchNorm folded, weights quantized)")
    export = export_run(run_dir, run_dir / "export")
    say("export", export)
    acc = deployed_test_accuracy(run_dir, export.out_dir, runtime.data_dir, runtime.cache_dir)
    say("accuracy", acc)
    meta = ExportMeta.read(export.out_dir)
    shape, T = meta.require_shape(), meta.steps()
    samples = max(verify_samples, energy_samples)
    frames = inputs_from_dataset(config.dataset, samples, T, shape, "test", runtime.data_dir,
                                 runtime.cache_dir)

    say("step", "verify (parameters against best.pt; spikes of nir and lava against the trained "
        "network; peers against our reading of model.nir)")
    report = verify_export(export.out_dir, frames[:, :verify_samples], tuple(backends),
                           progress=lambda b: say("backend", b), lava_samples=lava_samples)
    atomic_text(run_dir / "verify.json", json.dumps(report.to_dict(), indent=2))
    say("verify", report)
    problems = report.problems(allow_skip=True)
    if problems:
        raise VerifyFailed(f"verify failed ({'; '.join(problems)}): see "
                           f"{run_dir / 'verify.json'}")
    skipped = [b.backend for b in report.backends if b.status == "skipped"]

    say("step", "energy")
    graph = nir.read(export.out_dir / "model.nir")
    x = encode(frames[:, :energy_samples], meta.input_encoding)
    counts = count_in_batches(graph, x, batch_size=8, mode="auto", fanout="structural",
                              latency_steps=latency_steps(meta))
    models = load_hardware_models()
    estimates, refused = price_table(counts, list(models.values()))
    energy = build_report(counts, estimates, models,
                          {"model": str(export.out_dir / "model.nir"),
                           "source": {"dataset": config.dataset, "split": "test"}}, refused)
    files = write_report(energy, run_dir / "energy")
    say("energy", energy)

    summary = {
        **acc, "num_test": acc["deployed_num_test"],
        "val_acc": result.summary.get("val_acc"), "epochs": config.epochs,
        "model": config.model, "heads": config.heads, "dataset": config.dataset,
        "verify": {b.backend: {"status": b.status, "mismatches": b.mismatches}
                   for b in report.backends},
        "verified_by": report.checked_by, "verify_skipped": skipped,
        "peers_read_model_nir_as_spikeline": report.peers_agree,
        "verify_parameters": report.parameters.status if report.parameters else None,
        "verify_coverage": report.coverage,
        "energy_per_inference_J": {
            key: {"convention": e["convention"], "hardware": e["hardware"],
                  "snn": e["snn"]["total_J"], "ann": e["ann"]["total_J"],
                  "snn_memory": e["snn"]["memory_J"], "ann_memory": e["ann"]["memory_J"],
                  "ann_over_snn": e["ratio"], "break_even_rate": e["break_even_rate"],
                  "measured": e["measured"]}
            for key, e in energy["energy"].items()},
        "paths": {"run": str(run_dir), "export": str(export.out_dir),
                  "verify": str(run_dir / "verify.json"),
                  **{k: str(v) for k, v in files.items()}},
        "seconds": round(time.time() - started, 1),
    }
    atomic_text(run_dir / "pipeline.json", json.dumps(summary, indent=2, default=str))
    return summary


def run_config(config_values: dict, base: dict | None = None) -> TrainConfig:
    """A resolved TrainConfig from defaults <- ``base`` <- ``config_values``."""
    return resolve_config(TrainConfig(**{**(base or {}), **config_values}))



# ---- detection ------------------------------------------------------------------------------

def detect_boxes(model, frames: np.ndarray, size, conf: float = 0.25, iou: float = 0.45,
                 device: str = "cpu") -> np.ndarray:
    """A detector's boxes on one sample ``frames [T, C, H, W]`` (counts): rows ``[x1, y1, x2,
    y2, score, class]`` in input pixels after NMS (``conf``, ``iou``: YOLOv5 detect.py's
    defaults), cut to the ``size`` (H, W) frame as YOLOv5's detect.py draws them (mAP is
    scored unclipped).  Runs in exact float32."""
    dev = resolve_device(device)
    model.to(dev)
    with exact_fp32():
        rows = predict(model, torch.from_numpy(np.asarray(frames, dtype=np.float32))[None]
                       .to(dev), conf, iou)[0].cpu().numpy()
    rows[:, [0, 2]] = rows[:, [0, 2]].clip(0, size[1])
    rows[:, [1, 3]] = rows[:, [1, 3]].clip(0, size[0])
    return rows


def class_names(dataset: str) -> list[str] | None:
    """Class names of a detection dataset (None: the class index is the name, as the digit of
    ndigits-detect)."""
    return list(gen1.CLASSES) if dataset == "gen1" else None
