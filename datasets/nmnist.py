"""N-MNIST (Orchard et al. 2015): MNIST digits recorded by an ATIS camera in three saccades,
34x34, 60,000 train / 10,000 test recordings (N-MNIST's own split).

Read through ``tonic.datasets.NMNIST`` (40-bit ``.bin`` files), files sorted by path.
"""
from __future__ import annotations

from pathlib import Path

from .samples import DatasetInfo
from .tonic_offline import TonicSamples, open_offline, sorted_order

_BASE_URL = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
# tonic.datasets.NMNIST.train_url / test_url (kept here so that listing datasets does not
# import Tonic)
URLS = {"train": _BASE_URL + "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",
        "test": _BASE_URL + "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded"}
INFO = DatasetInfo(name="nmnist", num_classes=10, sensor_size=(34, 34, 2), default_size=(34, 34),
                   default_T=10, url=URLS["train"])
_ARCHIVE = {"train": ("train.zip", "Train", 10000), "test": ("test.zip", "Test", 10000)}


def _where_to_get(split: str):
    archive, folder, minimum = _ARCHIVE[split]

    def message(location: Path) -> str:
        return (f"N-MNIST {split} set not found in {location}: Tonic expects "
                f"{location / archive} and at least {minimum} .bin recordings under "
                f"{location / folder}/<digit>/.  Download {URLS[split]} as {location / archive} "
                f"and unzip it there.  Pass the folder above NMNIST/ as --data-dir.")
    return message


def load_samples(split: str, data_dir: Path, cache_dir: Path, seed: int) -> TonicSamples:
    """N-MNIST's own ``split`` under ``data_dir``; ``cache_dir`` and ``seed`` are unused."""
    from tonic.datasets import NMNIST  # lazy: tonic, 0.6 s (measured)

    dataset = open_offline(NMNIST, data_dir, _where_to_get(split), train=split == "train")
    return TonicSamples(dataset, sorted_order(dataset), data_dir)
