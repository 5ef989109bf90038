"""Frames of event counts for simulate, verify and energy: from event files, a raw array or
dataset samples, fitted to a model's ``[C, H, W]`` input.

Everything here returns ``[T, N, *shape]`` float32 numpy arrays.  Event recordings are binned
into ``T`` frames of counts over their whole duration and resized with the datasets' area
resampling (``datasets.frames.resize_frames``); polarities are summed when the model takes one
channel.  A raw ``.npy`` array is checked from its header (shape, dtype, size) before any data
is read.  Nothing here knows about models: callers pass the input shape (and, for arrays, a
``check_dims`` hook that bounds what running the array would cost).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spikeline.errors import BadInput, DataNotFound, SpikelineError, check_size

from .detection import DETECTION_DATASETS, load_detection
from .events import read_events
from .frames import events_to_frames, resize_frames
from .registry import load_dataset

MAX_EXACT_INPUT = 2 ** 24  # the largest count float32 holds exactly (with all below it)

__all__ = ["MAX_EXACT_INPUT", "fit_frames", "frames_from_events", "inputs_from_array", "inputs_from_dataset",
           "inputs_from_events"]


def fit_frames(frames: np.ndarray, shape: Sequence[int], what: str) -> np.ndarray:
    """``[T, P, H, W]`` event-count frames -> ``[T, *shape]`` (resize with the datasets' area
    resampling; polarities summed when the model takes one channel)."""
    if len(shape) != 3:
        raise BadInput(f"{what}: the model input {list(shape)} is not [C, H, W]; event "
                       f"frames need a [C, H, W] input (use --input for other shapes)")
    channels, height, width = shape
    if frames.shape[1] != channels:
        if channels == 1:
            frames = frames.sum(axis=1, keepdims=True)
        else:
            raise BadInput(f"{what}: frames have {frames.shape[1]} polarity channel(s), "
                           f"the model expects {channels}")
    return resize_frames(frames, (height, width))


def inputs_from_events(files, T: int, shape: Sequence[int]) -> np.ndarray:
    """Each recording binned into ``T`` frames and fitted to ``shape``: ``[T, N, *shape]``."""
    samples = []
    for file in files:
        stream = read_events(file)
        frames = events_to_frames(stream.events, stream.sensor_size, T)
        samples.append(fit_frames(frames, shape, str(file)))
    return np.stack(samples, axis=1)


def frames_from_events(path, T: int, size) -> tuple[np.ndarray, tuple[int, int]]:
    """One recording as ``([T, 2, H, W]`` counts on a ``size`` frame grid, the sensor's
    ``(H, W))``; a bad file is a ``SpikelineError`` naming ``--events`` and the file."""
    try:
        stream = read_events(path)
        frames = events_to_frames(stream.events, stream.sensor_size, T)
        fitted = fit_frames(frames, (2, *size), str(path))
    except SpikelineError as err:
        raise type(err)(f"--events {err}") from None
    width, height = stream.sensor_size[:2]
    return fitted.astype(np.float32), (int(height), int(width))


def inputs_from_array(path, shape: Sequence[int],
                      check_dims: Callable[[tuple[int, ...]], None] | None = None) -> np.ndarray:
    """A ``.npy`` array ``[T, *shape]`` or ``[T, N, *shape]`` as ``[T, N, *shape]`` float32.

    Its size is checked from the header before it is read, and ``check_dims((T, N, *shape))``
    (when given) may refuse it first (the activity a simulation of it would record); NaN or
    Inf values are refused."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:  # the header only: shape and dtype before any data
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            dims, _, dtype = read(fh)
    except FileNotFoundError:
        raise DataNotFound(f"{path}: no such file") from None
    except (OSError, ValueError) as err:
        raise BadInput(f"{path}: not a .npy array ({err})") from None
    if dtype.kind not in "biuf":
        raise BadInput(f"{path}: expected a numeric array, got {dtype}")
    dims = tuple(int(v) for v in dims)
    if dims[1:] == tuple(shape):
        dims = (dims[0], 1, *dims[1:])
    elif dims[2:] != tuple(shape):
        raise BadInput(f"{path}: shape {list(dims)} does not fit the model input "
                       f"{list(shape)}; expected [T, {', '.join(map(str, shape))}] or "
                       f"[T, N, {', '.join(map(str, shape))}]")
    if dims[0] < 1 or dims[1] < 1:
        raise BadInput(f"{path}: empty array {list(dims)}")
    check_size(float(np.prod(dims, dtype=np.float64)) * 4, f"{path}: the input array")
    if check_dims is not None:
        check_dims(dims)
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # a header claiming more than the file holds
        raise BadInput(f"{path}: cannot read the array ({err})") from None
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise BadInput(f"{path}: holds NaN or Inf values; inputs must be finite")
    low, high = raw.min().item(), raw.max().item()
    if low < 0:
        raise BadInput(f"{path}: holds negative values (min {low!r}); inputs are spikes or "
                       "event counts, >= 0")
    if high > MAX_EXACT_INPUT:
        raise BadInput(f"{path}: holds values up to {high!r}, above {MAX_EXACT_INPUT} = 2**24, "
                       "beyond which float32 (what the simulator computes in) no longer holds "
                       "integers exactly")
    return np.ascontiguousarray(raw.astype(np.float32).reshape(dims))


def inputs_from_dataset(name: str, samples: int, T: int, shape: Sequence[int], split="test",
                        data_dir=None, cache_dir=None) -> np.ndarray:
    """The first ``samples`` frames of dataset ``name``'s ``split`` (classification or
    detection), fitted to ``shape``: ``[T, N, *shape]``."""
    if len(shape) != 3:
        raise BadInput(f"--dataset: the model input {list(shape)} is not [C, H, W]")
    load = load_detection if name in DETECTION_DATASETS else load_dataset  # frames come first
    dataset = load(name, split, T=T, size=tuple(shape[1:]), data_dir=data_dir,
                   cache_dir=cache_dir)
    count = min(samples, len(dataset))
    if count < 1:
        raise BadInput(f"--dataset {name}: the {split} split is empty")
    frames = [fit_frames(np.asarray(dataset[i][0]), shape, f"{name}[{i}]") for i in range(count)]
    return np.stack(frames, axis=1)
