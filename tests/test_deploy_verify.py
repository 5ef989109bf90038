"""Export directory, the verify certificate (NIR, Lava, peers) and the netx -> NIR import."""
import importlib.util
import json

import h5py
import nir
import numpy as np
import pytest
import torch

from spikeline.deploy.export import export_model, export_run, load_folded, write_manifest
from spikeline.deploy.from_netx import netx_to_nir
from spikeline.deploy.simulate import simulate
from spikeline.deploy.verify import verify_export
from spikeline.errors import SpikelineError
from spikeline.pipeline.models import build_model

# Importing lava in this process would set the multiprocessing start method (lava does it at
# import time), which breaks once another test has set it: Lava runs in a subprocess anyway.
needs_lava = pytest.mark.skipif(importlib.util.find_spec("lava") is None,
                                reason="lava-nc / lava-dl are not installed")
CNN_SPEC = {"name": "cnn", "in_channels": 2, "num_classes": 10, "input_size": [34, 34],
            "encoding": "binary"}


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("export")
    result = export_model(build_model("cnn"), CNN_SPEC, out, config={"T": 6})
    assert set(result.files) == {"nir", "netx", "folded"} and not result.skipped
    return out


def frames(n=2, t=6, size=(34, 34), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (t, n, 2, *size), generator=g).float()


def test_export_writes_metadata(cnn_export):
    meta = json.loads((cnn_export / "metadata.json").read_text())
    assert meta["input_shape"] == [2, 34, 34] and meta["heads"] == "removed"
    assert meta["quantization"]["weight_scale"] == 64
    model, _, export = load_folded(cnn_export)
    assert set(export.modules) <= set(nir.read(cnn_export / "model.nir").nodes)


def test_nir_and_peers_verify_with_zero_mismatches(cnn_export):
    report = verify_export(cnn_export, frames(), backends=("nir", "spikingjelly", "snntorch"))
    assert report.ok, report.to_dict()
    by_name = {b.backend: b for b in report.backends}
    assert by_name["nir"].compared > 0 and by_name["nir"].mismatches == 0
    assert len(by_name["nir"].per_node) == 6  # five spiking layers and the readout
    for peer in ("spikingjelly", "snntorch"):
        assert by_name[peer].status == "ok", by_name[peer]
    assert report.reference_spikes > 0


@needs_lava
def test_lava_runs_the_netx_file_spike_for_spike(cnn_export):
    report = verify_export(cnn_export, frames(n=1), backends=("lava",))
    lava = report.backends[0]
    assert lava.status == "ok", lava
    assert lava.compared > 0 and len(lava.per_node) == 6
    assert "netx" in lava.path and report.to_dict()["checked_by"] == ["lava"]


def test_a_planted_weight_change_in_the_nir_file_fails_verify(cnn_export, tmp_path):
    for name in ("folded.pt", "metadata.json", "model.net"):
        (tmp_path / name).write_bytes((cnn_export / name).read_bytes())
    graph = nir.read(cnn_export / "model.nir")
    conv = next(n for n in graph.nodes if n.endswith("_conv"))
    graph.nodes[conv].weight[0, 0, 1, 1] += 2 / 64
    nir.write(tmp_path / "model.nir", graph)
    write_manifest(tmp_path)  # the manifest alone would refuse it; verify must catch it too
    report = verify_export(tmp_path, frames(), backends=("nir",))
    assert not report.ok
    assert report.backends[0].mismatches > 0


@pytest.mark.slow
@needs_lava
def test_a_planted_weight_change_in_the_netx_file_fails_verify(cnn_export, tmp_path):
    for name in ("folded.pt", "metadata.json", "model.nir", "model.net"):
        (tmp_path / name).write_bytes((cnn_export / name).read_bytes())
    with h5py.File(tmp_path / "model.net", "r+") as f:
        f["layer/0/weight"][0, 0, 1, 1] += 64  # one weight, +1.0
    write_manifest(tmp_path)
    report = verify_export(tmp_path, frames(n=1), backends=("lava",))
    assert report.backends[0].status == "mismatch"


