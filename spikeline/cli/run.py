"""``spikeline run``: event data -> trained network -> verified artifact -> energy, in one go."""
from __future__ import annotations

import json
import time
from pathlib import Path

from spikeline.errors import SpikelineError

from .energy import count_in_batches
from .inputs import encode, inputs_from_dataset, positive_int

# `run` trains a demo by default: evolutionary heads, 4 epochs (train's defaults otherwise)
RUN_DEFAULTS = {"heads": "evolutionary", "epochs": 4}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="the whole pipeline: prepare data, train, strip, export, verify, energy",
        description="Train --model with --heads on --dataset, strip the heads, export NIR and "
                    "netx, verify every backend spike for spike (fails on any mismatch) and "
                    "write the energy report.  RUN_DIR gets the training run, export/, "
                    "verify.json, energy/ and pipeline.json (the summary).")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--config", metavar="FILE.toml", help="a training recipe (flags override it)")
    from .train import _config_options

    _config_options(p, "run", defaults=RUN_DEFAULTS)
    p.add_argument("--verify-samples", type=positive_int, default=2,
                   help="test samples run through every backend (Lava: ~10 s each)")
    p.add_argument("--energy-samples", type=positive_int, default=16)
    p.add_argument("--backends", default="nir,lava,spikingjelly,snntorch")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(handler=run)


def _step(name: str) -> None:
    print(f"\n== {name} " + "=" * max(0, 70 - len(name)), flush=True)


def run(args) -> int:
    import nir

    from spikeline.deploy.energy import load_hardware_models, price
    from spikeline.deploy.export import export_run
    from spikeline.deploy.report import build_report, summary_text, write_report
    from spikeline.deploy.verify import verify_export
    from spikeline.pipeline.checkpoint import load_checkpoint
    from spikeline.pipeline.config import TrainConfig

    from .train import train_from_args

    started = time.time()
    run_dir = Path(args.out)
    _step("train")
    result = train_from_args(args, "run", base=RUN_DEFAULTS)
    config = TrainConfig.from_dict(load_checkpoint(run_dir / "best.pt")["config"])
    accuracy = result.summary.get("test_acc")

    _step("export (heads stripped, BatchNorm folded, weights quantized)")
    export = export_run(run_dir, run_dir / "export")
    for fmt, name in export.files.items():
        print(f"  {fmt:7s} {export.out_dir / name}")
    for fmt, why in export.skipped.items():
        print(f"  {fmt:7s} not written: {why}")
    deployed = deployed_test_accuracy(export.out_dir, config, args)
    _add_to_summary(run_dir / "summary.json", {"deployed_test_acc": deployed.accuracy,
                                               "deployed_num_test": deployed.count})
    print(f"  test accuracy on the test split ({deployed.count} samples): trained "
          f"{100 * accuracy:.2f}%, deployed (folded, quantized, fixed-point) "
          f"{100 * deployed.accuracy:.2f}%, delta {100 * (deployed.accuracy - accuracy):+.2f} "
          "points")
    meta = json.loads((export.out_dir / "metadata.json").read_text())
    shape, T = tuple(meta["input_shape"]), int(meta["T"])
    samples = max(args.verify_samples, args.energy_samples)
    frames = inputs_from_dataset(config.dataset, samples, T, shape, "test", args.data_dir,
                                 args.cache_dir)

    _step("verify (every backend against the trained network, spike for spike)")
    backends = tuple(b for b in args.backends.split(",") if b)
    report = verify_export(export.out_dir, frames[:, :args.verify_samples], backends,
                           progress=lambda b: print(f"  running {b} ...", flush=True))
    (run_dir / "verify.json").write_text(json.dumps(report.to_dict(), indent=2))
    for b in report.backends:
        print(f"  {b.backend:13s} {b.status:9s} {b.mismatches} mismatches / {b.compared} "
              f"compared{'  (' + b.note.strip() + ')' if b.note else ''}")
    if not report.ok:
        raise SpikelineError(f"verify failed: see {run_dir / 'verify.json'}")

    _step("energy")
    graph = nir.read(export.out_dir / "model.nir")
    x = encode(frames[:, :args.energy_samples], meta["input_encoding"])
    counts = count_in_batches(graph, x, batch_size=8, mode="auto", fanout="structural")
    models = load_hardware_models()
    energy = build_report(counts, [price(counts, m) for m in models.values()], models,
                          {"model": str(export.out_dir / "model.nir"),
                           "source": {"dataset": config.dataset, "split": "test"}})
    files = write_report(energy, run_dir / "energy")
    print(summary_text(energy))

    summary = {
        "trained_test_acc": accuracy, "deployed_test_acc": deployed.accuracy,
        "deployed_minus_trained": deployed.accuracy - accuracy, "num_test": deployed.count,
        "val_acc": result.summary.get("val_acc"), "epochs": config.epochs,
        "model": config.model, "heads": config.heads, "dataset": config.dataset,
        "verify": {b.backend: {"status": b.status, "mismatches": b.mismatches}
                   for b in report.backends},
        "energy_per_inference_J": {name: {"snn": e["snn"], "ann": e["ann"],
                                          "ann_over_snn": e["ratio"]}
                                   for name, e in energy["energy"].items()},
        "paths": {"run": str(run_dir), "export": str(export.out_dir),
                  "verify": str(run_dir / "verify.json"),
                  **{k: str(v) for k, v in files.items()}},
        "seconds": round(time.time() - started, 1),
    }
    (run_dir / "pipeline.json").write_text(json.dumps(summary, indent=2, default=str))
    _step("summary")
    print(f"  test accuracy (heads stripped, best.pt chosen on validation): trained "
          f"{100 * accuracy:.2f}%, deployed {100 * deployed.accuracy:.2f}% "
          f"({100 * (deployed.accuracy - accuracy):+.2f} points)")
    print(f"  verify: {'0 mismatches on every backend' if report.ok else 'FAILED'} "
          f"({', '.join(f'{b.backend} {b.status}' for b in report.backends)})")
    print(f"  summary: {run_dir / 'pipeline.json'}  ({summary['seconds']} s)")
    return 0


def deployed_test_accuracy(export_dir, config, args):
    """The exported graph's accuracy on the whole test split (fixed-point simulator)."""
    import nir

    from spikeline.datasets.registry import load_splits, make_loader
    from spikeline.deploy.accuracy import deployed_accuracy

    graph = nir.read(Path(export_dir) / "model.nir")
    test = load_splits(config.dataset, T=config.T, size=tuple(config.size), augment=False,
                       val_fraction=config.val_fraction, limit_test=config.limit_test,
                       data_dir=args.data_dir, cache_dir=args.cache_dir).test
    return deployed_accuracy(graph, make_loader(test, config.batch_size, shuffle=False),
                             config.encoding)


def _add_to_summary(path: Path, fields: dict) -> None:
    """The training run's summary.json, with the deployed accuracy next to the trained one."""
    from spikeline.atomic import atomic_file

    summary = json.loads(path.read_text())
    summary.update(fields)
    with atomic_file(path) as fh:
        fh.write((json.dumps(summary, indent=2) + "\n").encode())
