"""`spikeline train --task detection`, `evaluate` and `detect` on tiny ndigits-detect runs.

A tiny deployable EMS-Res10 (width 8, T=2), 32 training scenes in batches of 16 (2 steps per
epoch), 16 validation and test scenes: seconds per run.  The numbers it reaches mean nothing;
what is checked is the machinery (checkpoints, exact resume, metrics, the spec export reads,
mAP of the chosen checkpoint, the files `detect` writes, refusals of bad input).
"""
import json
from pathlib import Path

import pytest
import torch

from spikeline.cli import main
from spikeline.pipeline.checkpoint import build_from_spec, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--task", "detection", "--dataset", "ndigits-detect", "--model", "ems_res10",
        "--width", "8", "--T", "2", "--batch-size", "16", "--limit-train", "32",
        "--limit-test", "16", "--device", "cpu", "--no-progress"]
STEPS = 2
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def run_cli(*argv):
    return main([str(a) for a in argv])


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "det"
    assert run_cli("train", *TINY, "--epochs", 2, "--out", out) == 0
    return out


def test_detection_run_writes_the_classification_run_files(det_run):
    for name in ("last.pt", "best.pt", "metrics.jsonl", "summary.json", "config.json",
                 "curves.png"):
        assert (det_run / name).is_file(), name
    ckpt = load_checkpoint(det_run / "best.pt")  # weights_only=True
    assert ckpt["format"] == "spikeline-train/1" and ckpt["config"]["task"] == "detection"
    spec = ckpt["model_spec"]
    assert {k: spec[k] for k in ("name", "task", "in_channels", "num_classes", "width",
                                 "deployable", "encoding", "strides", "input_size")} == {
        "name": "ems_res10", "task": "detection", "in_channels": 2, "num_classes": 10,
        "width": 8, "deployable": True, "encoding": "binary", "strides": [16, 32],
        "input_size": [64, 64]}
    assert spec["anchors"] == [[[12.0, 18.0], [16.0, 22.0], [20.0, 26.0]],
                               [[24.0, 28.0], [28.0, 32.0], [34.0, 36.0]]]
    assert set(spec["neuron"]) >= {"threshold", "current_decay", "voltage_decay"}
    # the whole detector, rebuilt from the spec alone (what export does)
    model = build_from_spec(spec)
    model.load_state_dict(ckpt["model_stripped"])
    assert any(k.startswith("head.") for k in ckpt["model_stripped"])
    assert {"model." + k for k in ckpt["model_stripped"]} == set(ckpt["model"])

    rows = [json.loads(line) for line in (det_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"train_loss", "train_box", "train_obj", "train_cls", "val_map50",
                "val_map50_95", "lr", "seconds"} <= set(r)
        assert r["train_loss"] == pytest.approx(r["train_box"] + r["train_obj"]
                                                + r["train_cls"])
    summary = json.loads((det_run / "summary.json").read_text())
    best = max(rows, key=lambda r: r["val_map50"])
    assert summary["best"]["epoch"] == ckpt["epoch"] == best["epoch"]
    assert summary["val_map50"] == best["val_map50"]
    assert summary["val_map50_95"] == best["val_map50_95"]
    assert 0 <= summary["test_map50"] <= 1 and 0 <= summary["test_map50_95"] <= 1
    assert summary["num_test"] == 16 and summary["task"] == "detection"


def test_evaluate_gives_the_test_map_of_the_chosen_checkpoint(det_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert run_cli("evaluate", det_run, "--json", out, "--device", "cpu") == 0
    printed = capsys.readouterr().out
    assert "mAP@0.5" in printed and "mAP@0.5:0.95" in printed
    result = json.loads(out.read_text())
    summary = json.loads((det_run / "summary.json").read_text())
    assert result["mAP50"] == pytest.approx(summary["test_map50"], abs=1e-12)
    assert result["mAP50_95"] == pytest.approx(summary["test_map50_95"], abs=1e-12)
    assert run_cli("evaluate", det_run, "--json", "--device", "cpu") == 0
    assert json.loads(capsys.readouterr().out)["mAP50"] == result["mAP50"]


def test_detect_draws_boxes_on_a_dataset_sample_and_an_event_file(det_run, tmp_path,
                                                                  real_file):
    out = tmp_path / "sample"
    assert run_cli("detect", det_run, "--dataset", "ndigits-detect", "--index", 2,
                   "--conf", 0.001, "--out", out) == 0
    found = json.loads((out / "detections.json").read_text())
    assert (out / "detections.png").stat().st_size > 1000
    assert found["input_size"] == [64, 64] and found["T"] == 2 and found["index"] == 2
    for box in found["boxes"]:
        x0, y0, x1, y1 = box["xyxy"]
        assert 0 <= x0 <= x1 <= 64 and 0 <= y0 <= y1 <= 64  # cut to the frame
        assert 0 <= box["score"] <= 1 and 0 <= box["class"] < 10
    scores = [b["score"] for b in found["boxes"]]
    assert scores == sorted(scores, reverse=True)

    out = tmp_path / "events"
    recording = real_file("davis346_street.aedat4")
    assert run_cli("detect", det_run, "--events", recording, "--out", out) == 0
    found = json.loads((out / "detections.json").read_text())
    assert found["events"] == str(recording) and found["sensor_size"] == [260, 346]
    assert (out / "detections.png").is_file()


def test_detection_resume_equals_the_uninterrupted_run(det_run, tmp_path):
    out = tmp_path / "interrupted"
    assert run_cli("train", *TINY, "--epochs", 2, "--stop-after", 1, "--out", out) == 0
    first = load_checkpoint(out / "last.pt")
    assert first["epoch"] == 1 and first["iteration"] == STEPS
    assert run_cli("train", "--out", out, "--resume", "--no-progress") == 0
    resumed, straight = load_checkpoint(out / "last.pt"), load_checkpoint(det_run / "last.pt")
    assert resumed["iteration"] == straight["iteration"] == 2 * STEPS
    assert not states_equal(first["model"], straight["model"])
    assert states_equal(resumed["model"], straight["model"])
    assert states_equal(resumed["model_stripped"], straight["model_stripped"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (det_run / "metrics.jsonl").read_text().splitlines()]
    for r, s in zip(rows, ref, strict=True):
        r.pop("seconds"), s.pop("seconds")
        assert r == s
    assert json.loads((out / "summary.json").read_text())["test_map50"] == \
        json.loads((det_run / "summary.json").read_text())["test_map50"]


def test_max_steps_and_bf16_autocast_cut_a_smoke_run(tmp_path):
    out = tmp_path / "smoke"
    assert run_cli("train", *TINY, "--epochs", 3, "--max-steps", 1, "--amp", "bf16",
                   "--out", out) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["iteration"] == 1 and ckpt["partial_epoch"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] is False and "test_map50" in summary


@pytest.mark.parametrize("extra, option", [
    (["--task", "detection", "--dataset", "ndigits-detect", "--model", "cnn"], "--model"),
    (["--task", "detection", "--dataset", "ndigits-detect", "--model", "ems_res99"],
     "--model"),
    (["--task", "detection", "--dataset", "ndigits", "--model", "ems_res10"], "--dataset"),
    (["--dataset", "ndigits-detect", "--model", "cnn"], "--dataset"),
    (["--dataset", "ndigits", "--model", "ems_res10"], "--model"),
    (["--task", "detection", "--dataset", "ndigits-detect", "--model", "ems_res10",
      "--heads", "evolutionary"], "--heads"),
    (["--task", "detection", "--dataset", "ndigits-detect", "--model", "ems_res10",
      "--rezero"], "--rezero"),
    (["--task", "detection", "--dataset", "ndigits-detect", "--model", "ems_res10",
      "--no-deployable", "--timing", "loihi"], "--timing"),
])
def test_bad_detection_input_exits_2_naming_the_option(extra, option, tmp_path, capsys):
    assert run_cli("train", *extra, "--out", tmp_path / "run", "--no-progress") == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bad_task_value_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", "--task", "segmentation", "--out", tmp_path / "run")
    assert exit_info.value.code == 2 and "--task" in capsys.readouterr().err


def test_detect_refuses_bad_files_and_classifier_runs(det_run, tmp_path, capsys):
    bad = tmp_path / "broken.aedat4"
    bad.write_bytes(b"not events at all")
    assert run_cli("detect", det_run, "--events", bad, "--out", tmp_path / "o") == 2
    assert f"--events {bad}" in capsys.readouterr().err
    missing = tmp_path / "missing.raw"
    assert run_cli("detect", det_run, "--events", missing, "--out", tmp_path / "o") == 2
    assert str(missing) in capsys.readouterr().err
    assert run_cli("detect", det_run, "--dataset", "ndigits-detect", "--index", 10**6,
                   "--out", tmp_path / "o") == 2
    assert "--index" in capsys.readouterr().err
    assert run_cli("detect", det_run, "--dataset", "ndigits", "--out", tmp_path / "o") == 2
    assert "--dataset" in capsys.readouterr().err
    assert run_cli("detect", tmp_path / "no_run", "--dataset", "ndigits-detect",
                   "--out", tmp_path / "o") == 2


@pytest.mark.parametrize("recipe, expected", [
    ("gen1_ems_res10.toml", {"task": "detection", "dataset": "gen1", "model": "ems_res10",
                             "T": 5, "size": [320, 320], "optimizer": "sgd"}),
    ("ndigits_detect_ems_res10.toml", {"task": "detection", "dataset": "ndigits-detect",
                                       "model": "ems_res10", "deployable": True}),
])
def test_detection_recipes_resolve(recipe, expected, capsys):
    assert run_cli("train", "--config", RECIPES / recipe, "--print-config") == 0
    config = json.loads(capsys.readouterr().out)
    assert {k: config[k] for k in expected} == expected
    assert config["heads"] == "none" and config["lr"] > 0
