"""``ndigits``: the embedded default dataset, an N-MNIST look-alike that needs no download.

scikit-learn's ``load_digits`` (1,797 handwritten digits, 8x8, 10 classes, shipped with the
package) is upscaled to 28x28 (bilinear) and shown to :class:`~.emulator.SaccadeEmulator` on a
34x34 sensor with N-MNIST's three saccades (~4,200 events per digit over 300 ms).  The events
are generated once (a few seconds) and cached in ``<cache_dir>/ndigits/`` in a file named by a
fingerprint of the generator settings; the split is a seeded stratified 80/20.
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

from .emulator import SaccadeEmulator
from .events import EventStream, make_events
from .samples import DatasetInfo, stratified_split

INFO = DatasetInfo(name="ndigits", num_classes=10, sensor_size=(34, 34, 2), default_size=(34, 34),
                   default_T=10, url=None)
DIGIT_SIZE = (28, 28)
EMULATOR = SaccadeEmulator(sensor_size=INFO.sensor_size[:2])
EMULATOR_SEED = 0  # part of the dataset's identity: every user gets the same events
TEST_FRACTION = 0.2
_GENERATOR_VERSION = 1  # bump when the image preparation changes


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits`` as ``[1797, 28, 28]`` float32 images in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits  # lazy: 2.3 s (measured); once per cache

    digits = load_digits()
    small = torch.from_numpy(digits.images / 16.0).float()[:, None]
    images = F.interpolate(small, size=DIGIT_SIZE, mode="bilinear", align_corners=False)
    return images[:, 0].clamp(0.0, 1.0).numpy(), digits.target.astype(np.int64)


@functools.cache
def fingerprint() -> str:
    """Names the generated events: changes with any generator setting."""
    settings = {"version": _GENERATOR_VERSION, "digit_size": DIGIT_SIZE, "seed": EMULATOR_SEED,
                "emulator": EMULATOR.config()}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NDigitsEvents:
    """All events of the set in compact columns; sample ``i`` is ``[offsets[i], offsets[i+1])``."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        n_events, n_samples = len(self.t), len(self.labels)
        if not (len(self.x) == len(self.y) == len(self.p) == n_events
                and len(self.offsets) == n_samples + 1 and self.offsets[0] == 0
                and self.offsets[-1] == n_events and np.all(np.diff(self.offsets) >= 0)):
            raise ValueError("inconsistent ndigits event columns")

    def stream(self, index: int) -> EventStream:
        part = slice(self.offsets[index], self.offsets[index + 1])
        return EventStream(make_events(self.t[part], self.x[part], self.y[part], self.p[part]),
                           INFO.sensor_size)


def generate() -> NDigitsEvents:
    images, labels = digit_images()
    events, offsets = EMULATOR(images, seed=EMULATOR_SEED)
    columns = {f: events[f].astype(np.min_scalar_type(int(events[f].max()))) for f in "txyp"}
    return NDigitsEvents(**columns, offsets=offsets, labels=labels)


def load_events(cache_dir: Path) -> NDigitsEvents:
    """The cached events, generated and written atomically if missing or unreadable."""
    path = Path(cache_dir) / "ndigits" / f"events-{fingerprint()}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            return NDigitsEvents(**{name: stored[name] for name in stored.files})
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        pass  # missing, truncated or from an interrupted run: generate again
    data = generate()
    with atomic_file(path) as file:
        np.savez(file, **vars(data))
    return data


@dataclass(frozen=True)
class NDigitsSamples:
    """One split of ndigits (see :class:`~.samples.EventSamples`)."""

    data: NDigitsEvents
    indices: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.data.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def sample_id(self, index: int) -> str:
        return f"{fingerprint()}/{int(self.indices[index])}"

    def read(self, index: int) -> EventStream:
        return self.data.stream(int(self.indices[index]))


def load_samples(split: str, data_dir: Path, cache_dir: Path, seed: int) -> NDigitsSamples:
    """``split`` of ndigits; ``data_dir`` is unused (nothing to download)."""
    data = load_events(cache_dir)
    train, test = stratified_split(data.labels, TEST_FRACTION, seed)
    return NDigitsSamples(data, train if split == "train" else test)
