"""Training augmentation respects what keeps a class: digits and gestures are never mirrored."""
import numpy as np

from spikeline.datasets.frames import flip_roll
from spikeline.datasets.registry import DATASETS, load_dataset


def test_only_mirror_symmetric_datasets_flip():
    assert DATASETS["cifar10dvs"].mirror_symmetric
    assert not any(DATASETS[n].mirror_symmetric for n in ("ndigits", "nmnist", "dvsgesture"))


def _how(original, augmented, max_shift=5):
    """(flip, dx, dy) that turn ``original`` into ``augmented``, or None."""
    for flip in (False, True):
        for dx in range(-max_shift, max_shift + 1):
            for dy in range(-max_shift, max_shift + 1):
                if np.array_equal(flip_roll(original, flip, dx, dy), augmented):
                    return flip, dx, dy
    return None


def test_ndigits_augmentation_rolls_but_never_flips(ndigits_cache):
    data = load_dataset("ndigits", "train", T=4, augment=True, cache_dir=ndigits_cache)
    seen = []
    for epoch in range(3):
        data.reseed(epoch)
        for i in range(6):
            how = _how(data.frames(i), data[i][0].numpy())
            assert how is not None and how[0] is False, (epoch, i, how)
            seen.append(how[1:])
    assert len(set(seen)) > 1  # it does augment
