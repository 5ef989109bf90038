"""A short training of the deployable EMS-Res10 detector on ndigits-detect, saved as a
``spikeline train`` run directory (``best.pt`` in the checkpoint format, ``summary.json``).

A stand-in for ``spikeline train --task detection`` (built elsewhere) so that export, verify,
deployed mAP and energy can be measured on a trained detector::

    nice -n 10 python benchmarks/train_detector_short.py runs/det_short --minutes 25
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from spikeline.datasets.detection import detection_collate, load_detection
from spikeline.pipeline.checkpoint import FORMAT, build_from_spec, save_checkpoint
from spikeline.pipeline.detection import decode, mean_average_precision, nms, yolo_loss
from spikeline.pipeline.ems import NDIGITS_ANCHORS


def spec(width: int) -> dict:
    return {"task": "detection", "name": "ems_res10", "in_channels": 2, "num_classes": 10,
            "encoding": "binary", "width": width, "deployable": True,
            "anchors": [[list(a) for a in level] for level in NDIGITS_ANCHORS.sizes],
            "strides": list(NDIGITS_ANCHORS.strides), "input_size": [64, 64]}


@torch.no_grad()
def evaluate(net, data, size=64) -> dict:
    net.eval()
    preds, truths = [], []
    for x, t in torch.utils.data.DataLoader(data, batch_size=50, collate_fn=detection_collate):
        for i, rows in enumerate(nms(decode(net(x), net.head.anchors), 0.001, 0.6)):
            mine = t[t[:, 0] == i]
            cxcy, wh = mine[:, 2:4] * size, mine[:, 4:6] * size
            truths.append((torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1).numpy(),
                           mine[:, 1].numpy()))
            preds.append(rows.numpy())
    net.train()
    return mean_average_precision(preds, truths, 10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--T", type=int, default=3)
    p.add_argument("--minutes", type=float, default=25)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    model_spec = spec(args.width)
    net = build_from_spec(model_spec)
    train = load_detection("ndigits-detect", "train", T=args.T, size=(64, 64))
    test = load_detection("ndigits-detect", "test", T=args.T, size=(64, 64))
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True,
                                         collate_fn=detection_collate)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    start, epoch, history = time.time(), 0, []
    while epoch < args.epochs and time.time() - start < args.minutes * 60:
        total = 0.0
        for x, targets in loader:
            loss, _ = yolo_loss(net(x), targets, net.head.anchors, 64)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss)
        epoch += 1
        history.append({"epoch": epoch, "loss": total / len(loader),
                        "elapsed_s": time.time() - start})
        print(history[-1], flush=True)
    net.eval()
    scores = evaluate(net, test)
    config = {"task": "detection", "dataset": "ndigits-detect", "T": args.T, "size": [64, 64],
              "encoding": "binary", "batch_size": 32, "epochs": epoch, "lr": 2e-3,
              "model": "ems_res10", "width": args.width}
    stripped = {k: v for k, v in net.state_dict().items()}
    save_checkpoint(run / "best.pt", {
        "format": FORMAT, "config": config, "model_spec": model_spec, "epoch": epoch,
        "iteration": epoch * len(loader), "total_iterations": epoch * len(loader),
        "model": stripped, "model_stripped": stripped, "history": history,
        "best": {"val_mAP50": scores["mAP50"], "epoch": epoch}})
    summary = {"test_mAP50": scores["mAP50"], "test_mAP50_95": scores["mAP50_95"],
               "epochs": epoch, "train_seconds": time.time() - start}
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(summary)


if __name__ == "__main__":
    main()
