"""``spikeline events FILE``, ``spikeline data show`` and ``spikeline data prepare``."""
from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm import tqdm

from spikeline.atomic import atomic_file
from spikeline.datasets import events as event_files
from spikeline.datasets import gen1
from spikeline.datasets.detection import DETECTION_DATASETS, draw_detections, load_detection
from spikeline.datasets.registry import DATASETS, SPLITS, load_dataset
from spikeline.errors import BadInput
from spikeline.paths import output_file

from .inputs import positive_int


def register(subparsers) -> None:
    events = subparsers.add_parser(
        "events", help="count the events of a recording (AEDAT4, N-MNIST .bin, DVS Gesture "
                       ".npy, Prophesee .raw/.dat)")
    events.add_argument("file")
    events.add_argument("--json", action="store_true",
                        help='print {"events", "sensor_size", "duration_us"} as JSON')
    events.set_defaults(handler=_events)

    data = subparsers.add_parser("data", help="look at datasets and build their frame cache")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")

    show = actions.add_parser("show", help="draw one sample's frames to a PNG (detection sets: "
                                           "with their boxes)")
    _add_dataset_options(show, detection=True)
    show.add_argument("--index", type=int, default=0, help="sample index in the split")
    show.add_argument("--out", required=True, help="PNG file to write")
    show.add_argument("--split", choices=("train", "val", "test"), default="train",
                      help="val: detection sets only")
    show.set_defaults(handler=_show)

    prepare = actions.add_parser("prepare", help="bin every sample of both splits into the "
                                                 "frame cache")
    _add_dataset_options(prepare)
    prepare.add_argument("--size", type=_frame_size, help="frame size: H or HxW")
    prepare.set_defaults(handler=_prepare)


def _add_dataset_options(parser: argparse.ArgumentParser, detection: bool = False) -> None:
    names = sorted(DATASETS) + (sorted(DETECTION_DATASETS) if detection else [])
    parser.add_argument("dataset", choices=names)
    parser.add_argument("--T", type=positive_int, help="time bins (default: the dataset's)")
    parser.add_argument("--data-dir", help="folder with downloaded datasets "
                                           "(default $SPIKELINE_DATA or ~/data)")
    parser.add_argument("--cache-dir", help="frame cache and generated data "
                                            "(default $SPIKELINE_CACHE or ~/.cache/spikeline)")


def _frame_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected H or HxW (positive integers), got {text!r}")
    return (parts[0], parts[-1])


def _events(args) -> int:
    stream = event_files.read_events(args.file)
    summary = {"events": len(stream), "sensor_size": list(stream.sensor_size),
               "duration_us": stream.duration_us}
    if args.json:
        print(json.dumps(summary))
    else:
        width, height, polarities = stream.sensor_size
        print(f"{args.file}: {len(stream):,} events, sensor {width}x{height}x{polarities}, "
              f"{stream.duration_us:,} µs")
    return 0


def _show(args) -> int:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib, 0.9 s (measured)
    from matplotlib.figure import Figure  # lazy: as above

    out = output_file(args.out, "--out")
    if args.dataset not in DATASETS:
        return _show_detection(args, out)
    if args.split not in SPLITS:
        raise BadInput(f"--split {args.split}: {args.dataset} has splits {', '.join(SPLITS)}")
    dataset = load_dataset(args.dataset, args.split, data_dir=args.data_dir, T=args.T,
                           cache_dir=args.cache_dir)
    if not 0 <= args.index < len(dataset):
        raise BadInput(f"--index {args.index}: {args.dataset} {args.split} has samples "
                             f"0 to {len(dataset) - 1}")
    frames, label = dataset[args.index]
    frames = frames.numpy()
    scale = max(float(frames.max()), 1e-9)  # one scale for all bins: brightness comparable
    n_bins = len(frames)
    figure = Figure(figsize=(1.6 * n_bins, 2.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n_bins, squeeze=False)
    for k, axis in enumerate(axes[0]):
        off, on = frames[k] / scale
        axis.imshow(np.stack([on, np.zeros_like(on), off], axis=-1).clip(0, 1))
        axis.set_title(f"bin {k}", fontsize=8)
        axis.axis("off")
    figure.suptitle(f"{args.dataset} {args.split} #{args.index}: label {label} "
                    f"(ON red, OFF blue)", fontsize=10)
    with atomic_file(out) as fh:
        figure.savefig(fh, format="png", dpi=100, bbox_inches="tight")
    print(f"wrote {out}")
    return 0


def _show_detection(args, out) -> int:
    dataset = load_detection(args.dataset, args.split, data_dir=args.data_dir, T=args.T,
                             cache_dir=args.cache_dir)
    if not 0 <= args.index < len(dataset):
        raise BadInput(f"--index {args.index}: {args.dataset} {args.split} has samples "
                       f"0 to {len(dataset) - 1}")
    frames, boxes = dataset.read(args.index)
    names = gen1.CLASSES if args.dataset == "gen1" else None
    draw_detections(frames, boxes, out, f"{args.dataset} {args.split} #{args.index}: "
                    f"{len(boxes)} boxes (ON red, OFF blue)", class_names=names)
    print(f"wrote {out}")
    return 0


def _prepare(args) -> int:
    total = 0
    for split in SPLITS:
        dataset = load_dataset(args.dataset, split, data_dir=args.data_dir, T=args.T,
                               size=args.size, cache_dir=args.cache_dir)
        for index in tqdm(range(len(dataset)), desc=f"{args.dataset} {split}", unit="sample"):
            dataset.frames(index)
        total += len(dataset)
    print(f"{args.dataset}: frames of {total} samples cached in {dataset.cache.root}")
    return 0
