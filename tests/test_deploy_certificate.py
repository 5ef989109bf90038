"""Planted faults that `spikeline verify` must catch with its default settings (issue 18).

Two tiny trained runs, exported by ``export_run`` (so the export records its run): the demo cnn
and a ``--timing loihi`` resnet18.  Each fault is written into a copy of the export whose
manifest is rewritten (the manifest alone would refuse it; verify must catch it itself), and
verify runs as a user types it, on ndigits test samples or on the real recordings of tests/data:
every fault exits 1, and the message names the node and both values.
"""
from __future__ import annotations

import json
import shutil

import h5py
import nir
import numpy as np
import pytest
import torch
from conftest import real_path

from spikeline.cli import main
from spikeline.deploy.export import export_run, write_manifest
from spikeline.deploy.verify import DEFAULT_SAMPLES, verify_export

RECORDINGS = ["davis346_street.aedat4", "nmnist_sample.bin", "prophesee_evt2.raw"]
STEP = 2 / 64  # one step of the weight grid


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _train_and_export(root, cache, *model):
    run = root / "run"
    # lr 0.01 and evolutionary heads: after 4 steps every layer spikes on some test sample
    code = main(["train", "--dataset", "ndigits", *model, "--epochs", "1", "--limit-train", "64",
                 "--limit-test", "16", "--T", "4", "--batch-size", "16", "--lr", "0.01",
                 "--heads", "evolutionary", "--cache-dir",
                 str(cache), "--out", str(run), "--no-progress"])
    assert code == 0
    export_run(run, run / "export")
    return run / "export"


@pytest.fixture(scope="module", params=["cnn", "resnet18"])
def export(request, tmp_path_factory, cache):
    """The export inside its run folder (``run/export``), as `spikeline run` leaves it."""
    model = {"cnn": ["--model", "cnn"],
             "resnet18": ["--model", "resnet18", "--width", "8", "--depths", "1,1,1,1",
                          "--size", "16", "--timing", "loihi"]}
    torch.manual_seed(0)
    return _train_and_export(tmp_path_factory.mktemp(request.param), cache,
                             *model[request.param])


