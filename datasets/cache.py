"""On-disk cache of binned frames, keyed by everything that determines them.

Entry key: ``sha256(json({format, dataset, sample id, transform config}))``, so a change of T,
size, resize mode or any other transform setting reads and writes different entries: never stale
frames (Tonic's ``DiskCachedDataset`` keys on the index only).  Augmentation is random per epoch
and is applied after the cache, never stored.

Entry file: magic ``SPKFRM1\\n``, CRC-32 of the rest (uint32), ndim (uint32), the shape
(ndim x uint32), then the float32 frames in C order.  Writes go to a temporary file in the same
folder and are moved into place with ``os.replace`` (atomic on POSIX and Windows), so readers see
a whole entry or none.  An entry that fails the magic, CRC, length or expected-shape check is
treated as missing and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from spikeline.atomic import atomic_file

_MAGIC = b"SPKFRM1\n"
_FORMAT_VERSION = 1  # part of every key: bump when the entry layout or meaning changes


class FrameCache:
    """Frames of one dataset under one transform config, one file per sample under ``root``."""

    def __init__(self, root: str | Path, dataset: str, transform_config: dict,
                 shape: tuple[int, ...] | None = None):
        self.root = Path(root)
        self.dataset = dataset
        self.transform_config = dict(transform_config)
        self.shape = tuple(shape) if shape is not None else None

    def key(self, sample_id: str) -> str:
        identity = {"format": _FORMAT_VERSION, "dataset": self.dataset, "sample": sample_id,
                    "transform": self.transform_config}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def path(self, sample_id: str) -> Path:
        key = self.key(sample_id)
        return self.root / self.dataset / key[:2] / f"{key}.frames"

    def load(self, sample_id: str) -> np.ndarray | None:
        """The cached frames, or None when the entry is missing or fails a check."""
        try:
            blob = self.path(sample_id).read_bytes()
        except FileNotFoundError:
            return None
        return _decode(blob, self.shape)

    def store(self, sample_id: str, frames: np.ndarray) -> None:
        with atomic_file(self.path(sample_id)) as file:
            file.write(_encode(frames))

    def get_or_build(self, sample_id: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        frames = self.load(sample_id)
        if frames is None:
            frames = np.ascontiguousarray(build(), dtype=np.float32)
            self.store(sample_id, frames)
        return frames


def _encode(frames: np.ndarray) -> bytes:
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    body = np.array([frames.ndim, *frames.shape], dtype="<u4").tobytes() + frames.tobytes()
    return _MAGIC + np.array([zlib.crc32(body)], dtype="<u4").tobytes() + body


def _decode(blob: bytes, expected_shape: tuple[int, ...] | None) -> np.ndarray | None:
    head = len(_MAGIC) + 8
    if len(blob) < head or not blob.startswith(_MAGIC):
        return None
    crc, ndim = np.frombuffer(blob, dtype="<u4", count=2, offset=len(_MAGIC))
    if zlib.crc32(memoryview(blob)[len(_MAGIC) + 4:]) != crc or ndim > 8:
        return None
    shape = tuple(int(v) for v in np.frombuffer(blob, "<u4", count=int(ndim), offset=head))
    offset = head + 4 * int(ndim)
    if (expected_shape is not None and shape != expected_shape) \
            or len(blob) - offset != 4 * int(np.prod(shape)):
        return None
    # frombuffer views immutable bytes: copy so callers (and torch.from_numpy) get a writable array
    return np.frombuffer(blob, dtype="<f4", offset=offset).reshape(shape).copy()
