"""The datasets the training code can ask for by name, as torch datasets and loaders.

``load_dataset`` gives items ``(frames, label)``: float32 tensor ``[T, 2, H, W]`` of event counts
(channel 0 = OFF, 1 = ON) and an int.  Frames come from the on-disk frame cache when it holds
them (keyed by dataset, sample and transform config), else are binned and stored.  Augmentation
(random flip and roll) is applied after the cache with a generator seeded by ``(epoch seed,
sample index)``: the same seed gives the same batches whatever the number of loader workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from spikeline.errors import SpikelineError

from . import cifar10dvs, dvsgesture, ndigits, nmnist
from .cache import FrameCache
from .frames import RandomFlipRoll, ToFrames
from .samples import (DatasetInfo, EventSamples, default_cache_dir, default_data_dir,
                      stratified_split)

_MODULES = {module.INFO.name: module for module in (ndigits, nmnist, dvsgesture, cifar10dvs)}
DATASETS: dict[str, DatasetInfo] = {name: module.INFO for name, module in _MODULES.items()}
SPLITS = ("train", "test")
# Seed of the train/test split of datasets without an official one (ndigits) and of the
# validation split carved from every training split.  Fixed: a run's --seed changes the
# initialisation, data order and augmentation, never which samples are tested.
SPLIT_SEED = 0


class FrameDataset(Dataset):
    """Frames of ``samples`` made by ``to_frames``, through ``cache`` when given, then
    ``augment``-ed when given."""

    def __init__(self, name: str, samples: EventSamples, to_frames: ToFrames,
                 cache: FrameCache | None, augment: RandomFlipRoll | None = None, seed: int = 0):
        self.name = name
        self.samples = samples
        self.to_frames = to_frames
        self.cache = cache
        self.augment = augment
        self.epoch_seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return self.samples.labels

    def reseed(self, epoch_seed: int) -> None:
        """Draw this epoch's augmentations from ``epoch_seed`` (``make_loader`` does it)."""
        self.epoch_seed = int(epoch_seed)

    def frames(self, index: int) -> np.ndarray:
        """Sample ``index``'s frames before augmentation."""
        if self.cache is None:
            return self.to_frames(self.samples.read(index))
        return self.cache.get_or_build(self.samples.sample_id(index),
                                       lambda: self.to_frames(self.samples.read(index)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range [0, {len(self)})")
        frames = self.frames(index)
        if self.augment is not None:
            frames = self.augment(frames, np.random.default_rng((self.epoch_seed, index)))
        return torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)), \
            int(self.samples.labels[index])


def _frame_size(size, info: DatasetInfo) -> tuple[int, int]:
    if size is None:
        return info.default_size
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise SpikelineError(f"size must be an int or (H, W), got {size!r}")
    return (int(size[0]), int(size[1]))


def load_dataset(name: str, split: str, *, data_dir: str | Path | None = None,
                 T: int | None = None, size: int | tuple[int, int] | None = None,
                 augment: bool = False, cache_dir: str | Path | None = None,
                 seed: int = 0) -> FrameDataset:
    """Dataset ``name`` (a key of :data:`DATASETS`), ``split`` "train" or "test".

    ``data_dir``: the folder holding downloaded datasets (default ``$SPIKELINE_DATA`` or
    ``~/data``); ``T``, ``size`` (int or (H, W)): time bins and frame size (defaults from
    :data:`DATASETS`); ``augment``: random roll (up to +-5 px) and, for mirror-symmetric
    datasets (``DatasetInfo.mirror_symmetric``), a left-right flip (p = 0.5);
    ``cache_dir``: frames and generated data (default ``$SPIKELINE_CACHE`` or
    ``~/.cache/spikeline``); ``seed``: the first epoch's augmentation.  The train/test split
    does not depend on it (``SPLIT_SEED``).
    """
    if name not in DATASETS:
        raise SpikelineError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise SpikelineError(f"unknown split {split!r} for {name}; expected 'train' or 'test'")
    info = DATASETS[name]
    try:
        to_frames = ToFrames(T if T is not None else info.default_T, _frame_size(size, info))
    except ValueError as err:
        raise SpikelineError(f"{name}: {err}") from None
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    samples = _MODULES[name].load_samples(split, data_dir, cache_dir, SPLIT_SEED)
    cache = FrameCache(cache_dir / "frames", name, to_frames.config(),
                       to_frames.output_shape(info.sensor_size[2]))
    augmentation = RandomFlipRoll(flip_p=0.5 if info.mirror_symmetric else 0.0)
    return FrameDataset(name, samples, to_frames, cache, augmentation if augment else None, seed)


