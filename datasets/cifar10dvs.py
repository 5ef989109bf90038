"""CIFAR10-DVS (Li et al. 2017): 10,000 DVS128 recordings of CIFAR-10 images, 10 classes.

Read through ``tonic.datasets.CIFAR10DVS`` (AEDAT4 files, decoded by the ``aedat`` package).
The dataset has no official split.  ``load_samples`` makes a fixed per-class one: over the files
sorted by path, the first 90% of each class train and the last 10% test (9,000 / 1,000 = the
first 900 / last 100 of each class, the paper's proportions).  No seed moves it.
"""
from __future__ import annotations

from pathlib import Path

from .samples import DatasetInfo, per_class_head_split
from .tonic_offline import TonicSamples, open_offline, sorted_order

# tonic.datasets.CIFAR10DVS.url (kept here so that listing datasets does not import Tonic)
INFO = DatasetInfo(name="cifar10dvs", num_classes=10, sensor_size=(128, 128, 2),
                   default_size=(48, 48), default_T=10,
                   url="https://figshare.com/ndownloader/files/38023437",
                   mirror_symmetric=True)
TEST_FRACTION = 0.1
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def where_to_get(location: Path) -> str:
    return (f"CIFAR10-DVS not found in {location}: Tonic expects {location / 'CIFAR10DVS.zip'} "
            f"and at least 1000 .aedat4 recordings in class folders {location}/airplane/ ... "
            f"{location}/truck/.  Download {INFO.url} as {location / 'CIFAR10DVS.zip'}, unzip it "
            f"there, then unzip each class archive ({', '.join(c + '.zip' for c in CLASSES)}) "
            f"in the same folder.  Pass the folder above CIFAR10DVS/ as --data-dir.")


def load_samples(split: str, data_dir: Path, cache_dir: Path, seed: int) -> TonicSamples:
    """``split`` of CIFAR10-DVS under ``data_dir``; ``cache_dir`` and ``seed`` are unused (the
    split is fixed)."""
    from tonic.datasets import CIFAR10DVS  # lazy: tonic, 0.6 s (measured)

    dataset = open_offline(CIFAR10DVS, data_dir, where_to_get)
    order = sorted_order(dataset)
    labels = [dataset.targets[i] for i in order]
    train, test = per_class_head_split(labels, 1.0 - TEST_FRACTION)
    return TonicSamples(dataset, order[train if split == "train" else test], data_dir)
