"""Residual networks on Lava, spike for spike: ``--timing loihi`` from training to the chip.

Fast tests check the timing semantics and the NIR graph (our simulator runs its Delay nodes);
tests marked ``needs_lava`` run the Lava process graph of ``to_lava`` in a subprocess (about
1 s per sample plus ~4 s to start Lava), on one or two samples each.
"""
import importlib.util
import json
import pathlib
import subprocess
import sys

import nir
import numpy as np
import pytest
import torch

from spikeline.deploy.export import export_model
from spikeline.deploy.fold import fold_model
from spikeline.deploy.simulate import simulate
from spikeline.deploy.to_lava import lower
from spikeline.deploy.nir_check import DT
from spikeline.deploy.to_nir import model_to_nir
from spikeline.deploy.export import write_manifest
from spikeline.deploy.verify import reference_activity, verify_export
from spikeline.errors import BadInput, ExportUnsupported
from spikeline.pipeline.heads import ShortcutHeads
from spikeline.pipeline.models import MODELS, build_model

needs_lava = pytest.mark.skipif(importlib.util.find_spec("lava") is None,
                                reason="lava-nc / lava-dl are not installed")
SIZE = (12, 12)
EXPORT_SIZE = (16, 16)  # exports run through the CLI and Lava


def _events_dir() -> pathlib.Path | None:
    here = pathlib.Path(__file__).resolve().parent
    for d in (here / "data" / "events", here.parents[1] / "shared" / "data" / "events"):
        if (d / "nmnist_sample.bin").is_file():
            return d
    return None


def _planted(export, bad, fault: str, pick_delay, factor: float):
    """A copy of ``export`` whose graph carries one fault: one weight one grid step x 64 off
    (``weight``), the delay node ``pick_delay(graph)`` scaled by ``factor`` (``delay``), or the
    first neuron's reset one step late (``reset``: it keeps one bias-only step).
    The folder is consistent (manifest rewritten): only verify can tell it is wrong."""
    bad.mkdir()
    for f in ("folded.pt", "metadata.json"):
        (bad / f).write_bytes((export / f).read_bytes())
    graph = nir.read(export / "model.nir")
    if fault == "weight":
        graph.nodes[_nth(graph, nir.Conv2d, 1)].weight[0, 0, 1, 1] += 1.0  # +64 steps
    elif fault == "reset":
        first = _nth(graph, nir.CubaLIF, 0)
        graph.metadata["reset_steps"][first] = int(graph.metadata["reset_steps"][first]) + 1
    else:
        delay = pick_delay(graph)
        graph.nodes[delay] = nir.Delay(delay=np.asarray(graph.nodes[delay].delay) * factor)
    nir.write(bad / "model.nir", graph)
    write_manifest(bad)
    return bad


def _options(name):
    if name.startswith(("resnet", "sew")):
        return {"width": 8, "depths": (1,) * (3 if name in ("resnet19", "resnet20") else 4)}
    return {"width": 8}


def _with_biases(model, seed=0):
    """BatchNorm statistics as after training, so that folding gives voltage biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.shift.copy_(torch.rand(m.shift.shape, generator=g) * 0.6 - 0.3)
    return model


def _frames(n=1, t=4, size=SIZE, seed=1, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, t, 2, *size, generator=g) < p).float()  # [N, T, C, H, W]


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_with_loihi_timing_and_its_graph_runs_as_written(name):
    """Heads attach to the stage outputs; the NIR graph's Delay nodes reproduce every layer."""
    torch.manual_seed(0)
    size = (16, 16) if name == "vgg11" else SIZE  # pooled maps must stay even
    model = _with_biases(build_model(name, input_size=size, timing="loihi", batchnorm="shift",
                                     **_options(name)))
    x = _frames(n=2, t=3, size=size)
    heads = ShortcutHeads(model, 10, "shortcut")
    loss, _ = heads.loss(x, torch.tensor([1, 2]))
    loss.backward()
    first = next(p for p in model.parameters() if p.dim() == 4)  # the first conv's weight
    assert first.grad is not None and first.grad.abs().sum() > 0
    folded = fold_model(model)
    export = model_to_nir(folded, (2, *size))
    meta = export.graph.metadata
    assert meta["input_pad_steps"] == meta["readout_start"] == model.latency > 0
    ref = reference_activity(folded, export.modules, x)
    sim = simulate(export.graph, folded.network_input(x), mode="loihi")
    for node, ours in ref.items():
        assert ours.shape[0] == 3 + model.latency
        assert torch.equal(ours, sim.outputs[node]), node
    assert sum(int(v.sum()) for n, v in ref.items() if "lif" in n) > 0


