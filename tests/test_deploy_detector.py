"""The deployable EMS-YOLO detector through the deploy chain: a run folder made here (no train
CLI) -> export (two-output NIR graph + off-chip readout) -> verify (0 mismatches, planted
faults caught) -> energy (both conventions, the readout apart, the ANN beside) -> deployed mAP."""
from __future__ import annotations

import importlib.util
import json

import nir
import numpy as np
import pytest
import torch

from spikeline.cli import main
from spikeline.deploy.export import export_model, export_run, write_manifest
from spikeline.deploy.simulate import simulate
from spikeline.deploy.verify import verify_export
from spikeline.errors import ExportUnsupported, SpikelineError
from spikeline.pipeline.checkpoint import FORMAT, build_from_spec, save_checkpoint
from spikeline.pipeline.ems import NDIGITS_ANCHORS

T = 3
SPEC = {"task": "detection", "name": "ems_res10", "in_channels": 2, "num_classes": 10,
        "encoding": "binary", "width": 8, "deployable": True,
        "anchors": [[list(a) for a in level] for level in NDIGITS_ANCHORS.sizes],
        "strides": [16, 32], "input_size": [64, 64]}
CONFIG = {"task": "detection", "dataset": "ndigits-detect", "T": T, "size": [64, 64],
          "encoding": "binary", "batch_size": 8}


