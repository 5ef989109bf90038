"""What every dataset module provides: its description, its samples, a seeded stratified split."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .events import EventStream


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as the rest of spikeline sees it.

    ``sensor_size`` is ``(W, H, P)`` as in Tonic; ``default_size`` is the frame size ``(H, W)``
    and ``default_T`` the number of time bins used when the caller gives none; ``url`` is where
    users download the data (None for generated datasets).  ``mirror_symmetric``: a left-right
    flip keeps the class, so training may flip (natural images yes; digits no; gestures no,
    since left- and right-arm gestures are different classes)."""

    name: str
    num_classes: int
    sensor_size: tuple[int, int, int]
    default_size: tuple[int, int]
    default_T: int
    url: str | None
    mirror_symmetric: bool = False

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"{self.name}: num_classes must be >= 2, got {self.num_classes}")
        if len(self.sensor_size) != 3 or len(self.default_size) != 2 or self.default_T < 1:
            raise ValueError(f"{self.name}: expected sensor_size (W, H, P), default_size (H, W) "
                             f"and default_T >= 1")


class EventSamples(Protocol):
    """One split of a dataset: labels, stable ids and a reader per sample.

    ``sample_id(i)`` must change whenever the events of sample ``i`` can change (the frame cache
    keys on it); ``read(i)`` raises ``SpikelineError`` naming the file on bad data."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def sample_id(self, index: int) -> str: ...

    def read(self, index: int) -> EventStream: ...


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(len(labels))`` into sorted (train, test) index arrays.

    For each class ``c`` (in increasing order) with ``n_c`` samples, a permutation drawn from
    ``np.random.default_rng(seed)`` puts ``round(test_fraction * n_c)`` of them in the test set,
    so every class keeps the same proportions (CIFAR10-DVS, 1000 per class, 0.1: 900/100).  The
    result depends only on the labels, the fraction and the seed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_test = int(round(test_fraction * len(members)))
        test.append(rng.permutation(members)[:n_test])
    test_index = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train_index = np.setdiff1d(np.arange(len(labels)), test_index)
    return train_index, test_index


def per_class_head_split(labels: np.ndarray, train_fraction: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The first ``round(train_fraction * n_c)`` samples of each class (in the given order)
    for training, the rest for testing: a fixed split that no seed moves.

    CIFAR10-DVS has no official split; with 1000 recordings per class and 0.9 this is "the first
    900 of each class in sorted file order", the fixed per-class split recommended because
    random splits move reported accuracy by up to ~5 points
    (https://github.com/BICLab/Spike-Driven-Transformer/issues/14).
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    labels = np.asarray(labels)
    train = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        train.append(members[:int(round(train_fraction * len(members)))])
    train_index = np.sort(np.concatenate(train)) if train else np.zeros(0, dtype=np.int64)
    return train_index, np.setdiff1d(np.arange(len(labels)), train_index)


def default_cache_dir() -> Path:
    """``$SPIKELINE_CACHE`` or ``~/.cache/spikeline``."""
    return Path(os.environ.get("SPIKELINE_CACHE", "~/.cache/spikeline")).expanduser()


def default_data_dir() -> Path:
    """Where downloaded datasets live unless ``--data-dir`` says otherwise: ``$SPIKELINE_DATA``
    or ``~/data``."""
    return Path(os.environ.get("SPIKELINE_DATA", "~/data")).expanduser()
