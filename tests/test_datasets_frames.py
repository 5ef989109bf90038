"""Binning against a slow reference, resizing, flip/roll augmentation."""
import numpy as np
import pytest
from conftest import random_events

from spikeline.datasets.events import EventStream, make_events
from spikeline.datasets.frames import (RandomFlipRoll, ToFrames, events_to_frames, flip_roll,
                                       resize_frames)


def reference_frames(events, sensor_size, n_bins):
    """np.histogramdd over (t, p, y, x) with n_bins equal slices of [t_first, t_last]: half-open
    bins, the last one closed, i.e. the rule events_to_frames documents."""
    width, height, polarities = sensor_size
    t = events["t"].astype(np.float64)
    edges = [np.linspace(t.min(), t.max(), n_bins + 1), np.arange(polarities + 1) - 0.5,
             np.arange(height + 1) - 0.5, np.arange(width + 1) - 0.5]
    sample = np.stack([t, events["p"], events["y"], events["x"]], axis=1).astype(np.float64)
    counts, _ = np.histogramdd(sample, bins=edges)
    return counts.astype(np.int64)


@pytest.mark.parametrize("seed, n_bins", [(0, 10), (1, 7), (2, 1), (3, 25)])
def test_binning_equals_histogramdd_on_random_events(seed, n_bins):
    t, x, y, p = random_events(20_000, 23, 17, seed=seed, duration_us=987_653)
    events = make_events(t + 1_600_000_000_000_000, x, y, p)  # absolute epoch times
    frames = events_to_frames(events, (23, 17, 2), n_bins)
    assert frames.shape == (n_bins, 2, 17, 23)
    np.testing.assert_array_equal(frames, reference_frames(events, (23, 17, 2), n_bins))
    assert frames.sum() == len(events)


def test_events_on_bin_edges_and_the_last_event():
    # t0 = 100, t1 = 1100, T = 4: edges at 100, 350, 600, 850, 1100
    t = np.array([100, 349, 350, 599, 600, 849, 850, 1099, 1100, 1100])
    events = make_events(t, np.arange(10) % 3, np.zeros(10), np.arange(10) % 2)
    frames = events_to_frames(events, (3, 1, 2), 4)
    np.testing.assert_array_equal(frames.sum(axis=(1, 2, 3)), [2, 2, 2, 4])
    np.testing.assert_array_equal(frames, reference_frames(events, (3, 1, 2), 4))
    assert frames[3, 1, 0, 0] == 1  # the last event (t1, x = 0, ON) is in the last bin


