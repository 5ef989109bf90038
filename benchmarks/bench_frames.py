"""Event binning against Tonic's ToFrame, and a cached against an uncached epoch.

Run: ``.venv/bin/python benchmarks/bench_frames.py`` (one JSON line per measurement).

1. ``events_to_frames`` vs ``tonic.transforms.ToFrame(sensor_size=(128, 128, 2),
   n_time_bins=10)`` on 1e5, 3e5 and 1e6 uniformly random events (each in its own input
   layout), best of several runs: ``events``, ``ours_mev_s``, ``tonic_mev_s``, ``ratio``.
2. One pass of ``dataset[i]`` over the ndigits train split (1,438 samples, T=10, 34x34) with
   no frame cache (events -> frames each time) and from a warm frame cache: ``cached_speedup``.
3. The same for a file-backed set, as CIFAR10-DVS is: 40 reads of the real DAVIS346 AEDAT4
   recording (78,830 events; LZ4 decoding) binned to T=10 and resized to 48x48.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from spikeline.datasets.cache import FrameCache
from spikeline.datasets.events import make_events, read_events
from spikeline.datasets.frames import ToFrames, events_to_frames
from spikeline.datasets.registry import FrameDataset, load_dataset
from timing import best_of

SENSOR = (128, 128, 2)
N_BINS = 10
AEDAT4 = Path(__file__).resolve().parents[2] / "shared/data/events/davis346_street.aedat4"


def bench_binning() -> None:
    from tonic.transforms import ToFrame

    to_frame = ToFrame(sensor_size=SENSOR, n_time_bins=N_BINS)
    rng = np.random.default_rng(0)
    for n in (100_000, 300_000, 1_000_000):
        t = np.sort(rng.integers(0, 1_000_000, n))
        x, y, p = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
        ours_input = make_events(t, x, y, p)
        tonic_input = np.zeros(n, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
        tonic_input["x"], tonic_input["y"], tonic_input["t"], tonic_input["p"] = x, y, t, p
        ours = best_of(lambda: events_to_frames(ours_input, SENSOR, N_BINS), 7)[0]
        tonic = best_of(lambda: to_frame(tonic_input), 3)[0]
        print(json.dumps({"events": n, "ours_mev_s": round(n / ours / 1e6, 1),
                          "tonic_mev_s": round(n / tonic / 1e6, 1),
                          "ratio": round(tonic / ours, 1)}), flush=True)


def epoch_seconds(dataset, indices, repeats: int = 3) -> float:
    return best_of(lambda: [dataset[i] for i in indices], repeats)[0]


def compare_epochs(label: str, uncached: FrameDataset, cached: FrameDataset) -> None:
    indices = range(len(cached))
    epoch_seconds(cached, indices, repeats=1)  # fills the cache
    seconds_uncached = epoch_seconds(uncached, indices)
    seconds_cached = epoch_seconds(cached, indices)
    print(json.dumps({"epoch": label, "samples": len(cached),
                      "uncached_s": round(seconds_uncached, 3),
                      "cached_s": round(seconds_cached, 3),
                      "cached_speedup": round(seconds_uncached / seconds_cached, 1)}), flush=True)


class RepeatedRecording:
    """``copies`` samples that all read one recording (EventSamples protocol)."""

    def __init__(self, path: Path, copies: int):
        self.path, self.labels = path, np.zeros(copies, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def sample_id(self, index: int) -> str:
        return f"{self.path.name}#{index}"

    def read(self, index: int):
        return read_events(self.path)


def bench_epochs(cache_dir: Path) -> None:
    cached = load_dataset("ndigits", "train", cache_dir=cache_dir)
    uncached = FrameDataset("ndigits", cached.samples, cached.to_frames, cache=None)
    compare_epochs("ndigits train, T=10, 34x34", uncached, cached)
    if AEDAT4.is_file():
        samples, to_frames = RepeatedRecording(AEDAT4, 40), ToFrames(N_BINS, (48, 48))
        cache = FrameCache(cache_dir / "frames", "aedat4", to_frames.config(),
                           to_frames.output_shape())
        compare_epochs("DAVIS346 AEDAT4 x40, T=10, 48x48",
                       FrameDataset("aedat4", samples, to_frames, cache=None),
                       FrameDataset("aedat4", samples, to_frames, cache=cache))


def main() -> None:
    bench_binning()
    cache_dir = Path(tempfile.mkdtemp(prefix="spikeline-bench-"))
    try:
        bench_epochs(cache_dir)
    finally:
        shutil.rmtree(cache_dir)


if __name__ == "__main__":
    main()
