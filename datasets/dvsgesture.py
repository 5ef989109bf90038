"""IBM DVS Gesture (Amir et al. 2017): 11 hand and arm gestures by 29 people under 3 lightings,
DVS128 (128x128); 1,077 train / 264 test samples (the dataset's own split by person).

Read through ``tonic.datasets.DVSGesture``: Tonic's preprocessed release, one ``.npy`` per
gesture (columns x, y, p, t in ms), files sorted by path.
"""
from __future__ import annotations

from pathlib import Path

from .samples import DatasetInfo
from .tonic_offline import TonicSamples, open_offline, sorted_order

# tonic.datasets.DVSGesture.train_url / test_url (kept here so that listing datasets does not
# import Tonic)
URLS = {"train": "https://figshare.com/ndownloader/files/38022171",
        "test": "https://figshare.com/ndownloader/files/38020584"}
INFO = DatasetInfo(name="dvsgesture", num_classes=11, sensor_size=(128, 128, 2),
                   default_size=(48, 48), default_T=20, url=URLS["train"])
_ARCHIVE = {"train": "ibmGestureTrain", "test": "ibmGestureTest"}


def _where_to_get(split: str):
    folder = _ARCHIVE[split]

    def message(location: Path) -> str:
        return (f"DVS Gesture {split} set not found in {location}: Tonic expects "
                f"{location / (folder + '.tar.gz')} and at least 100 .npy files under "
                f"{location / folder}/user<NN>_<lighting>/.  Download {URLS[split]} as "
                f"{location / (folder + '.tar.gz')} and extract it there.  Pass the folder "
                f"above DVSGesture/ as --data-dir.")
    return message


def load_samples(split: str, data_dir: Path, cache_dir: Path, seed: int) -> TonicSamples:
    """DVS Gesture's own ``split`` under ``data_dir``; ``cache_dir`` and ``seed`` are unused."""
    from tonic.datasets import DVSGesture  # lazy: tonic, 0.6 s (measured)

    dataset = open_offline(DVSGesture, data_dir, _where_to_get(split), train=split == "train")
    return TonicSamples(dataset, sorted_order(dataset), data_dir)
