"""Event streams and the one reader for every event-camera file format spikeline accepts.

An event is ``(t, x, y, p)``: time in microseconds, pixel column and row, polarity (1 = ON,
brightness went up; 0 = OFF).  :func:`read_events` picks the format from the file name suffix:

============  ==========================================  ==================================
suffix        format                                      decoded by
============  ==========================================  ==================================
``.aedat4``   iniVation AEDAT 4 (DV software, DAVIS)      ``tonic.io.read_aedat4`` (aedat)
``.bin``      N-MNIST / N-Caltech101 40-bit events, 34x34  ``tonic.io.read_mnist_file``
``.npy``      Tonic's DVS Gesture layout, 128x128          numpy (columns x, y, p, t in ms)
``.raw``      Prophesee EVT 2.0 / EVT 3.0                 ``expelliarmus.Wizard``
``.dat``      Prophesee DAT (CD events)                   ``expelliarmus.Wizard``
============  ==========================================  ==================================

Bad input (empty, unreadable, truncated, corrupt, unknown format) raises :class:`BadInput`
(a ``SpikelineError``) naming the file and what was expected.  The C/Rust decoders behind Tonic
and expelliarmus are only handed files whose size and header were checked first, and their
exceptions -- a Rust panic of ``aedat`` included -- are re-raised as ``BadInput``:

- AEDAT4: the header length, the IOHeader flatbuffer (identifier, compression, the XML stream
  description, which must parse) and the chain of packet headers (known stream ids, sizes within
  the file) are checked in Python before ``aedat`` sees the file.  Packet payloads are
  LZ4/ZSTD-compressed flatbuffers that only the decoder reads; its errors become ``BadInput``.
- Timestamps: a recording spanning more than :data:`MAX_DURATION_US` (7 days) is refused as a
  corrupt timestamp (one flipped bit in an AEDAT4 time gives 6e16 µs, i.e. 1900 years).

What no reader can detect (the formats carry no length or checksum): an N-MNIST ``.bin`` cut at
a multiple of its 5-byte events, and a Prophesee EVT 2.0 ``.raw`` cut at a multiple of its
4-byte words, read as a shorter, valid recording.  Files cut elsewhere are refused.
"""
from __future__ import annotations

import logging
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import aedat  # Tonic reads AEDAT4 through it without declaring it
import numpy as np

from spikeline.errors import BadInput, DataNotFound, SpikelineError

log = logging.getLogger(__name__)

EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])

NMNIST_SENSOR = (34, 34, 2)
DVSGESTURE_SENSOR = (128, 128, 2)

_AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"
# Compression values of the AEDAT4 IOHeader (dv-processing's CompressionType enum).
_AEDAT4_COMPRESSIONS = {0: "NONE", 1: "LZ4", 2: "LZ4_HIGH", 3: "ZSTD", 4: "ZSTD_HIGH"}
MAX_DURATION_US = 7 * 24 * 3600 * 10**6  # longer recordings are taken for corrupt timestamps
_NMNIST_EVENT_BYTES = 5
_NMNIST_OVERFLOW_Y = 240  # N-MNIST marks a timestamp overflow with y == 240
# Prophesee word types (upper 4 bits) that the EVT 2.0 / EVT 3.0 specifications define; random
# bytes almost always contain others, which is how a corrupt body is caught before decoding.
_EVT2_WORD_TYPES = (0x0, 0x1, 0x8, 0xA, 0xE, 0xF)
_EVT3_WORD_TYPES = (0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF)
_DAT_EVENT_BYTES = 8
_PROPHESEE_HEADER_LIMIT = 1 << 16  # a '%' header longer than this is not a Prophesee header
# Sensor geometry by camera generation, for .raw files whose header names only the plugin.
_PROPHESEE_PLUGIN_GEOMETRY = {"gen3": (640, 480), "gen31": (640, 480), "gen41": (1280, 720),
                              "imx636": (1280, 720)}


