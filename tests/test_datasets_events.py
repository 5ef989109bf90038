"""read_events on the real recordings, on genuine-format files written here, and on broken
files (which must give a SpikelineError naming the file, never a crash or hang)."""
import numpy as np
import pytest
from conftest import random_events, write_aedat4, write_dvsgesture_npy, write_nmnist_bin

from spikeline.datasets.events import EVENT_DTYPE, EventStream, make_events, read_events
from spikeline.errors import SpikelineError


@pytest.mark.parametrize("name, count, sensor_size", [
    ("davis346_street.aedat4", 78_830, (346, 260, 2)),
    ("nmnist_sample.bin", 4_325, (34, 34, 2)),
    ("prophesee_evt2.raw", 521_252, (640, 480, 2)),
])
def test_real_recordings(real_file, name, count, sensor_size):
    stream = read_events(real_file(name))
    assert len(stream) == count
    assert stream.sensor_size == sensor_size
    assert stream.events.dtype == EVENT_DTYPE
    assert set(np.unique(stream.events["p"])) == {0, 1}


def test_real_durations(real_file):
    assert read_events(real_file("davis346_street.aedat4")).duration_us == 2_359_945
    assert read_events(real_file("prophesee_evt2.raw")).duration_us == 95_871  # "96 ms"


def test_aedat4_written_here_round_trips(tmp_path):
    t, x, y, p = random_events(3000, 240, 180, seed=1)
    stream = read_events(write_aedat4(tmp_path / "rec.aedat4", t, x, y, p, 240, 180))
    assert stream.sensor_size == (240, 180, 2)
    np.testing.assert_array_equal(stream.events, make_events(t, x, y, p))


def test_nmnist_bin_with_timestamp_overflow(tmp_path):
    t, x, y, p = random_events(400, 34, 34, seed=2, duration_us=30_000_000)  # > 2**23 µs
    stream = read_events(write_nmnist_bin(tmp_path / "00002.bin", t, x, y, p))
    assert stream.sensor_size == (34, 34, 2)
    np.testing.assert_array_equal(stream.events, make_events(t, x, y, p))


def test_dvsgesture_npy_in_ms(tmp_path):
    t_ms, x, y, p = random_events(500, 128, 128, seed=3, duration_us=6000)
    stream = read_events(write_dvsgesture_npy(tmp_path / "3.npy", t_ms, x, y, p))
    assert stream.sensor_size == (128, 128, 2)
    np.testing.assert_array_equal(stream.events["t"], t_ms * 1000)
    np.testing.assert_array_equal(stream.events["x"], x)


@pytest.mark.parametrize("encoding, name", [("evt2", "rec.raw"), ("evt3", "rec.raw"),
                                            ("dat", "rec.dat")])