class _EpochSeededLoader(DataLoader):
    """A DataLoader that gives the dataset a fresh augmentation seed at the start of each epoch,
    drawn from its own seeded generator, before workers (re-created per epoch) copy it."""

    def __init__(self, *args, epoch_seeds: np.random.Generator, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_seeds = epoch_seeds

    def __iter__(self):
        epoch_seed = int(self.epoch_seeds.integers(2**63))
        if hasattr(self.dataset, "reseed"):
            self.dataset.reseed(epoch_seed)
        return super().__iter__()


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, workers: int = 0,
                seed: int = 0, drop_last: bool = False, collate_fn=None) -> DataLoader:
    """Batches ``(x [N, T, 2, H, W] float32, y [N] int64)`` of ``dataset``, reproducible: the
    shuffle order comes from a ``torch.Generator`` seeded with ``seed`` and each epoch's
    augmentation from a numpy generator seeded with ``seed``, so two loaders with the same seed
    yield identical epochs, with any number of ``workers`` (Torch seeds numpy in each worker
    itself).  ``collate_fn``: how samples are batched (default torch's; detection sets pass
    ``detection.detection_collate``)."""
    return _EpochSeededLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                              num_workers=workers, drop_last=drop_last, collate_fn=collate_fn,
                              generator=torch.Generator().manual_seed(seed),
                              epoch_seeds=np.random.default_rng(seed))


def fixed_subset(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` samples of a fixed random permutation (the same for every run), so a
    small subset still covers all classes."""
    if limit is None or limit <= 0 or limit >= len(dataset):
        return dataset
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return Subset(dataset, sorted(perm[:limit].tolist()))


def _labels(dataset: Dataset) -> np.ndarray:
    if isinstance(dataset, Subset):
        return _labels(dataset.dataset)[np.asarray(dataset.indices)]
    return np.asarray(dataset.labels)


@dataclass
class Splits:
    """Training, validation and test sets of one dataset, and what the model needs to know.

    ``val`` is carved from the training split: ``val_fraction`` of each class, drawn with
    ``SPLIT_SEED`` (fixed, independent of the run's seed), served without augmentation.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int


def load_splits(name: str, *, T: int | None = None, size=None, augment: bool = True,
                val_fraction: float = 0.1, limit_train: int | None = None,
                limit_test: int | None = None, data_dir=None, cache_dir=None,
                seed: int = 0) -> Splits:
    """``Splits`` of dataset ``name``: ``limit_train`` caps the training set (after the
    validation set is carved out), ``limit_test`` the validation and the test sets."""
    kwargs = {"data_dir": data_dir, "T": T, "size": size, "cache_dir": cache_dir, "seed": seed}
    train_aug = load_dataset(name, "train", augment=augment, **kwargs)
    train_plain = load_dataset(name, "train", augment=False, **kwargs) if augment else train_aug
    test = load_dataset(name, "test", augment=False, **kwargs)
    try:
        fit, val = stratified_split(train_aug.labels, val_fraction, SPLIT_SEED)
    except ValueError as err:
        raise SpikelineError(f"--val-fraction: {err}") from None
    if len(fit) == 0 or len(val) == 0:
        raise SpikelineError(f"{name}: the training split ({len(train_aug)} samples) is too small "
                             f"to hold out a validation fraction of {val_fraction}")
    return Splits(train=fixed_subset(Subset(train_aug, fit.tolist()), limit_train),
                  val=fixed_subset(Subset(train_plain, val.tolist()), limit_test),
                  test=fixed_subset(test, limit_test),
                  num_classes=DATASETS[name].num_classes)