@dataclass(frozen=True)
class EventStream:
    """Events of one recording and the sensor they came from.

    ``events`` is a structured array with :data:`EVENT_DTYPE` fields ``t`` (int64, µs), ``x``,
    ``y`` (int16, 0 <= x < W, 0 <= y < H) and ``p`` (int8, 0 = OFF, 1 = ON); ``sensor_size`` is
    ``(W, H, P)`` as in Tonic.  Events need not be sorted by time.
    """

    events: np.ndarray
    sensor_size: tuple[int, int, int]

    def __post_init__(self):
        if self.events.dtype != EVENT_DTYPE or self.events.ndim != 1:
            raise ValueError(f"events must be a 1-D array of dtype {EVENT_DTYPE}, "
                             f"got {self.events.ndim}-D {self.events.dtype}")
        size = tuple(int(v) for v in self.sensor_size)
        if len(size) != 3 or min(size) < 1 or size[2] > 2:
            raise ValueError(f"sensor_size must be (W, H, P) with W, H >= 1 and P in (1, 2), "
                             f"got {self.sensor_size}")
        object.__setattr__(self, "sensor_size", size)
        if len(self.events):
            for field, limit in (("x", size[0]), ("y", size[1]), ("p", size[2])):
                values = self.events[field]
                low, high = int(values.min()), int(values.max())
                if low < 0 or high >= limit:
                    raise ValueError(f"event field {field!r} spans [{low}, {high}], "
                                     f"expected [0, {limit - 1}] for sensor size {size}")

    def __len__(self) -> int:
        return len(self.events)

    @property
    def duration_us(self) -> int:
        """``max(t) - min(t)``; 0 for fewer than two events."""
        t = self.events["t"]
        return int(t.max() - t.min()) if len(t) else 0


def make_events(t, x, y, p) -> np.ndarray:
    """Pack equal-length field arrays into one :data:`EVENT_DTYPE` array."""
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t, x, y, p
    return events


def read_events(path: str | Path, *, encoding: str | None = None) -> EventStream:
    """Read every event of ``path``; the format comes from the suffix (see module docstring).

    ``encoding`` ("evt2", "evt3") overrides the encoding of a Prophesee ``.raw`` file whose
    header does not name it.
    """
    path = Path(path)
    readers = {".aedat4": _read_aedat4, ".bin": _read_nmnist_bin, ".npy": _read_dvsgesture_npy,
               ".raw": lambda p: _read_prophesee(p, encoding),
               ".dat": lambda p: _read_prophesee(p, "dat")}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise BadInput(f"{path}: unknown event file type {path.suffix!r}; expected one of "
                       f"{', '.join(readers)}")
    if not path.is_file():
        raise DataNotFound(f"{path}: no such file")
    try:
        with open(path, "rb") as file:  # unreadable files fail here, not inside a decoder
            file.read(1)
    except OSError as err:
        raise BadInput(f"{path}: cannot read the file ({err.strerror or err})") from None
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: the file is empty")
    try:
        events, sensor_size = reader(path)
    except OSError as err:
        raise BadInput(f"{path}: cannot read the file ({err.strerror or err})") from None
    if len(events) == 0:
        raise BadInput(f"{path}: the file holds no events")
    try:
        stream = EventStream(events, sensor_size)
    except ValueError as err:
        raise BadInput(f"{path}: corrupt events: {err}") from None
    if stream.duration_us > MAX_DURATION_US:
        raise BadInput(f"{path}: the events span {stream.duration_us:.3g} µs "
                       f"({stream.duration_us / 3.6e9:.3g} hours), more than "
                       f"{MAX_DURATION_US / 3.6e9:.0f} hours: a corrupt timestamp")
    return stream


def _decoder_error(path: Path, what: str, err: BaseException) -> SpikelineError:
    return BadInput(f"{path}: not a readable {what} file (truncated or corrupt?): "
                          f"{type(err).__name__}: {err}")


def is_panic(err: BaseException) -> bool:
    """A Rust panic surfaced by PyO3 (``pyo3_runtime.PanicException``, a ``BaseException``
    that cannot be imported by name)."""
    return type(err).__name__ == "PanicException"


