"""``ndigits-detect``: the embedded detection set, 1-3 digits seen by an emulated DVS.

Each scene is a 58x58 image holding one to three of scikit-learn's handwritten digits, each
upscaled to 14-22 px and placed so that no two boxes overlap.  The image is shown to
:class:`~.emulator.SaccadeEmulator` on a 64x64 sensor with N-MNIST's three saccades (the image
moves by ``d(t)`` with ``0 <= dx, dy <= 6`` px).  A digit whose ink covers image columns
``[a, b)`` and rows ``[c, e)`` therefore produces events only inside sensor columns
``[a, b + 6)`` and rows ``[c, e + 6)``: that is its box, exact for the whole recording.

Generated once (seeded; about 15 s on 2 cores) and cached in ``<cache_dir>/ndigits-detect/``
under a fingerprint of every setting; the split is fixed (a permutation with its own seed,
independent of any training seed): 80% train, 10% val, 10% test.
"""
from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spikeline.atomic import atomic_file

from .boxes import Boxes
from .emulator import NMNIST_PATH, SaccadeEmulator
from .events import EventStream, make_events
from .samples import DatasetInfo

INFO = DatasetInfo(name="ndigits-detect", num_classes=10, sensor_size=(64, 64, 2),
                   default_size=(64, 64), default_T=5, url=None)
SCENES = 2000
IMAGE = 58  # the 64 px sensor minus the 6 px the saccades move the image
DIGIT_SIZES = (14, 22)  # inclusive range of digit heights and widths in pixels
MAX_DIGITS = 3
SCENE_SEED = 0  # part of the dataset's identity, like the split below
SPLIT_SEED = 0
FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
EMULATOR = SaccadeEmulator(sensor_size=INFO.sensor_size[:2])
_CHUNK = 250  # scenes per emulator call: bounds memory while generating
_GENERATOR_VERSION = 1


@functools.cache
def fingerprint() -> str:
    settings = {"version": _GENERATOR_VERSION, "scenes": SCENES, "image": IMAGE,
                "digit_sizes": DIGIT_SIZES, "max_digits": MAX_DIGITS, "seed": SCENE_SEED,
                "emulator": EMULATOR.config()}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _motion_extent() -> tuple[int, int]:
    """Largest (dx, dy) of the saccades: how far a box reaches beyond the ink."""
    path = np.asarray(NMNIST_PATH)
    if path.min() < 0:
        raise AssertionError("boxes assume non-negative displacements")
    return int(np.ceil(path[:, 0].max())), int(np.ceil(path[:, 1].max()))


def _digits_at(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # lazy: 2.3 s (measured); once per cache

    digits = load_digits()
    small = torch.from_numpy(digits.images / 16.0).float()[:, None]
    big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return big[:, 0].clamp(0.0, 1.0).numpy(), digits.target.astype(np.int64)


def compose_scenes(n: int, seed: int):
    """``n`` scene images ``[n, IMAGE, IMAGE]`` and, per scene, the digits' ink boxes (image
    pixels, xyxy) and classes."""
    rng = np.random.default_rng(seed)
    bank = {s: _digits_at(s) for s in range(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1)}
    images = np.zeros((n, IMAGE, IMAGE), np.float32)
    boxes, labels = [], []
    for i in range(n):
        want = int(rng.integers(1, MAX_DIGITS + 1))
        placed, classes = [], []
        for _ in range(50 * want):  # rejection sampling of non-overlapping boxes
            if len(placed) == want:
                break
            size = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
            pictures, targets = bank[size]
            k = int(rng.integers(len(targets)))
            ink = np.argwhere(pictures[k] > 0)
            (r0, c0), (r1, c1) = ink.min(0), ink.max(0) + 1
            top, left = rng.integers(0, IMAGE - size + 1, size=2)
            box = np.array([left + c0, top + r0, left + c1, top + r1])
            if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                   for b in placed):
                continue
            images[i, top:top + size, left:left + size] = np.maximum(
                images[i, top:top + size, left:left + size], pictures[k])
            placed.append(box)
            classes.append(int(targets[k]))
        boxes.append(np.asarray(placed, dtype=np.float32).reshape(-1, 4))
        labels.append(np.asarray(classes, dtype=np.int64))
    return images, boxes, labels


