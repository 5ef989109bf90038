"""CIFAR10-DVS, N-MNIST and DVS Gesture through Tonic's real dataset classes, on a handful of
genuine-format files in tmp dirs (Tonic's _check_exists, which wants the full datasets, is
monkeypatched)."""
import numpy as np
import pytest
import torch
from conftest import random_events, write_aedat4, write_dvsgesture_npy, write_nmnist_bin

from spikeline.datasets import cifar10dvs, dvsgesture, nmnist
from spikeline.datasets.registry import load_dataset
from spikeline.errors import SpikelineError


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    import tonic

    monkeypatch.setattr(tonic.datasets.CIFAR10DVS, "_check_exists", lambda self: True)
    for label, name in enumerate(cifar10dvs.CLASSES):
        folder = tmp_path / "CIFAR10DVS" / name
        folder.mkdir(parents=True)
        for k in (3, 0, 9, 1, 5, 2, 8, 4, 7, 6):  # creation order differs from name order
            t, x, y, p = random_events(300, 128, 128, seed=100 * label + k)
            write_aedat4(folder / f"cifar10_{name}_{k}.aedat4", t, x, y, p)
    return tmp_path


def test_cifar10dvs_through_tonic(cifar_dir, tmp_path):
    cache = tmp_path / "cache"
    train = load_dataset("cifar10dvs", "train", data_dir=cifar_dir, cache_dir=cache)
    test = load_dataset("cifar10dvs", "test", data_dir=cifar_dir, cache_dir=cache)
    assert (len(train), len(test)) == (90, 10)
    np.testing.assert_array_equal(np.bincount(test.labels), np.ones(10))  # 10% of each class
    # fixed split: the first 90% of each class (in sorted file order) train, the rest test
    for label in range(10):
        class_train = [train.samples.path(i) for i in range(len(train))
                       if train.labels[i] == label]
        class_test = [test.samples.path(i) for i in range(len(test)) if test.labels[i] == label]
        assert max(class_train) < min(class_test)
    paths = [train.samples.path(i) for i in range(len(train))]
    assert paths == sorted(paths)  # Tonic lists in filesystem order; we sort
    assert not set(paths) & {test.samples.path(i) for i in range(len(test))}
    frames, label = train[0]
    assert frames.shape == (10, 2, 48, 48) and frames.dtype == torch.float32
    assert label == 0 and abs(float(frames.sum()) - 300) < 1e-3
    again = load_dataset("cifar10dvs", "test", data_dir=cifar_dir, cache_dir=cache)
    assert [again.samples.path(i) for i in range(10)] == [test.samples.path(i) for i in range(10)]
    other_seed = load_dataset("cifar10dvs", "test", data_dir=cifar_dir, cache_dir=cache, seed=1)
    assert [other_seed.samples.path(i) for i in range(10)] == \
        [test.samples.path(i) for i in range(10)]  # the training seed never moves the split


def test_replaced_recording_is_not_served_from_cache(cifar_dir, tmp_path):
    dataset = load_dataset("cifar10dvs", "train", data_dir=cifar_dir, cache_dir=tmp_path / "c")
    before = dataset[0][0]
    t, x, y, p = random_events(50, 128, 128, seed=999)
    write_aedat4(dataset.samples.path(0), t, x, y, p)
    assert abs(float(dataset[0][0].sum()) - 50) < 1e-3 and float(before.sum()) > 50


def test_corrupt_recording_names_the_file(cifar_dir, tmp_path):
    dataset = load_dataset("cifar10dvs", "train", data_dir=cifar_dir, cache_dir=tmp_path / "c")
    path = dataset.samples.path(3)
    with open(path, "r+b") as file:
        file.truncate(200)
    with pytest.raises(SpikelineError, match=path.replace(".", r"\.")):
        dataset[3]


def test_nmnist_through_tonic(tmp_path, monkeypatch):
    import tonic

    monkeypatch.setattr(tonic.datasets.NMNIST, "_check_exists", lambda self: True)
    for split, folder in (("train", "Train"), ("test", "Test")):
        for digit in range(10):
            (tmp_path / "NMNIST" / folder / str(digit)).mkdir(parents=True)
            for k in range(2 if split == "train" else 1):
                t, x, y, p = random_events(200, 34, 34, seed=digit * 10 + k,
                                           duration_us=300_000)
                write_nmnist_bin(tmp_path / "NMNIST" / folder / str(digit) / f"{k:05d}.bin",
                                 t, x, y, p)
    train = load_dataset("nmnist", "train", data_dir=tmp_path, cache_dir=tmp_path / "c")
    test = load_dataset("nmnist", "test", data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert (len(train), len(test)) == (20, 10)
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(10), 2))
    frames, label = test[7]
    assert label == 7 and frames.shape == (10, 2, 34, 34) and float(frames.sum()) == 200


def test_dvsgesture_through_tonic(tmp_path, monkeypatch):
    import tonic

    monkeypatch.setattr(tonic.datasets.DVSGesture, "_check_exists", lambda self: True)
    for user in ("user02_led", "user01_fluorescent"):
        folder = tmp_path / "DVSGesture" / "ibmGestureTrain" / user
        folder.mkdir(parents=True)
        for gesture in range(11):
            t_ms, x, y, p = random_events(400, 128, 128, seed=gesture, duration_us=6000)
            write_dvsgesture_npy(folder / f"{gesture}.npy", t_ms, x, y, p)
    train = load_dataset("dvsgesture", "train", data_dir=tmp_path, cache_dir=tmp_path / "c",
                         T=20, size=(32, 32))
    assert len(train) == 22
    assert "user01_fluorescent" in train.samples.path(0)
    by_name = sorted(f"{gesture}.npy" for gesture in range(11))  # path order: 0, 1, 10, 2...
    assert train.labels[:11].tolist() == [int(name[:-4]) for name in by_name]
    frames, label = train[3]
    assert frames.shape == (20, 2, 32, 32) and label == train.labels[3]
    np.testing.assert_allclose(float(frames.sum()), 400, rtol=1e-5)


@pytest.mark.parametrize("name, split, url, expected_path", [
    ("cifar10dvs", "train", cifar10dvs.INFO.url, "CIFAR10DVS/CIFAR10DVS.zip"),
    ("nmnist", "test", nmnist.URLS["test"], "NMNIST/test.zip"),
    ("dvsgesture", "train", dvsgesture.URLS["train"], "DVSGesture/ibmGestureTrain.tar.gz"),
])
def test_missing_data_says_where_to_get_it_and_where_to_put_it(tmp_path, name, split, url,
                                                               expected_path):
    with pytest.raises(SpikelineError) as error:
        load_dataset(name, split, data_dir=tmp_path, cache_dir=tmp_path / "c")
    message = str(error.value)
    assert url in message and str(tmp_path / expected_path) in message
    assert not list(tmp_path.rglob("*.zip")) and not list(tmp_path.rglob("*.tar.gz"))


def test_urls_match_tonic():
    import tonic

    assert cifar10dvs.INFO.url == tonic.datasets.CIFAR10DVS.url
    assert nmnist.URLS == {"train": tonic.datasets.NMNIST.train_url,
                           "test": tonic.datasets.NMNIST.test_url}
    assert dvsgesture.URLS == {"train": tonic.datasets.DVSGesture.train_url,
                               "test": tonic.datasets.DVSGesture.test_url}
    assert tuple(tonic.datasets.CIFAR10DVS.classes) == cifar10dvs.CLASSES
