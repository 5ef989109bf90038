"""Gen1 Automotive Detection (de Tournemire et al. 2020, Prophesee), as EMS-YOLO uses it.

39 hours of a 304x240 ATIS camera behind a windscreen, with boxes of cars (class 0) and
pedestrians (class 1) every 50 ms or so.  Download: https://www.prophesee.ai/2020/01/24/
prophesee-gen1-automotive-detection-dataset/ (registration required; spikeline never
downloads).  Layout under ``--data-dir D``, as Tonic 1.2.7-1.5.0 had it::

    D/Gen1/detection_dataset_duration_60s_ratio_1.0/{train,val,test}/NAME_td.dat
    D/Gen1/detection_dataset_duration_60s_ratio_1.0/{train,val,test}/NAME_bbox.npy

``NAME_td.dat`` is a Prophesee DAT file: ``%`` header lines, one byte event type, one byte
event size (8), then records ``(uint32 t_us, int32 w)`` with ``x = w & 0x3FFF``,
``y = (w & 0x0FFFC000) >> 14``, ``p = (w >> 28) & 1``.  ``NAME_bbox.npy`` is a structured
array with fields ``ts`` (or ``t``, µs), ``x``, ``y``, ``w``, ``h`` (top-left corner and size,
pixels), ``class_id``, ``confidence``, ``track_id``.

EMS-YOLO's protocol: one sample per distinct box timestamp ``ts`` of a recording, holding the
events of ``[ts - 250 ms, ts)`` (clipped at 0) in ``T`` equal bins (T = 5: 50 ms each), and the
boxes stamped ``ts``.  Only that window is read: the records are memory-mapped and the window
found by binary search on the (sorted) timestamps, so a sample costs its own events, not the
recording's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeline.errors import BadInput, DataNotFound

from .boxes import Boxes
from .events import EventStream, _prophesee_geometry, _prophesee_header, make_events
from .samples import DatasetInfo

INFO = DatasetInfo(name="gen1", num_classes=2, sensor_size=(304, 240, 2),
                   default_size=(320, 320), default_T=5,
                   url="https://www.prophesee.ai/2020/01/24/"
                       "prophesee-gen1-automotive-detection-dataset/")
CLASSES = ("car", "pedestrian")
FOLDER = Path("Gen1") / "detection_dataset_duration_60s_ratio_1.0"
SPLITS = ("train", "val", "test")
WINDOW_US = 250_000
_RECORD = np.dtype([("t", "<u4"), ("w", "<i4")])


def where_to_get(location: Path) -> str:
    return (f"Gen1 not found: expected {location}/{{train,val,test}}/NAME_td.dat with "
            f"NAME_bbox.npy beside each.  Download the Gen1 Automotive Detection dataset from "
            f"{INFO.url} and unpack it so that this folder exists; pass the folder above Gen1/ "
            f"as --data-dir.")


@dataclass(frozen=True)
class DatRecording:
    """The records of one DAT file, memory-mapped (nothing is read until a window is asked)."""

    path: Path
    records: np.ndarray  # _RECORD memmap
    sensor_size: tuple[int, int, int]

    @classmethod
    def open(cls, path: str | Path) -> "DatRecording":
        path = Path(path)
        try:
            size = path.stat().st_size
            header = _prophesee_header(path)
            with open(path, "rb") as file:
                file.seek(header.length)
                kind = file.read(2)
        except OSError as err:
            raise BadInput(f"{path}: cannot read the DAT file ({err.strerror})") from None
        if len(kind) < 2 or kind[1] != _RECORD.itemsize:
            raise BadInput(f"{path}: a DAT header must be followed by the event type and an "
                           f"event size of {_RECORD.itemsize} B; got {kind!r}")
        body = size - header.length - 2
        if body % _RECORD.itemsize:
            raise BadInput(f"{path}: DAT body of {body} B is not a whole number of "
                           f"{_RECORD.itemsize}-byte records: truncated?")
        count = body // _RECORD.itemsize
        records = (np.memmap(path, dtype=_RECORD, mode="r", offset=header.length + 2,
                             shape=(count,)) if count else np.zeros(0, _RECORD))
        width, height = _prophesee_geometry(header) or INFO.sensor_size[:2]
        return cls(path, records, (int(width), int(height), 2))

    def window(self, start_us: int, end_us: int) -> EventStream:
        """Events with ``start_us <= t < end_us``, times as recorded."""
        t = self.records["t"]
        lo, hi = np.searchsorted(t, [max(start_us, 0), max(end_us, 0)], side="left")
        chunk = np.asarray(self.records[lo:hi])
        times = chunk["t"].astype(np.int64)
        if len(times) > 1 and np.any(np.diff(times) < 0):
            raise BadInput(f"{self.path}: timestamps in [{start_us}, {end_us}) µs are not "
                           "sorted (corrupt file?); Gen1 recordings are in time order")
        w = chunk["w"]
        x, y, p = w & 0x3FFF, (w & 0x0FFFC000) >> 14, (w >> 28) & 1
        width, height, _ = self.sensor_size
        bad = (x >= width) | (y >= height)
        if np.any(bad):
            i = int(np.argmax(bad))
            raise BadInput(f"{self.path}: event {lo + i} at ({int(x[i])}, {int(y[i])}) lies "
                           f"outside the {width}x{height} sensor (corrupt file?)")
        return EventStream(make_events(times, x, y, p), self.sensor_size)


def read_boxes(path: str | Path) -> np.ndarray:
    """A ``NAME_bbox.npy`` array, its timestamp field named ``ts`` whatever the file calls it."""
    path = Path(path)
    try:
        boxes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise BadInput(f"{path}: not a readable box array ({err})") from None
    names = boxes.dtype.names or ()
    time_field = "ts" if "ts" in names else "t" if "t" in names else None
    missing = [f for f in ("x", "y", "w", "h", "class_id") if f not in names]
    if boxes.ndim != 1 or time_field is None or missing:
        raise BadInput(f"{path}: expected a 1-D structured array with fields ts (or t), x, y, w, "
                       f"h, class_id; got dtype {boxes.dtype} shape {boxes.shape}")
    if time_field == "t":
        boxes = boxes.copy()
        boxes.dtype.names = tuple("ts" if n == "t" else n for n in names)
    return boxes


def frames_in_window(stream: EventStream, start_us: int, end_us: int,
                     n_time_bins: int) -> np.ndarray:
    """Counts ``[T, 2, H, W]`` of the events of ``[start_us, end_us)`` in ``T`` equal bins of
    that window (not of the events' own span, as ``frames.events_to_frames`` bins): event at
    ``t`` goes to ``floor(T (t - start) / (end - start))``, exact integer arithmetic."""
    width, height, polarities = stream.sensor_size
    span = end_us - start_us
    if span <= 0 or n_time_bins < 1:
        raise ValueError(f"need end > start and T >= 1, got [{start_us}, {end_us}), "
                         f"T={n_time_bins}")
    e = stream.events
    b = (e["t"] - start_us) * n_time_bins // span
    inside = (b >= 0) & (b < n_time_bins)
    e, b = e[inside], b[inside]
    index = ((b * polarities + e["p"]) * height + e["y"]) * width + e["x"]
    counts = np.bincount(index, minlength=n_time_bins * polarities * height * width)
    return counts.reshape(n_time_bins, polarities, height, width)


@dataclass(frozen=True)
class Gen1Samples:
    """One split: sample ``i`` is (recording ``items[i, 0]``, box timestamp ``items[i, 1]``)."""

    recordings: tuple[Path, ...]
    items: np.ndarray  # int64 [n, 2]
    tables: tuple[np.ndarray, ...]  # per recording, read_boxes arrays

    def __len__(self) -> int:
        return len(self.items)

    def sample_id(self, index: int) -> str:
        rec, ts = (int(v) for v in self.items[index])
        path = self.recordings[rec]
        return f"{path.name}:{path.stat().st_size}:{ts}"

    def boxes(self, index: int, sensor_size=INFO.sensor_size) -> Boxes:
        """The boxes stamped with sample ``index``'s timestamp, cut to the sensor."""
        rec, ts = (int(v) for v in self.items[index])
        table = self.tables[rec]
        here = table[table["ts"] == ts]
        xywh = np.stack([here[f].astype(np.float32) for f in ("x", "y", "w", "h")], axis=1)
        return Boxes.from_xywh(xywh, here["class_id"], sensor_size[1::-1]).clipped()

    def read(self, index: int) -> tuple[EventStream, Boxes, tuple[int, int]]:
        """``(events, boxes on the sensor, (window start, end) µs)``."""
        rec, ts = (int(v) for v in self.items[index])
        recording = DatRecording.open(self.recordings[rec])
        start = max(ts - WINDOW_US, 0)
        return (recording.window(start, ts), self.boxes(index, recording.sensor_size),
                (start, ts))


def load_samples(split: str, data_dir: Path) -> Gen1Samples:
    """``split`` ("train", "val" or "test") of Gen1 under ``data_dir``, recordings sorted by
    name."""
    if split not in SPLITS:
        raise BadInput(f"gen1: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    location = Path(data_dir) / FOLDER / split
    recordings = sorted(location.glob("*_td.dat")) if location.is_dir() else []
    if not recordings:
        raise DataNotFound(where_to_get(Path(data_dir) / FOLDER))
    items, tables = [], []
    for i, path in enumerate(recordings):
        box_path = path.with_name(path.name[:-len("_td.dat")] + "_bbox.npy")
        if not box_path.is_file():
            raise DataNotFound(f"{box_path}: missing (every NAME_td.dat needs NAME_bbox.npy "
                               "beside it)")
        table = read_boxes(box_path)
        tables.append(table)
        for ts in np.unique(table["ts"]):
            items.append((i, int(ts)))
    return Gen1Samples(tuple(recordings), np.asarray(items, dtype=np.int64).reshape(-1, 2),
                       tuple(tables))
