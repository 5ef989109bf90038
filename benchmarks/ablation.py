"""Ablation of the shortcut-heads paper on ndigits: none vs shortcut vs evolutionary vs dsn,
for a shallow and a deep plain Spiking ResNet (``o = SN(F(x) + x)``), with two surrogates,
over several seeds (mean +- std).

The paper's claim (arXiv 2401.04486, Tables 2/4): heads help, and help the deeper network more,
because its first layers get a vanishing gradient without them.  Each cell is trained with
``pipeline.train`` (best.pt chosen on the fixed validation split, test evaluated once for it);
the first-layer gradient norm at initialisation comes from ``pipeline.diagnose`` (same weights
and batches for every mode).

Surrogates: ``ours`` (the models' default: tau_grad 0.004, scale_grad 10, peak slope 1) and
``lava`` (lava-dl's examples: tau_grad 0.03, scale_grad 3, peak slope 0.04, where gradients
vanish in deep nets).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/ablation.py   # budget: 40 min
    .venv/bin/python benchmarks/ablation.py --quick                         # smoke run, ~1 min

Budget: <= 40 minutes on this 2-core CPU shared with other jobs, one torch thread: 2 networks x
4 modes x 2 surrogates x 3 seeds = 48 runs of 48 optimizer steps.  Settings: ``resnet20`` layout
(stem + 3 stages) at ``width=16`` (4/8/16 channels); ``shallow`` = 1 block per stage (8 layers),
``deep`` = 3 blocks per stage (20 layers); ndigits 34x34, T = 4, 384 training samples, 4 epochs,
batch 32, Adam 1e-2 with a cosine schedule, lambda = 0.25, BatchNorm recalibrated on 2 batches;
validation = the fixed 10% carved from ndigits' training split (144), test = the whole test
split (359).  Small, because 48 runs must fit the budget: read it as a comparison of the
heads under a short schedule, not as the networks' attainable accuracy.

Writes OUT/ablation.json, OUT/ablation.md (the table), OUT/ablation.png and one run directory
per cell (OUT/runs/...); a finished cell is reused when the script is run again.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

NETWORKS = {
    "shallow": {"model": "resnet20", "width": 16, "depths": [1, 1, 1]},
    "deep": {"model": "resnet20", "width": 16, "depths": [3, 3, 3]},
}
QUICK_NETWORKS = {
    "shallow": {"model": "resnet20", "width": 8, "depths": [1, 1, 1]},
    "deep": {"model": "resnet20", "width": 8, "depths": [3, 3, 3]},
}
SURROGATES = {"ours": {}, "lava": {"tau_grad": 0.03, "scale_grad": 3.0}}


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--modes", default="none,shortcut,evolutionary,dsn")
    ap.add_argument("--networks", default="shallow,deep")
    ap.add_argument("--surrogates", default="ours,lava")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit-train", type=int, default=384)
    ap.add_argument("--recalibrate-batches", type=int, default=2)
    ap.add_argument("--limit-test", type=int, default=None, help="default: whole splits")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--grad-batches", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a CPU shared with other jobs, two "
                    "threads measured 2-20x slower per step than one)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny networks, T=2, 1 epoch, 1 seed, 32 train / 32 test")
    args = ap.parse_args(argv)
    networks = NETWORKS
    if args.quick:
        networks = QUICK_NETWORKS
        args.epochs, args.T, args.limit_train, args.limit_test = 1, 2, 32, 32
        args.batch_size, args.grad_batches, args.seeds = 16, 1, "0"

    import torch

    torch.set_num_threads(args.threads)
    from spikeline.datasets.registry import load_splits, make_loader
    from spikeline.pipeline.config import Runtime, TrainConfig, resolve
    from spikeline.pipeline.diagnose import diagnose_gradients
    from spikeline.pipeline.train import train

    out = Path(args.out)
    modes = [m for m in args.modes.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    cells, runs = [], []
    t_all = time.perf_counter()
    data = load_splits("ndigits", T=args.T, size=(34, 34), augment=True, val_fraction=0.1,
                       limit_train=args.limit_train, limit_test=args.limit_test)
    for net_name in [n for n in args.networks.split(",") if n]:
        net = networks[net_name]
        for sur_name in [s for s in args.surrogates.split(",") if s]:
            base = TrainConfig(dataset="ndigits", model=net["model"], width=net["width"],
                               depths=net["depths"], T=args.T, epochs=args.epochs,
                               batch_size=args.batch_size, lr=args.lr,
                               limit_train=args.limit_train, limit_test=args.limit_test,
                               recalibrate_batches=args.recalibrate_batches,
                               **SURROGATES[sur_name])
            base = resolve(base, 4, (34, 34))
            grads = diagnose_gradients(
                [TrainConfig(**{**base.to_dict(), "heads": m, "augment": False}) for m in modes],
                data, make_loader, batches=args.grad_batches, device=args.device)
            for mode in modes:
                accs = []
                for seed in seeds:
                    run_dir = out / "runs" / f"{net_name}-{sur_name}-{mode}-s{seed}"
                    summary_path = run_dir / "summary.json"
                    if summary_path.exists() and json.loads(summary_path.read_text())["finished"]:
                        summary = json.loads(summary_path.read_text())
                    else:
                        if run_dir.exists():
                            import shutil

                            shutil.rmtree(run_dir)
                        config = TrainConfig(**{**base.to_dict(), "heads": mode, "seed": seed})
                        summary = train(config, Runtime(out=run_dir, device=args.device,
                                                        progress=False),
                                        data, make_loader).summary
                    runs.append({"network": net_name, "surrogate": sur_name, "heads": mode,
                                 "seed": seed, "val_acc": summary["val_acc"],
                                 "test_acc": summary["test_acc"]})
                    accs.append(summary["test_acc"])
                    print(json.dumps(runs[-1]), flush=True)
                mean, std = _mean_std(accs)
                cells.append({
                    "network": net_name,
                    "model": f"{net_name} ({2 + 2 * sum(net['depths'])} layers)",
                    "surrogate": sur_name, "heads": mode, "seeds": len(accs),
                    "test_acc": mean, "test_acc_std": std,
                    "first_layer_grad_norm": grads["first_layer_grad_norm"][mode],
                })
    wall = round(time.perf_counter() - t_all, 1)
    result = {"settings": vars(args), "networks": networks, "surrogates": SURROGATES,
              "cells": cells, "runs": runs, "wall_seconds": wall}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"| network | surrogate | {' | '.join(modes)} |",
             "|---|---|" + "---|" * len(modes)]
    for net_name in dict.fromkeys(c["model"] for c in cells):
        for sur in dict.fromkeys(c["surrogate"] for c in cells):
            row = {c["heads"]: c for c in cells if c["model"] == net_name and c["surrogate"] == sur}
            if row:
                lines.append(f"| {net_name} | {sur} | " + " | ".join(
                    f"{100 * row[m]['test_acc']:.1f} ± {100 * row[m]['test_acc_std']:.1f}"
                    f" (g1 {row[m]['first_layer_grad_norm']:.2g})" for m in modes) + " |")
    table = "\n".join(lines)
    (out / "ablation.md").write_text(
        f"Test accuracy (%), mean ± std over seeds {seeds}; g1 = first-layer gradient norm at "
        f"init. {wall:.0f} s wall.\n\n{table}\n")
    _plot(cells, modes, out / "ablation.png")
    print(table)
    print(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'}, {out / 'ablation.png'} "
          f"({wall:.0f} s)")
    return 0


def _plot(cells, modes, path):
    from spikeline.pipeline.plots import _figure, _save

    groups = list(dict.fromkeys((c["model"], c["surrogate"]) for c in cells))
    fig, axes = _figure(1, 1, figsize=(10, 4))
    ax = axes[0][0]
    width = 0.8 / max(len(modes), 1)
    for k, mode in enumerate(modes):
        xs, ys, es = [], [], []
        for g, (model, sur) in enumerate(groups):
            for c in cells:
                if (c["model"], c["surrogate"], c["heads"]) == (model, sur, mode):
                    xs.append(g + k * width)
                    ys.append(100 * c["test_acc"])
                    es.append(100 * c["test_acc_std"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=mode)
    ax.set_xticks([g + width * (len(modes) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{m}\n{s} surrogate" for m, s in groups], fontsize="small")
    ax.set_ylabel("test accuracy (%), mean ± std")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(title="heads", fontsize="small")
    return _save(fig, path)


if __name__ == "__main__":
    sys.exit(main())
