"""`spikeline train`, `spikeline evaluate` and `spikeline diagnose gradients|init`.

Every train option comes from ``pipeline/config.py`` (``TrainConfig`` and ``Runtime`` field
metadata): this module only turns flags into those objects, calls ``spikeline.workflow``
(``train``, ``evaluate_run``) and prints.  The workflow is imported inside the handlers
(start-up: see ``spikeline/cli/__init__.py``).

``--config FILE.toml`` supplies any ``TrainConfig`` field; flags override it;
``--print-config`` prints the resolved config as JSON and exits.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from spikeline.atomic import atomic_file, atomic_text
from spikeline.errors import BadInput, SpikelineError
from spikeline.paths import output_dir, output_file
from spikeline.pipeline.config import (DEFAULT_T, Runtime, TrainConfig, load_toml, nonneg_int,
                                       parse_size, positive_int)

from .options import add_options, given


def _config_options(p: argparse.ArgumentParser, command: str, defaults: dict | None = None,
                    skip: tuple[str, ...] = ()) -> None:
    add_options(p, TrainConfig, command, defaults, skip)
    add_options(p, Runtime, command, skip=skip)


def register(subparsers) -> None:
    # ---- train -------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "train", help="train a spiking network (optionally with shortcut heads)",
        description="Train models.build_model(--model) wrapped in shortcut heads (--heads) "
        "with a cosine LR schedule stepped per iteration and lambda(i) = lam (1 - i/I). "
        "best.pt is chosen on a validation split carved from the training data; the test split "
        "is evaluated once, for best.pt. Writes RUN_DIR/{last.pt,best.pt,metrics.jsonl,"
        "curves.png,config.json,summary.json}. Multi-GPU: torchrun --nproc_per_node K -m "
        "spikeline train ... (--batch-size is per process).")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (required unless "
                   "--print-config)")
    p.add_argument("--config", metavar="FILE.toml", help="a recipe: TrainConfig fields in TOML "
                   "(flags given here override it)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as JSON and exit")
    _config_options(p, "train")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from last.pt (its stored config is used)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars or per-epoch lines")
    p.set_defaults(handler=handle_train)

    # ---- evaluate ----------------------------------------------------------------------------
    p = subparsers.add_parser(
        "evaluate", help="test accuracy (detection: mAP) of a trained run (heads stripped)",
        description="Scores a run's checkpoint on the test split: accuracy of the stripped "
        "main network, or for a detection run mAP@0.5 and mAP@0.5:0.95 (pycocotools, after "
        "NMS at IoU 0.6 with a 0.001 confidence floor, as YOLOv5's val.py).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", default="best",
                   help="best (default), last, or a path to a checkpoint file")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--batch-size", type=_positive, default=None)
    p.add_argument("--limit-test", type=_nonneg, default=None, metavar="N",
                   help="test subset size (default: the run's; 0 = the whole test split)")
    p.add_argument("--workers", type=_nonneg, default=0)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="print one JSON object (--json alone) or write it to OUT")
    p.set_defaults(handler=handle_evaluate)

    # ---- diagnose ----------------------------------------------------------------------------
    p = subparsers.add_parser("diagnose", help="diagnostics of spiking networks")
    dsub = p.add_subparsers(dest="diagnosis", required=True, metavar="DIAGNOSIS")
    g = dsub.add_parser(
        "gradients", help="per-layer gradient norms with and without shortcut heads",
        description="Gradient L2 norm of every weight tensor of the main network, averaged "
        "over a few batches, for each heads mode on the same initial weights: shows the "
        "vanishing of first-layer gradients in deep SNNs and what the heads change. Writes "
        "OUT/gradients.json and OUT/gradients.png.")
    g.add_argument("--model", required=True)
    g.add_argument("--heads", default="none,shortcut,evolutionary",
                   help="comma-separated heads modes to compare (default none,shortcut,"
                   "evolutionary)")
    _config_options(g, "diagnose", skip=("batch_size",))
    g.add_argument("--batches", type=_positive, default=3)
    g.add_argument("--batch-size", type=_positive, default=16)
    g.add_argument("--progress", type=float, default=0.0,
                   help="training progress i/I at which lambda(i) is taken (default 0)")
    g.add_argument("--out", default="runs/diagnose", help="output directory")
    g.add_argument("--json", action="store_true", help="print the full result as JSON")
    g.set_defaults(handler=handle_diagnose_gradients)

    i = dsub.add_parser(
        "init", help="dead layers at initialisation: quantized weights, gradients, rates",
        description="Builds --model at its paper input size (or --size), runs one random "
        "batch of event frames, and writes per synaptic layer: nonzero_weight_fraction "
        "(after 8-bit quantization), grad_norm (one batch), output_rate; and "
        "main_logits_nonzero.")
    i.add_argument("--model", required=True)
    i.add_argument("--size", type=_size, default=None,
                   help="input size N or HxW (default: 48 for CIFAR10-DVS-sized models, "
                   "34 for cnn)")
    i.add_argument("--T", type=_positive, default=DEFAULT_T,
                   help=f"time steps (default {DEFAULT_T}, the paper's)")
    i.add_argument("--width", type=_positive, default=None, help="channel scale")
    i.add_argument("--batch-size", type=_positive, default=2)
    i.add_argument("--seed", type=_nonneg, default=0)
    i.add_argument("--dataset", default=None,
                   help="feed this dataset's training recordings (e.g. ndigits, embedded) "
                   "instead of random frames (rate 0.1), which lack the spatial clusters of "
                   "real events")
    i.add_argument("--json", metavar="OUT", default=None, help="write the result here")
    i.set_defaults(handler=handle_diagnose_init)


def _arg_type(check):
    def convert(text):
        try:
            value = int(text)
            check(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err) if "expected" in str(err)
                                             else f"expected an integer, got {text!r}") from None
        return value
    return convert


def _positive(text):
    return _arg_type(positive_int)(text)


def _nonneg(text):
    return _arg_type(nonneg_int)(text)


def _size(text):
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _progress_logging(enabled: bool) -> None:
    """Per-epoch lines from the library's logger, on stdout (only the CLI prints)."""
    logger = logging.getLogger("spikeline.pipeline")
    if enabled and not any(getattr(h, "_spikeline", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._spikeline = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def config_from_args(args, command: str, base: dict | None = None):
    """TrainConfig from defaults <- ``base`` <- ``--config`` recipe <- flags, resolved."""
    from spikeline.workflow import resolve_config  # lazy: CLI start-up (cli/__init__)

    values = dict(base or {})
    if getattr(args, "config", None):
        values.update(load_toml(args.config))
    values.update(given(args, TrainConfig, command))
    return resolve_config(TrainConfig(**values))


def runtime_from_args(args, command: str, out):
    return Runtime(out=out, resume=bool(getattr(args, "resume", False)),
                   progress=getattr(args, "progress", True), **given(args, Runtime, command))


def train_from_args(args, command: str, base: dict | None = None):
    """The config and runtime from ``args``, trained by ``workflow.train``; returns
    ``TrainResult``."""
    from spikeline.workflow import resumed_config, train  # lazy: CLI start-up (cli/__init__)

    runtime = runtime_from_args(args, command, args.out)
    _progress_logging(runtime.progress)
    if runtime.resume:
        config = resumed_config(args.out, given(args, TrainConfig, command))
    else:
        output_dir(args.out, "--out")
        config = config_from_args(args, command, base)
    return train(config, runtime)


def handle_train(args) -> int:
    if args.print_config:
        print(json.dumps(config_from_args(args, "train").to_dict(), indent=2))
        return 0
    if not args.out:
        raise BadInput("--out RUN_DIR is required (unless --print-config)")
    result = train_from_args(args, "train")
    s = result.summary
    state = "finished" if result.finished else "stopped (continue with --resume)"
    if s.get("task") == "detection":
        from spikeline.pipeline.detect_train import summary_numbers  # lazy: CLI start-up (cli/__init__)

        print(f"{state}: {len(result.history)} epoch(s) in {result.run_dir}; best.pt = epoch "
              f"{result.best['epoch']}; {summary_numbers(s)} ({s.get('num_test')} test "
              f"samples, evaluated once)")
    else:
        test = "n/a" if s.get("test_acc") is None else f"{100 * s['test_acc']:.2f}%"
        val = "n/a" if s.get("val_acc") is None else f"{100 * s['val_acc']:.2f}%"
        print(f"{state}: {len(result.history)} epoch(s) in {result.run_dir}; best.pt = epoch "
              f"{result.best['epoch']} (validation {val}); its test accuracy {test} "
              f"({s.get('num_test')} samples, evaluated once)")
    if result.ddp_ranks_identical is False:
        raise SpikelineError("DDP ranks ended with different weights")
    return 0


def handle_evaluate(args) -> int:
    from spikeline.workflow import evaluate_run  # lazy: CLI start-up (cli/__init__)

    if args.json not in (None, "-"):
        output_file(args.json, "--json")

    res = evaluate_run(args.run_dir, args.checkpoint, device=args.device,
                       data_dir=args.data_dir, cache_dir=args.cache_dir,
                       batch_size=args.batch_size, limit_test=args.limit_test,
                       workers=args.workers)
    if args.json not in (None, "-"):
        atomic_text(args.json, json.dumps(res, indent=2) + "\n")
    if args.json == "-":
        print(json.dumps(res))
    elif res.get("task") == "detection":
        print(f"{res['run_dir']} ({res['checkpoint']}, epoch {res['epoch']}): test mAP@0.5 "
              f"{res['mAP50']:.4f}, mAP@0.5:0.95 {res['mAP50_95']:.4f} ({res['num_test']} "
              f"samples) - {res['model']} on {res['dataset']}")
    else:
        print(f"{res['run_dir']} ({res['checkpoint']}, epoch {res['epoch']}): test accuracy "
              f"{100 * res['test_acc']:.2f}% ({res['correct']}/{res['num_test']}) - "
              f"{res['model']}, heads stripped (trained with {res['heads']})")
    return 0


def handle_diagnose_gradients(args) -> int:
    from spikeline.pipeline.diagnose import diagnose_gradients  # lazy: CLI start-up (cli/__init__)
    from spikeline.workflow import load_data, loader_factory  # lazy: as above

    modes = [m.strip() for m in args.heads.split(",") if m.strip()]
    if not modes:
        raise BadInput("--heads: needs at least one mode")
    base = {"model": args.model, "heads": modes[0], "batch_size": args.batch_size,
            "augment": False, "limit_train": args.batches * args.batch_size}
    config = config_from_args(args, "diagnose", base)
    configs = [dataclasses.replace(config, heads=m) for m in modes]  # validates every mode
    data = load_data(config, args.data_dir, args.cache_dir)
    res = diagnose_gradients(configs, data, loader_factory(), batches=args.batches,
                             progress=args.progress, device=args.device or "cpu", out=args.out)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{args.model} on {res['dataset']} (T={res['T']}, {res['batches']} batches of "
          f"{res['batch_size']}): gradient L2 norm per weight tensor")
    print(f"{'heads':<14}{'first layer':>14}{'last layer':>14}{'first/last':>12}")
    for mode, rows in res["layers"].items():
        ratio = res["first_over_last"][mode]
        ratio = "n/a" if ratio is None else f"{ratio:.4g}"
        print(f"{mode:<14}{rows[0]['grad_norm']:>14.4g}{rows[-1]['grad_norm']:>14.4g}"
              f"{ratio:>12}")
    print("wrote " + ", ".join(res["files"]))
    return 0


def handle_diagnose_init(args) -> int:
    from spikeline import workflow  # lazy: CLI start-up (cli/__init__)
    from spikeline.pipeline.diagnose import (  # lazy: CLI start-up (cli/__init__)
        diagnose_init, paper_size)

    if args.json:
        output_file(args.json, "--json")
    size = paper_size(args.model, args.size)
    batch = None if args.dataset is None else workflow.recorded_batch(
        args.dataset, T=args.T, size=size, batch_size=args.batch_size, seed=args.seed)
    res = diagnose_init(args.model, size=size, T=args.T, width=args.width,
                        batch_size=args.batch_size, seed=args.seed, batch=batch,
                        batch_source=f"{args.dataset} training recordings")
    if args.json:
        with atomic_file(args.json) as fh:
            fh.write((json.dumps(res, indent=2) + "\n").encode())
    worst = min(res["layers"], key=lambda r: r["nonzero_weight_fraction"])
    dead = [r["name"] for r in res["layers"] if r["grad_norm"] == 0]
    print(f"{args.model} at {res['size'][0]}x{res['size'][1]}, T={res['T']}, on "
          f"{res['input']}: "
          f"{len(res['layers'])} synaptic layers; fewest nonzero quantized weights "
          f"{100 * worst['nonzero_weight_fraction']:.1f}% ({worst['name']}); layers with zero "
          f"gradient: {len(dead)}{' (' + ', '.join(dead) + ')' if dead else ''}; main logits "
          f"{'nonzero' if res['main_logits_nonzero'] else 'ALL ZERO'}")
    return 0


def __getattr__(name):
    # moved to spikeline.workflow; still importable from here for callers of the old place
    if name in ("evaluate_run", "load_data", "loader_factory", "resolve_config"):
        from spikeline import workflow  # lazy: CLI start-up (cli/__init__)

        return getattr(workflow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