def test_sew_iand_trains_with_loihi_timing_but_has_no_nir_form():
    torch.manual_seed(0)
    model = build_model("sew_resnet18", input_size=SIZE, timing="loihi", connect="IAND",
                        **_options("sew_resnet18"))
    model(_frames()).sum().backward()
    with pytest.raises(ExportUnsupported, match="IAND"):
        model_to_nir(fold_model(model), (2, *SIZE))


def test_latency_is_the_step_at_which_the_readout_first_sees_input():
    """Without biases nothing moves before the input arrives: the readout's voltage is 0
    exactly until step ``latency`` (one step per synaptic hop), then it is not (weights of
    2.0 make every neuron fire in the step its input arrives)."""
    model = build_model("cnn", input_size=(16, 16), timing="loihi", width=8)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.fill_(2.0)
    model = fold_model(model)
    export = model_to_nir(model, (2, 16, 16))
    readout = next(n for n in export.graph.nodes if n.endswith("_cubali"))
    v = reference_activity(model, export.modules, _frames(t=6, size=(16, 16), p=0.5))[readout]
    latency = model.latency
    assert latency == 6  # conv, pool, conv, pool, dense, readout
    assert not v[:latency].any() and v[latency].abs().sum() > 0
    resnet = build_model("resnet18", input_size=SIZE, timing="loihi", **_options("resnet18"))
    assert resnet.latency == 1 + 2 * 4 + 1  # stem, four blocks of two hops, the readout


def test_old_specs_build_ideal_models_unchanged():
    ideal = build_model("resnet20", input_size=SIZE, width=8)
    assert ideal.timing == "ideal" and ideal.input_pad_steps == ideal.readout_start == 0
    loihi = build_model("resnet20", input_size=SIZE, width=8, timing="loihi", batchnorm="shift")
    assert set(ideal.state_dict()) == set(loihi.state_dict())
    # the default under loihi is the shifting BatchNorm, as under ideal; scale-only is the
    # same model less every shift
    assert set(build_model("resnet20", input_size=SIZE, width=8, timing="loihi").state_dict()) \
        == set(ideal.state_dict())
    scale = build_model("resnet20", input_size=SIZE, width=8, timing="loihi", batchnorm="scale")
    assert set(scale.state_dict()) == {k for k in ideal.state_dict()
                                       if not k.endswith("norm.shift")}
    with pytest.raises(ValueError, match="timing"):
        build_model("cnn", timing="truenorth")


def test_export_metadata_prices_the_latency(tmp_path):
    torch.manual_seed(0)
    model = build_model("sew_resnet18", input_size=SIZE, timing="loihi", **_options("sew_resnet18"))
    spec = {"name": "sew_resnet18", "input_size": list(SIZE), "width": 8, "depths": [1, 1, 1, 1],
            "timing": "loihi"}
    result = export_model(model, spec, tmp_path, config={"T": 5})
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["latency_steps"] == model.latency == 10
    assert meta["chip_steps_per_sample"] == 5 + 10
    assert meta["timing"] == "loihi" and "delay_shift" in result.skipped["netx"]
    graph = nir.read(tmp_path / "model.nir")
    delays = [n for n in graph.nodes.values() if isinstance(n, nir.Delay)]
    assert delays and all(np.allclose(np.asarray(d.delay) / DT, np.round(np.asarray(d.delay) / DT))
                          for d in delays)
    assert int(graph.metadata["readout_start"]) == 10


