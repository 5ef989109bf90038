"""`spikeline diagnose gradients`: per-layer gradient norms, JSON + PNG, heads vs none."""
import json
import math

import pytest

from spikeline.cli import main
from spikeline.pipeline.diagnose import weight_parameters
from spikeline.pipeline.models import build_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_diagnose_gradients_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "diag"
    argv = ["diagnose", "gradients", "--model", "resnet20", "--width", "16", "--depths", "2,2,2",
            "--heads", "none,shortcut,evolutionary", "--dataset", "ndigits", "--T", "4",
            "--batches", "2", "--batch-size", "8", "--out", str(out), "--device", "cpu",
            # lava-dl examples' surrogate (peak slope 0.04): the vanishing the paper describes
            "--tau-grad", "0.03", "--scale-grad", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "first layer" in printed and "shortcut" in printed
    def no_infinity(name):
        raise AssertionError(f"gradients.json is not strict JSON: {name}")

    res = json.loads((out / "gradients.json").read_text(), parse_constant=no_infinity)
    png = (out / "gradients.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert list(res["layers"]) == ["none", "shortcut", "evolutionary"]
    expected = weight_parameters(build_model("resnet20", width=16, depths=(2, 2, 2)))
    assert res["model_spec"]["neuron"]["tau_grad"] == 0.03
    for mode, rows in res["layers"].items():
        assert [r["name"] for r in rows] == [name for name, _ in expected]
        assert [r["depth"] for r in rows] == list(range(len(expected)))
        assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] >= 0 for r in rows)
        assert rows[0]["name"].startswith("stages.0")  # the first conv comes first
        assert res["first_layer_grad_norm"][mode] == rows[0]["grad_norm"]
    first = res["first_layer_grad_norm"]
    # the paper's point: heads hand the first layer a far larger gradient
    assert first["none"] > 0
    assert first["shortcut"] > 10 * first["none"]
    assert first["shortcut"] > first["evolutionary"] > first["none"]  # lambda(0) = 0.25 < 1


def test_diagnose_rejects_unknown_mode(tmp_path, capsys):
    argv = ["diagnose", "gradients", "--model", "cnn", "--heads", "none,bogus", "--T", "2",
            "--batches", "1", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "bogus" in capsys.readouterr().err
