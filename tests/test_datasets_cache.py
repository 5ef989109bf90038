"""The frame cache: keys follow the transform config, writes are atomic, corrupt entries are
rebuilt."""
import numpy as np
import pytest

from spikeline.datasets.cache import FrameCache
from spikeline.datasets.frames import ToFrames


def make_cache(root, to_frames=ToFrames(10, (48, 48))):
    return FrameCache(root, "toy", to_frames.config(), to_frames.output_shape())


class Builder:
    def __init__(self, shape=(10, 2, 48, 48)):
        self.calls = 0
        self.shape = shape

    def __call__(self):
        self.calls += 1
        return np.full(self.shape, float(self.calls), np.float32)


def test_hit_after_miss(tmp_path):
    cache, build = make_cache(tmp_path), Builder()
    first = cache.get_or_build("a/1.aedat4", build)
    second = cache.get_or_build("a/1.aedat4", build)
    assert build.calls == 1
    np.testing.assert_array_equal(first, second)
    assert second.flags.writeable
    assert not list(tmp_path.rglob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("other", [ToFrames(5, (48, 48)), ToFrames(10, (32, 32)),
                                   ToFrames(10, (48, 48), "bilinear")])
def test_changing_the_transform_never_serves_stale_frames(tmp_path, other):
    build = Builder()
    make_cache(tmp_path).get_or_build("s", build)
    changed = make_cache(tmp_path, other)
    fresh = changed.get_or_build("s", Builder(other.output_shape()))
    assert fresh.shape == other.output_shape()
    assert make_cache(tmp_path).path("s") != changed.path("s")


def test_keys_depend_on_dataset_and_sample(tmp_path):
    config = ToFrames(10, (48, 48)).config()
    keys = {FrameCache(tmp_path, d, config).key(s) for d in ("a", "b") for s in ("1", "2")}
    assert len(keys) == 4


@pytest.mark.parametrize("damage", [
    lambda b: b[: len(b) // 2],                                    # truncated
    lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:],           # one flipped byte
    lambda b: b"",                                                 # empty
    lambda b: b"garbage" * 10,                                      # not an entry
], ids=["truncated", "bit-flip", "empty", "garbage"])
def test_corrupt_entry_is_rebuilt(tmp_path, damage):
    cache, build = make_cache(tmp_path), Builder()
    cache.get_or_build("s", build)
    path = cache.path("s")
    path.write_bytes(damage(path.read_bytes()))
    assert cache.load("s") is None
    rebuilt = cache.get_or_build("s", build)
    assert build.calls == 2 and rebuilt[0, 0, 0, 0] == 2.0
    np.testing.assert_array_equal(cache.load("s"), rebuilt)  # and stored again


def test_entry_of_another_shape_is_rebuilt(tmp_path):
    cache = make_cache(tmp_path)
    cache.store("s", np.zeros((3, 2, 48, 48), np.float32))
    assert cache.load("s") is None
    assert cache.get_or_build("s", Builder()).shape == (10, 2, 48, 48)


def test_failed_build_leaves_no_entry(tmp_path):
    cache = make_cache(tmp_path)

    def broken():
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("s", broken)
    assert cache.load("s") is None