def test_residual_network_exports_nir_and_explains_netx(tmp_path):
    spec = {"name": "resnet20", "in_channels": 2, "num_classes": 10, "input_size": [48, 48],
            "width": 16}
    torch.manual_seed(0)
    model = build_model("resnet20", input_size=(48, 48), width=16)
    fresh = export_model(model, spec, tmp_path / "fresh")
    assert "nir" in fresh.files and "netx" not in fresh.files
    assert "shortcut edge" in fresh.skipped["netx"]
    x = frames(n=1, t=4, size=(48, 48))
    # untouched BatchNorm folds to zero voltage bias: the peers import the residual graph
    report = verify_export(tmp_path / "fresh", x)
    statuses = {b.backend: b.status for b in report.backends}
    assert statuses == {"nir": "ok", "lava": "skipped", "spikingjelly": "ok", "snntorch": "ok"}
    with torch.no_grad():  # trained statistics give voltage biases, which peers cannot import
        model.train()(frames(n=4, t=4, size=(48, 48)).transpose(0, 1))
    export_model(model, spec, tmp_path / "trained")
    report = verify_export(tmp_path / "trained", x)
    by_name = {b.backend: b for b in report.backends}
    assert by_name["nir"].status == "ok" and by_name["nir"].mismatches == 0
    assert by_name["spikingjelly"].status == "skipped"
    assert "v_leak" in by_name["snntorch"].note


def test_biased_sequential_network_skips_netx_and_removes_a_stale_file(cnn_export, tmp_path):
    """VGG is sequential, but its folded BatchNorm becomes voltage biases, which Lava would
    apply before each layer's (pipeline-delayed) input arrives."""
    (tmp_path / "model.net").write_bytes((cnn_export / "model.net").read_bytes())
    write_manifest(tmp_path)
    torch.manual_seed(0)
    model = build_model("vgg11", input_size=(32, 32), width=8)
    with torch.no_grad():
        model.train()(torch.randint(0, 3, (2, 4, 2, 32, 32)).float())
    spec = {"name": "vgg11", "in_channels": 2, "num_classes": 10, "input_size": [32, 32],
            "width": 8}
    result = export_model(model, spec, tmp_path)
    assert "voltage bias" in result.skipped["netx"]
    assert not (tmp_path / "model.net").exists()  # the earlier export's file is gone
    report = verify_export(tmp_path, frames(n=1, t=4, size=(32, 32)), backends=("nir", "lava"))
    assert [b.status for b in report.backends] == ["ok", "skipped"]


def test_export_errors_name_the_problem(tmp_path):
    with pytest.raises(SpikelineError, match="checkpoint|best.pt|last.pt"):
        export_run(tmp_path, tmp_path / "out")
    with pytest.raises(SpikelineError, match="format"):
        export_model(build_model("cnn"), CNN_SPEC, tmp_path, formats=("onnx",))
    with pytest.raises(SpikelineError, match="folded.pt"):
        verify_export(tmp_path, frames())


