"""``spikeline run``: event data -> trained network -> verified artifact -> energy, in one go.

The chain is ``spikeline.workflow.run_pipeline``; this module parses the flags and prints what
each stage reports."""
from __future__ import annotations

from spikeline.paths import output_dir

from .deploy import accuracy_line
from .inputs import positive_int
from .train import _config_options, _progress_logging, config_from_args, runtime_from_args

# `run` trains a demo by default: evolutionary heads, 4 epochs (train's defaults otherwise);
# the same dict as spikeline.workflow.RUN_DEFAULTS, kept here so that --help needs no torch
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


def _print_event(kind: str, data) -> None:
    """What `spikeline run` prints as each stage of the pipeline reports."""
    if kind == "step":
        _step(data)
    elif kind == "export":
        for fmt, name in data.files.items():
            print(f"  {fmt:7s} {data.out_dir / name}")
        for fmt, why in data.skipped.items():
            print(f"  {fmt:7s} not written: {why}")
    elif kind == "accuracy":
        print("  " + accuracy_line(data))
    elif kind == "backend":
        print(f"  checking {data} ...", flush=True)
    elif kind == "verify":
        from spikeline.deploy.verify import report_lines  # lazy: CLI start-up (cli/__init__)

        for line in report_lines(data):
            print("  " + line)
    elif kind == "energy":
        from spikeline.deploy.energy.report import summary_text  # lazy: CLI start-up (cli/__init__)

        print(summary_text(data))


def run(args) -> int:
    from spikeline.workflow import run_pipeline  # lazy: CLI start-up (cli/__init__)

    runtime = runtime_from_args(args, "run", args.out)
    _progress_logging(runtime.progress)
    output_dir(args.out, "--out")
    config = config_from_args(args, "run", base=RUN_DEFAULTS)
    seen = {}

    def on_event(kind, data):
        seen[kind] = data
        _print_event(kind, data)

    summary = run_pipeline(config, runtime, verify_samples=args.verify_samples,
                           lava_samples=args.lava_samples, energy_samples=args.energy_samples,
                           backends=tuple(b for b in args.backends.split(",") if b),
                           on_event=on_event)
    _step("summary")
    print(f"  test accuracy (heads stripped, best.pt chosen on validation): trained "
          f"{100 * summary['trained_test_acc']:.2f}%, deployed "
          f"{100 * summary['deployed_test_acc']:.2f}% "
          f"({100 * summary['deployed_minus_trained']:+.2f} points)")
    print(f"  verify: {seen['verify'].summary()}")
    head = summary["energy_per_inference_J"].get("lemaire/cmos45_int8")
    if head is not None:  # like for like: SNN and ANN on one model, memory included
        be = head["break_even_rate"]
        wins = ("never wins at any spike rate" if be is None else
                f"wins below a uniform spike rate of {100 * be:.2f}%")
        print(f"  energy (lemaire, cmos45_int8, memory included): SNN "
              f"{head['snn'] * 1e6:.3g} uJ vs ANN {head['ann'] * 1e6:.3g} "
              f"uJ per inference; the SNN {wins}")
    print(f"  summary: {summary['paths']['run']}/pipeline.json  ({summary['seconds']} s)")
    return 0
