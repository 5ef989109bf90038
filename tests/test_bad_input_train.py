"""Bad training input ends in exit 2 with the option named and no traceback; a kill between
the two checkpoint writes cannot lose best.pt; evaluation runs without autograd."""
import json

import pytest
import torch
from spikeline.pipeline import checkpoint as ckpt_mod
from spikeline.pipeline.checkpoint import load_checkpoint

from spikeline.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--dataset", "ndigits", "--model", "cnn", "--T", "8", "--batch-size", "16",
        "--limit-train", "32", "--limit-test", "16", "--device", "cpu", "--no-progress"]


def run_cli(*argv):
    return main([str(a) for a in argv])


@pytest.mark.parametrize("command", ["train", "run"])
@pytest.mark.parametrize("option,value,field", [
    ("--width", "0", "--width"),
    ("--lr", "nan", "--lr"),
    ("--lr", "-1", "--lr"),
    ("--tau-grad", "0", "--tau-grad"),
    ("--workers", "-1", "--workers"),
    ("--depths", "0,0,0", "--depths"),
    ("--seed", "-1", "--seed"),
    ("--limit-train", "-5", "--limit-train"),
    ("--max-steps", "0", "--max-steps"),
    ("--recalibrate-batches", "-1", "--recalibrate-batches"),
    ("--size", "0x4", "--size"),
    ("--T", "0", "--T"),
    ("--val-fraction", "1.5", "--val-fraction"),
])
def test_bad_option_values_exit_2_naming_the_option(command, option, value, field, tmp_path,
                                                    capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command, "--out", tmp_path / "r", option, value)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before any work


def test_stop_after_minus_one_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", "--out", tmp_path / "r", "--stop-after", "-1")
    assert exit_info.value.code == 2
    assert "--stop-after" in capsys.readouterr().err


def test_connect_is_refused_for_spiking_resnets(tmp_path, capsys):
    assert run_cli("train", "--print-config", "--model", "resnet18", "--connect", "AND") == 2
    err = capsys.readouterr().err
    assert "--connect" in err and "SEW" in err and "Traceback" not in err
    assert run_cli("train", "--print-config", "--model", "sew_resnet18", "--connect", "AND") == 0
    assert json.loads(capsys.readouterr().out)["connect"] == "AND"


def test_recipe_values_are_checked_like_flags(tmp_path, capsys):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('model = "resnet18"\nwidth = 0\n')
    assert run_cli("train", "--print-config", "--config", recipe) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "width" in err
    recipe.write_text('modle = "resnet18"\n')
    assert run_cli("train", "--print-config", "--config", recipe) == 2
    assert "modle" in capsys.readouterr().err
    recipe.write_text('epochs = 2.5\n')
    assert run_cli("train", "--print-config", "--config", recipe) == 2
    assert "epochs" in capsys.readouterr().err
    assert run_cli("train", "--print-config", "--config", tmp_path / "missing.toml") == 2
    assert "missing.toml" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert run_cli("train", *TINY, "--epochs", 1, "--out", target) == 2
    assert "--out" in capsys.readouterr().err
    assert target.read_text() == "x"


def test_kill_between_last_and_best_cannot_lose_best(tmp_path, monkeypatch):
    """The process dies right after last.pt of epoch 1 (before best.pt): resume and export
    still find the best checkpoint."""
    out = tmp_path / "run"
    original = ckpt_mod._copy_atomic

    def die(src, dst):
        raise KeyboardInterrupt  # the kill, after last.pt was written

    monkeypatch.setattr(ckpt_mod, "_copy_atomic", die)
    with pytest.raises(KeyboardInterrupt):
        run_cli("train", *TINY, "--epochs", 2, "--out", out)
    assert (out / "last.pt").is_file() and not (out / "best.pt").exists()
    monkeypatch.setattr(ckpt_mod, "_copy_atomic", original)
    # a reader of best (export, evaluate) repairs it from last.pt
    path = ckpt_mod.resolve_checkpoint(out, "best")
    assert load_checkpoint(path)["epoch"] == 1
    (out / "best.pt").unlink()
    # and so does a resumed run, which then finishes with a best.pt
    assert run_cli("train", "--out", out, "--resume", "--no-progress") == 0
    best = load_checkpoint(out / "best.pt")
    last = load_checkpoint(out / "last.pt")
    assert best["epoch"] == last["best"]["epoch"]
    assert not list(out.glob("*.tmp*"))


def test_evaluate_model_builds_no_graph():
    from spikeline.pipeline.models import build_model
    from spikeline.pipeline.train import evaluate_model

    model = build_model("cnn", input_size=(34, 34))
    seen = []
    model.readout.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    batch = [(torch.rand(2, 8, 2, 34, 34), torch.tensor([0, 1]))]
    _correct, count = evaluate_model(model, batch, torch.device("cpu"))
    assert count == 2 and seen == [False]
