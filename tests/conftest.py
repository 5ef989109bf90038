"""Shared fixtures: the real recordings and graphs (tests/data, else ../shared/data) and writers
of genuine-format event files (AEDAT4, N-MNIST .bin, DVS Gesture .npy) for tests that need many
or broken ones."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

# tests/data/{events,nir} ships with the repository (sources and licences in its README);
# ../shared/data has the same layout and is looked at second.
REAL_DATA = Path(__file__).resolve().parent / "data"
_REAL_DIRS = (REAL_DATA, Path(__file__).resolve().parents[2] / "shared" / "data")


def real_path(name: str) -> Path:
    """Path of a real file: ``name`` is ``events/<file>``, ``nir/<file>`` or a bare event file
    name; fails (never skips) when it is in neither place."""
    relative = name if "/" in name else f"events/{name}"
    for root in _REAL_DIRS:
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"{relative} is in neither {_REAL_DIRS[0]} nor {_REAL_DIRS[1]}")


@pytest.fixture
def real_file():
    """``real_file(name)``: the path of a real recording or graph (see ``real_path``)."""
    return real_path


def write_aedat4(path: Path, t, x, y, p, width: int = 128, height: int = 128) -> Path:
    """An uncompressed AEDAT4 file with one event stream, as DV writes it.

    Layout: magic, uint32 length + IOHeader flatbuffer (identifier IOHE; compression None and
    file_data_position -1 left at their defaults; the XML description of the stream), then one
    packet: uint32 stream id, uint32 length, size-prefixed EventPacket flatbuffer (identifier
    EVTS) whose vector holds 16-byte Event structs (int64 t, int16 x, int16 y, bool on).
    """
    description = (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
        f'<attr key="sizeX" type="int">{width}</attr>'
        f'<attr key="sizeY" type="int">{height}</attr>'
        '</node></node></node></dv>').encode()
    # IOHeader: root offset, "IOHE", vtable (3 fields, only description set), table, string.
    vtable = struct.pack("<HHHHH", 10, 8, 0, 0, 4) + b"\0\0"
    table_at = 8 + len(vtable)
    string_at = table_at + 8
    header = (struct.pack("<I", table_at) + b"IOHE" + vtable
              + struct.pack("<iI", table_at - 8, string_at - (table_at + 4))
              + struct.pack("<I", len(description)) + description + b"\0")
    header += b"\0" * (-len(header) % 4)
    events = np.zeros(len(t), dtype=np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"),
                                              ("on", "?"), ("pad", "V3")]))
    events["t"], events["x"], events["y"], events["on"] = t, x, y, p
    # EventPacket after its size prefix: root offset, "EVTS", vtable, table, padding so that the
    # 8-byte structs are 8-aligned in the buffer, vector length, structs.
    packet = (struct.pack("<I", 16) + b"EVTS" + struct.pack("<HHH", 6, 8, 4) + b"\0\0"
              + struct.pack("<iI", 8, 8) + b"\0" * 4 + struct.pack("<I", len(events))
              + events.tobytes())
    packet = struct.pack("<I", len(packet)) + packet
    with open(path, "wb") as file:
        file.write(b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(header)) + header)
        file.write(struct.pack("<II", 0, len(packet)) + packet)
    return path


def write_nmnist_bin(path: Path, t, x, y, p) -> Path:
    """N-MNIST 40-bit events: x, y, then p (bit 23) and t (23 bits) big-endian; a y = 240
    marker adds 2**13 µs to every later timestamp, so large times are written as markers."""
    words = []
    offset = 0
    for ti, xi, yi, pi in zip(t, x, y, p):
        while ti - offset >= 2**23:
            words.append(bytes([0, 240, 0, 0, 0]))
            offset += 2**13
        stamp = int(ti - offset) | (int(pi) << 23)
        words.append(bytes([int(xi), int(yi), stamp >> 16, (stamp >> 8) & 255, stamp & 255]))
    Path(path).write_bytes(b"".join(words))
    return path


def write_dvsgesture_npy(path: Path, t_ms, x, y, p) -> Path:
    """Tonic's DVS Gesture release: an int [N, 4] array of (x, y, p, t ms)."""
    np.save(path, np.stack([x, y, p, t_ms], axis=1).astype(np.int64))
    return path


def random_events(n: int, width: int, height: int, seed: int = 0, duration_us: int = 100_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, duration_us, n))
    return t, rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n)


@pytest.fixture(scope="session")
def ndigits_cache(tmp_path_factory) -> Path:
    """A cache folder with the ndigits events generated once per test session."""
    from spikeline.datasets import ndigits

    cache_dir = tmp_path_factory.mktemp("spikeline-cache")
    ndigits.load_events(cache_dir)
    return cache_dir


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for training tests: the CI/dev machines are small and shared, and two
    threads oversubscribe them (steps measured 2-20x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_terminal_summary(terminalreporter):
    """With SPIKELINE_SYNAPSE forced, say how many synapse calls took each path: a run meant to
    exercise the integer path shows that it did."""
    import os

    if os.environ.get("SPIKELINE_SYNAPSE"):
        from spikeline.pipeline.kernels import int_synapse

        terminalreporter.write_line(
            f"SPIKELINE_SYNAPSE={os.environ['SPIKELINE_SYNAPSE']}: synapse calls by path "
            f"{int_synapse.total_counts()}")
