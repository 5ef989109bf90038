"""`spikeline train` / `evaluate`: resume bit-exactness, NaN stop, checkpoints, metrics, schedules.

Tiny runs: the embedded ndigits set, the `cnn` model, T=8 (its five one-step layer delays leave
no output at T <= 5), 48 training samples, batch 16.
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from spikeline.cli import main
from spikeline.errors import SpikelineError
from spikeline.pipeline import checkpoint as ckpt_mod
from spikeline.pipeline.checkpoint import load_checkpoint, load_run_model, save_checkpoint
from spikeline.pipeline.heads import ShortcutHeads, evolutionary_lambda


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--dataset", "ndigits", "--model", "cnn", "--T", "8", "--batch-size", "16",
        "--limit-train", "48", "--limit-test", "32", "--device", "cpu", "--no-progress"]
STEPS = 3  # 48 / 16 optimizer steps per epoch


def run_cli(*argv):
    return main([str(a) for a in argv])


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """An uninterrupted 2-epoch evolutionary run (the reference of several tests)."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    assert run_cli("train", *TINY, "--heads", "evolutionary", "--epochs", 2, "--out", out) == 0
    return out


def test_resume_reproduces_uninterrupted_run_bit_for_bit(straight_run, tmp_path):
    out = tmp_path / "interrupted"
    assert run_cli("train", *TINY, "--heads", "evolutionary", "--epochs", 2,
                   "--stop-after", 1, "--out", out) == 0
    first = load_checkpoint(out / "last.pt")
    assert first["epoch"] == 1 and first["iteration"] == STEPS
    assert first["total_iterations"] == 2 * STEPS
    assert json.loads((out / "summary.json").read_text())["finished"] is False

    assert run_cli("train", "--out", out, "--resume", "--no-progress") == 0
    resumed = load_checkpoint(out / "last.pt")
    straight = load_checkpoint(straight_run / "last.pt")
    assert resumed["epoch"] == straight["epoch"] == 2
    assert resumed["iteration"] == straight["iteration"] == 2 * STEPS
    # the second epoch really changed the weights, and identically in both runs
    assert not states_equal(first["model"], straight["model"])
    assert states_equal(resumed["model"], straight["model"])
    assert states_equal(resumed["model_stripped"], straight["model_stripped"])
    opt_r, opt_s = resumed["optimizer"]["state"], straight["optimizer"]["state"]
    assert opt_r.keys() == opt_s.keys()
    for k in opt_r:
        assert states_equal(opt_r[k], opt_s[k])
    assert resumed["scheduler"] == straight["scheduler"]
    # the metrics file holds each epoch once, with the same numbers (time aside)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r, s in zip(rows, ref):
        r.pop("seconds"), s.pop("seconds")
        assert r == s


def test_resume_rejects_conflicting_options_and_fresh_run_refuses_existing_dir(
        straight_run, capsys):
    assert run_cli("train", "--out", straight_run, "--resume", "--model", "resnet18",
                   "--no-progress") == 2
    err = capsys.readouterr().err
    assert "model" in err and "resnet18" in err
    assert run_cli("train", *TINY, "--epochs", 1, "--out", straight_run) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert run_cli("train", "--out", tmp_path / "nothing", "--resume") == 2
    assert "last.pt" in capsys.readouterr().err