def test_biased_loihi_graph_records_each_neurons_reset_and_bad_ones_are_refused():
    """Each neuron restarts at its input's arrival: the metadata's ``reset_steps`` holds every
    neuron node's step (the readout's is ``readout_start``), our simulator and the Lava
    lowering read them, and a reset naming no neuron, or not an integer, is refused."""
    torch.manual_seed(0)
    folded = fold_model(_with_biases(build_model("resnet18", input_size=SIZE, timing="loihi",
                                                 **_options("resnet18"))))
    graph = model_to_nir(folded, (2, *SIZE)).graph
    resets = graph.metadata["reset_steps"]
    neurons = [n for n, node in graph.nodes.items() if isinstance(node, (nir.CubaLIF, nir.CubaLI))]
    assert sorted(resets) == sorted(neurons) and min(resets.values()) == 1
    assert resets[_nth(graph, nir.CubaLI, 0)] == graph.metadata["readout_start"]
    net = lower(graph)
    assert {n: lif.reset_step for n, lif in net.lifs.items()} == resets
    x = folded.network_input(_frames(n=2))
    with torch.no_grad():
        logits = folded(_frames(n=2))
    sim = simulate(graph, x, mode="loihi")
    start = graph.metadata["readout_start"]
    out = sim.outputs[graph.metadata["output_node"]][start:].mean(0)
    assert torch.equal(out, logits)
    for bad, match in (({"0_input": 1}, "not a CubaLIF"), ({neurons[0]: -1}, "integer >= 0"),
                       ({neurons[0]: 1.5}, "integer")):
        graph.metadata["reset_steps"] = bad
        with pytest.raises(BadInput, match=match):
            simulate(graph, x, mode="loihi")


def test_lava_lowering_refuses_what_lava_cannot_run_and_names_the_node():
    torch.manual_seed(0)
    ideal = fold_model(build_model("resnet18", input_size=SIZE, **_options("resnet18")))
    with pytest.raises(ExportUnsupported, match=r"node '\d+_conv'.*--timing loihi"):
        lower(model_to_nir(ideal, (2, *SIZE)).graph)
    loihi = fold_model(build_model("resnet18", input_size=SIZE, timing="loihi",
                                   **_options("resnet18")))
    graph = model_to_nir(loihi, (2, *SIZE)).graph
    net = lower(graph)
    assert any(line.weight == 84 and line.delay == 1 for line in net.lines.values())
    assert all(syn.kind == "conv" for syn in net.synapses.values() if syn.out_shape != (10,))
    linear = next(n for n, node in graph.nodes.items() if isinstance(node, nir.Linear))
    graph.nodes[linear].weight[0, 0] = 3 / 64  # odd mantissa in a mixed-sign matrix
    with pytest.raises(ExportUnsupported, match=f"{linear}.*least significant bit"):
        lower(graph)
    graph.nodes[linear].weight[0, 0] = 300 / 64
    with pytest.raises(ExportUnsupported, match="8-bit"):
        lower(graph)