def test_prophesee_formats_written_by_expelliarmus(tmp_path, encoding, name):
    import expelliarmus

    t, x, y, p = random_events(2000, 640, 480, seed=4)  # EVT3 keeps 24-bit times: stay small
    raw = np.zeros(len(t), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
    raw["t"], raw["x"], raw["y"], raw["p"] = t, x, y, p
    expelliarmus.Wizard(encoding=encoding).save(fpath=str(tmp_path / name), arr=raw)
    stream = read_events(tmp_path / name)
    np.testing.assert_array_equal(stream.events, make_events(t, x, y, p))
    # expelliarmus writes no geometry: the plugin name (gen3 / gen41) or the events give it
    assert stream.sensor_size[0] >= 640 and stream.sensor_size[1] >= 480


def test_prophesee_header_geometry(tmp_path, real_file):
    body = real_file("prophesee_evt2.raw").read_bytes().split(b"% system_ID 21\n", 1)[1]
    path = tmp_path / "g.raw"
    path.write_bytes(b"% evt 2.0\n% geometry 1280x720\n" + body)
    assert read_events(path).sensor_size == (1280, 720, 2)
    path.write_bytes(b"% format EVT2;height=480;width=640\n" + body)
    assert read_events(path).sensor_size == (640, 480, 2)


def _truncate(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3 + 1]


def _corrupt(data: bytes) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, len(data) // 2, dtype=np.uint8).tobytes()
    return data[: len(data) // 4] + noise + data[len(data) // 4 + len(noise):]


@pytest.fixture(params=["aedat4", "bin", "npy", "raw", "dat"])
def good_file(request, tmp_path, real_file):
    """One readable file per format, small enough to damage in many ways quickly."""
    suffix = request.param
    t, x, y, p = random_events(5000, 34, 34, seed=5)
    path = tmp_path / f"good.{suffix}"
    if suffix == "aedat4":
        return write_aedat4(path, t, x, y, p)
    if suffix == "bin":
        return write_nmnist_bin(path, t, x, y, p)
    if suffix == "npy":
        return write_dvsgesture_npy(path, t // 1000, x, y, p)
    if suffix == "raw":
        path.write_bytes(real_file("prophesee_evt2.raw").read_bytes()[:200_166])
        return path
    import expelliarmus

    raw = np.zeros(len(t), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
    raw["t"], raw["x"], raw["y"], raw["p"] = t, x, y, p
    expelliarmus.Wizard(encoding="dat").save(fpath=str(path), arr=raw)
    return path


@pytest.mark.parametrize("damage", [lambda d: b"", _truncate, _corrupt, lambda d: d[:41]],
                         ids=["empty", "truncated", "corrupt", "first-41-bytes"])
@pytest.mark.timeout(20)
def test_broken_files_raise_spikeline_error_naming_the_file(good_file, damage):
    read_events(good_file)  # the undamaged file is fine
    broken = good_file.with_name("broken" + good_file.suffix)
    broken.write_bytes(damage(good_file.read_bytes()))
    with pytest.raises(SpikelineError, match="broken"):
        read_events(broken)


def test_wrong_suffix_and_missing_file(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3")
    with pytest.raises(SpikelineError, match=r"x\.csv.*unknown event file type"):
        read_events(tmp_path / "x.csv")
    with pytest.raises(SpikelineError, match="no such file"):
        read_events(tmp_path / "nope.aedat4")


def test_aedat4_that_is_something_else(tmp_path):
    path = tmp_path / "fake.aedat4"
    path.write_bytes(b"#!AER-DAT2.0\r\n" + bytes(100))
    with pytest.raises(SpikelineError, match="fake.aedat4: not an AEDAT4 file"):
        read_events(path)


def test_out_of_sensor_coordinates_are_corrupt(tmp_path):
    t, x, y, p = random_events(10, 34, 34)
    path = write_nmnist_bin(tmp_path / "far.bin", t, x + 100, y, p)
    with pytest.raises(SpikelineError, match=r"far\.bin: corrupt events: event field 'x'"):
        read_events(path)


def test_event_stream_validates():
    with pytest.raises(ValueError, match="dtype"):
        EventStream(np.zeros(3), (4, 4, 2))
    with pytest.raises(ValueError, match="sensor_size"):
        EventStream(make_events([0], [0], [0], [0]), (4, 4))
    assert EventStream(make_events([5, 1], [0, 1], [0, 1], [1, 0]), (2, 2, 2)).duration_us == 4


def test_truncation_the_formats_cannot_reveal(real_file, tmp_path):
    """N-MNIST (5-byte events) and EVT 2.0 (4-byte words) carry no length: a cut at a record
    boundary is a shorter valid recording (documented in datasets/events.py and docs/bad-input.md);
    a cut anywhere else is refused."""
    data = real_file("nmnist_sample.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:5 * 1000])
    assert 0 < len(read_events(tmp_path / "cut.bin")) <= 1000
    (tmp_path / "odd.bin").write_bytes(data[:5 * 1000 + 2])
    with pytest.raises(SpikelineError, match="not a multiple of 5"):
        read_events(tmp_path / "odd.bin")
    raw = real_file("prophesee_evt2.raw").read_bytes()
    body = raw.index(b"% evt 2.0\n") + len(b"% evt 2.0\n")
    (tmp_path / "cut.raw").write_bytes(raw[:body + 4 * 50_000])
    assert 0 < len(read_events(tmp_path / "cut.raw")) < 521_252
    (tmp_path / "odd.raw").write_bytes(raw[:body + 4 * 50_000 + 3])
    with pytest.raises(SpikelineError, match="4-byte words"):
        read_events(tmp_path / "odd.raw")