def verify(path, capsys, *extra, cache=None) -> tuple[int, str]:
    capsys.readouterr()
    inputs = ["--dataset", "ndigits", "--cache-dir", str(cache)] if cache else \
        ["--events", *(str(real_path(n)) for n in RECORDINGS)]
    code = main(["verify", str(path), *inputs, *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out + captured.err


def tampered(export, tmp_path, change) -> object:
    """A copy of ``export`` (beside it in the run folder, so the run is found at the same
    relative path) changed by ``change(folder)``, its manifest rewritten."""
    folder = export.parent / f"tampered_{tmp_path.name}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(export, folder)
    change(folder)
    write_manifest(folder)
    return folder


def _nir_weight_layers(export):
    graph = nir.read(export / "model.nir")
    layers = [n for n, node in graph.nodes.items() if isinstance(node, (nir.Conv2d, nir.Linear))]
    return layers[0], layers[len(layers) // 2], layers[-1]


def _step_nir(layer):
    def change(folder):
        graph = nir.read(folder / "model.nir")
        w = graph.nodes[layer].weight
        index = (0,) * w.ndim
        w[index] += STEP if w[index] + STEP <= 254 / 64 else -STEP
        nir.write(folder / "model.nir", graph)
    return change


def test_the_honest_export_verifies_with_coverage(export, capsys, cache):
    """Default samples, every backend but Lava (its run is the slow test below); the peers
    cannot import the Delay nodes of --timing loihi graphs (reported as skipped)."""
    delays = any(isinstance(n, nir.Delay) for n in nir.read(export / "model.nir").nodes.values())
    code, out = verify(export, capsys, "--backends", "nir,spikingjelly,snntorch",
                       *(["--allow-skip"] if delays else []), cache=cache)
    assert code == 0, out
    assert "parameters: ok, 0 of" in out and "coverage (neurons that spiked at least once)" in out
    assert f"{DEFAULT_SAMPLES['nir']} sample(s)" in out
    assert "spikes match the trained network on nir (0 mismatches)" in out
    if delays:
        assert "importer has no Delay node" in out and "skipped: spikingjelly, snntorch" in out
    else:  # peers are reported for what they checked, never as matching the trained network
        assert "spikingjelly, snntorch reads model.nir as spikeline does (float semantics)" in out


@pytest.mark.parametrize("where", [0, 1, 2], ids=["first", "middle", "last"])
def test_a_one_step_weight_change_in_model_nir_fails(export, tmp_path, capsys, cache, where):
    layer = _nir_weight_layers(export)[where]
    folder = tampered(export, tmp_path, _step_nir(layer))
    code, out = verify(folder, capsys, cache=cache)
    assert code == 1, out
    assert f"model.nir: node {layer!r} weight[" in out and "the run's checkpoint gives" in out


def test_a_one_step_weight_change_in_model_nir_fails_on_real_recordings(export, tmp_path,
                                                                       capsys):
    layer = _nir_weight_layers(export)[0]
    code, out = verify(tampered(export, tmp_path, _step_nir(layer)), capsys)
    assert code == 1 and repr(layer) in out, out


def test_a_tampered_peer_only_run_fails(export, tmp_path, capsys, cache):
    """The peers cannot see a change of model.nir (they read the same file as our float
    simulation); the parameter certificate does, and a peer-only run certifies nothing
    about the trained network anyway."""
    layer = _nir_weight_layers(export)[1]
    folder = tampered(export, tmp_path, _step_nir(layer))
    code, out = verify(folder, capsys, "--backends", "spikingjelly,snntorch", cache=cache)
    assert code == 1 and repr(layer) in out, out
    code, out = verify(export, capsys, "--backends", "spikingjelly,snntorch", cache=cache)
    assert code == 1 and "no backend compared spikes with the trained network" in out, out


def _netx_layers(folder):
    with h5py.File(folder / "model.net", "r") as f:
        return sorted((k for k in f["layer"] if "weight" in f["layer"][k]), key=int)


@pytest.mark.parametrize("where", [0, 1, 2], ids=["first", "middle", "last"])
def test_a_one_step_weight_change_in_model_net_fails(export, tmp_path, capsys, cache, where):
    if not (export / "model.net").is_file():
        # a residual net has no netx file: Lava runs the process graph built from model.nir,
        # and the certificate compares that graph (the model.nir cases change it)
        assert "netx" in json.loads((export / "metadata.json").read_text())["skipped"]
        code, out = verify(export, capsys, "--backends", "nir", "--json",
                           str(tmp_path / "v.json"), cache=cache)
        assert "Lava process graph" in json.loads(
            (tmp_path / "v.json").read_text())["parameters"]["artifacts"], out
        return
    layers = _netx_layers(export)
    layer = [layers[0], layers[len(layers) // 2], layers[-1]][where]

    def change(folder):
        with h5py.File(folder / "model.net", "r+") as f:
            w = f[f"layer/{layer}/weight"]
            index = (0,) * w.ndim
            w[index] = w[index] + (2 if w[index] + 2 <= 254 else -2)  # mantissas: 2/64 grid
    code, out = verify(tampered(export, tmp_path, change), capsys, cache=cache)
    assert code == 1, out
    assert f"model.net: node 'layer/{layer}' weight[" in out


def test_a_changed_folded_pt_fails(export, tmp_path, capsys, cache):
    def change(folder):
        saved = torch.load(folder / "folded.pt", weights_only=True)
        name = next(k for k, v in saved["state_dict"].items() if k.endswith("weight"))
        saved["state_dict"][name].view(-1)[0] += STEP
        torch.save(saved, folder / "folded.pt")
    code, out = verify(tampered(export, tmp_path, change), capsys, cache=cache)
    assert code == 1 and "folded.pt: node" in out, out


def test_a_one_step_delay_change_fails(export, tmp_path, capsys, cache):
    """resnet18 --timing loihi: a Delay node of model.nir one step (dt) longer; the cnn (ideal
    timing, no Delay node): its netx neurons' refractory delay one step longer."""
    graph = nir.read(export / "model.nir")
    delays = [n for n, node in graph.nodes.items() if isinstance(node, nir.Delay)]

    def change(folder):
        if delays:
            g = nir.read(folder / "model.nir")
            g.nodes[delays[len(delays) // 2]].delay = \
                np.asarray(g.nodes[delays[len(delays) // 2]].delay) + g.metadata["dt"]
            nir.write(folder / "model.nir", g)
        else:
            with h5py.File(folder / "model.net", "r+") as f:
                d = f["layer/0/neuron/refDelay"]
                d[()] = d[()] + 1
    code, out = verify(tampered(export, tmp_path, change), capsys, cache=cache)
    assert code == 1, out
    assert ("delay" in out) if delays else ("refDelay" in out)


def test_an_export_without_its_run_says_parameters_were_not_checked(export, tmp_path, capsys,
                                                                    cache):
    def change(folder):
        meta = json.loads((folder / "metadata.json").read_text())
        del meta["run"]
        (folder / "metadata.json").write_text(json.dumps(meta))
    folder = tampered(export, tmp_path, change)
    code, out = verify(folder, capsys, "--backends", "nir", cache=cache)
    assert code == 0, out
    assert "parameters: NOT CHECKED" in out and "parameters NOT checked" in out
    assert "parameters equal" not in out
    report = verify_export(folder, torch.zeros(4, 1, *json.loads(
        (folder / "metadata.json").read_text())["input_shape"]), backends=("nir",))
    assert report.parameters.status == "not_checked" and "not here" not in \
        report.parameters.note and "no 'run'" in report.parameters.note


def test_a_changed_folded_pt_without_its_run_fails_on_spikes(export, tmp_path, capsys, cache):
    """No run to rebuild from: the spike reference is folded.pt itself, and model.nir no
    longer spikes like it."""
    def change(folder):
        meta = json.loads((folder / "metadata.json").read_text())
        del meta["run"]
        (folder / "metadata.json").write_text(json.dumps(meta))
        saved = torch.load(folder / "folded.pt", weights_only=True)
        name = next(k for k, v in saved["state_dict"].items() if k.endswith("weight"))
        w = saved["state_dict"][name].view(-1)
        w[int(w.abs().argmax())] += STEP * torch.sign(-w[int(w.abs().argmax())])
        torch.save(saved, folder / "folded.pt")
    code, out = verify(tampered(export, tmp_path, change), capsys, "--backends", "nir",
                       cache=cache)
    assert code == 1 and "nir: mismatch" in out and "no backend ran" not in out, out


def test_an_unreadable_checkpoint_is_an_error_not_a_fallback(export, tmp_path, capsys, cache):
    run = export.parent
    saved = (run / "best.pt").read_bytes()
    try:
        (run / "best.pt").write_bytes(saved[: len(saved) // 2])
        code, out = verify(export, capsys, "--backends", "nir", cache=cache)
        assert code == 2 and "best.pt" in out, out
    finally:
        (run / "best.pt").write_bytes(saved)


@pytest.mark.slow
def test_the_honest_export_verifies_on_lava_with_default_settings(export, capsys, cache):
    if json.loads((export / "metadata.json").read_text()).get("timing") == "loihi":
        # the peers' NIR importers have no Delay node: with every backend (the default) their
        # skip is reported and fails the run, since a skipped check is not a passed one ...
        code, out = verify(export, capsys, cache=cache)
        assert code == 1 and "spikingjelly: skipped" in out and "no Delay node" in out, out
        # ... and the backends that run a loihi-timed graph certify it at their default samples
        code, out = verify(export, capsys, "--backends", "nir,lava", cache=cache)
    else:
        code, out = verify(export, capsys, cache=cache)
    assert code == 0, out
    assert f"lava           ok        {DEFAULT_SAMPLES['lava']:7d}" in out
