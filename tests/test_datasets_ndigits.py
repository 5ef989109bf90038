"""The DVS emulator, the embedded ndigits set, splits and the seeded loaders."""
import numpy as np
import pytest
import torch

from spikeline.datasets import ndigits
from spikeline.datasets.emulator import SaccadeEmulator
from spikeline.datasets.registry import DATASETS, load_dataset, make_loader
from spikeline.datasets.samples import stratified_split
from spikeline.errors import SpikelineError


@pytest.fixture(scope="module")
def few_digits():
    images, labels = ndigits.digit_images()
    return images[:20], labels[:20]


def test_emulator_is_deterministic_per_seed(few_digits):
    images, _ = few_digits
    emulator = SaccadeEmulator()
    events, offsets = emulator(images, seed=3)
    again, offsets_again = emulator(images, seed=3)
    other, _ = emulator(images, seed=4)
    np.testing.assert_array_equal(events, again)
    np.testing.assert_array_equal(offsets, offsets_again)
    assert len(other) != len(events) or not np.array_equal(other, events)


def test_emulator_events_look_like_nmnist(few_digits):
    images, _ = few_digits
    events, offsets = SaccadeEmulator()(images, seed=0)
    assert offsets[0] == 0 and offsets[-1] == len(events) and len(offsets) == 21
    per_digit = np.diff(offsets)
    assert 2000 < per_digit.mean() < 8000  # N-MNIST: ~4,000 per digit
    for i in range(20):
        digit = events[offsets[i]:offsets[i + 1]]
        assert np.all(np.diff(digit["t"]) >= 0)
        assert digit["t"].min() >= 0 and digit["t"].max() <= 300_000  # three 100 ms saccades
        assert 0.3 < digit["p"].mean() < 0.7  # edges pass both ways: ON and OFF
    assert events["x"].max() < 34 and events["y"].max() < 34 and events["x"].min() >= 0


def test_emulator_threshold_rule_on_a_step():
    """A pixel going from dark to bright emits floor(dlog / C) ON events (no mismatch)."""
    image = np.zeros((1, 3, 3), np.float32)
    image[0, :, 0] = 1.0  # a bright column that moves right by exactly 1 px
    emulator = SaccadeEmulator(sensor_size=(6, 3), path=((0.0, 0.0), (1.0, 0.0)),
                               steps_per_saccade=1, threshold_sigma=0.0)
    events, _ = emulator(image, seed=0)
    contrast = np.log(1 + emulator.eps) - np.log(emulator.eps)
    expected_on = int(np.floor(contrast / emulator.threshold))
    on, off = events[events["p"] == 1], events[events["p"] == 0]
    assert len(on) == len(off) == 3 * expected_on  # 3 rows: new column lights, old one darkens
    # crossing times are interpolated within the 100 ms step: evenly spread levels
    assert len(np.unique(on["t"])) == expected_on


def test_stratified_split_is_seeded_and_proportional():
    labels = np.repeat(np.arange(10), 1000)
    train, test = stratified_split(labels, 0.1, seed=0)
    assert np.array_equal(np.bincount(labels[test]), np.full(10, 100))  # CIFAR10-DVS: 900/100
    assert np.array_equal(np.bincount(labels[train]), np.full(10, 900))
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 10_000
    again, _ = stratified_split(labels, 0.1, seed=0)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(stratified_split(labels, 0.1, seed=1)[1], test)


def test_ndigits_dataset(ndigits_cache):
    train = load_dataset("ndigits", "train", cache_dir=ndigits_cache)
    test = load_dataset("ndigits", "test", cache_dir=ndigits_cache)
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert np.all(np.abs(np.bincount(test.labels) / np.bincount(train.labels) - 0.25) < 0.02)
    frames, label = train[0]
    assert frames.shape == (10, 2, 34, 34) and frames.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    assert frames.sum() > 1000
    assert (ndigits_cache / "ndigits").is_dir() and (ndigits_cache / "frames").is_dir()
    resized, _ = load_dataset("ndigits", "train", T=4, size=16, cache_dir=ndigits_cache)[0]
    assert resized.shape == (4, 2, 16, 16)
    np.testing.assert_allclose(resized.sum(), frames.sum(), rtol=1e-5)
    same_split = load_dataset("ndigits", "test", cache_dir=ndigits_cache, seed=1)
    assert np.array_equal(same_split.samples.indices, test.samples.indices)  # seed-independent