def check_aedat4(path: Path) -> dict[int, str]:
    """Check the AEDAT4 structure of ``path`` before a decoder sees it; returns
    ``{stream id: type identifier}`` from the header's XML description.

    Layout (as ``aedat`` reads it, https://github.com/neuromorphicsystems/aedat ``src/base.rs``;
    docs/reference.md §9):
    the magic ``#!AER-DAT4.0\\r\\n``, a uint32 length and the IOHeader flatbuffer (identifier
    ``IOHE``; fields compression, file_data_position, description), then packets of uint32
    stream id, uint32 size and the (compressed) packet, up to ``file_data_position`` (the file
    data table) or the end of the file.
    """
    data = np.memmap(path, dtype=np.uint8, mode="r")
    size = len(data)

    def fail(what: str):
        raise BadInput(f"{path}: corrupt AEDAT4 file: {what}")

    def u32(at: int) -> int:
        if at < 0 or at + 4 > size:
            fail(f"a field at byte {at} lies beyond the end of the file ({size} B): truncated?")
        return struct.unpack_from("<I", data, at)[0]

    if bytes(data[:len(_AEDAT4_MAGIC)]) != _AEDAT4_MAGIC:
        raise BadInput(f"{path}: not an AEDAT4 file (expected it to start with "
                       f"{_AEDAT4_MAGIC!r})")
    start = len(_AEDAT4_MAGIC) + 4
    header_len = u32(len(_AEDAT4_MAGIC))
    if header_len < 16 or start + header_len > size:
        fail(f"header length {header_len} B does not fit the file ({size} B)")
    header = bytes(data[start:start + header_len])
    if header[4:8] != b"IOHE":
        fail(f"the header's flatbuffer identifier is {header[4:8]!r}, expected b'IOHE'")
    fields = _flatbuffer_fields(header, 3, fail)
    compression = struct.unpack_from("<i", header, fields[0])[0] if fields[0] else 0
    if compression not in _AEDAT4_COMPRESSIONS:
        fail(f"unknown compression {compression} (expected {_AEDAT4_COMPRESSIONS})")
    if fields[1] + 8 > len(header):
        fail("the file data position lies outside the header")
    table_at = struct.unpack_from("<q", header, fields[1])[0] if fields[1] else -1
    if not (table_at == -1 or start + header_len <= table_at <= size):
        fail(f"file data table position {table_at} is outside the file ({size} B)")
    if not fields[2]:
        fail("the header has no stream description")
    text_at = fields[2] + struct.unpack_from("<I", header, fields[2])[0]
    if text_at + 4 > len(header):
        fail("the stream description lies outside the header")
    text_len = struct.unpack_from("<I", header, text_at)[0]
    if text_at + 4 + text_len > len(header):
        fail("the stream description lies outside the header")
    try:
        root = ET.fromstring(header[text_at + 4:text_at + 4 + text_len].decode("utf-8"))
    except (UnicodeDecodeError, ET.ParseError) as err:
        fail(f"the stream description is not valid XML ({err})")
    streams = {}
    for node in root.iter("node"):
        if not node.get("path", "").rstrip("/").split("/")[-2:-1] == ["outInfo"]:
            continue
        kind = next((a.text for a in node.findall("attr") if a.get("key") == "typeIdentifier"),
                    None)
        if not (node.get("name") or "").isdigit() or kind is None:
            fail(f"stream {node.get('name')!r} of the description has no numeric id or type")
        streams[int(node.get("name"))] = kind
    if not streams:
        fail("the description declares no stream")
    end = size if table_at == -1 else table_at
    position = start + header_len
    while position < end:
        if position + 8 > end:
            fail(f"a packet header at byte {position} is cut off: truncated?")
        stream_id, length = struct.unpack_from("<II", data, position)
        if stream_id not in streams:
            fail(f"packet at byte {position} names stream {stream_id}; the header declares "
                 f"{sorted(streams)}")
        if length == 0 or position + 8 + length > end:
            fail(f"packet at byte {position} of {length} B runs past the end ({end} B): "
                 "truncated?")
        position += 8 + length
    return streams


def _flatbuffer_fields(buf: bytes, count: int, fail) -> list[int]:
    """Absolute offsets of the first ``count`` fields of the root table of ``buf`` (0: absent),
    bounds-checked (https://flatbuffers.dev/internals/)."""
    if len(buf) < 8:
        fail("the header is shorter than a flatbuffer")
    table = struct.unpack_from("<I", buf, 0)[0]
    if table + 4 > len(buf):
        fail("the header's root table lies outside it")
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    if vtable < 0 or vtable + 4 > len(buf):
        fail("the header's vtable lies outside it")
    vt_size, table_size = struct.unpack_from("<HH", buf, vtable)
    if vt_size < 4 or vt_size % 2 or vtable + vt_size > len(buf) or table + table_size > len(buf):
        fail("the header's vtable is malformed")
    offsets = []
    for i in range(count):
        at = 4 + 2 * i
        field = struct.unpack_from("<H", buf, vtable + at)[0] if at + 2 <= vt_size else 0
        if field and (field < 4 or field >= table_size or table + field + 4 > len(buf)):
            fail(f"field {i} of the header lies outside its table")
        offsets.append(table + field if field else 0)
    return offsets


