"""deploy/energy/report.py (JSON / Markdown / PNG, atomic writes) and `spikeline energy`."""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nir
from spikeline.deploy.energy import count_operations, load_hardware_models, price_table
from spikeline.deploy.energy.report import (
    atomic_write_bytes, build_report, to_markdown, write_json, write_report)
from spikeline.errors import SpikelineError

SHARED = Path(__file__).resolve().parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_graph() -> nir.NIRGraph:
    g = np.random.default_rng(0)

    def lif(shape):
        one = np.ones(shape)
        return nir.LIF(tau=1e-3 * one, r=10 * one, v_leak=0 * one, v_threshold=0.3 * one)

    nodes = {
        "input": nir.Input(np.array([2, 6, 6])),
        "conv": nir.Conv2d((6, 6), g.uniform(0, 0.5, (3, 2, 3, 3)), 2, 1, 1, 1, np.zeros(3)),
        "lif1": lif((3, 3, 3)),
        "flat": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0),
        "fc": nir.Affine(g.uniform(0, 0.5, (4, 27)), np.zeros(4)),
        "lif2": lif((4,)),
        "output": nir.Output(np.array([4])),
    }
    edges = [("input", "conv"), ("conv", "lif1"), ("lif1", "flat"), ("flat", "fc"),
             ("fc", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def sample_counts():
    one = np.ones(3)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([3])), "fc": nir.Linear(np.ones((3, 3))),
               "lif": nir.LIF(tau=one, r=one, v_leak=0 * one, v_threshold=one),
               "output": nir.Output(np.array([3]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], type_check=False)
    x = torch.tensor([[1.0, 0, 2], [1.0, 1, 0]]).reshape(2, 1, 3)
    s = torch.tensor([[0.0, 1, 0], [1.0, 1, 0]]).reshape(2, 1, 3)
    return count_operations(graph, {"input": x, "fc": x, "lif": s})


def test_report_json_has_every_count_and_energy(tmp_path):
    counts = sample_counts()
    models = load_hardware_models()
    estimates, refused = price_table(counts, list(models.values()))
    report = build_report(counts, estimates, models, {"model": "m.nir"}, refused)
    path = write_json(report, tmp_path / "sub" / "energy.json")
    data = json.loads(path.read_text())
    assert set(data) >= {"layers", "totals", "energy", "neurons", "meta"}
    (layer,) = data["layers"]
    for key in ("synops", "macs", "neuron_updates", "spikes", "connections", "dense_ops"):
        assert key in layer and key in data["totals"], key
    assert {"name", "op", "firing_rate", "input_events", "energy"} <= set(layer)
    assert layer["name"] == "fc"
    assert layer["synops"] == 6 and layer["macs"] == 6      # step 0 holds a 2 -> MAC
    assert layer["neuron_updates"] == 6 and layer["spikes"] == 3
    assert data["totals"]["synops"] == 6 and data["totals"]["dense_ops"] == 9
    cmos = [n for n, m in models.items() if m.kind == "cmos"]
    # the sample holds a 2 (graded): the binary-spike chips refuse, the others price
    assert set(data["refused"]) == {"loihi1", "loihi1_sanafe", "truenorth"}
    assert "binary spikes only" in data["refused"]["loihi1"]
    assert set(data["energy"]) == ({n for n in models if n not in data["refused"]}
                                   | {f"{c}/{n}" for c in ("ems", "lemaire") for n in cmos})
    fp32 = data["energy"]["cmos45_fp32"]
    assert (fp32["convention"], fp32["hardware"]) == ("event", "cmos45_fp32")
    assert fp32["snn"]["total_J"] == pytest.approx((4.6 * 6 + 0.9 * 6) * 1e-12)
    assert fp32["snn"]["memory_J"] == 0
    assert fp32["ann"]["total_J"] == pytest.approx(4.6 * 9 * 1e-12)
    assert fp32["ratio"] == pytest.approx(fp32["ann"]["total_J"] / fp32["snn"]["total_J"])
    assert "Horowitz" in fp32["constants"]["mac"]["source"]
    assert data["energy"]["loihi2"]["measured"] is False
    assert data["energy"]["loihi2"]["label"] == "not measured"
    # the primary estimate (top level, per-layer snn_J / ann_J) is lemaire on cmos45_int8
    assert (data["convention"], data["hardware"]) == ("lemaire", "cmos45_int8")
    assert data["snn"]["memory_J"] > 0 and data["ann"]["memory_J"] > 0
    assert data["snn"]["total_J"] == pytest.approx(
        data["snn"]["compute_J"] + data["snn"]["memory_J"])
    assert layer["snn_J"] == pytest.approx(data["snn"]["total_J"])
    assert layer["ann_J"] == pytest.approx(data["ann"]["total_J"])
    assert "break_even_rate" in data and "break_even_rate" in layer
    assert data["meta"]["model"] == "m.nir" and data["meta"]["T"] == 2


def test_report_files_markdown_and_png(tmp_path):
    counts = sample_counts()
    models = load_hardware_models()
    estimates, refused = price_table(counts, list(models.values()))
    report = build_report(counts, estimates, models, refused=refused)
    paths = write_report(report, tmp_path / "rep")
    assert sorted(p.name for p in paths.values()) == [
        "energy.json", "energy.md", "energy_layers.png", "energy_models.png"]
    for key in ("layers_png", "models_png"):
        data = paths[key].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    md = paths["markdown"].read_text()
    assert "| fc | Linear |" in md and "**total**" in md
    for name in models:
        assert f"| {name}" in md or f"| refused | {name} |" in md
    assert "| lemaire | cmos45_int8 |" in md and "loihi2 (not measured)" in md
    assert "Per layer, lemaire convention on cmos45_int8" in md
    assert md == to_markdown(report)
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]  # no temps


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "energy.json"
    path.write_text("old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["energy.json"]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def cli(argv) -> int:
    from spikeline.cli import _MODULES, main

    if "energy" in _MODULES:
        return main(argv)
    from spikeline.cli import energy

    parser = argparse.ArgumentParser(prog="spikeline")
    energy.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SpikelineError as err:
        print(f"spikeline: error: {err}", file=sys.stderr)
        return 2


@pytest.fixture
def export_dir(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    nir.write(str(folder / "model.nir"), tiny_graph())
    (folder / "metadata.json").write_text(json.dumps({"T": 3}))
    from spikeline.deploy.export import write_manifest

    write_manifest(folder)  # a folder counts as an export only with its manifest
    return folder


def test_cli_input_array_matches_direct_count(export_dir, tmp_path, capsys):
    from spikeline.deploy.simulate import simulate

    x = (np.random.default_rng(1).random((4, 3, 2, 6, 6)) < 0.3).astype(np.float32)
    x[:, 0] *= 2  # sample 0 holds counts of 2 -> MACs in the first layer
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.json"
    rc = cli(["energy", str(export_dir), "--input", str(tmp_path / "x.npy"), "--json", str(out),
              "--report", str(tmp_path / "rep"), "--batch-size", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "cmos45_fp32" in printed and "ANN/SNN" in printed
    data = json.loads(out.read_text())
    graph = nir.read(str(export_dir / "model.nir"))
    direct = count_operations(graph, simulate(graph, torch.from_numpy(x))).totals()
    for key in ("synops", "macs", "spikes", "neuron_updates", "input_events"):
        assert data["totals"][key] == pytest.approx(direct[key]), key
    assert data["totals"]["macs"] > 0 and data["totals"]["synops"] > 0
    assert data["meta"]["samples"] == 3 and data["meta"]["T"] == 4
    assert (tmp_path / "rep" / "energy_models.png").read_bytes().startswith(PNG_MAGIC)

    # a single sample [T, *input_shape] works too
    np.save(tmp_path / "one.npy", x[:, 1])
    assert cli(["energy", str(export_dir / "model.nir"), "--input", str(tmp_path / "one.npy"),
                "--json", str(out), "--models", "loihi1,truenorth"]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["samples"] == 1 and set(data["energy"]) == {"loihi1", "truenorth"}


def test_cli_events_are_binned_and_resized(export_dir, tmp_path):
    from conftest import real_path

    sample = real_path("nmnist_sample.bin")  # ships in tests/data: fails if absent
    out = tmp_path / "out.json"
    assert cli(["energy", str(export_dir), "--events", str(sample), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["T"] == 3  # from metadata.json
    assert data["meta"]["samples"] == 1
    # 34x34 counts area-resized to 6x6 are not binary: the first layer does MACs
    assert data["layers"][0]["macs"] > 0
    assert data["totals"]["network_input_events"] > 0


def test_cli_errors_exit_2_with_a_message(export_dir, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((4, 2, 5, 5), np.float32))
    assert cli(["energy", str(export_dir), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "does not fit the model input [2, 6, 6]" in capsys.readouterr().err
    assert cli(["energy", str(tmp_path), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "no model.nir" in capsys.readouterr().err
    (tmp_path / "hw.toml").write_text("[models.x]\nkind = 3\n")
    assert cli(["energy", str(export_dir), "--input", str(tmp_path / "bad.npy"),
                "--hardware", str(tmp_path / "hw.toml")]) == 2
    assert "hw.toml: models.x.kind" in capsys.readouterr().err
    assert cli(["energy", str(export_dir), "--input", str(tmp_path / "bad.npy"),
                "--models", "gpu"]) == 2
    assert "unknown hardware model" in capsys.readouterr().err


def test_cli_dataset_samples(export_dir, tmp_path):
    out = tmp_path / "out.json"
    assert cli(["energy", str(export_dir), "--dataset", "ndigits", "--samples", "2", "--T", "2",
                "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
                "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["samples"] == 2 and data["meta"]["T"] == 2
    assert data["meta"]["source"] == {"dataset": "ndigits", "split": "test", "encoding": "counts"}
    assert data["totals"]["network_input_events"] > 0
