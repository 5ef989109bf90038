"""Tonic's real dataset classes on data the user downloaded, in a deterministic order.

Tonic downloads a dataset when its ``_check_exists()`` fails; spikeline never downloads: it
raises a ``SpikelineError`` that says where to get the data and where to put it.  Tonic lists
files in filesystem order; :class:`TonicSamples` sorts them by path so that splits and cache
keys do not depend on the filesystem.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from spikeline.errors import BadInput, SpikelineError

from .events import MAX_DURATION_US, EventStream, check_aedat4, is_panic, make_events


class _DownloadRefused(Exception):
    pass


def open_offline(tonic_class: type, data_dir: Path, where_to_get: Callable[[Path], str],
                 **kwargs):
    """``tonic_class(save_to=data_dir, **kwargs)``, but a missing dataset raises
    ``SpikelineError(where_to_get(location))`` (location = ``data_dir/<class name>``) instead of
    downloading."""

    def refuse_download(self):
        raise _DownloadRefused

    # Same class name: Tonic stores the data under save_to/<class name>.
    offline = type(tonic_class.__name__, (tonic_class,), {"download": refuse_download})
    try:
        dataset = offline(save_to=str(data_dir), **kwargs)
    except _DownloadRefused:
        location = Path(data_dir).expanduser() / tonic_class.__name__
        raise SpikelineError(where_to_get(location)) from None
    dataset.__class__ = tonic_class  # a plain Tonic object again: picklable for loader workers
    return dataset


@dataclass(frozen=True)
class TonicSamples:
    """Samples ``indices`` of a Tonic dataset (see :class:`~.samples.EventSamples`).

    Sample ids are the file path relative to ``data_dir`` with its size and modification time,
    so replacing a recording invalidates its cached frames."""

    dataset: object
    indices: np.ndarray
    data_dir: Path

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.dataset.targets, dtype=np.int64)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def path(self, index: int) -> str:
        return self.dataset.data[int(self.indices[index])]

    def sample_id(self, index: int) -> str:
        path = self.path(index)
        stat = os.stat(path)
        return f"{os.path.relpath(path, self.data_dir)}:{stat.st_size}:{stat.st_mtime_ns}"

    def read(self, index: int) -> EventStream:
        """The events of sample ``index``, decoded by Tonic; AEDAT4 files (CIFAR10-DVS) are
        first checked by ``events.check_aedat4``, as ``read_events`` does."""
        path = self.path(index)
        try:
            if str(path).lower().endswith(".aedat4"):
                check_aedat4(Path(path))
            events, _ = self.dataset[int(self.indices[index])]
            stream = EventStream(make_events(events["t"], events["x"], events["y"], events["p"]),
                                 self.dataset.sensor_size)
        except SpikelineError:
            raise
        except BaseException as err:  # decoders raise anything, aedat a Rust panic
            if not (isinstance(err, Exception) or is_panic(err)):
                raise  # KeyboardInterrupt, SystemExit
            raise BadInput(f"{path}: cannot read this {type(self.dataset).__name__} "
                           f"recording (truncated or corrupt?): {err}") from None
        if len(stream) == 0:
            raise BadInput(f"{path}: the recording holds no events")
        if stream.duration_us > MAX_DURATION_US:
            raise BadInput(f"{path}: the events span {stream.duration_us:.3g} µs: a corrupt "
                           "timestamp")
        return stream


def sorted_order(dataset) -> np.ndarray:
    """Indices of ``dataset.data`` sorted by file path."""
    return np.argsort(np.asarray(dataset.data, dtype=str), kind="stable")
