"""Events -> frames of event counts, frame resizing and augmentation (pure numpy functions).

Frames are ``[T, P, H, W]`` arrays: time bin, polarity channel (0 = OFF, 1 = ON, as in Tonic's
``ToFrame``), row, column.  :class:`ToFrames` and :class:`RandomFlipRoll` are thin dataclass
wrappers that hold the settings; ``ToFrames.config()`` is what the frame cache keys on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spikeline.errors import check_size

from .events import EventStream

RESIZE_MODES = ("area", "bilinear")


def events_to_frames(events: np.ndarray, sensor_size: tuple[int, int, int],
                     n_time_bins: int) -> np.ndarray:
    """Count events into ``n_time_bins`` equal time slices: int64 array ``[T, P, H, W]``.

    With ``t0 = min(t)``, ``t1 = max(t)`` and ``D = t1 - t0``, event ``i`` goes to bin

        b_i = min(floor(T * (t_i - t0) / D), T - 1)        (b_i = 0 for all events if D = 0)

    computed in exact integer arithmetic.  Bin ``k < T-1`` is the half-open slice ``[t0 + k D/T,
    t0 + (k+1) D/T)`` and the last bin is closed, ``[t0 + (T-1) D/T, t1]``, so
    every event lands in a bin and the last event lands in the last one (Tonic's
    ``ToFrame(n_time_bins=T)`` drops it).  An event exactly on an inner edge goes to the later
    bin, as in ``np.histogramdd``.  Counting is one ``np.bincount`` over the flat index
    ``((b P + p) H + y) W + x``.
    """
    if n_time_bins < 1:
        raise ValueError(f"n_time_bins must be >= 1, got {n_time_bins}")
    width, height, polarities = sensor_size
    cells = polarities * height * width
    check_size((n_time_bins + 1) * cells * 8,
               f"frames of {n_time_bins} bins of a {width}x{height}x{polarities} sensor")
    # One contiguous copy of t, then in-place integer steps: few passes, no float rounding at
    # bin edges.  b = T (the events at t1 only) is counted in an extra bin folded into T - 1,
    # which is cheaper than clipping every index.
    index = np.array(events["t"], dtype=np.int64)
    if len(index):
        t0 = index.min()
        duration = int(index.max() - t0)
        index -= t0
        if duration > 0:
            index *= n_time_bins
            index //= duration
    index *= cells
    spatial = events["p"].astype(np.int32)
    spatial *= height
    spatial += events["y"]
    spatial *= width
    spatial += events["x"]
    index += spatial
    counts = np.bincount(index, minlength=(n_time_bins + 1) * cells)
    counts = counts.reshape(n_time_bins + 1, polarities, height, width)
    counts[n_time_bins - 1] += counts[n_time_bins]
    return counts[:n_time_bins]


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` matrix whose entry (i, j) is the fraction of input pixel j that lies in
    output pixel i, for output pixels of width n_in / n_out input pixels.  Columns sum to 1."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in)[None, :]
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)


def resize_frames(frames: np.ndarray, size: tuple[int, int], mode: str = "area") -> np.ndarray:
    """Resample ``[..., H, W]`` frames of counts to ``[..., h, w]`` float32, keeping the total.

    ``area``: output pixel ``(i, j)`` receives ``sum_{k,l} A_ik F_kl B_jl`` where ``A`` and
    ``B`` hold the fractions of each input row/column that fall in each output row/column
    (exact box resampling, also for non-integer ratios such as 128 -> 48).  Every input count is
    distributed in full, so ``sum`` over H, W is unchanged.
    ``bilinear``: ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``, scaled by
    ``(H W) / (h w)`` so that the interpolated values stay event counts per output pixel.

    Unlike Tonic's ``Downsample`` (which truncates coordinates and stripes the image) both
    resample whole frames.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    height, width = frames.shape[-2:]
    out_h, out_w = size
    if (out_h, out_w) == (height, width):
        return frames.astype(np.float32, copy=False)
    if mode == "area":
        rows = _area_weights(height, out_h).astype(np.float32)
        cols = _area_weights(width, out_w).astype(np.float32)
        return np.ascontiguousarray(rows @ frames.astype(np.float32) @ cols.T)
    lead = frames.shape[:-2]
    flat = torch.from_numpy(frames.astype(np.float32).reshape(-1, 1, height, width))
    resized = F.interpolate(flat, size=(out_h, out_w), mode="bilinear", align_corners=False,
                            antialias=True) * ((height * width) / (out_h * out_w))
    return resized.numpy().reshape(*lead, out_h, out_w)


def flip_roll(frames: np.ndarray, flip: bool, shift_x: int, shift_y: int) -> np.ndarray:
    """Mirror ``[..., H, W]`` frames left-right if ``flip``, then roll them (with wrap-around, as
    ``np.roll``) by ``shift_x`` columns and ``shift_y`` rows.  Returns a new array."""
    if flip:
        frames = frames[..., ::-1]
    return np.roll(frames, (shift_y, shift_x), axis=(-2, -1))


@dataclass(frozen=True)
class ToFrames:
    """Events -> ``[T, 2, H, W]`` float32 counts: :func:`events_to_frames` then
    :func:`resize_frames` to ``size`` (H, W) when it differs from the sensor."""

    n_time_bins: int
    size: tuple[int, int]
    resize_mode: str = "area"

    def __post_init__(self):
        if int(self.n_time_bins) < 1:
            raise ValueError(f"n_time_bins must be >= 1, got {self.n_time_bins}")
        size = tuple(int(v) for v in self.size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (H, W) with H, W >= 1, got {self.size}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        object.__setattr__(self, "size", size)

    def __call__(self, stream: EventStream) -> np.ndarray:
        counts = events_to_frames(stream.events, stream.sensor_size, self.n_time_bins)
        return resize_frames(counts, self.size, self.resize_mode)

    def output_shape(self, polarities: int = 2) -> tuple[int, int, int, int]:
        return (self.n_time_bins, polarities, *self.size)

    def config(self) -> dict:
        """Everything that changes the output, for cache keys."""
        return {"encoding": "counts", "binning": "equal-time-closed-last", "T": self.n_time_bins,
                "size": list(self.size), "resize": self.resize_mode}


@dataclass(frozen=True)
class RandomFlipRoll:
    """Random left-right flip with probability ``flip_p`` and a random roll of up to
    ``max_shift`` pixels in x and in y (uniform integers in ``[-max_shift, max_shift]``).

    Randomness comes only from the ``np.random.Generator`` passed in, so the caller decides the
    seeding (the datasets derive one per epoch and sample index)."""

    flip_p: float = 0.5
    max_shift: int = 5

    def __post_init__(self):
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = bool(rng.random() < self.flip_p)
        shift_x, shift_y = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
        return flip_roll(frames, flip, int(shift_x), int(shift_y))