def test_verify_refuses_to_certify_nothing(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", input_size=SIZE, timing="loihi", **_options("resnet18"))
    with torch.no_grad():  # gains 3: every layer of the untrained net spikes on _frames()
        for m in model.modules():
            if hasattr(m, "running_var"):
                m.weight.fill_(3.0)
    spec = {"name": "resnet18", "input_size": list(SIZE), "width": 8, "depths": [1, 1, 1, 1],
            "timing": "loihi", "resets_at_arrival": True}
    export_model(model, spec, tmp_path, config={"T": 4})
    with pytest.raises(BadInput, match="no backend"):
        verify_export(tmp_path, _frames().transpose(0, 1), backends=())
    silent = verify_export(tmp_path, torch.zeros(4, 1, 2, *SIZE), backends=("nir",))
    assert not silent.ok and any("silence" in p for p in silent.problems())
    report = verify_export(tmp_path, _frames().transpose(0, 1), backends=("nir", "snntorch"))
    assert report.checked_by == ["nir"] and not report.ok
    assert report.backends[1].status == "skipped" and "Delay" in report.backends[1].note
    assert not report.problems(allow_skip=True)


def _nth(graph, kind, i):
    """The name of the ``i``-th node of type ``kind`` in export order (names are 'k_kind')."""
    names = sorted((n for n, node in graph.nodes.items() if isinstance(node, kind)),
                   key=lambda n: int(n.split("_")[0]))
    return names[i]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "spikeline", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def _loihi_export(tmp_path, name, seed=0):
    torch.manual_seed(seed)
    model = _with_biases(build_model(name, input_size=EXPORT_SIZE, timing="loihi",
                                     batchnorm="shift", **_options(name)))
    spec = {"name": name, "input_size": list(EXPORT_SIZE), "width": 8, "depths": [1, 1, 1, 1],
            "timing": "loihi", "batchnorm": "shift", "resets_at_arrival": True}
    export_model(model, spec, tmp_path, config={"T": 4})
    return tmp_path


def test_planted_faults_fail_verify_with_exit_1(tmp_path):
    """One weight changed by one step of its grid, one hop delayed by one more step, or one
    neuron reset a step late, in model.nir: the certificate must fail (exit 1), and say so per
    layer."""
    export = _loihi_export(tmp_path / "good", "resnet18")
    x = _frames(n=1, t=4, size=EXPORT_SIZE).transpose(0, 1).numpy()
    np.save(tmp_path / "x.npy", x[:, 0])
    ok = _cli("verify", export, "--backends", "nir", "--input", tmp_path / "x.npy")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "spikes match the trained network on nir (0 mismatches)" in ok.stdout
    for fault in ("weight", "delay", "reset"):
        bad = _planted(export, tmp_path / fault, fault,
                       lambda graph: _nth(graph, nir.Delay, 3), factor=2)
        res = _cli("verify", bad, "--backends", "nir", "--input", tmp_path / "x.npy")
        assert res.returncode == 1, (fault, res.stdout, res.stderr)
        assert "mismatch" in res.stdout and "FAILED" in res.stderr + res.stdout


def test_verify_cli_exits_nonzero_on_a_skipped_backend_unless_allowed(tmp_path):
    export = _loihi_export(tmp_path / "e", "resnet18")
    np.save(tmp_path / "x.npy", _frames(t=4, size=EXPORT_SIZE)[0].numpy())
    args = ("verify", export, "--backends", "nir,spikingjelly", "--input", tmp_path / "x.npy")
    res = _cli(*args)
    assert res.returncode == 1 and "skipped" in res.stdout + res.stderr
    res = _cli(*args, "--allow-skip")
    assert res.returncode == 0 and "skipped: spikingjelly" in res.stdout


# --- Lava ---------------------------------------------------------------------------------

@needs_lava
@pytest.mark.parametrize("name", ["resnet18", "sew_resnet18"])
def test_lava_process_graph_matches_every_layer(tmp_path, name):
    """A Spiking ResNet with BatchNorm biases and a SEW ResNet (ADD): 0 mismatches in every
    layer, through verify's lava backend (process graph path), on one sample."""
    export = _loihi_export(tmp_path, name)
    report = verify_export(export, _frames(t=4, size=EXPORT_SIZE).transpose(0, 1),
                           backends=("lava",))
    lava = report.backends[0]
    assert lava.status == "ok", lava
    assert "process graph" in lava.path
    assert len(lava.per_node) == (10 if name == "resnet18" else 13) and lava.compared > 0
    assert report.reference_spikes > 0 and report.ok


@needs_lava
@pytest.mark.slow
def test_lava_catches_planted_weight_and_delay_faults(tmp_path):
    export = _loihi_export(tmp_path / "good", "sew_resnet18")
    x = _frames(t=4, size=EXPORT_SIZE).transpose(0, 1)
    for fault in ("weight", "delay"):
        # the delay fault: the SEW identity term, two steps late, made three
        bad = _planted(export, tmp_path / fault, fault, lambda graph: next(
            n for n, node in graph.nodes.items()
            if isinstance(node, nir.Delay) and np.allclose(node.delay, 2 * DT)), factor=1.5)
        report = verify_export(bad, x, backends=("lava",))
        assert report.backends[0].status == "mismatch", (fault, report.backends[0])
        assert not report.ok


@needs_lava
@pytest.mark.slow
def test_trained_loihi_resnets_verify_on_lava_on_real_recordings(tmp_path):
    """Train a Spiking ResNet-18 with each BatchNorm form for a few batches of ndigits with
    --timing loihi, export, and verify on Lava on the three real recordings (3 samples each)."""
    events = _events_dir()
    assert events is not None, "the real recordings ship in tests/data/events"
    files = [events / f for f in ("davis346_street.aedat4", "nmnist_sample.bin",
                                  "prophesee_evt2.raw")]
    # the default shifting BatchNorm, whose voltage biases Lava runs from step 0 and whose
    # neurons restart at their input's arrival (LIFReset), and the opt-in scale-only one (no
    # bias).  Not sew_resnet18: after this 64-sample run (or 256, or at T=8) the downsampling
    # shortcuts of its stages 3-4 (26_cubalif, 36_cubalif) never fire on these recordings
    # with either form, and verify refuses to certify a silent layer; its Lava process graph is
    # checked above on every layer with random biases, and planted faults on it are caught.
    for name, norm in (("resnet18", "shift"), ("resnet18", "scale")):
        run, exp = tmp_path / f"{name}_{norm}_run", tmp_path / f"{name}_{norm}_exp"
        # lr 0.01, evolutionary heads: every layer spikes (verify refuses a silent layer)
        res = _cli("train", "--model", name, "--width", "8", "--depths", "1,1,1,1", "--timing",
                   "loihi", "--batchnorm", norm, "--T", "4", "--epochs", "1", "--limit-train",
                   "64", "--lr", "0.01", "--heads", "evolutionary",
                   "--limit-test", "32", "--out", run, "--no-progress")
        assert res.returncode == 0, res.stderr
        assert _cli("export", run, "--out", exp).returncode == 0
        res = _cli("verify", exp, "--backends", "nir,lava", "--events", *files)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "spikes match the trained network on nir, lava (0 mismatches)" in res.stdout


def _relay_pool_graph(tmp_path):
    """The cnn (sum pools of weight 84/64) under loihi timing, exported to NIR."""
    torch.manual_seed(0)
    model = fold_model(build_model("cnn", input_size=EXPORT_SIZE, timing="loihi", width=4))
    graph = model_to_nir(model, (2, *EXPORT_SIZE)).graph
    nir.write(tmp_path / "cnn.nir", graph)
    return model, graph


def test_a_relaying_pool_lowers_to_a_lava_conv_of_weight_84(tmp_path):
    """SumPool2d -> Scale(84/64) -> CubaLIF: Lava has no Scale, so the factor moves into the
    pool's grouped conv (mantissa 64 -> 84); a Scale on a synapse that also feeds another node
    cannot move and is refused by name."""
    _, graph = _relay_pool_graph(tmp_path)
    pools = [n for n, node in graph.nodes.items() if isinstance(node, nir.SumPool2d)]
    assert len(pools) == 2
    net = lower(graph)
    for name in pools:
        assert np.all(net.synapses[name].weight == 84), name
    scale = next(n for n, node in graph.nodes.items() if isinstance(node, nir.Scale))
    pool = next(src for src, dst in graph.edges if dst == scale)
    tap = nir.Output(output_type={"output": np.array(graph.nodes[pool].output_type["output"])})
    branched = nir.NIRGraph(nodes={**graph.nodes, "tap": tap},
                            edges=list(graph.edges) + [(pool, "tap")],
                            metadata=graph.metadata)
    with pytest.raises(ExportUnsupported, match="also feeds other nodes"):
        lower(branched)


@needs_lava
def test_a_relaying_pool_runs_on_lava_spike_for_spike(tmp_path):
    """The loihi cnn's model.nir (two relaying pools) as a Lava process graph: every layer
    0 mismatches through verify's lava backend."""
    torch.manual_seed(0)
    model = build_model("cnn", input_size=EXPORT_SIZE, timing="loihi", width=4)
    spec = {"name": "cnn", "input_size": list(EXPORT_SIZE), "width": 4, "timing": "loihi"}
    export_model(model, spec, tmp_path, config={"T": 4})
    (tmp_path / "model.net").unlink(missing_ok=True)  # the process-graph path, not netx
    write_manifest(tmp_path)
    report = verify_export(tmp_path, _frames(n=2, t=8, size=EXPORT_SIZE, p=0.5).transpose(0, 1),
                           backends=("nir", "lava"))
    lava = report.backends[-1]
    assert lava.status == "ok" and "process graph" in lava.path, lava
    assert report.reference_spikes > 0 and report.ok, report.problems()