def test_validation_split_is_fixed_disjoint_and_unaugmented(ndigits_cache):
    from spikeline.datasets.registry import load_splits

    a = load_splits("ndigits", T=4, cache_dir=ndigits_cache, seed=0)
    b = load_splits("ndigits", T=4, cache_dir=ndigits_cache, seed=7)
    assert a.val.indices == b.val.indices and a.train.indices == b.train.indices
    assert not set(a.val.indices) & set(a.train.indices)
    assert len(a.val) == pytest.approx(0.1 * (len(a.val) + len(a.train)), abs=10)
    assert a.val.dataset.augment is None and a.train.dataset.augment is not None
    assert torch.equal(a.val[0][0], b.val[0][0])


def test_ndigits_corrupt_event_cache_is_regenerated(tmp_path, monkeypatch):
    calls = []
    small = ndigits.NDigitsEvents(t=np.array([0, 5], np.uint32), x=np.array([1, 2], np.uint8),
                                  y=np.array([1, 2], np.uint8), p=np.array([0, 1], np.uint8),
                                  offsets=np.array([0, 2]), labels=np.array([3]))
    monkeypatch.setattr(ndigits, "generate", lambda: calls.append(1) or small)
    ndigits.load_events(tmp_path)
    ndigits.load_events(tmp_path)
    assert len(calls) == 1
    stored = next((tmp_path / "ndigits").glob("events-*.npz"))
    stored.write_bytes(stored.read_bytes()[:50])
    data = ndigits.load_events(tmp_path)
    assert len(calls) == 2 and data.stream(0).events["x"].tolist() == [1, 2]


def test_loader_batches_and_reproducibility(ndigits_cache):
    dataset = load_dataset("ndigits", "test", augment=True, cache_dir=ndigits_cache)
    first = [b for b, _ in zip(make_loader(dataset, 16, shuffle=True, seed=5), range(3))]
    x, y = first[0]
    assert x.shape == (16, 10, 2, 34, 34) and x.dtype == torch.float32 and y.dtype == torch.int64
    second = [b for b, _ in zip(make_loader(dataset, 16, shuffle=True, seed=5), range(3))]
    for (xa, ya), (xb, yb) in zip(first, second):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = next(iter(make_loader(dataset, 16, shuffle=True, seed=6)))
    assert not torch.equal(other[0], x)


def test_augmentation_changes_per_epoch_not_per_worker_count(ndigits_cache):
    dataset = load_dataset("ndigits", "test", augment=True, cache_dir=ndigits_cache)
    subset = torch.utils.data.Subset(dataset, range(24))
    subset.reseed = dataset.reseed  # Subset hides it; the loader calls it per epoch

    def epochs(workers):
        loader = make_loader(subset, 8, shuffle=False, workers=workers, seed=9)
        return [torch.cat([x for x, _ in loader]) for _ in range(2)]

    serial = epochs(0)
    assert not torch.equal(serial[0], serial[1])  # new flips/rolls each epoch
    parallel = epochs(2)
    assert torch.equal(serial[0], parallel[0]) and torch.equal(serial[1], parallel[1])


def test_registry_and_errors(ndigits_cache):
    assert set(DATASETS) == {"ndigits", "nmnist", "dvsgesture", "cifar10dvs"}
    info = DATASETS["cifar10dvs"]
    assert (info.num_classes, info.default_size, info.default_T) == (10, (48, 48), 10)
    assert DATASETS["dvsgesture"].num_classes == 11 and DATASETS["ndigits"].url is None
    with pytest.raises(SpikelineError, match="unknown dataset 'mnist'"):
        load_dataset("mnist", "train")
    with pytest.raises(SpikelineError, match="unknown split 'val'"):
        load_dataset("ndigits", "val", cache_dir=ndigits_cache)
    with pytest.raises(SpikelineError, match="n_time_bins"):
        load_dataset("ndigits", "train", T=0, cache_dir=ndigits_cache)
