"""The deployable EMS-YOLO detector with ``loihi`` timing (one step per synaptic hop), certified
on Lava spike for spike: timing semantics, the export (Delay nodes, per-level readout windows),
verify on nir and lava (every neuron, both Output nodes, the off-chip readout), planted faults.

The run folder is made as in ``test_deploy_detector.py`` (no train CLI, width 8, T = 3); one
Lava run of the width-8 detector on one 64x64 sample takes about 10 s (16 steps).
"""
from __future__ import annotations

import importlib.util
import json

import nir
import numpy as np
import pytest
import torch

from spikeline.cli import main
from spikeline.deploy.export import export_run, write_manifest
from spikeline.deploy.fold import fold_model
from spikeline.deploy.nir_check import DT
from spikeline.deploy.to_lava import lower
from spikeline.deploy.verify import verify_export
from spikeline.errors import BadInput
from spikeline.pipeline.checkpoint import build_from_spec

from test_deploy_detector import SPEC, T, copy_export, frames, make_run

needs_lava = pytest.mark.skipif(importlib.util.find_spec("lava") is None,
                                reason="lava-nc / lava-dl are not installed")
LOIHI = {**SPEC, "timing": "loihi"}
P4_HOPS, P5_HOPS = 1 + 3 * 2 + 2, 1 + 4 * 2 + 2 + 2  # stem, backbone blocks, neck blocks


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return make_run(tmp_path_factory.mktemp("detrun_loihi"), LOIHI)


