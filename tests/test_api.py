"""The Python API (`import spikeline as sl`): the quickstart script, result objects, your own
model of spikeline blocks, another tool's NIR graph, and the CLI computing the same numbers."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import spikeline as sl
from spikeline.cli import main
from spikeline.pipeline.blocks import BiasNorm
from spikeline.pipeline.structure import build_custom

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"


def test_public_names_resolve_and_are_documented():
    for name in sl.__all__:
        value = getattr(sl, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), name
    assert set(sl.__all__) <= set(dir(sl))
    with pytest.raises(AttributeError):
        sl.no_such_name  # noqa: B018
    assert "resnet20" in sl.models.names()
    net = sl.models.build("cnn", input_size=(16, 16), num_classes=3)
    assert isinstance(net, sl.models.SpikingNet)


def test_importing_spikeline_alone_stays_light():
    # `spikeline --help` imports the package first: torch must not come with it
    code = "import sys, spikeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_quickstart_script(tmp_path):
    text = QUICKSTART.read_text()
    assert len(text.splitlines()) <= 15 and "argparse" not in text and "sys.argv" not in text
    env = {**os.environ, "TMPDIR": str(tmp_path), "SPIKELINE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(QUICKSTART)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Run(") and lines[1].startswith("Artifact(")
    assert lines[2].startswith("Certificate(OK; checked by ['nir']")
    assert lines[3].startswith("EnergyReport(lemaire on cmos45_int8: SNN ")
    exports = list(tmp_path.glob("spikeline-export-*"))
    assert len(exports) == 1
    for name in ("model.nir", "model.net", "folded.pt", "metadata.json", "manifest.json",
                 "energy_layers.png"):
        assert (exports[0] / name).is_file(), name


# ---- a trained run, through every stage ------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    # enough steps that every layer spikes on test data (verify refuses silent layers)
    config = sl.TrainConfig(dataset="ndigits", model="cnn", heads="evolutionary", epochs=2,
                            batch_size=16, limit_train=128, limit_test=16)
    records = []
    run = sl.train(config, root / "run", max_steps=8, progress=records.append,
                   cache_dir=root / "cache")
    return root, run, records


def test_train_returns_a_run_and_calls_progress(trained):
    root, run, records = trained
    assert [r["epoch"] for r in records] == [1]  # max_steps=8: epoch 1 ends the run
    assert run.history == records and not run.finished
    assert run.config.T == 10 and run.config.size == [34, 34]  # resolved from the dataset
    again = sl.Run.load(run.path)
    assert again.config == run.config and again.summary == run.summary
    data = json.loads(run.to_json())
    assert data["config"]["model"] == "cnn" and len(data["history"]) == 1
    assert "cnn on ndigits" in repr(run) and "| validation acc |" in run._repr_markdown_()
    fig = run.plot()
    assert len(fig.axes) == 2 and fig.axes[0].lines
    scores = run.evaluate(cache_dir=root / "cache")
    assert scores["num_test"] == 16 and 0 <= scores["test_acc"] <= 1
    assert scores["test_acc"] == pytest.approx(run.test_score)


def test_export_verify_energy_of_a_run(trained):
    root, run, _ = trained
    art = sl.export(run, root / "export", cache_dir=root / "cache")
    assert art.deployed["deployed_num_test"] == 16
    assert set(art.files.values()) == {"model.nir", "model.net", "folded.pt"}
    assert sl.Artifact.load(art.path).meta == art.meta
    assert "| files |" in art._repr_markdown_()
    cert = sl.verify(art, "ndigits", backends=("nir",), cache_dir=root / "cache")
    assert cert.ok and cert.checked_by == ["nir"] and cert.report.reference_spikes > 0
    assert json.loads(cert.to_json())["ok"] is True
    assert "| nir | ok | 0 |" in cert._repr_markdown_()
    report = sl.energy(art, "ndigits", samples=4, cache_dir=root / "cache")
    assert len(report.estimates) > 1 and report.snn_joules > 0  # every valid pairing
    assert json.loads(report.to_json())["meta"]["samples"] == 4
    assert report._repr_markdown_().startswith("#")
    fig = report.plot()
    assert len(fig.axes) == 2
    saved = report.save(root / "energy")
    assert saved["layers_png"].is_file()
    # a certificate on silence certifies nothing
    with pytest.raises(sl.VerifyFailed):
        sl.verify(art, np.zeros((10, 1, 2, 34, 34), np.float32), backends=("nir",))


def test_cli_and_api_compute_the_same(trained, capsys):
    root, run, _ = trained
    art = sl.export(run, root / "export2", accuracy=False)
    sim = sl.simulate(art, "ndigits", samples=2, cache_dir=root / "cache")
    assert main(["simulate", str(art.path), "--dataset", "ndigits", "--samples", "2",
                 "--cache-dir", str(root / "cache")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output_sum_per_sample"] == sim.summary["output_sum_per_sample"]
    assert printed["spikes_per_node"] == sim.summary["spikes_per_node"]
    report = sl.energy(art, "ndigits", "lemaire", "cmos45_int8", samples=2,
                       cache_dir=root / "cache")
    out = root / "energy.json"
    assert main(["energy", str(art.path), "--dataset", "ndigits", "--samples", "2",
                 "--convention", "lemaire", "--hardware", "cmos45_int8", "--json", str(out),
                 "--cache-dir", str(root / "cache")]) == 0
    assert json.loads(out.read_text())["snn"] == json.loads(report.to_json())["snn"]


# ---- your own model, another tool's graph ----------------------------------------------------

def _own_network():
    n = sl.models.DEFAULT_NEURON
    torch.manual_seed(0)
    # weights x3: random ones must drive every layer, or verify refuses a silent readout
    return sl.models.SpikingNet(
        [sl.models.Conv(n, 2, 8, 3, padding=1, weight_scale=3),
         nn.Sequential(sl.models.Pool(n, 2),
                       sl.models.Conv(n, 8, 8, 3, padding=1, weight_scale=3, norm=True))],
        nn.Sequential(sl.models.Flatten(), sl.models.Affine(n, 8 * 8 * 8, 4)),
        encoding="binary", stage_channels=[8, 8]).eval()


def test_own_model_exports_verifies_and_is_priced(tmp_path):
    net = _own_network()
    with pytest.raises(sl.BadInput, match="input_shape"):
        sl.export(net, tmp_path / "x")
    art = sl.export(net, tmp_path / "own", input_shape=(2, 16, 16), T=6)
    assert art.T == 6 and art.meta.model_spec["name"] == "custom"
    frames = torch.rand(6, 4, 2, 16, 16).lt(0.3).float()  # events in 30% of pixels and bins
    cert = sl.verify(art, frames, backends=["nir"])
    assert cert.ok and cert.report.reference_spikes > 0
    report = sl.energy(art, frames, convention="event", hardware="loihi2")
    assert report.hardware == "loihi2" and report.snn_joules > 0
    assert [layer["name"] for layer in report.layers]  # per-layer counts


def test_own_model_of_unsupported_modules_is_refused(tmp_path):
    net = _own_network()
    net.stages[0] = nn.ReLU()
    with pytest.raises(sl.BadInput, match="stages.0: a ReLU cannot be described"):
        sl.export(net, tmp_path / "x", input_shape=(2, 16, 16))


needs_lava = pytest.mark.skipif(importlib.util.find_spec("lava") is None,
                                reason="lava-nc is not installed (make install adds it)")
# BatchNorm gain of the random residual net below: at gain 1 its last two blocks and the
# readout stay silent on these inputs, at 3 every layer spikes (10-35% of entries, measured)
RESIDUAL_GAIN = 3.0


def _own_residual_network(batchnorm="shift"):
    """A Spiking ResNet-18 as ``sl.models.build`` makes it under ``loihi`` timing, one block per
    stage, width 8: the default shifting BatchNorm (its neurons restart at their input's
    arrival) or scale-only, and an identity shortcut of weight 84/64 (``relay_weight_for``);
    random weights and shifts, every BatchNorm gain RESIDUAL_GAIN so that every layer spikes
    (verify refuses a silent one)."""
    torch.manual_seed(0)
    net = sl.models.build("resnet18", timing="loihi", batchnorm=batchnorm, width=8,
                          depths=[1, 1, 1, 1], input_size=(16, 16), num_classes=4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, BiasNorm):
                m.weight.fill_(RESIDUAL_GAIN)
                if m.shift is not None:
                    m.shift.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("batchnorm", ["shift", "scale"])
def test_own_residual_model_is_described_with_its_options(batchnorm):
    net = _own_residual_network(batchnorm)
    norm = True if batchnorm == "shift" else "scale"
    spec = json.loads(json.dumps(sl.models.describe(net, (2, 16, 16))))  # JSON-ready
    layers = [layer for stage in spec["stages"] for layer in stage["layers"]]
    stem, blocks = layers[0]["layers"][0], layers[1:]
    assert stem["type"] == "Conv" and stem["norm"] == norm and stem["delay_shift"] is True
    assert [b["type"] for b in blocks] == ["ResidualBlock"] * 4
    assert {b["norm"] for b in blocks} == {norm} and {b["delay_shift"] for b in blocks} == {True}
    assert spec["resets_at_arrival"] is True
    assert blocks[0]["cin"] == blocks[0]["cout"] == 8 and blocks[0]["stride"] == 1  # identity
    assert blocks[0]["identity_weight"] == 84 / 64
    rebuilt = build_custom(spec).eval()
    rebuilt.load_state_dict(net.state_dict())  # strict: the same BatchNorm form on both sides
    assert rebuilt.timing == "loihi" and rebuilt.latency == net.latency
    resets = [m.reset_step for m in net.modules() if hasattr(m, "reset_step")]
    assert [m.reset_step for m in rebuilt.modules() if hasattr(m, "reset_step")] == resets
    assert (max(resets) == net.latency) == (batchnorm == "shift")
    x = torch.rand(2, 6, 2, 16, 16, generator=torch.Generator().manual_seed(1)).lt(0.3).float()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net(x))
    shifted = sl.models.build("resnet18", width=8, depths=[1, 1, 1, 1], input_size=(16, 16),
                              batchnorm="shift", identity_weight=1.0)
    block = sl.models.describe(shifted, (2, 16, 16))["stages"][0]["layers"][1]
    assert block["norm"] is True and block["identity_weight"] == 1.0
    assert block["delay_shift"] is False


@pytest.mark.slow
@needs_lava
def test_own_residual_model_exports_and_verifies_on_nir_and_lava(tmp_path):
    net = _own_residual_network()
    art = sl.export(net, tmp_path / "own", input_shape=(2, 16, 16), T=6)
    assert art.meta.model_spec["name"] == "custom" and art.meta.timing.timing == "loihi"
    frames = torch.rand(6, 4, 2, 16, 16, generator=torch.Generator().manual_seed(2)).lt(0.3)
    cert = sl.verify(art, frames.float(), backends=["nir", "lava"], lava_samples=2)
    assert cert.ok and cert.checked_by == ["nir", "lava"], cert.problems
    lava = cert.backends[1]
    assert lava.mismatches == 0 and lava.path.startswith("process graph")
    assert min(cert.report.coverage.values()) > 0


@pytest.mark.slow
@needs_lava
def test_loihi_residual_run_trained_in_python_verifies_on_nir_and_lava(tmp_path):
    config = sl.TrainConfig(dataset="ndigits", model="resnet18", timing="loihi", width=8,
                            depths=[1, 1, 1, 1], epochs=1, batch_size=16, limit_train=128,
                            limit_test=16, T=6, size=[16, 16])
    # 8 steps: every layer spikes on the 8 test samples (coverage 55-90%, measured)
    run = sl.train(config, tmp_path / "run", max_steps=8, progress=False,
                   cache_dir=tmp_path / "cache")
    assert run.config.timing == "loihi" and run.config.batchnorm == "shift"
    art = sl.export(run, tmp_path / "export", accuracy=False)
    assert art.meta.model_spec["batchnorm"] == "shift"
    assert art.meta.model_spec["resets_at_arrival"] is True
    assert art.meta.model_spec["identity_weight"] == 84 / 64
    cert = sl.verify(art, "ndigits", backends=["nir", "lava"], samples=8, lava_samples=2,
                     cache_dir=tmp_path / "cache")
    assert cert.ok and cert.checked_by == ["nir", "lava"], cert.problems
    assert cert.report.parameters.status == "ok"  # rebuilt from the run's checkpoint


def test_another_tools_graph_simulates_and_is_priced(real_file):
    graph = real_file("nir/nmnist_cnn_sinabs.nir")
    events = real_file("events/nmnist_sample.bin")
    sim = sl.simulate(graph, [events], T=8)
    assert sim.summary["T"] == 8 and sum(sim.summary["spikes_per_node"].values()) > 0
    assert set(sim.spike_rates()) == set(sim.summary["spikes_per_node"])
    assert sim.plot().axes and "| node |" in sim._repr_markdown_()
    report = sl.energy(graph, [events], convention="event", hardware="loihi2", T=8)
    assert report.snn_joules > 0 and report.report["meta"]["model"].endswith(".nir")


def test_bad_inputs_name_what_is_wrong(tmp_path, real_file):
    with pytest.raises(sl.DataNotFound):
        sl.Run.load(tmp_path / "none")
    with pytest.raises(sl.BadInput, match="unknown dataset"):
        sl.load_dataset("mnist")
    graph = real_file("nir/nmnist_cnn_sinabs.nir")
    with pytest.raises(sl.BadInput, match="does not fit the model input"):
        sl.simulate(graph, np.zeros((4, 1, 2, 8, 8), np.float32))
    with pytest.raises(sl.BadInput, match="NaN or Inf"):
        sl.simulate(graph, np.full((4, 1, 2, 34, 34), np.nan, np.float32))


def test_load_dataset_both_tasks(tmp_path):
    data = sl.load_dataset("ndigits", "test", T=4, cache_dir=tmp_path)
    frames, label = data[0]
    assert tuple(frames.shape[:2]) == (4, 2) and 0 <= int(label) < 10