def test_tonic_drops_the_last_event_we_do_not():
    from tonic.transforms import ToFrame

    t, x, y, p = random_events(5000, 16, 16, seed=4)
    events = make_events(t, x, y, p)
    ours = events_to_frames(events, (16, 16, 2), 5)
    tonic_events = np.zeros(len(t), dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    for field in "xytp":
        tonic_events[field] = events[field]
    theirs = ToFrame(sensor_size=(16, 16, 2), n_time_bins=5)(tonic_events)
    assert ours.sum() == len(events)
    assert theirs.sum() < len(events)


def test_single_timestamp_and_empty_streams():
    events = make_events([7, 7, 7], [0, 1, 1], [0, 0, 1], [1, 1, 0])
    frames = events_to_frames(events, (2, 2, 2), 3)
    assert frames[0].sum() == 3 and frames[1:].sum() == 0
    assert events_to_frames(events[:0], (2, 2, 2), 3).shape == (3, 2, 2, 2)


def test_area_resize_sums_blocks_for_integer_factors():
    frames = np.random.default_rng(0).integers(0, 9, (3, 2, 8, 12)).astype(np.float32)
    resized = resize_frames(frames, (4, 3))
    blocks = frames.reshape(3, 2, 4, 2, 3, 4).sum(axis=(3, 5))
    np.testing.assert_allclose(resized, blocks, rtol=1e-6)


def test_area_resize_128_to_48_keeps_totals_and_is_not_coordinate_truncation():
    frames = np.zeros((2, 2, 128, 128), np.float32)
    frames[0, 1, :, 64] = 1.0  # one bright column
    frames[1] = np.random.default_rng(1).integers(0, 5, (2, 128, 128))
    resized = resize_frames(frames, (48, 48))
    assert resized.shape == (2, 2, 48, 48) and resized.dtype == np.float32
    np.testing.assert_allclose(resized.sum(axis=(-2, -1)), frames.sum(axis=(-2, -1)), rtol=1e-5)
    # column 64 covers [64, 65) -> output columns of width 128/48 = 2.667: all of it in column 24
    column = resized[0, 1]
    np.testing.assert_allclose(column[:, 24], 128 / 48, rtol=1e-5)
    assert column[:, :24].sum() == 0 and column[:, 25:].sum() == 0
    # a uniform frame stays uniform (no striping): every output pixel gets (128/48)^2
    uniform = resize_frames(np.ones((1, 1, 128, 128), np.float32), (48, 48))
    np.testing.assert_allclose(uniform, (128 / 48) ** 2, rtol=1e-5)


def test_bilinear_resize_keeps_totals_approximately():
    frames = np.random.default_rng(2).integers(0, 5, (2, 2, 128, 128)).astype(np.float32)
    resized = resize_frames(frames, (48, 48), mode="bilinear")
    assert resized.shape == (2, 2, 48, 48)
    np.testing.assert_allclose(resized.sum(), frames.sum(), rtol=0.02)
    with pytest.raises(ValueError, match="resize mode"):
        resize_frames(frames, (48, 48), mode="nearest")


def test_flip_and_roll():
    frames = np.arange(2 * 3 * 4).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(flip_roll(frames, True, 0, 0), frames[..., ::-1])
    rolled = flip_roll(frames, False, 1, -1)
    assert rolled[0, 0, 0, 1] == frames[0, 0, 1, 0]  # x + 1, y - 1, with wrap-around
    np.testing.assert_array_equal(rolled, np.roll(np.roll(frames, 1, -1), -1, -2))
    both = flip_roll(frames, True, 2, 1)
    np.testing.assert_array_equal(both, np.roll(frames[..., ::-1], (1, 2), axis=(-2, -1)))


def test_random_flip_roll_is_reproducible_and_within_range():
    frames = np.random.default_rng(3).random((2, 2, 20, 20))
    augment = RandomFlipRoll()
    same = [augment(frames, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(*same)
    flips, shifts = 0, set()
    for seed in range(200):
        out = augment(frames, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)  # replay the draws the transform makes
        flip = rng.random() < 0.5
        dx, dy = rng.integers(-5, 6, size=2)
        np.testing.assert_array_equal(out, flip_roll(frames, flip, dx, dy))
        flips += flip
        shifts.update((int(dx), int(dy)))
    assert 70 < flips < 130
    assert min(shifts) == -5 and max(shifts) == 5
    with pytest.raises(ValueError):
        RandomFlipRoll(flip_p=1.5)


def test_to_frames_config_and_shape():
    t, x, y, p = random_events(1000, 128, 128, seed=5)
    stream = EventStream(make_events(t, x, y, p), (128, 128, 2))
    to_frames = ToFrames(10, (48, 48))
    frames = to_frames(stream)
    assert frames.shape == to_frames.output_shape() == (10, 2, 48, 48)
    np.testing.assert_allclose(frames.sum(), 1000, rtol=1e-5)
    assert to_frames.config() != ToFrames(10, (32, 32)).config()
    assert to_frames.config() != ToFrames(9, (48, 48)).config()
    assert to_frames.config() != ToFrames(10, (48, 48), "bilinear").config()
    with pytest.raises(ValueError, match="n_time_bins"):
        ToFrames(0, (4, 4))
