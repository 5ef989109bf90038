"""`spikeline events`, `spikeline data show` and `spikeline data prepare`, run in-process."""
import json

import pytest
from conftest import random_events, write_nmnist_bin

from spikeline.cli import main


def test_events_json_on_a_real_recording(real_file, capsys):
    assert main(["events", str(real_file("prophesee_evt2.raw")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "events": 521_252, "sensor_size": [640, 480, 2], "duration_us": 95_871}


def test_events_json_on_a_written_file(tmp_path, capsys):
    t, x, y, p = random_events(1234, 34, 34, duration_us=50_000)
    path = write_nmnist_bin(tmp_path / "s.bin", t, x, y, p)
    assert main(["events", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"events": 1234, "sensor_size": [34, 34, 2],
                       "duration_us": int(t.max() - t.min())}
    assert main(["events", str(path)]) == 0
    assert "1,234 events" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"\x01\x02\x03"], ids=["empty", "truncated"])
def test_events_bad_input_exits_2_with_the_file_named(tmp_path, capsys, content):
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    assert main(["events", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "bad.bin" in captured.err and "Traceback" not in captured.err


def test_data_show_and_prepare(ndigits_cache, tmp_path, capsys):
    out = tmp_path / "sample.png"
    assert main(["data", "show", "ndigits", "--index", "5", "--out", str(out), "--T", "4",
                 "--split", "test", "--cache-dir", str(ndigits_cache)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
    assert main(["data", "show", "ndigits", "--index", "5000", "--out", str(out),
                 "--cache-dir", str(ndigits_cache)]) == 2
    assert "--index 5000" in capsys.readouterr().err
    assert main(["data", "prepare", "ndigits", "--T", "3", "--size", "17x17",
                 "--cache-dir", str(ndigits_cache)]) == 0
    assert "frames of 1797 samples cached" in capsys.readouterr().out
    entries = [p for p in (ndigits_cache / "frames" / "ndigits").rglob("*.frames")]
    assert len(entries) >= 1797


def test_data_show_missing_dataset_exits_2(tmp_path, capsys):
    assert main(["data", "show", "cifar10dvs", "--out", str(tmp_path / "x.png"),
                 "--data-dir", str(tmp_path)]) == 2
    assert "figshare.com" in capsys.readouterr().err
