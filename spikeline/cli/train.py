"""`spikeline train`, `spikeline evaluate` and `spikeline diagnose gradients`."""
from __future__ import annotations

import argparse
import dataclasses
import json

from spikeline.errors import SpikelineError

# CLI option -> TrainConfig field, for the options that define a run
_CONFIG_OPTIONS = {
    "dataset": "dataset", "model": "model", "heads": "heads", "lam": "lam", "T": "T",
    "size": "size", "encoding": "encoding", "rezero": "rezero", "width": "width",
    "depths": "depths", "connect": "connect", "epochs": "epochs", "batch_size": "batch_size",
    "optimizer": "optimizer", "lr": "lr", "momentum": "momentum",
    "weight_decay": "weight_decay", "schedule": "schedule", "augment": "augment",
    "seed": "seed", "limit_train": "limit_train", "limit_test": "limit_test", "amp": "amp",
    "threshold": "threshold", "current_decay": "current_decay",
    "voltage_decay": "voltage_decay", "tau_grad": "tau_grad", "scale_grad": "scale_grad",
    "recalibrate_batches": "recalibrate_batches", "timing": "timing",
}


def _size(text: str):
    """``48`` or ``48x40`` (H x W)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}")
    return parts


def _int_list(text: str):
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="dataset name (default ndigits)")
    p.add_argument("--data-dir", default=None, help="where downloaded datasets live")
    p.add_argument("--T", type=int, default=None, help="time steps (default: the dataset's)")
    p.add_argument("--size", type=_size, default=None,
                   help="frame size N or HxW (default: the dataset's)")
    p.add_argument("--encoding", default=None, choices=["binary", "counts"],
                   help="input encoding (default binary: a pixel spikes in a bin where it saw an event)")
    p.add_argument("--width", type=int, default=None,
                   help="channel scale of the model (64 = paper widths for ResNets/VGG)")
    p.add_argument("--depths", type=_int_list, default=None,
                   help="ResNets: residual blocks per stage, e.g. 2,2,2")
    p.add_argument("--connect", default=None, choices=["ADD", "AND", "IAND"],
                   help="SEW ResNets: element-wise connect function")
    p.add_argument("--timing", default=None, choices=["ideal", "loihi"],
                   help="ideal (default): no synaptic delay; loihi: one step per synaptic hop "
                        "as Lava/Loihi run it, so the trained network is the chip's (input "
                        "padded by the depth, readout over the last T steps)")
    p.add_argument("--lam", type=float, default=None,
                   help="lambda of evolutionary training (default 0.25)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    neuron = p.add_argument_group("CUBA-LIF neuron (default: models.DEFAULT_NEURON)")
    neuron.add_argument("--threshold", type=float, default=None)
    neuron.add_argument("--current-decay", type=float, default=None)
    neuron.add_argument("--voltage-decay", type=float, default=None)
    neuron.add_argument("--tau-grad", type=float, default=None,
                        help="surrogate width: tau_rho = 100 * tau_grad * threshold")
    neuron.add_argument("--scale-grad", type=float, default=None,
                        help="surrogate height: peak slope = 0.1 * scale_grad / (2 tau_rho)")


def register(subparsers) -> None:
    # ---- train -------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "train", help="train a spiking network (optionally with shortcut heads)",
        description="Train models.build_model(--model) wrapped in shortcut heads (--heads) "
        "with a cosine LR schedule stepped per iteration and lambda(i) = lam (1 - i/I). "
        "Writes RUN_DIR/{last.pt,best.pt,metrics.jsonl,curves.png,config.json,summary.json}. "
        "Multi-GPU: torchrun --nproc_per_node K -m spikeline train ... (--batch-size is per "
        "process).")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--model", default=None, help="model name (default cnn)")
    p.add_argument("--heads", default=None,
                   help="none | shortcut | evolutionary | dsn (default none)")
    _add_model_options(p)
    p.add_argument("--rezero", action="store_true", default=None,
                   help="gate residual branches by a scalar initialised at 0")
    p.add_argument("--epochs", type=int, default=None, help="default 10")
    p.add_argument("--batch-size", type=int, default=None, help="per process (default 32)")
    p.add_argument("--optimizer", default=None, choices=["adam", "sgd"], help="default adam")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 1e-3 adam, 0.1 sgd)")
    p.add_argument("--momentum", type=float, default=None, help="sgd momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=None, help="default 0")
    p.add_argument("--schedule", default=None, choices=["cosine", "constant"],
                   help="learning rate schedule, per iteration (default cosine)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no training augmentation")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="no bf16 autocast (it is only ever used on CUDA)")
    p.add_argument("--limit-train", type=int, default=None, metavar="N",
                   help="train on a fixed subset of N samples")
    p.add_argument("--limit-test", type=int, default=None, metavar="N",
                   help="test on a fixed subset of N samples")
    p.add_argument("--recalibrate-batches", type=int, default=None, metavar="N",
                   help="recompute BatchNorm statistics over N training batches with each "
                        "epoch's final weights before evaluating (default 16; 0: off)")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--cache-dir", default=None, help="frame cache directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR from last.pt (its stored config is used)")
    p.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs in this invocation (resume later)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars or per-epoch lines")
    p.set_defaults(handler=_train)

    # ---- evaluate ----------------------------------------------------------------------------
    p = subparsers.add_parser("evaluate", help="test accuracy of a trained run (heads stripped)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", default="best",
                   help="best (default), last, or a path to a checkpoint file")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None, metavar="N",
                   help="test subset size (default: the run's; 0 = the whole test split)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_evaluate)

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
    _add_model_options(g)
    g.add_argument("--batches", type=int, default=3)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--progress", type=float, default=0.0,
                   help="training progress i/I at which lambda(i) is taken (default 0)")
    g.add_argument("--out", default="runs/diagnose", help="output directory")
    g.add_argument("--json", action="store_true", help="print the full result as JSON")
    g.set_defaults(handler=_diagnose)


def _train(args) -> int:
    from spikeline.pipeline.train import Runtime, TrainConfig, train

    given = {field: getattr(args, opt) for opt, field in _CONFIG_OPTIONS.items()
             if getattr(args, opt, None) is not None}
    runtime = Runtime(out=args.out, device=args.device, workers=args.workers,
                      data_dir=args.data_dir, cache_dir=args.cache_dir, resume=args.resume,
                      stop_after=args.stop_after, progress=args.progress)
    if args.resume:
        result = train(None, runtime, overrides=given)
    else:
        result = train(dataclasses.replace(TrainConfig(), **given), runtime)
    best = result.best
    state = "finished" if result.finished else "stopped (continue with --resume)"
    print(f"{state}: {len(result.history)} epoch(s) in {result.run_dir}; best test accuracy "
          f"{100 * best['test_acc']:.2f}% at epoch {best['epoch']}")
    if result.ddp_ranks_identical is False:
        raise SpikelineError("DDP ranks ended with different weights")
    return 0


def _evaluate(args) -> int:
    from spikeline.pipeline.train import evaluate_run

    res = evaluate_run(args.run_dir, args.checkpoint, device=args.device,
                       data_dir=args.data_dir, cache_dir=args.cache_dir,
                       batch_size=args.batch_size, limit_test=args.limit_test,
                       workers=args.workers)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['run_dir']} ({res['checkpoint']}, epoch {res['epoch']}): test accuracy "
              f"{100 * res['test_acc']:.2f}% ({res['correct']}/{res['num_test']}) - "
              f"{res['model']}, heads stripped (trained with {res['heads']})")
    return 0


def _diagnose(args) -> int:
    from spikeline.pipeline.diagnose import diagnose_gradients
    from spikeline.pipeline.train import NEURON_FIELDS

    modes = [m.strip() for m in args.heads.split(",") if m.strip()]
    res = diagnose_gradients(
        args.model, modes, dataset=args.dataset or "ndigits", batches=args.batches,
        batch_size=args.batch_size, T=args.T, size=args.size,
        lam=0.25 if args.lam is None else args.lam, progress=args.progress,
        seed=args.seed or 0, width=args.width, depths=args.depths,
        encoding=args.encoding or "binary", data_dir=args.data_dir, device=args.device,
        out=args.out, neuron={k: getattr(args, k) for k in NEURON_FIELDS
                              if getattr(args, k) is not None})
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