@pytest.fixture(scope="module")
def export(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("detexport_loihi")
    export_run(run_dir, out)
    return out


def test_each_level_first_sees_the_input_at_its_own_depth():
    """No biases and weights of 2.0: every neuron fires in the step its input arrives, and
    nothing moves before, so P4 and P5 are silent exactly until their hop depths."""
    model = build_from_spec(LOIHI)
    assert model.level_latency == (P4_HOPS, P5_HOPS) == (9, 13)
    assert model.input_pad_steps == model.latency == 13 and model.readout_starts == (9, 13)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4 and not name.startswith("head."):
                p.fill_(2.0)
    folded = fold_model(model)
    x = (torch.rand(1, T, 2, 64, 64, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    p4, p5 = folded.features(x)
    assert p4.shape[0] == p5.shape[0] == T + 13
    for level, lat in ((p4, 9), (p5, 13)):
        assert not level[:lat].any() and level[lat].sum() > 0
    # the head averages T steps per level: [9, 12) of P4, [13, 16) of P5
    windows = folded.readout_window([p4, p5])
    assert torch.equal(windows[0], p4[9:12]) and torch.equal(windows[1], p5[13:16])


def test_ideal_specs_build_unchanged_and_loihi_needs_the_deployable_form():
    ideal, loihi = build_from_spec(SPEC), build_from_spec(LOIHI)
    assert ideal.timing == "ideal" and ideal.input_pad_steps == 0
    assert ideal.readout_starts == (0, 0)
    assert set(ideal.state_dict()) == set(loihi.state_dict())
    x = frames(n=1).transpose(0, 1)
    assert [f.shape[0] for f in ideal.eval().features(x)] == [T, T]
    with pytest.raises(BadInput, match="deployable"):
        build_from_spec({**LOIHI, "deployable": False})
    with pytest.raises(ValueError, match="timing"):
        build_from_spec({**SPEC, "timing": "truenorth"})
    # set_timing switches back and forth in place
    assert loihi.set_timing("ideal").input_pad_steps == 0
    assert loihi.set_timing("loihi").neck["p5"].lif2.delay_shift is False


def test_export_writes_delays_and_per_level_readout_windows(export):
    meta = json.loads((export / "metadata.json").read_text())
    assert meta["timing"] == "loihi" and meta["latency_steps"] == 13
    assert meta["level_latency_steps"] == {"p4": 9, "p5": 13}
    assert meta["input_pad_steps"] == 13 and meta["readout_starts"] == {"p4": 9, "p5": 13}
    assert meta["chip_steps_per_sample"] == T + 13
    assert [lv["readout_start"] for lv in meta["readout"]["levels"]] == [9, 13]
    graph = nir.read(export / "model.nir")
    assert graph.metadata["readout_starts"] == {"p4": 9, "p5": 13}
    assert int(graph.metadata["input_pad_steps"]) == 13
    delays = [n for n, node in graph.nodes.items() if isinstance(node, nir.Delay)]
    # the input's hop, 14 of the 15 neurons' hops (P4 and P5 feed the host), 7 skip edges
    assert len(delays) == 1 + 13 + 7
    for name in meta["output_nodes"]:  # Output nodes take the neurons' spikes, undelayed
        source = next(s for s, d in graph.edges if d == name)
        assert isinstance(graph.nodes[source], nir.CubaLIF)
    with np.load(export / "readout.npz") as z:
        assert list(z["readout_start"]) == [9, 13] and int(z["input_pad_steps"]) == 13
    net = lower(graph)  # Lava can hold it: every synapse's input is delayed >= 1 step
    assert net.pad_steps == 13 and len(net.lifs) == 15


def test_verify_on_nir_matches_every_layer_outputs_and_readout(export):
    report = verify_export(export, frames(), backends=("nir",))
    assert report.ok, report.to_dict()
    result = report.backends[0]
    assert report.steps == T + 13 and result.compared > 0 and report.reference_spikes > 0
    assert {"readout_p4", "readout_p5"} <= set(result.per_node)
    assert sum(n.endswith(("output_p4", "output_p5")) for n in result.per_node) == 2


def test_deployed_detections_are_the_folded_detectors(export):
    """The deployed path (padded input, fixed-point graph, per-level windows in readout.npz,
    decode, NMS) gives the folded network's boxes exactly: what deployed mAP scores."""
    from spikeline.deploy.detector import deployed_detections, load_readout
    from spikeline.deploy.export import load_folded
    from spikeline.pipeline.detection import decode, nms

    folded, _, _ = load_folded(export)
    graph, readout = nir.read(export / "model.nir"), load_readout(export / "readout.npz")
    assert readout.starts == (9, 13) and readout.pad_steps == 13
    x = frames(n=2).transpose(0, 1)
    ours = deployed_detections(graph, readout, x, "binary")
    with torch.no_grad():
        theirs = nms(decode(folded(x), folded.head.anchors), 0.001, 0.6)
    assert len(ours) == 2 and all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_energy_prices_the_readout_over_t_steps_not_the_padding(export, tmp_path):
    np.save(tmp_path / "x.npy", frames().clamp(max=1).numpy())
    assert main(["energy", str(export), "--input", str(tmp_path / "x.npy"), "--convention",
                 "ems", "--hardware", "cmos45_fp32", "--json", str(tmp_path / "e.json")]) == 0
    readout = json.loads((tmp_path / "e.json").read_text())["readout"]
    assert readout["T"] == T
    entry = readout["energy"]["ems/cmos45_fp32"]
    assert entry["readout_snn_J"] == pytest.approx(T * 4.6e-12 * readout["macs"])


@needs_lava
def test_verify_on_lava_matches_every_layer_outputs_and_readout(export):
    report = verify_export(export, frames(n=1), backends=("nir", "lava"))
    assert report.ok, report.to_dict()
    lava = report.backends[1]
    assert lava.status == "ok" and lava.mismatches == 0 and "process graph" in lava.path
    names = list(lava.per_node)
    assert sum("cubalif" in n for n in names) == 15
    assert {"readout_p4", "readout_p5"} <= set(names)
    assert sum(n.endswith(("output_p4", "output_p5")) for n in names) == 2
    assert lava.compared == report.backends[0].compared > 0
    assert report.reference_spikes > 0


def _last_skip_delay(graph) -> str:
    """The last Delay node fed by another Delay node: a residual shortcut's extra step."""
    preds = {}
    for s, d in graph.edges:
        preds.setdefault(d, []).append(s)
    names = [n for n, node in graph.nodes.items() if isinstance(node, nir.Delay)
             and any(isinstance(graph.nodes[p], nir.Delay) for p in preds.get(n, []))]
    return max(names, key=lambda n: int(n.split("_")[0]))


def _planted(export, bad, fault):
    bad.mkdir()
    copy_export(export, bad)
    graph = nir.read(export / "model.nir")
    if fault == "weight":  # the last conv (the neck's P4 block), one kernel +64 mantissa steps
        conv = max((n for n in graph.nodes if n.endswith("_conv")),
                   key=lambda n: int(n.split("_")[0]))
        graph.nodes[conv].weight[0] += 1.0
    else:  # one shortcut one step late
        name = _last_skip_delay(graph)
        assert np.allclose(graph.nodes[name].delay, DT)
        graph.nodes[name] = nir.Delay(delay=np.asarray(graph.nodes[name].delay) * 2)
    nir.write(bad / "model.nir", graph)
    write_manifest(bad)  # a consistent folder: only verify can tell it is wrong
    return bad


@needs_lava
@pytest.mark.parametrize("fault", ["weight", "delay"])
def test_lava_catches_a_planted_weight_or_delay_fault(export, tmp_path, fault):
    bad = _planted(export, tmp_path / fault, fault)
    report = verify_export(bad, frames(n=1), backends=("lava",))
    lava = report.backends[0]
    assert lava.status == "mismatch" and lava.mismatches > 0, (fault, lava)
    assert lava.per_node["readout_p4"] > 0  # both faults sit on the P4 path
    assert not report.ok


@needs_lava
@pytest.mark.slow
def test_a_tiny_loihi_training_run_exports_and_verifies_on_nir_and_lava(tmp_path, capsys):
    """`spikeline train --task detection --timing loihi` for 2 steps, export, then `spikeline
    verify --backends nir,lava` on two test scenes: exit 0, both checked."""
    torch.set_num_threads(1)
    run, exp = tmp_path / "run", tmp_path / "exp"
    assert main(["train", "--task", "detection", "--dataset", "ndigits-detect", "--model",
                 "ems_res10", "--width", "8", "--T", "3", "--timing", "loihi", "--batch-size",
                 "8", "--limit-train", "16", "--limit-test", "8", "--max-steps", "2",
                 "--device", "cpu", "--no-progress", "--out", str(run)]) == 0
    spec = torch.load(run / "best.pt", weights_only=True)["model_spec"]
    assert spec["timing"] == "loihi"
    assert main(["export", str(run), "--out", str(exp), "--no-accuracy"]) == 0
    x = frames(n=2).numpy()  # [T, N, C, H, W]
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert main(["verify", str(exp), "--backends", "nir,lava", "--input",
                 str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert "spikes match the trained network on nir, lava (0 mismatches)" in out
    assert "16 steps each" in out


@needs_lava
def test_lava_conv_runs_layers_of_128_channels():
    """lava-nc 0.10's Conv model computes ``channels % groups`` with an int8 ``groups``, which
    NumPy 2 refuses for 128 channels (a width-16 detector's last stage); ``lava_run`` passes
    the parameters as int64, which gives the same convolution."""
    from lava.proc.conv import utils

    from spikeline.deploy.lava_run import patch_conv_int8_params

    g = np.random.default_rng(0)
    x = (g.random((4, 4, 128)) < 0.3).astype(np.int32)  # Lava's (X, Y, C)
    w = g.integers(-20, 20, size=(8, 3, 3, 128)).astype(np.int32)  # (C_out, kx, ky, C_in)
    params = [np.array(v, dtype=np.int8) for v in ((3, 3), (1, 1), (1, 1), (1, 1))]
    patch_conv_int8_params()
    out = utils.conv(x, w, *params, np.array([1], dtype=np.int8)[0])
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x.transpose(2, 1, 0)).double()[None],
        torch.from_numpy(np.ascontiguousarray(w[:, ::-1, ::-1].transpose(0, 3, 2, 1))).double(),
        padding=1)[0].numpy().transpose(2, 1, 0)
    assert np.array_equal(out, expected.astype(np.int32))