def test_metrics_jsonl_and_curves(straight_run):
    rows = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"epoch", "train_loss", "train_acc", "val_acc", "lr", "lambda",
                "seconds"} <= r.keys()
        assert "test_acc" not in r  # the test split is not looked at per epoch
        assert math.isfinite(r["train_loss"]) and r["train_loss"] > 0
        assert 0.0 <= r["train_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
        assert r["seconds"] > 0
    # the network's output is not stuck at zero logits (loss ln 10 for 10 classes)
    assert all(abs(r["train_loss"] - math.log(10)) > 1e-3 for r in rows)
    # cosine per iteration: lr used at the last step of each epoch
    for r in rows:
        i = r["epoch"] * STEPS - 1
        assert r["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * i / (2 * STEPS))))
        assert r["lambda"] == pytest.approx(0.25 * (1 - i / (2 * STEPS)))
    png = (straight_run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    best = load_checkpoint(straight_run / "best.pt")
    assert best["best"]["val_acc"] == max(r["val_acc"] for r in rows)
    assert best["epoch"] == best["best"]["epoch"]
    summary = json.loads((straight_run / "summary.json").read_text())
    assert summary["val_acc"] == best["best"]["val_acc"]
    assert summary["test_checkpoint"] == "best.pt" and 0.0 <= summary["test_acc"] <= 1.0


def test_lambda_schedule_progress_is_i_over_I(tmp_path, monkeypatch):
    """ShortcutHeads.loss gets progress i/I for i = 0..I-1, I = epochs x steps per epoch."""
    seen = []
    original = ShortcutHeads.loss

    def spy(self, x, y, progress=0.0):
        seen.append(progress)
        return original(self, x, y, progress)

    monkeypatch.setattr(ShortcutHeads, "loss", spy)
    assert run_cli("train", *TINY, "--heads", "evolutionary", "--epochs", 2,
                   "--out", tmp_path / "run") == 0
    total = 2 * STEPS
    assert seen == pytest.approx([i / total for i in range(total)])
    lams = [evolutionary_lambda(0.25, p) for p in seen]
    assert lams[0] == 0.25 and lams[-1] == pytest.approx(0.25 / total)
    steps = [a - b for a, b in zip(lams, lams[1:])]
    assert steps == pytest.approx([0.25 / total] * (total - 1))  # linear decay to 0 at i = I


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref"
    assert run_cli("train", *TINY, "--epochs", 3, "--stop-after", 1, "--out", ref) == 0

    calls = {"n": 0}
    original = ShortcutHeads.loss

    def poisoned(self, x, y, progress=0.0):
        loss, logits = original(self, x, y, progress)
        calls["n"] += 1
        if calls["n"] == STEPS + 2:  # second step of epoch 2
            loss = loss * float("nan")
        return loss, logits

    monkeypatch.setattr(ShortcutHeads, "loss", poisoned)
    out = tmp_path / "diverged"
    assert run_cli("train", *TINY, "--epochs", 3, "--out", out) == 2
    err = capsys.readouterr().err
    assert "nan" in err.lower() and "epoch 2" in err and "last.pt" in err
    last = load_checkpoint(out / "last.pt")
    good = load_checkpoint(ref / "last.pt")
    assert last["epoch"] == 1 and last["iteration"] == STEPS
    assert states_equal(last["model"], good["model"])  # epoch 1's weights, untouched
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    # and the run can be resumed from there
    monkeypatch.setattr(ShortcutHeads, "loss", original)
    assert run_cli("train", "--out", out, "--resume", "--no-progress") == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 3


def test_checkpoint_is_weights_only_and_complete(straight_run):
    raw = torch.load(straight_run / "last.pt", weights_only=True)
    for key in ("config", "model_spec", "model", "model_stripped", "optimizer", "scheduler",
                "rng", "iteration", "total_iterations", "epoch", "history", "best"):
        assert key in raw
    assert {"torch", "numpy", "python"} <= raw["rng"].keys()
    assert raw["config"]["model"] == "cnn" and raw["config"]["heads"] == "evolutionary"
    assert raw["config"]["T"] == 8 and raw["config"]["lr"] == 1e-3
    # the stripped network has no head parameters; the full one has them
    assert not any(k.startswith("heads.") for k in raw["model_stripped"])
    assert any(k.startswith("heads.") for k in raw["model"])
    model, _ = load_run_model(straight_run, "last")
    assert states_equal(model.state_dict(), raw["model_stripped"])


def test_rng_state_roundtrip():
    import random

    import numpy as np

    state = ckpt_mod.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt_mod.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": ckpt_mod.FORMAT, "epoch": 1})

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"format": ckpt_mod.FORMAT, "epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the old file survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


class NotAWeight:
    """Any class instance: weights_only loading must refuse to unpickle it."""


def test_load_refuses_pickled_code_and_foreign_files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt_mod.FORMAT, "obj": NotAWeight()}, evil)
    with pytest.raises(SpikelineError, match="evil.pt"):
        load_checkpoint(evil)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(SpikelineError, match="not a spikeline"):
        load_checkpoint(foreign)


def test_evaluate_cli(straight_run, capsys):
    assert run_cli("evaluate", straight_run, "--json", "--device", "cpu") == 0
    res = json.loads(capsys.readouterr().out)
    best = load_checkpoint(straight_run / "best.pt")
    assert res["checkpoint"] == "best" and res["num_test"] == 32
    assert res["epoch"] == best["epoch"]
    summary = json.loads((straight_run / "summary.json").read_text())
    assert res["test_acc"] == pytest.approx(summary["test_acc"])  # the one test evaluation
    assert run_cli("evaluate", straight_run, "--checkpoint", "last", "--json") == 0
    res_last = json.loads(capsys.readouterr().out)
    assert res_last["epoch"] == 2 and 0.0 <= res_last["test_acc"] <= 1.0
    assert run_cli("evaluate", straight_run) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert run_cli("evaluate", straight_run / "missing") == 2


def test_recalibrate_norms_sets_statistics_of_the_current_weights():
    from spikeline.pipeline.blocks import BiasNorm
    from spikeline.pipeline.models import build_model
    from spikeline.pipeline.blocks import recalibrate_norms

    torch.manual_seed(0)
    model = build_model("resnet20", input_size=(34, 34), width=16, depths=(1, 1, 1))
    batches = [(torch.randint(0, 3, (4, 3, 2, 34, 34)).float(), None) for _ in range(3)]
    first = next(m for m in model.modules() if isinstance(m, BiasNorm))
    seen = []
    hook = first.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach()))
    assert recalibrate_norms(model, batches, torch.device("cpu"), max_batches=2) == 2
    hook.remove()
    assert len(seen) == 2  # the third batch was not used
    dims = [0, 1, 3, 4]
    mean = torch.stack([z.mean(dims) for z in seen]).mean(0)
    var = torch.stack([z.var(dims, unbiased=True) for z in seen]).mean(0)
    torch.testing.assert_close(first.running_mean, mean)
    torch.testing.assert_close(first.running_var, var)
    assert first.running_var.grad_fn is None and first.running_mean.grad_fn is None
    model.eval()
    recalibrate_norms(model, batches, torch.device("cpu"), max_batches=1)
    assert not model.training  # the mode it had is restored


def test_figures_written_to_files_leave_the_matplotlib_backend_alone(tmp_path):
    # a notebook's inline backend (here: the one MPLBACKEND names) must survive a training run
    # or `data show` writing a PNG; pyplot with matplotlib.use("Agg", force=True) replaced it
    code = (
        "import sys, matplotlib, numpy as np\n"
        "from spikeline.pipeline.plots import plot_curves\n"
        "from spikeline.datasets.boxes import Boxes\n"
        "from spikeline.datasets.detection import draw_detections\n"
        "out = sys.argv[1]\n"
        "plot_curves([{'epoch': 1, 'train_loss': 1.0, 'train_acc': 0.5, 'val_acc': 0.4}],\n"
        "            out + '/curves.png')\n"
        "draw_detections(np.ones((2, 2, 8, 8), np.float32), Boxes(np.zeros((0, 4)), [], (8, 8)),\n"
        "                out + '/boxes.png')\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n")
    env = {**os.environ, "MPLBACKEND": "template"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["template", "False"]
    for name in ("curves.png", "boxes.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