def _read_aedat4(path: Path):
    from tonic.io import read_aedat4  # lazy: tonic imports torch: 2.9 s (measured)

    declared = check_aedat4(path)
    try:
        streams = aedat.Decoder(str(path)).id_to_stream()
        event_streams = {i: s for i, s in streams.items() if s["type"] == "events"}
        if not event_streams:
            raise BadInput(f"{path}: the AEDAT4 file has no event stream "
                           f"(streams: {sorted(declared.values())})")
        stream = event_streams[min(event_streams)]  # the one read_aedat4 decodes
        raw = read_aedat4(str(path))
    except SpikelineError:
        raise
    except BaseException as err:  # aedat: RuntimeError, or a Rust panic; numpy: ValueError
        if not (isinstance(err, Exception) or is_panic(err)):
            raise  # KeyboardInterrupt, SystemExit
        raise _decoder_error(path, "AEDAT4", err) from None
    on = raw.dtype.names[3]  # aedat names polarity "on"
    events = make_events(raw["t"].astype(np.int64), raw["x"], raw["y"], raw[on])
    return events, (int(stream["width"]), int(stream["height"]), 2)


def _read_nmnist_bin(path: Path):
    from tonic.io import read_mnist_file  # lazy: tonic imports torch: 2.9 s (measured)

    size = path.stat().st_size
    if size % _NMNIST_EVENT_BYTES:
        raise BadInput(f"{path}: N-MNIST .bin size {size} B is not a multiple of "
                             f"{_NMNIST_EVENT_BYTES} B (40-bit events): truncated?")
    dtype = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
    raw = read_mnist_file(str(path), dtype=dtype)  # drops the overflow markers
    events = make_events(raw["t"], raw["x"], raw["y"], raw["p"])
    return events, NMNIST_SENSOR


def _read_dvsgesture_npy(path: Path):
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as err:  # ValueError/EOFError/OSError/UnpicklingError from a bad .npy
        raise _decoder_error(path, ".npy", err) from None
    if table.ndim != 2 or table.shape[1] != 4 or not np.issubdtype(table.dtype, np.number):
        raise BadInput(f"{path}: expected Tonic's DVS Gesture layout, a numeric [N, 4] "
                             f"array of (x, y, p, t ms); got {table.dtype} {table.shape}")
    x, y, p, t_ms = table.T
    width, height, _ = DVSGESTURE_SENSOR
    # checked before any cast to the event dtype, which could wrap bad values into range
    in_range = ((x >= 0) & (x < width) & (y >= 0) & (y < height) & ((p == 0) | (p == 1))
                & (t_ms >= 0) & (t_ms < 2**52 / 1000))
    if not np.all(in_range):
        row = int(np.argmin(in_range))
        raise BadInput(f"{path}: row {row} (x, y, p, t) = {table[row].tolist()} is out of "
                             f"range: expected 0 <= x < {width}, 0 <= y < {height}, p in (0, 1), "
                             f"t >= 0 ms")
    t_us = np.rint(t_ms * 1000.0)  # stored in ms, as Tonic's DVSGesture reads them
    return make_events(t_us, x, y, p), DVSGESTURE_SENSOR


@dataclass(frozen=True)
class _PropheseeHeader:
    fields: dict[str, str]
    length: int  # bytes of '%' lines before the binary body


def _prophesee_header(path: Path) -> _PropheseeHeader:
    """The ``% key value`` lines at the top of a Prophesee file."""
    with open(path, "rb") as file:
        head = file.read(_PROPHESEE_HEADER_LIMIT)
    fields, position = {}, 0
    while head[position:position + 1] == b"%":
        end = head.find(b"\n", position)
        if end < 0:
            raise BadInput(f"{path}: the Prophesee '%' header has no end within "
                                 f"{_PROPHESEE_HEADER_LIMIT} bytes: truncated or not Prophesee")
        line = head[position + 1:end].decode("ascii", "replace").strip()
        key, _, value = line.partition(" ")
        fields[key.lower()] = value.strip()
        position = end + 1
    return _PropheseeHeader(fields, position)


