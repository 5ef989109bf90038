"""`spikeline detect`: run a trained detector on an event recording (or a dataset sample).

The recording is read by ``datasets.events.read_events`` (the readers `spikeline simulate
--events` uses), binned into the run's T frames of counts over its whole duration and resized
to the run's frame size (``datasets.inputs.fit_frames``); the detector runs in exact float32 and its
boxes go through NMS and are cut to the frame.  Writes ``OUT/detections.png`` (every time bin
with the predicted boxes, and the true ones for a dataset sample) and ``OUT/detections.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from spikeline.atomic import atomic_text
from spikeline.datasets.boxes import Boxes
from spikeline.datasets.detection import DETECTION_DATASETS, draw_detections, load_detection
from spikeline.datasets.inputs import frames_from_events  # also the old place's name
from spikeline.errors import BadInput
from spikeline.paths import output_dir

from .train import _nonneg

# YOLOv5 detect.py's defaults for what is shown (https://github.com/ultralytics/yolov5,
# detect.py: conf_thres=0.25, iou_thres=0.45); mAP uses val.py's 0.001 / 0.6 instead.
DEFAULT_CONF, DEFAULT_IOU = 0.25, 0.45


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "detect", help="draw a trained detector's boxes on an event recording",
        description="Run a detection run's checkpoint on --events FILE (binned into the run's "
        "T frames over the whole recording and resized to its frame size) or on --dataset "
        "NAME --index I; writes OUT/detections.png (predicted boxes dashed yellow, true ones "
        "green) and OUT/detections.json (boxes xyxy in input pixels, score, class).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--events", metavar="FILE", help="an event recording (.aedat4, .raw, .dat, "
                     ".bin, .npy)")
    src.add_argument("--dataset", metavar="NAME", help="a detection dataset (with --index)")
    p.add_argument("--index", type=_nonneg, default=0, help="--dataset sample (default 0)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="--dataset split (default test)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--checkpoint", default="best",
                   help="best (default), last, or a path to a checkpoint file")
    p.add_argument("--conf", type=_fraction, default=DEFAULT_CONF,
                   help=f"score threshold of the boxes kept (default {DEFAULT_CONF})")
    p.add_argument("--iou", type=_fraction, default=DEFAULT_IOU,
                   help=f"NMS IoU threshold (default {DEFAULT_IOU})")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.set_defaults(handler=handle_detect)


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _run_info(ckpt: dict) -> tuple[int, list[int], dict]:
    spec = ckpt["model_spec"]
    if spec.get("task") != "detection":
        raise BadInput(f"RUN_DIR: {spec.get('name')!r} is a classifier; `spikeline detect` "
                       "needs a run trained with --task detection")
    return int(ckpt["config"]["T"]), [int(v) for v in spec["input_size"]], spec


def handle_detect(args) -> int:
    from spikeline.pipeline.checkpoint import load_run_model  # lazy: CLI start-up (cli/__init__)
    from spikeline.workflow import class_names, detect_boxes  # lazy: as above

    out = output_dir(args.out, "--out")
    model, ckpt = load_run_model(args.run_dir, args.checkpoint)
    T, size, spec = _run_info(ckpt)
    truth, source = None, {}
    if args.events:
        frames, sensor = frames_from_events(args.events, T, size)
        source = {"events": str(args.events), "sensor_size": list(sensor)}
    else:
        if args.dataset not in DETECTION_DATASETS:
            raise BadInput(f"--dataset: {args.dataset!r} is not a detection dataset; expected "
                           f"one of {', '.join(DETECTION_DATASETS)}")
        data = load_detection(args.dataset, args.split, data_dir=args.data_dir, T=T,
                              size=tuple(size), cache_dir=args.cache_dir)
        if args.index >= len(data):
            raise BadInput(f"--index {args.index}: the {args.dataset} {args.split} split has "
                           f"{len(data)} samples")
        frames, truth = data.read(args.index)
        frames = np.asarray(frames, dtype=np.float32)
        source = {"dataset": args.dataset, "split": args.split, "index": args.index}
    rows = detect_boxes(model, frames, size, args.conf, args.iou, args.device)
    names = class_names(ckpt["config"]["dataset"])
    boxes = [{"xyxy": [round(float(v), 3) for v in r[:4]], "score": round(float(r[4]), 5),
              "class": int(r[5]), **({"name": names[int(r[5])]} if names else {})}
             for r in rows]
    result = {"run_dir": str(args.run_dir), "checkpoint": args.checkpoint,
              "epoch": int(ckpt["epoch"]), **source, "T": T, "input_size": size,
              "conf": args.conf, "iou": args.iou, "boxes": boxes}
    atomic_text(out / "detections.json", json.dumps(result, indent=2) + "\n")
    predicted = Boxes(rows[:, :4], rows[:, 5].astype(np.int64), tuple(size))
    what = source.get("events") or f"{args.dataset} {args.split} #{args.index}"
    draw_detections(frames, truth if truth is not None else Boxes(np.zeros((0, 4)), [],
                                                                  tuple(size)),
                    out / "detections.png", f"{Path(what).name if args.events else what}: "
                    f"{len(rows)} box(es) at score >= {args.conf} ({spec['name']}, T={T})",
                    predicted=predicted, class_names=names)
    print(f"{len(boxes)} box(es) found; wrote {out / 'detections.png'} and "
          f"{out / 'detections.json'}")
    for b in boxes:
        print(f"  {b.get('name', b['class'])}  score {b['score']:.3f}  xyxy {b['xyxy']}")
    return 0