def frames(n=2, seed=1):
    """``[T, N, 2, 64, 64]`` event counts, dense enough that the detector spikes."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, n, 2, 64, 64, generator=g) < 0.2).float() * 2


def make_run(run_dir, spec=SPEC):
    torch.manual_seed(0)
    net = build_from_spec(spec)
    with torch.no_grad():  # BatchNorm statistics of real-looking input, then gains and shifts
        for seed in range(3):  # that make every layer spike (untrained, T = 3: else silent)
            net.train()(frames(4, seed).transpose(0, 1))
        for module in net.modules():
            if hasattr(module, "running_var") and hasattr(module, "shift"):
                module.weight.fill_(2.0)
                module.shift.fill_(0.3)
    net.eval()
    state = net.state_dict()
    save_checkpoint(run_dir / "best.pt", {
        "format": FORMAT, "config": CONFIG, "model_spec": spec, "epoch": 1, "iteration": 1,
        "total_iterations": 1, "model": state, "model_stripped": state,
        "best": {"val_mAP50": 0.0, "epoch": 1}})
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return make_run(tmp_path_factory.mktemp("detrun"))


@pytest.fixture(scope="module")
def export(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("detexport")
    result = export_run(run_dir, out)
    assert set(result.files) == {"nir", "readout", "folded"}
    assert "two outputs" in result.skipped["netx"]
    return out


def copy_export(src, dst):
    for name in ("model.nir", "readout.npz", "folded.pt", "metadata.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_export_writes_two_outputs_and_the_readout(export):
    graph = nir.read(export / "model.nir")
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    meta = json.loads((export / "metadata.json").read_text())
    assert sorted(outputs) == sorted(meta["output_nodes"]) and len(outputs) == 2
    shapes = [list(graph.nodes[n].output_type["output"]) for n in meta["output_nodes"]]
    assert shapes == [[32, 4, 4], [64, 2, 2]]  # P4 (stride 16), P5 (stride 32) at width 8
    readout = meta["readout"]
    assert readout["file"] == "readout.npz" and "mean_t" in readout["equation"]
    assert readout["strides"] == [16, 32] and readout["num_classes"] == 10
    assert [lv["out_channels"] for lv in readout["levels"]] == [45, 45]
    manifest = json.loads((export / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.nir", "readout.npz", "folded.pt", "metadata.json"}
    with np.load(export / "readout.npz") as z:
        assert z["weight_p4"].shape == (45, 32) and z["bias_p5"].shape == (45,)
        assert list(z["input_nodes"]) == meta["output_nodes"]
    sim = simulate(graph, frames().clamp(max=1))
    assert sim.output_nodes == tuple(meta["output_nodes"])
    with pytest.raises(SpikelineError, match="2 Output nodes"):
        _ = sim.output


def test_the_published_detector_is_refused_with_the_reason(tmp_path):
    spec = {**SPEC, "deployable": False}
    with pytest.raises(ExportUnsupported, match="membrane potentials.*deployable"):
        export_model(build_from_spec(spec), spec, tmp_path / "x", config=CONFIG)
    assert not (tmp_path / "x" / "manifest.json").exists()
    make_run(tmp_path, spec)
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "e"), "--no-accuracy"]) == 2


def test_verify_matches_every_layer_outputs_and_readout(export):
    report = verify_export(export, frames(), backends=("nir",))
    assert report.ok, report.to_dict()
    nir_result = report.backends[0]
    assert nir_result.mismatches == 0 and nir_result.compared > 0
    names = list(nir_result.per_node)
    assert sum("cubalif" in n for n in names) == 15  # stem + 7 blocks x 2 neurons
    assert any(n.endswith("output_p4") for n in names) and "readout_p5" in names
    assert report.reference_spikes > 0


def test_lava_and_peers_report_skipped_with_the_reason(export):
    report = verify_export(export, frames(n=1), backends=("lava", "snntorch"))
    by_name = {b.backend: b for b in report.backends}
    assert all(b.status == "skipped" for b in report.backends)
    assert not report.ok and report.checked_by == []
    # either way the reason is given: Lava would run another network, or Lava is absent
    installed = importlib.util.find_spec("lava") is not None
    assert ("ideal timing" if installed else "not installed") in by_name["lava"].note
    assert "voltage bias" in by_name["snntorch"].note or "Output nodes" in by_name["snntorch"].note


def test_a_changed_neck_weight_fails_verify(export, tmp_path):
    copy_export(export, tmp_path)
    graph = nir.read(export / "model.nir")
    convs = sorted((n for n in graph.nodes if n.endswith("_conv")),
                   key=lambda n: int(n.split("_")[0]))
    neck = convs[-2]  # exported last: the neck's P4 block (conv1, conv2, shortcut conv)
    graph.nodes[neck].weight[0] += 1.0  # one output channel's kernel, +64 mantissa steps
    nir.write(tmp_path / "model.nir", graph)
    write_manifest(tmp_path)  # the manifest alone would refuse it; verify must catch it too
    result = verify_export(tmp_path, frames(), backends=("nir",)).backends[0]
    assert result.status == "mismatch"
    assert result.per_node["readout_p4"] > 0


def test_a_wrong_readout_input_fails_verify(export, tmp_path):
    """``output_p4`` fed by the stride-16 backbone map instead of the neck's P4 block: the same
    shape, so only a check of the outputs and the readout sees it."""
    copy_export(export, tmp_path)
    graph = nir.read(export / "model.nir")
    meta = json.loads((export / "metadata.json").read_text())
    out_p4 = meta["output_nodes"][0]
    source = next(s for s, d in graph.edges if d == out_p4)
    shape = list(graph.nodes[out_p4].output_type["output"])
    other = next(n for n, node in graph.nodes.items() if isinstance(node, nir.CubaLIF)
                 and n != source and list(node.output_type["output"]) == shape)
    graph.edges = [(other if d == out_p4 else s, d) for s, d in graph.edges]
    nir.write(tmp_path / "model.nir", graph)
    write_manifest(tmp_path)
    result = verify_export(tmp_path, frames(), backends=("nir",)).backends[0]
    assert result.status == "mismatch"
    assert result.per_node[out_p4] > 0 and result.per_node["readout_p4"] > 0
    assert all(v == 0 for n, v in result.per_node.items() if "cubalif" in n)


def test_a_changed_readout_weight_fails_verify(export, tmp_path):
    copy_export(export, tmp_path)
    with np.load(export / "readout.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["weight_p5"][4, 0] += 0.5
    with open(tmp_path / "readout.npz", "wb") as fh:
        np.savez(fh, **arrays)
    write_manifest(tmp_path)
    result = verify_export(tmp_path, frames(), backends=("nir",)).backends[0]
    assert result.status == "mismatch" and result.per_node["readout_p5"] > 0
    assert result.per_node["readout_p4"] == 0


def test_energy_prices_the_spiking_part_the_readout_and_the_ann(export, tmp_path, capsys):
    np.save(tmp_path / "x.npy", frames().clamp(max=1).numpy())
    assert main(["energy", str(export), "--input", str(tmp_path / "x.npy"), "--convention",
                 "ems", "--hardware", "cmos45_fp32", "--json", str(tmp_path / "ems.json")]) == 0
    assert main(["energy", str(export), "--input", str(tmp_path / "x.npy"),
                 "--json", str(tmp_path / "all.json"), "--report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "off-chip readout" in out
    ems = json.loads((tmp_path / "ems.json").read_text())
    assert ems["convention"] == "ems" and ems["ann"]["total_J"] > 0
    readout = ems["readout"]
    assert readout["macs"] == 32 * 45 * 16 + 64 * 45 * 4  # 1x1 convs on P4 (4x4), P5 (2x2)
    entry = readout["energy"]["ems/cmos45_fp32"]
    assert entry["readout_snn_J"] == pytest.approx(T * 4.6e-12 * readout["macs"])
    assert entry["readout_ann_J"] == pytest.approx(4.6e-12 * readout["macs"])
    assert entry["snn_total_J"] == pytest.approx(ems["snn"]["total_J"] + entry["readout_snn_J"])
    assert entry["ratio"] == pytest.approx(entry["ann_total_J"] / entry["snn_total_J"])
    everything = json.loads((tmp_path / "all.json").read_text())
    assert {"cmos45_fp32", "ems/cmos45_fp32", "lemaire/cmos45_int8"} <= set(everything["energy"])
    assert set(everything["readout"]["energy"]) == set(everything["energy"])
    assert "Off-chip readout" in (tmp_path / "r" / "energy.md").read_text()
    first = everything["layers"][0]
    assert first["macs"] == 0 and first["synops"] > 0  # binary input: the stem accumulates


def test_deployed_map_is_measured_next_to_the_trained_one(run_dir, export, tmp_path_factory):
    from spikeline.cli.deploy import map_line, report_deployed_map

    cache = tmp_path_factory.mktemp("detcache")
    fields = report_deployed_map(run_dir, export, cache_dir=cache, limit=8, batch_size=8)
    assert fields["deployed_num_test"] == 8
    for key in ("deployed_test_mAP50", "trained_test_mAP50", "deployed_test_mAP50_95"):
        assert 0.0 <= fields[key] <= 1.0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["deployed_test_mAP50"] == fields["deployed_test_mAP50"]
    assert "deployed" in map_line(fields)