def test_netx_written_by_lava_dl_imports_to_nir_and_spikes_identically(tmp_path):
    slayer = pytest.importorskip("lava.lib.dl.slayer")
    torch.manual_seed(0)
    p = dict(threshold=1.25, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
             scale_grad=3.0)
    blocks = torch.nn.ModuleList([
        slayer.block.cuba.Conv(p, 2, 8, 3, padding=1, weight_scale=2),
        slayer.block.cuba.Pool(p, 2),
        slayer.block.cuba.Conv(p, 8, 8, 3, padding=1, stride=2, weight_scale=2),
        slayer.block.cuba.Flatten(),
        slayer.block.cuba.Dense(p, 8 * 4 * 4, 20, weight_scale=2),
        slayer.block.cuba.Affine(p, 20, 5, weight_scale=2),
    ])
    x = (torch.rand(2, 2, 16, 16, 20) < 0.3).float()
    outs, h = [], x
    with torch.no_grad():
        for b in blocks:
            h = b(h)
            outs.append(h.movedim(-1, 0))
    with h5py.File(tmp_path / "lava.net", "w") as f:
        layer = f.create_group("layer")
        for i, b in enumerate(blocks):
            b.export_hdf5(layer.create_group(str(i)))
    graph = netx_to_nir(tmp_path / "lava.net")
    nir.write(tmp_path / "lava.nir", graph)
    sim = simulate(nir.read(tmp_path / "lava.nir"), x.movedim(-1, 0))
    for i in (0, 1, 2, 4):
        assert torch.equal(sim.outputs[f"{i}_delay"], outs[i]), i
    assert outs[4].sum() > 0
    torch.testing.assert_close(sim.output, outs[5], rtol=0, atol=0)


def test_netx_import_errors(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(SpikelineError, match="bad.net"):
        netx_to_nir(bad)
    with h5py.File(tmp_path / "pool.net", "w") as f:
        g = f.create_group("layer/0")
        g.create_dataset("type", data=np.array([b"unpool"], dtype="S10"))
    with pytest.raises(SpikelineError, match="unpool"):
        netx_to_nir(tmp_path / "pool.net")


RECORDINGS = ["davis346_street.aedat4", "nmnist_sample.bin", "prophesee_evt2.raw"]


@pytest.mark.parametrize("backends", [("nir", "spikingjelly", "snntorch"),
                                      pytest.param(("lava",), marks=[pytest.mark.slow,
                                                                     needs_lava])])
def test_real_recordings_verify_with_zero_mismatches(cnn_export, backends):
    """Recordings of other sensor sizes are binned, resized by interpolation and encoded as
    spikes: every backend must still agree."""
    from conftest import real_path

    files = [real_path(name) for name in RECORDINGS]  # ship in tests/data: fail if absent
    from spikeline.cli.inputs import inputs_from_events

    frames = inputs_from_events(files, 6, (2, 34, 34))
    assert frames.shape == (6, 3, 2, 34, 34) and (frames % 1 != 0).any()  # fractional counts
    report = verify_export(cnn_export, torch.from_numpy(frames), backends=backends)
    assert report.ok, report.to_dict()
    assert all(b.status == "ok" and b.compared > 0 for b in report.backends)


def test_each_peer_is_held_to_its_own_threshold_rule():
    """v lands exactly on the threshold: SpikingJelly fires (Heaviside(0) = 1), NIR and
    snnTorch do not; our float simulation reproduces each rule."""
    from spikeline.deploy.peers import FIRES_AT_THRESHOLD, run_peer

    dt, theta = 1e-4, 1.25
    full = lambda v: np.full((1,), v)  # noqa: E731
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1])}),
        "lin": nir.Linear(weight=np.ones((1, 1))),
        "lif": nir.CubaLIF(tau_syn=full(dt), tau_mem=full(dt * 4096 / 123), r=full(4096 / 123),
                           v_leak=full(0.0), v_threshold=full(theta), v_reset=full(0.0),
                           w_in=full(1.0)),
        "output": nir.Output(output_type={"output": np.array([1])}),
    }
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "lin"), ("lin", "lif"), ("lif", "output")])
    x = torch.tensor([theta, 0.0, 0.0]).reshape(3, 1, 1)
    for peer in ("spikingjelly", "snntorch"):
        theirs = run_peer(peer, graph, x, dt)[:, 0, 0].tolist()
        ours = simulate(graph, x, mode="float", fire_at_threshold=FIRES_AT_THRESHOLD[peer])
        assert ours.output[:, 0, 0].tolist() == theirs, peer
    assert run_peer("spikingjelly", graph, x, dt)[0].item() == 1
    assert run_peer("snntorch", graph, x, dt)[0].item() == 0