def _prophesee_encoding(header: _PropheseeHeader) -> str | None:
    evt = header.fields.get("evt")  # "% evt 2.0"
    if evt is None and "format" in header.fields:  # "% format EVT3;height=720;width=1280"
        evt = header.fields["format"].split(";")[0].lower().removeprefix("evt")
    return {"2.0": "evt2", "2": "evt2", "3.0": "evt3", "3": "evt3"}.get(evt or "")


def _prophesee_geometry(header: _PropheseeHeader) -> tuple[int, int] | None:
    """(W, H) from '% geometry WxH', '% format ...;height=H;width=W', '% width/height' lines,
    else from the camera generation named by the plugin; None when the header says nothing."""
    fields = header.fields
    if match := re.fullmatch(r"(\d+)\s*x\s*(\d+)", fields.get("geometry", "")):
        return int(match[1]), int(match[2])
    format_options = dict(item.split("=", 1) for item in fields.get("format", "").split(";")[1:]
                          if "=" in item)
    for source in (format_options, fields):
        if source.get("width", "").isdigit() and source.get("height", "").isdigit():
            return int(source["width"]), int(source["height"])
    if match := re.search(r"_(gen\d+|imx\d+)", fields.get("plugin_name", "")):
        return _PROPHESEE_PLUGIN_GEOMETRY.get(match[1])
    return None


def _read_prophesee(path: Path, encoding: str | None):
    import expelliarmus  # lazy: 0.4 s at import (measured)

    header = _prophesee_header(path)
    body_bytes = path.stat().st_size - header.length
    if encoding != "dat":
        encoding = _prophesee_encoding(header) or encoding
        if encoding not in ("evt2", "evt3"):
            raise BadInput(f"{path}: the header names no event encoding (expected a "
                                 f"'% evt 2.0', '% evt 3.0' or '% format EVT3;...' line); pass "
                                 f"encoding='evt2' or 'evt3' if you know it")
        word_bytes, types = (4, _EVT2_WORD_TYPES) if encoding == "evt2" else (2, _EVT3_WORD_TYPES)
        if body_bytes <= 0 or body_bytes % word_bytes:
            raise BadInput(f"{path}: {encoding.upper()} body of {body_bytes} B is not a "
                                 f"positive multiple of {word_bytes}-byte words: truncated?")
        words = np.memmap(path, dtype=f"<u{word_bytes}", mode="r", offset=header.length)
        word_types = np.unique(words >> (8 * word_bytes - 4))
        unknown = np.setdiff1d(word_types, types)
        if len(unknown):
            raise BadInput(f"{path}: corrupt {encoding.upper()} body: word types "
                                 f"{[hex(v) for v in unknown]} are not in the specification")
    else:
        # DAT: after the header, one byte event type and one byte event size, then the events.
        events_bytes = body_bytes - 2
        with open(path, "rb") as file:
            file.seek(header.length)
            kind = file.read(2)
        if len(kind) < 2 or kind[1] != _DAT_EVENT_BYTES:
            raise BadInput(f"{path}: DAT header must be followed by the event type and an "
                                 f"event size of {_DAT_EVENT_BYTES} B; got {kind!r}")
        if events_bytes <= 0 or events_bytes % _DAT_EVENT_BYTES:
            raise BadInput(f"{path}: DAT body of {events_bytes} B is not a positive "
                                 f"multiple of {_DAT_EVENT_BYTES}-byte events: truncated?")
    try:
        raw = expelliarmus.Wizard(encoding=encoding, fpath=str(path)).read()
    except Exception as err:
        raise _decoder_error(path, f"Prophesee {encoding.upper()}", err) from None
    if raw is None:  # expelliarmus returns None when its C decoder gives up
        raise BadInput(f"{path}: the Prophesee {encoding.upper()} decoder found no "
                             f"readable events (corrupt file?)")
    events = make_events(raw["t"], raw["x"], raw["y"], raw["p"])
    geometry = _prophesee_geometry(header)
    if geometry is None and len(events):  # no geometry in the header: the smallest that fits
        geometry = (int(events["x"].max()) + 1, int(events["y"].max()) + 1)
    return events, (*(geometry or (1, 1)), 2)