@dataclass(frozen=True)
class DetectEvents:
    """All scenes' events (sample ``i``: ``[offsets[i], offsets[i+1])``) and boxes (sample
    ``i``: ``[box_offsets[i], box_offsets[i+1])``, sensor pixels, xyxy)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    box_offsets: np.ndarray

    def __post_init__(self):
        n = len(self.offsets) - 1
        if not (len(self.x) == len(self.y) == len(self.p) == len(self.t) == self.offsets[-1]
                and len(self.box_offsets) == n + 1 and self.box_offsets[-1] == len(self.labels)
                and self.boxes.shape == (len(self.labels), 4)):
            raise ValueError("inconsistent ndigits-detect columns")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def stream(self, index: int) -> EventStream:
        part = slice(self.offsets[index], self.offsets[index + 1])
        return EventStream(make_events(self.t[part], self.x[part], self.y[part], self.p[part]),
                           INFO.sensor_size)

    def sample_boxes(self, index: int) -> Boxes:
        part = slice(self.box_offsets[index], self.box_offsets[index + 1])
        return Boxes(self.boxes[part], self.labels[part], INFO.default_size)


def generate(scenes: int | None = None) -> DetectEvents:
    scenes = SCENES if scenes is None else scenes
    images, boxes, labels = compose_scenes(scenes, SCENE_SEED)
    dx, dy = _motion_extent()
    columns, offsets = {f: [] for f in "txyp"}, [0]
    for start in range(0, scenes, _CHUNK):
        events, part = EMULATOR(images[start:start + _CHUNK], seed=SCENE_SEED + start)
        for f in "txyp":
            columns[f].append(events[f])
        offsets.extend(offsets[-1] + part[1:])
    reach = np.array([0, 0, dx, dy], dtype=np.float32)
    data = {f: np.concatenate(v) for f, v in columns.items()}
    data = {f: v.astype(np.min_scalar_type(int(v.max()))) for f, v in data.items()}
    return DetectEvents(**data, offsets=np.asarray(offsets, dtype=np.int64),
                        boxes=np.concatenate(boxes) + reach, labels=np.concatenate(labels),
                        box_offsets=np.concatenate([[0], np.cumsum([len(b) for b in labels])]))


def load_events(cache_dir: Path) -> DetectEvents:
    """The cached scenes, generated and written atomically if missing or unreadable."""
    path = Path(cache_dir) / "ndigits-detect" / f"events-{fingerprint()}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            return DetectEvents(**{name: stored[name] for name in stored.files})
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        pass
    data = generate()
    with atomic_file(path) as file:
        np.savez(file, **vars(data))
    return data


def split_indices(n: int) -> dict[str, np.ndarray]:
    """The fixed train/val/test split of ``n`` scenes (sorted indices)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_train, n_val = int(round(FRACTIONS["train"] * n)), int(round(FRACTIONS["val"] * n))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:]}
    return {k: np.sort(v) for k, v in parts.items()}


@dataclass(frozen=True)
class DetectSamples:
    """One split of ndigits-detect."""

    data: DetectEvents
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def sample_id(self, index: int) -> str:
        return f"{fingerprint()}/{int(self.indices[index])}"

    def boxes(self, index: int) -> Boxes:
        return self.data.sample_boxes(int(self.indices[index]))

    def read(self, index: int) -> tuple[EventStream, Boxes]:
        return self.data.stream(int(self.indices[index])), self.boxes(index)


def load_samples(split: str, cache_dir: Path) -> DetectSamples:
    if split not in FRACTIONS:
        raise ValueError(f"ndigits-detect: unknown split {split!r}; expected train, val or test")
    data = load_events(cache_dir)
    return DetectSamples(data, split_indices(len(data))[split])
