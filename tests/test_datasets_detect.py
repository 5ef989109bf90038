"""Detection data: boxes, the Gen1 reader on tiny genuine-format files, ndigits-detect."""
from __future__ import annotations

import numpy as np
import pytest
from spikeline.datasets import gen1, ndigits_detect
from spikeline.datasets.boxes import Boxes

from spikeline.errors import BadInput, DataNotFound

BBOX_DTYPE = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                       ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4")])


def write_dat(path, t, x, y, p, header=b"% Date 2019-01-01\n% Version 2\n% Height 240\n"
                                        b"% Width 304\n"):
    """A Prophesee DAT file as the Gen1 recordings are: '%' lines, type and size bytes, then
    (uint32 t, int32 w) records with x in bits 0-13, y in 14-27, p in 28."""
    w = (np.asarray(x, np.int64) | (np.asarray(y, np.int64) << 14)
         | (np.asarray(p, np.int64) << 28)).astype("<i4")
    records = np.empty(len(t), dtype=[("t", "<u4"), ("w", "<i4")])
    records["t"], records["w"] = t, w
    path.write_bytes(header + bytes([0, 8]) + records.tobytes())
    return path


def gen1_folder(root, split="train", name="rec_a"):
    folder = root / gen1.FOLDER / split
    folder.mkdir(parents=True)
    t = np.arange(0, 600_000, 1000)  # one event per ms for 0.6 s
    x, y, p = t // 1000 % 304, t // 1000 % 240, t // 1000 % 2
    write_dat(folder / f"{name}_td.dat", t, x, y, p)
    boxes = np.zeros(3, BBOX_DTYPE)
    boxes["ts"] = [300_000, 300_000, 550_000]
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = [10, 100, 290], [20, 30, 200], [30, 8, 40], \
        [40, 20, 60]
    boxes["class_id"] = [0, 1, 0]
    np.save(folder / f"{name}_bbox.npy", boxes)
    return root


def test_boxes_formats_and_resize():
    b = Boxes.from_xywh([[10, 20, 30, 40]], [1], (240, 304))
    assert b.xyxy.tolist() == [[10, 20, 40, 60]]
    r = b.resized((120, 152))
    assert r.xyxy.tolist() == [[5, 10, 20, 30]] and r.size == (120, 152)
    assert np.allclose(b.yolo(), [[1, 25 / 304, 40 / 240, 30 / 304, 40 / 240]])
    clipped = Boxes([[-5, -5, 10, 10], [300, 0, 400, 5]], [0, 1], (240, 304)).clipped()
    assert clipped.xyxy.tolist() == [[0, 0, 10, 10], [300, 0, 304, 5]]
    with pytest.raises(ValueError, match="x1 >= x0"):
        Boxes([[5, 0, 1, 1]], [0], (10, 10))
    with pytest.raises(ValueError, match="labels"):
        Boxes([[0, 0, 1, 1]], [0, 1], (10, 10))


def test_gen1_samples_follow_the_ems_yolo_protocol(tmp_path):
    samples = gen1.load_samples("train", gen1_folder(tmp_path))
    assert len(samples) == 2  # two distinct box timestamps
    stream, boxes, (start, end) = samples.read(0)
    assert (start, end) == (50_000, 300_000)
    t = stream.events["t"]
    assert t.min() == 50_000 and t.max() == 299_000 and len(t) == 250
    assert stream.sensor_size == (304, 240, 2)
    assert boxes.labels.tolist() == [0, 1] and boxes.xyxy[0].tolist() == [10, 20, 40, 60]
    frames = gen1.frames_in_window(stream, start, end, 5)
    assert frames.shape == (5, 2, 240, 304)
    assert frames.sum(axis=(1, 2, 3)).tolist() == [50] * 5  # 50 ms bins, one event per ms
    # the last box is cut by the sensor's right edge (290 + 40 > 304)
    _, late, _ = samples.read(1)
    assert late.xyxy.tolist() == [[290, 200, 304, 240]]


def test_gen1_reads_only_the_window_and_names_bad_files(tmp_path):
    gen1_folder(tmp_path)
    dat = next((tmp_path / gen1.FOLDER / "train").glob("*_td.dat"))
    recording = gen1.DatRecording.open(dat)
    assert len(recording.window(100_000, 100_010)) == 1
    data = dat.read_bytes()
    dat.write_bytes(data[:-3])  # truncated record
    with pytest.raises(BadInput, match="truncated"):
        gen1.DatRecording.open(dat)
    # an x outside the sensor
    write_dat(dat, [0, 1], [0, 400], [0, 0], [0, 1])
    with pytest.raises(BadInput, match="outside the 304x240 sensor"):
        gen1.DatRecording.open(dat).window(0, 10)


