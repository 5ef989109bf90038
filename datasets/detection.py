"""Detection datasets by name: frames with their boxes, batched the YOLOv5 way.

``load_detection(name, split)`` gives items ``(frames [T, 2, h, w] float32, targets [n, 5])``
where a target row is ``(class, cx, cy, w, h)`` relative to the frame (YOLOv5's labels).
``detection_collate`` batches them into ``(x [N, T, 2, h, w], targets [m, 6])`` with the sample
index in front of each row, the layout YOLOv5's loss takes.  Frames go through the same
``FrameCache`` as classification frames (keyed by dataset, sample id and transform config);
boxes are recomputed from the sample on every read (they are tiny).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spikeline.atomic import atomic_path
from spikeline.errors import BadInput

from . import gen1, ndigits_detect
from .boxes import Boxes
from .cache import FrameCache
from .frames import ToFrames, resize_frames
from .registry import Splits, fixed_subset, make_loader
from .samples import DatasetInfo, default_cache_dir, default_data_dir

__all__ = ["DETECTION_DATASETS", "DetectionFrames", "load_detection", "load_detection_splits",
           "detection_collate", "make_detection_loader", "draw_detections"]

DETECTION_DATASETS: dict[str, DatasetInfo] = {m.INFO.name: m.INFO
                                              for m in (ndigits_detect, gen1)}
SPLITS = ("train", "val", "test")


@dataclass
class DetectionFrames(Dataset):
    """Frames and boxes of one split; ``read(i)`` gives ``(frames, Boxes)`` on the frame grid
    (sample ids key the frame cache; boxes come from the sample each time, they are tiny)."""

    name: str
    samples: object  # ndigits_detect.DetectSamples | gen1.Gen1Samples
    to_frames: ToFrames
    cache: FrameCache | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def _frames(self, index: int) -> np.ndarray:
        sample = self.samples.read(index)
        if self.name != "gen1":
            return self.to_frames(sample[0])
        stream, _, (start, end) = sample  # a fixed 250 ms window, binned by it (EMS-YOLO)
        counts = gen1.frames_in_window(stream, start, end, self.to_frames.n_time_bins)
        return resize_frames(counts, self.to_frames.size, self.to_frames.resize_mode)

    def read(self, index: int) -> tuple[np.ndarray, Boxes]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range [0, {len(self)})")
        boxes = self.samples.boxes(index).resized(self.to_frames.size)
        if self.cache is None:
            return self._frames(index), boxes
        return self.cache.get_or_build(self.samples.sample_id(index),
                                       lambda: self._frames(index)), boxes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames, boxes = self.read(index)
        return (torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)),
                torch.from_numpy(boxes.yolo()))


def detection_collate(batch):
    """``[(frames, targets [n, 5])]`` -> ``(x [N, T, 2, h, w], targets [m, 6])``, each target
    row prefixed by its sample's index in the batch."""
    frames = torch.stack([f for f, _ in batch])
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t], dim=1)
            for i, (_, t) in enumerate(batch)]
    return frames, torch.cat(rows) if rows else torch.zeros(0, 6)


def load_detection(name: str, split: str, *, data_dir: str | Path | None = None,
                   T: int | None = None, size: tuple[int, int] | None = None,
                   cache_dir: str | Path | None = None) -> DetectionFrames:
    """Detection dataset ``name`` (``ndigits-detect`` or ``gen1``), split train, val or test."""
    if name not in DETECTION_DATASETS:
        raise BadInput(f"unknown detection dataset {name!r}; expected one of "
                       f"{', '.join(DETECTION_DATASETS)}")
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r} for {name}; expected one of {', '.join(SPLITS)}")
    info = DETECTION_DATASETS[name]
    try:
        to_frames = ToFrames(T if T is not None else info.default_T,
                             tuple(size) if size is not None else info.default_size)
    except ValueError as err:
        raise BadInput(f"{name}: {err}") from None
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if name == "gen1":
        data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        samples = gen1.load_samples(split, data_dir)
        config = {**to_frames.config(), "binning": "fixed-window", "window_us": gen1.WINDOW_US}
    else:
        samples = ndigits_detect.load_samples(split, cache_dir)
        config = to_frames.config()
    cache = FrameCache(cache_dir / "frames", name, config, to_frames.output_shape())
    return DetectionFrames(name, samples, to_frames, cache)


def load_detection_splits(name: str, *, T: int | None = None, size=None,
                          limit_train: int | None = None, limit_test: int | None = None,
                          data_dir=None, cache_dir=None):
    """``registry.Splits`` of detection dataset ``name``: its own fixed train, val and test
    splits (no validation fraction is carved: both sets ship one), ``limit_train`` and
    ``limit_test`` as for classification (fixed subsets)."""
    kwargs = {"data_dir": data_dir, "T": T, "size": size, "cache_dir": cache_dir}
    return Splits(train=fixed_subset(load_detection(name, "train", **kwargs), limit_train),
                  val=fixed_subset(load_detection(name, "val", **kwargs), limit_test),
                  test=fixed_subset(load_detection(name, "test", **kwargs), limit_test),
                  num_classes=DETECTION_DATASETS[name].num_classes)


def make_detection_loader(dataset, batch_size: int, **kwargs):
    """``registry.make_loader`` batching with ``detection_collate``: ``(x, targets [m, 6])``."""
    return make_loader(dataset, batch_size, collate_fn=detection_collate, **kwargs)


def draw_detections(frames: np.ndarray, boxes: Boxes, out, title: str = "",
                    predicted: Boxes | None = None, class_names=None) -> None:
    """One PNG: every time bin (ON red, OFF blue) with the true boxes (green) and, when given,
    predicted ones (yellow, dashed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib, 0.9 s (measured)
    from matplotlib.figure import Figure  # lazy: as above
    from matplotlib.patches import Rectangle  # lazy: as above

    scale = max(float(frames.max()), 1e-9)
    n_bins = len(frames)
    figure = Figure(figsize=(2.2 * n_bins, 2.6))  # outside pyplot: no backend is chosen
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n_bins, squeeze=False)
    for k, axis in enumerate(axes[0]):
        off, on = frames[k] / scale
        axis.imshow(np.stack([on, np.zeros_like(on), off], axis=-1).clip(0, 1))
        for group, colour, style in ((boxes, "lime", "-"), (predicted, "yellow", "--")):
            if group is None:
                continue
            for (x0, y0, x1, y1), label in zip(group.xyxy, group.labels):
                axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                         edgecolor=colour, linestyle=style, linewidth=1))
                name = class_names[label] if class_names else str(label)
                axis.text(x0, y0 - 1, name, color=colour, fontsize=6)
        axis.set_title(f"bin {k}", fontsize=8)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
