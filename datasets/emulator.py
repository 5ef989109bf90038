"""A DVS sensor watching still images move along N-MNIST-style saccades.

N-MNIST (Orchard et al. 2015) was recorded by moving an ATIS camera in three saccades in front
of MNIST digits on a monitor.  :class:`SaccadeEmulator` does the same in software for any image
source ``[N, h, w]`` with values in ``[0, 1]``:

1. The image sits on a ``W x H`` sensor (placed so that the whole motion stays inside) and is
   displaced by ``d(t)``, which moves linearly through ``path`` (three legs, ``saccade_us``
   each); each leg is sampled at ``steps_per_saccade`` points and the shifted image is read at
   sub-pixel positions by bilinear interpolation.
2. Each pixel sees ``L = log(I + eps)``.  It keeps a reference ``r`` (its value at t = 0) and a
   contrast threshold ``C_px ~ Normal(threshold, threshold_sigma)`` (fixed-pattern mismatch, the
   only randomness; clipped to ``>= threshold / 2``).  Between samples ``k-1`` and ``k`` it
   emits ``n = floor(|L_k - r| / C_px)`` events of polarity ``sign(L_k - r)`` (ON = 1 when
   brightness rises) and moves ``r`` by ``n C_px`` towards ``L_k``.
3. The j-th of those events crosses level ``r + j s C_px`` (s = +-1); its time is interpolated
   linearly between the samples: ``t = t_{k-1} + dt (r + j s C_px - L_{k-1}) / (L_k - L_{k-1})``.

Everything is vectorised over images and pixels; the same seed gives identical events.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import EVENT_DTYPE

# N-MNIST's saccade triangle (from Tonic's stabilize(): +3.5,+7 / +3.5,-7 / -7,0 px), scaled
# to 6 px so that a 28 px image stays inside a 34 px sensor.
NMNIST_PATH = ((0.0, 0.0), (3.0, 6.0), (6.0, 0.0), (0.0, 0.0))


@dataclass(frozen=True)
class SaccadeEmulator:
    """The emulated sensor and motion (see the module docstring); call it on images."""

    sensor_size: tuple[int, int] = (34, 34)  # (W, H)
    path: tuple[tuple[float, float], ...] = NMNIST_PATH  # (dx, dy) vertices in pixels
    saccade_us: int = 100_000
    steps_per_saccade: int = 15
    threshold: float = 0.3  # about 4,200 events per ndigits sample, N-MNIST has ~4,000
    threshold_sigma: float = 0.03
    eps: float = 0.25

    def __post_init__(self):
        if len(self.path) < 2:
            raise ValueError(f"path needs at least two vertices, got {self.path}")
        if self.saccade_us < 1 or self.steps_per_saccade < 1:
            raise ValueError("saccade_us and steps_per_saccade must be >= 1")
        if self.threshold <= 0 or self.threshold_sigma < 0 or self.eps <= 0:
            raise ValueError("threshold and eps must be > 0 and threshold_sigma >= 0")

    def config(self) -> dict:
        """Every setting, for cache fingerprints."""
        return {"sensor_size": list(self.sensor_size), "path": [list(v) for v in self.path],
                "saccade_us": self.saccade_us, "steps_per_saccade": self.steps_per_saccade,
                "threshold": self.threshold, "threshold_sigma": self.threshold_sigma,
                "eps": self.eps}

    def __call__(self, images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Events of every image: ``(events, offsets)`` where image ``i`` owns
        ``events[offsets[i]:offsets[i+1]]`` (:data:`EVENT_DTYPE`, sorted by time)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3 or images.min(initial=0) < 0 or images.max(initial=0) > 1:
            raise ValueError(f"images must be [N, h, w] with values in [0, 1], "
                             f"got shape {images.shape}")
        width, height = self.sensor_size
        if images.shape[1] > height or images.shape[2] > width:
            raise ValueError(f"images of {images.shape[1]}x{images.shape[2]} px do not fit the "
                             f"{width}x{height} sensor")
        displacement, times = self._trajectory()
        canvas, margin = self._place(images, displacement)
        rng = np.random.default_rng(seed)
        thresholds = np.maximum(rng.normal(self.threshold, self.threshold_sigma,
                                           (len(images), height, width)),
                                self.threshold / 2).astype(np.float32)
        log_prev = self._log_view(canvas, margin, displacement[0])
        reference = log_prev.copy()
        chunks = []
        for k in range(1, len(times)):
            log_now = self._log_view(canvas, margin, displacement[k])
            chunks.append(_crossings(log_prev, log_now, reference, thresholds,
                                     times[k - 1], times[k]))
            log_prev = log_now
        image, t, x, y, p = (np.concatenate(column) for column in zip(*chunks))
        # chunks are in time order and each is sorted by time: a stable sort on the image
        # index finishes the (image, t) order
        order = _stable_order(image)
        events = np.empty(len(order), dtype=EVENT_DTYPE)
        events["t"], events["x"], events["y"], events["p"] = t[order], x[order], y[order], p[order]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(image, minlength=len(images)))])
        return events, offsets

    def _trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """Displacements ``[K, 2]`` (dx, dy) and their times ``[K]`` (µs) along the path."""
        vertices = np.asarray(self.path, dtype=np.float64)
        steps = self.steps_per_saccade
        fractions = np.arange(steps) / steps
        legs = [a + (b - a) * fractions[:, None] for a, b in zip(vertices[:-1], vertices[1:])]
        displacement = np.concatenate(legs + [vertices[-1:]])
        times = np.arange(len(displacement)) * (self.saccade_us / steps)
        return displacement, times

    def _place(self, images: np.ndarray, displacement: np.ndarray) -> tuple[np.ndarray, int]:
        """Images on a zero canvas with a margin ``m`` for the motion; the sensor view at
        displacement ``(dx, dy)`` is ``canvas[:, m - dy : m - dy + H, m - dx : m - dx + W]``."""
        width, height = self.sensor_size
        n, h, w = images.shape
        low, high = displacement.min(axis=0), displacement.max(axis=0)
        # top-left corner at zero displacement, centring the swept area when there is room
        corner = np.floor((np.array([width - w, height - h]) - (high - low)) / 2 - low)
        x0, y0 = np.clip(corner, 0, [width - w, height - h]).astype(int)
        margin = int(np.ceil(np.abs(displacement).max())) + 1
        canvas = np.zeros((n, height + 2 * margin, width + 2 * margin), np.float32)
        canvas[:, margin + y0:margin + y0 + h, margin + x0:margin + x0 + w] = images
        return canvas, margin

    def _log_view(self, canvas: np.ndarray, margin: int, shift: np.ndarray) -> np.ndarray:
        """``log(I + eps)`` of the sensor view of the canvas moved by ``shift`` (bilinear)."""
        width, height = self.sensor_size
        # sensor pixel (y, x) sees canvas point (margin + y - dy, margin + x - dx)
        fx, fy = margin - shift[0], margin - shift[1]
        x0, y0 = int(np.floor(fx)), int(np.floor(fy))
        ax, ay = np.float32(fx - x0), np.float32(fy - y0)
        window = canvas[:, y0:y0 + height + 1, x0:x0 + width + 1]
        top = (1 - ax) * window[:, :-1, :-1] + ax * window[:, :-1, 1:]
        bottom = (1 - ax) * window[:, 1:, :-1] + ax * window[:, 1:, 1:]
        return np.log((1 - ay) * top + ay * bottom + np.float32(self.eps))


def _crossings(log_prev, log_now, reference, thresholds, t_prev, t_now):
    """Events of one sampling interval as (image, t, x, y, p) arrays; moves ``reference``."""
    difference = log_now - reference
    count = np.floor(np.abs(difference) / thresholds).astype(np.int64)
    image, y, x = np.nonzero(count)
    n = count[image, y, x]
    step = np.sign(difference[image, y, x]) * thresholds[image, y, x]  # signed threshold
    start = log_prev[image, y, x]
    change = log_now[image, y, x] - start
    crossed_from = reference[image, y, x]
    reference[image, y, x] = crossed_from + n * step
    # the j-th event (j = 1..n) of a pixel crosses level crossed_from + j * step
    pixel = np.repeat(np.arange(len(n)), n)
    j = np.arange(len(pixel)) - np.repeat(np.cumsum(n) - n, n) + 1
    level = crossed_from[pixel] + j * step[pixel]
    fraction = np.divide(level - start[pixel], change[pixel], out=np.ones(len(pixel)),
                         where=change[pixel] != 0)
    t = np.rint(t_prev + (t_now - t_prev) * np.clip(fraction, 0.0, 1.0)).astype(np.int64)
    by_time = _stable_order(t - int(t_prev))
    pixel = pixel[by_time]
    return (image[pixel], t[by_time], x[pixel].astype(np.int16), y[pixel].astype(np.int16),
            (step[pixel] > 0).astype(np.int8))


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for non-negative keys; keys below 2**16 are sorted
    as uint16, for which numpy uses a radix sort (several times faster on millions of keys)."""
    if len(keys) and keys.max() < 2**16:
        keys = keys.astype(np.uint16)
    return np.argsort(keys, kind="stable")
