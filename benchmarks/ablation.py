"""Ablation of the shortcut-heads paper on ndigits: vanilla vs shortcut vs evolutionary, for a
shallow and a deep plain Spiking ResNet (``o = SN(F(x) + x)``).

The paper's claim (arXiv 2401.04486, Tables 2/4): heads help, and help the deeper network more,
because its first layers get a vanishing gradient without them.  For each (network, mode) this
trains a run with ``pipeline.train`` and measures the first-layer gradient norm at
initialisation with ``pipeline.diagnose`` (same weights and batches for every mode).

    .venv/bin/python benchmarks/ablation.py                # ~15 min on 2 CPU cores
    .venv/bin/python benchmarks/ablation.py --quick        # smoke run, ~1 min

Writes OUT/ablation.json, OUT/ablation.png and one run directory per cell (OUT/runs/...); a
finished cell is reused when the script is run again (delete OUT to start afresh).

Networks: ``resnet20`` (He et al.'s CIFAR ResNet-20 layout: stem + 3 stages) at half width
(``width=32``: 8/16/32 channels): ``shallow`` = 1 block per stage (8 layers), ``deep`` = 3
blocks per stage (20 layers).  ndigits 34x34, T = 4, 640 training samples, the full test
split (359), 10 epochs, batch 32, Adam 1e-2 with a cosine schedule, lambda = 0.25, one CPU
thread: about 15 minutes on this 2-core machine.  (The 8-layer net reaches ~84% in 2 epochs
here, the 20-layer one stays near chance: the degradation the heads are meant to cure.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

NETWORKS = {
    "shallow": {"model": "resnet20", "width": 32, "depths": [1, 1, 1]},
    "deep": {"model": "resnet20", "width": 32, "depths": [3, 3, 3]},
}
QUICK_NETWORKS = {
    "shallow": {"model": "resnet20", "width": 16, "depths": [1, 1, 1]},
    "deep": {"model": "resnet20", "width": 16, "depths": [3, 3, 3]},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--modes", default="none,shortcut,evolutionary")
    ap.add_argument("--networks", default="shallow,deep")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit-train", type=int, default=640)
    ap.add_argument("--limit-test", type=int, default=None, help="default: whole test split")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grad-batches", type=int, default=3)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a CPU shared with other jobs, two "
                    "threads measured 2-20x slower per step than one)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny networks, T=2, 1 epoch, 32 train / 32 test samples")
    args = ap.parse_args(argv)
    networks = NETWORKS
    if args.quick:
        networks = QUICK_NETWORKS
        args.epochs, args.T, args.limit_train, args.limit_test = 1, 2, 32, 32
        args.batch_size, args.grad_batches = 16, 1

    import torch

    torch.set_num_threads(args.threads)
    from spikeline.pipeline.diagnose import diagnose_gradients
    from spikeline.pipeline.plots import plot_ablation
    from spikeline.pipeline.train import Runtime, TrainConfig, train

    out = Path(args.out)
    modes = [m for m in args.modes.split(",") if m]
    rows = []
    t_all = time.perf_counter()
    for net_name in [n for n in args.networks.split(",") if n]:
        net = networks[net_name]
        grads = diagnose_gradients(
            net["model"], modes, dataset="ndigits", batches=args.grad_batches,
            batch_size=args.batch_size, T=args.T, seed=args.seed, width=net["width"],
            depths=net["depths"], device=args.device, out=out / f"gradients-{net_name}")
        for mode in modes:
            run_dir = out / "runs" / f"{net_name}-{mode}"
            summary_path = run_dir / "summary.json"
            t0 = time.perf_counter()
            if summary_path.exists() and json.loads(summary_path.read_text())["finished"]:
                history = [json.loads(line) for line in
                           (run_dir / "metrics.jsonl").read_text().splitlines()]
            else:
                config = TrainConfig(dataset="ndigits", model=net["model"], heads=mode,
                                     width=net["width"], depths=net["depths"], T=args.T,
                                     epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                     seed=args.seed, limit_train=args.limit_train,
                                     limit_test=args.limit_test)
                resume = (run_dir / "last.pt").exists()
                history = train(None if resume else config,
                                Runtime(out=run_dir, device=args.device, resume=resume,
                                        progress=False)).history
            row = {
                "network": net_name, "model": f"{net_name} ({2 + 2 * sum(net['depths'])} layers)",
                "heads": mode, "epochs": len(history),
                "test_acc": max(h["test_acc"] for h in history),
                "final_test_acc": history[-1]["test_acc"],
                "final_train_loss": history[-1]["train_loss"],
                "first_layer_grad_norm": grads["first_layer_grad_norm"][mode],
                "first_over_last": grads["first_over_last"][mode],
                "train_seconds": round(sum(h["seconds"] for h in history), 1),
                "wall_seconds_now": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"settings": {k: v for k, v in vars(args).items()}, "networks": networks,
              "rows": rows, "wall_seconds": round(time.perf_counter() - t_all, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_ablation(rows, out / "ablation.png")
    print()
    print(f"{'network':<22}{'heads':<14}{'best test':>10}{'final':>8}{'1st-layer grad':>16}"
          f"{'train s':>9}")
    for r in rows:
        print(f"{r['model']:<22}{r['heads']:<14}{100 * r['test_acc']:>9.1f}%"
              f"{100 * r['final_test_acc']:>7.1f}%{r['first_layer_grad_norm']:>16.3g}"
              f"{r['train_seconds']:>9.0f}")
    print("(1st-layer grad: first-layer gradient norm at initialisation)")
    print(f"wrote {out / 'ablation.json'}, {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
