"""``spikeline run``: event data -> trained network -> verified artifact -> energy, in one go."""
from __future__ import annotations

import json
import time
from pathlib import Path

from spikeline.atomic import atomic_text
from spikeline.errors import VerifyFailed

from .deploy import accuracy_line, report_deployed_accuracy
from .energy import latency_steps
from .inputs import encode, inputs_from_dataset, positive_int

# `run` trains a demo by default: evolutionary heads, 4 epochs (train's defaults otherwise)
RUN_DEFAULTS = {"heads": "evolutionary", "epochs": 4}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="the whole pipeline: prepare data, train, strip, export, verify, energy",
        description="Train --model with --heads on --dataset, strip the heads, export NIR and "
                    "netx, verify them (parameters against best.pt, then spikes of nir and "
                    "lava against the trained network; the peers read model.nir as spikeline "
                    "does, float semantics; fails on any difference) and "
                    "write the energy report.  RUN_DIR gets the training run, export/, "
                    "verify.json, energy/ and pipeline.json (the summary).")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--config", metavar="FILE.toml", help="a training recipe (flags override it)")
    from .train import _config_options

    _config_options(p, "run", defaults=RUN_DEFAULTS)
    p.add_argument("--verify-samples", type=positive_int, default=None,
                   help="test samples the spike certificate runs (default: "
                        "deploy.verify.DEFAULT_SAMPLES, as `verify`)")
    p.add_argument("--lava-samples", type=positive_int, default=None,
                   help="of those, the first K run in Lava (~10 s each; default as `verify`)")
    p.add_argument("--energy-samples", type=positive_int, default=16)
    p.add_argument("--backends", default="nir,lava,spikingjelly,snntorch")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(handler=run)


def _step(name: str) -> None:
    print(f"\n== {name} " + "=" * max(0, 70 - len(name)), flush=True)


def run(args) -> int:
    import nir

    from spikeline.deploy.energy import count_in_batches, load_hardware_models, price_table
    from spikeline.deploy.energy.report import build_report, summary_text, write_report
    from spikeline.deploy.export import export_run
    from spikeline.deploy.verify import DEFAULT_SAMPLES, report_lines, verify_export
    from spikeline.pipeline.checkpoint import load_checkpoint
    from spikeline.pipeline.config import TrainConfig

    from .train import train_from_args

    started = time.time()
    run_dir = Path(args.out)
    if args.verify_samples is None:
        args.verify_samples = max(DEFAULT_SAMPLES.values())
    if args.lava_samples is None:
        args.lava_samples = DEFAULT_SAMPLES["lava"]
    _step("train")
    result = train_from_args(args, "run", base=RUN_DEFAULTS)
    config = TrainConfig.from_dict(load_checkpoint(run_dir / "best.pt")["config"])

    _step("export (heads stripped, BatchNorm folded, weights quantized)")
    export = export_run(run_dir, run_dir / "export")
    for fmt, name in export.files.items():
        print(f"  {fmt:7s} {export.out_dir / name}")
    for fmt, why in export.skipped.items():
        print(f"  {fmt:7s} not written: {why}")
    acc = report_deployed_accuracy(run_dir, export.out_dir, args.data_dir, args.cache_dir)
    print("  " + accuracy_line(acc))
    meta = json.loads((export.out_dir / "metadata.json").read_text())
    shape, T = tuple(meta["input_shape"]), int(meta["T"])
    samples = max(args.verify_samples, args.energy_samples)
    frames = inputs_from_dataset(config.dataset, samples, T, shape, "test", args.data_dir,
                                 args.cache_dir)

    _step("verify (parameters against best.pt; spikes of nir and lava against the trained "
          "network; peers against our reading of model.nir)")
    backends = tuple(b for b in args.backends.split(",") if b)
    report = verify_export(export.out_dir, frames[:, :args.verify_samples], backends,
                           progress=lambda b: print(f"  checking {b} ...", flush=True),
                           lava_samples=args.lava_samples)
    atomic_text(run_dir / "verify.json", json.dumps(report.to_dict(), indent=2))
    for line in report_lines(report):
        print("  " + line)
    # `run` reports a backend that cannot take this graph (a peer refusing voltage biases) as
    # skipped and goes on; `spikeline verify` is the strict certificate (--allow-skip there).
    problems = report.problems(allow_skip=True)
    if problems:
        raise VerifyFailed(f"verify failed ({'; '.join(problems)}): see "
                           f"{run_dir / 'verify.json'}")
    skipped = [b.backend for b in report.backends if b.status == "skipped"]

    _step("energy")
    graph = nir.read(export.out_dir / "model.nir")
    x = encode(frames[:, :args.energy_samples], meta["input_encoding"])
    counts = count_in_batches(graph, x, batch_size=8, mode="auto", fanout="structural",
                              latency_steps=latency_steps(meta))
    models = load_hardware_models()
    estimates, refused = price_table(counts, list(models.values()))
    energy = build_report(counts, estimates, models,
                          {"model": str(export.out_dir / "model.nir"),
                           "source": {"dataset": config.dataset, "split": "test"}}, refused)
    files = write_report(energy, run_dir / "energy")
    print(summary_text(energy))

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
    _step("summary")
    print(f"  test accuracy (heads stripped, best.pt chosen on validation): trained "
          f"{100 * acc['trained_test_acc']:.2f}%, deployed {100 * acc['deployed_test_acc']:.2f}%"
          f" ({100 * acc['deployed_minus_trained']:+.2f} points)")
    print(f"  verify: {report.summary()}")
    head = energy["energy"].get("lemaire/cmos45_int8")
    if head is not None:  # like for like: SNN and ANN on one model, memory included
        be = head["break_even_rate"]
        wins = ("never wins at any spike rate" if be is None else
                f"wins below a uniform spike rate of {100 * be:.2f}%")
        print(f"  energy (lemaire, cmos45_int8, memory included): SNN "
              f"{head['snn']['total_J'] * 1e6:.3g} uJ vs ANN {head['ann']['total_J'] * 1e6:.3g} "
              f"uJ per inference; the SNN {wins}")
    print(f"  summary: {run_dir / 'pipeline.json'}  ({summary['seconds']} s)")
    return 0