def test_gen1_missing_data_says_where_and_the_t_field_is_accepted(tmp_path):
    with pytest.raises(DataNotFound, match="detection_dataset_duration_60s_ratio_1.0"):
        gen1.load_samples("test", tmp_path)
    root = gen1_folder(tmp_path, "val")
    path = next((root / gen1.FOLDER / "val").glob("*_bbox.npy"))
    old = np.load(path)
    renamed = old.astype([("t" if n == "ts" else n, old.dtype[n]) for n in old.dtype.names])
    np.save(path, renamed)
    assert len(gen1.load_samples("val", root)) == 2
    np.save(path, np.zeros(3))
    with pytest.raises(BadInput, match="structured array"):
        gen1.load_samples("val", root)


def test_ndigits_detect_boxes_hold_every_event(monkeypatch, tmp_path):
    data = ndigits_detect.generate(scenes=30)
    assert len(data) == 30
    counts = np.diff(data.box_offsets)
    assert counts.min() >= 1 and counts.max() <= ndigits_detect.MAX_DIGITS
    for i in range(len(data)):
        events, boxes = data.stream(i).events, data.sample_boxes(i)
        inside = np.zeros(len(events), bool)
        for x0, y0, x1, y1 in boxes.xyxy:
            inside |= ((events["x"] >= x0) & (events["x"] < x1) & (events["y"] >= y0)
                       & (events["y"] < y1))
            # every box holds events of its digit
            assert np.any((events["x"] >= x0) & (events["x"] < x1) & (events["y"] >= y0)
                          & (events["y"] < y1))
        assert inside.all(), f"scene {i}: events outside every box"
        xyxy = boxes.xyxy  # boxes never overlap
        for a in range(len(xyxy)):
            for b in range(a + 1, len(xyxy)):
                ink_a, ink_b = xyxy[a] - [0, 0, 6, 6], xyxy[b] - [0, 0, 6, 6]
                assert not (ink_a[0] < ink_b[2] and ink_b[0] < ink_a[2]
                            and ink_a[1] < ink_b[3] and ink_b[1] < ink_a[3])


def test_ndigits_detect_split_is_fixed_and_cached(monkeypatch, tmp_path):
    parts = ndigits_detect.split_indices(100)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    assert len(np.unique(np.concatenate(list(parts.values())))) == 100
    assert all(np.array_equal(parts[k], ndigits_detect.split_indices(100)[k]) for k in parts)
    monkeypatch.setattr(ndigits_detect, "SCENES", 20)
    ndigits_detect.fingerprint.cache_clear()
    try:
        first = ndigits_detect.load_samples("test", tmp_path)
        again = ndigits_detect.load_samples("test", tmp_path)  # from the cache file
        assert len(first) == 2 and first.sample_id(0) == again.sample_id(0)
        assert np.array_equal(first.read(1)[0].events, again.read(1)[0].events)
    finally:
        ndigits_detect.fingerprint.cache_clear()


def test_detection_frames_batch_the_yolo_way(monkeypatch, tmp_path):
    from spikeline.datasets.detection import (
        detection_collate,
        draw_detections,
        load_detection,
    )

    gen1_folder(tmp_path / "data")
    dataset = load_detection("gen1", "train", data_dir=tmp_path / "data", size=(120, 152),
                             cache_dir=tmp_path / "cache")
    frames, targets = dataset[0]
    assert frames.shape == (5, 2, 120, 152) and float(frames.sum()) == pytest.approx(250)
    # class, cx, cy, w, h relative to the frame: box (10, 20)-(40, 60) of a 304x240 sensor
    assert targets.tolist()[0] == pytest.approx([0, 25 / 304, 40 / 240, 30 / 304, 40 / 240])
    again, _ = dataset[0]  # from the frame cache
    assert torch_equal(frames, again)
    x, rows = detection_collate([dataset[0], dataset[1]])
    assert x.shape == (2, 5, 2, 120, 152) and rows[:, 0].tolist() == [0, 0, 1]
    out = tmp_path / "show.png"
    draw_detections(frames.numpy(), dataset.read(0)[1], out, "gen1 #0", class_names=gen1.CLASSES)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_data_show_draws_detection_frames_with_boxes(monkeypatch, tmp_path, capsys):
    from spikeline.cli import main

    monkeypatch.setattr(ndigits_detect, "SCENES", 20)
    ndigits_detect.fingerprint.cache_clear()
    try:
        out = tmp_path / "show.png"
        assert main(["data", "show", "ndigits-detect", "--split", "val", "--index", "1",
                     "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert main(["data", "show", "ndigits-detect", "--index", "99", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache")]) == 2
        assert "--index 99" in capsys.readouterr().err
    finally:
        ndigits_detect.fingerprint.cache_clear()
    gen1_folder(tmp_path / "data")
    assert main(["data", "show", "gen1", "--data-dir", str(tmp_path / "data"), "--index", "0",
                 "--out", str(tmp_path / "g.png"), "--cache-dir", str(tmp_path / "cache")]) == 0
