"""Folding, NIR export and the reference simulator: the exported graph spikes like the model."""
import pathlib

import nir
import numpy as np
import pytest
import torch

from spikeline.deploy.fold import fold_model
from spikeline.deploy.simulate import simulate
from spikeline.deploy.nir_params import cuba_to_nir, nir_to_cuba
from spikeline.deploy.to_nir import model_to_nir
from spikeline.errors import SpikelineError
from spikeline.pipeline.models import build_model
from spikeline.pipeline.neuron import CubaParams

SHARED = pathlib.Path(__file__).resolve().parent / "data"  # see tests/data/README.md
CASES = [("cnn", (34, 34), {}), ("resnet18", (48, 48), {"width": 8}),
         ("sew_resnet18", (48, 48), {"width": 8}), ("vgg11", (48, 48), {"width": 8}),
         ("resnet20", (48, 48), {"width": 16, "rezero": True})]


def trained_like(name, size, kw, seed=0):
    """A model whose BatchNorm statistics and ReZero gates are not the identity."""
    torch.manual_seed(seed)
    model = build_model(name, input_size=size, **kw)
    x = torch.randint(0, 3, (4, 6, 2, *size)).float()
    with torch.no_grad():
        model.train()(x)
        for m in model.modules():
            if getattr(m, "gate", None) is not None:
                m.gate.fill_(0.7)
    return model, x


def activity(export, model, x):
    """Each neuron node's output as the torch model computes it."""
    seen = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out))
             for n, m in export.modules.items()]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return seen, logits


@pytest.mark.parametrize("name,size,kw", CASES)
def test_exported_graph_spikes_exactly_like_the_folded_model(name, size, kw, tmp_path):
    model, x = trained_like(name, size, kw)
    folded = fold_model(model)
    export = model_to_nir(folded, (2, *size))
    nir.write(tmp_path / "m.nir", export.graph)
    graph = nir.read(tmp_path / "m.nir")
    sim = simulate(graph, folded.encode(x))
    torch_activity, logits = activity(export, folded, x)
    assert torch_activity
    for node, spikes in torch_activity.items():
        assert torch.equal(sim.outputs[node], spikes), node
    assert sum(s.sum().item() for n, s in torch_activity.items() if "lif" in n) > 0
    torch.testing.assert_close(sim.output.mean(0), logits, rtol=0, atol=0)


def test_a_planted_weight_change_is_caught():
    model, x = trained_like("cnn", (34, 34), {})
    folded = fold_model(model)
    export = model_to_nir(folded, (2, 34, 34))
    conv = next(n for n in export.graph.nodes if n.endswith("_conv"))
    export.graph.nodes[conv].weight[0, 0, 1, 1] += 2 / 64  # one quantization step
    sim = simulate(export.graph, folded.encode(x))
    torch_activity, _ = activity(export, folded, x)
    assert any(not torch.equal(sim.outputs[n], s) for n, s in torch_activity.items())


def test_fold_keeps_accuracy_relevant_behaviour_and_quantizes():
    model, x = trained_like("resnet20", (48, 48), {"width": 16})
    folded = fold_model(model)
    assert not any(m.__class__.__name__ == "BiasNorm" for m in folded.modules())
    for name, p in folded.named_parameters():
        if name.endswith("weight") and p.dim() > 1:
            assert torch.equal(p * 32, torch.round(p * 32)), name  # on the 2/64 grid
        if name.endswith("bias"):
            assert torch.equal(p * 64, torch.round(p * 64)), name
    # model untouched
    assert any(m.__class__.__name__ == "BiasNorm" for m in model.modules())


def test_cuba_nir_round_trip():
    p = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03)
    node = cuba_to_nir(p, (3, 4), np.array([0.5, 0.0, -0.25]))
    back, bias = nir_to_cuba(node, 1e-4)
    assert (back.i_decay, back.v_decay, back.theta) == (p.i_decay, p.v_decay, p.theta)
    np.testing.assert_allclose(bias[:, 0], [0.5, 0.0, -0.25])
    node.tau_syn[0, 0] *= 1.5  # no longer one population with 12-bit decays
    assert nir_to_cuba(node, 1e-4) is None


def test_float_lif_with_leak_fires_on_schedule():
    """two_lif_neurons: v_leak 1.2 > threshold 1 makes lif1 fire with no input at all."""
    path = SHARED / "nir" / "two_lif_neurons.nir"
    graph = nir.read(path)
    sim = simulate(graph, torch.zeros(400, 1, 1))
    # v[t] = 1.2 (1 - 0.99^t) crosses 1 when 0.99^t < 1/6: first at t = 179 (0-based 178)
    first = int(np.log(1 / 6) / np.log(0.99)) + 1
    spikes = sim.outputs["lif1"][:, 0, 0].nonzero().flatten().tolist()
    assert spikes[:2] == [first - 1, 2 * first - 1]
    assert sim.output.sum() == 0  # lif2's threshold of 20 is never reached by two spikes


def test_sinabs_nmnist_cnn_runs_on_a_real_sample():
    graph_path = SHARED / "nir" / "nmnist_cnn_sinabs.nir"
    sample = SHARED / "events" / "nmnist_sample.bin"
    from spikeline.datasets.events import read_events
    from spikeline.datasets.frames import events_to_frames

    stream = read_events(sample)
    frames = torch.as_tensor(events_to_frames(stream.events, stream.sensor_size, 20))
    sim = simulate(nir.read(graph_path), frames[:, None].float())
    assert sim.output.shape == (20, 1, 10)
    # the first conv layer fires on a genuine digit
    assert sim.outputs["1"].sum() > 0


def _recurrent_graph(w_self):
    """input -> lin_in -> lif; lif -> lin_rec -> lif (a cycle)."""
    one = np.ones((1, 1))
    nodes = {
        "in": nir.Input(input_type={"input": np.array([1])}),
        "lin_in": nir.Linear(weight=one),
        "lif": nir.LIF(tau=np.array([1e-4]), r=np.array([1.0]), v_leak=np.array([0.0]),
                       v_threshold=np.array([0.5]), v_reset=np.array([0.0])),
        "lin_rec": nir.Linear(weight=one * w_self),
        "out": nir.Output(output_type={"output": np.array([1])}),
    }
    edges = [("in", "lin_in"), ("lin_in", "lif"), ("lif", "lin_rec"), ("lin_rec", "lif"),
             ("lif", "out")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_recurrent_edge_carries_the_previous_step():
    # tau = dt: v[t] = x[t] + w * s[t-1]; one input spike at t=0 then self-excitation
    x = torch.zeros(6, 1, 1)
    x[0] = 1
    out = simulate(_recurrent_graph(1.0), x).output[:, 0, 0]
    assert out.tolist() == [1, 1, 1, 1, 1, 1]
    out = simulate(_recurrent_graph(0.0), x).output[:, 0, 0]
    assert out.tolist() == [1, 0, 0, 0, 0, 0]


def test_bad_graphs_get_clear_errors():
    graph = _recurrent_graph(1.0)
    with pytest.raises(SpikelineError, match=r"\[T, N, 1\]"):
        simulate(graph, torch.zeros(3, 1, 2))
    graph.nodes["lin_rec"] = object()  # a node type nobody knows
    with pytest.raises(SpikelineError, match="lin_rec"):
        simulate(graph, torch.zeros(3, 1, 1))
    with pytest.raises(SpikelineError, match="mode"):
        simulate(_recurrent_graph(1.0), torch.zeros(3, 1, 1), mode="analog")
    with pytest.raises(SpikelineError, match="fixed-point"):
        simulate(_recurrent_graph(1.0), torch.zeros(3, 1, 1), mode="loihi")


def test_export_refuses_what_it_cannot_express():
    with pytest.raises(SpikelineError, match="BatchNorm"):
        model_to_nir(build_model("resnet20", input_size=(48, 48), width=16), (2, 48, 48))
    iand = fold_model(build_model("sew_resnet18", input_size=(48, 48), width=8, connect="IAND"))
    with pytest.raises(SpikelineError, match="IAND"):
        model_to_nir(iand, (2, 48, 48))


# ---- every export we write imports again, and simulates like the original -------------------

def _export_and_input(tmp_path, name, size, kw, seed=0):
    from spikeline.deploy.export import export_model

    model, x = trained_like(name, size, kw, seed)
    spec = {"name": name, "in_channels": 2, "num_classes": 10, "input_size": list(size), **kw}
    result = export_model(model, spec, tmp_path / name, config={"T": 6})
    return result, fold_model(model).encode(x)


@pytest.mark.parametrize("name,size,kw", [("cnn", (34, 34), {}),
                                          ("resnet20", (48, 48), {"width": 16})])
def test_every_export_file_imports_and_simulates_identically(name, size, kw, tmp_path, capsys):
    from spikeline.cli import main

    result, x = _export_and_input(tmp_path, name, size, kw)
    original = simulate(nir.read(result.out_dir / "model.nir"), x)
    assert sum(v.abs().sum() for v in original.outputs.values()) > 0
    written = [f for f in result.files.values() if f.endswith((".nir", ".net"))]
    assert "model.nir" in written and ("model.net" in written) == (name == "cnn")
    for file in written:
        out = tmp_path / f"imported-{file}.nir"
        extra = ["--no-delay-shift"] if file.endswith(".net") else []  # trained without it
        assert main(["import", str(result.out_dir / file), "--out", str(out), *extra]) == 0
        imported = simulate(nir.read(out), x)
        assert torch.equal(imported.output, original.output), file
        if file.endswith(".nir"):  # same node names: every node's activity
            assert imported.outputs.keys() == original.outputs.keys()
            for node, values in original.outputs.items():
                assert torch.equal(imported.outputs[node], values), node
        else:
            assert original.output.abs().sum() > 0  # the readout is not silent


def _netx(path, layers):
    """A netx file of ``layers``: dicts of datasets, 'neuron' a dict too."""
    import h5py

    with h5py.File(path, "w") as f:
        for i, layer in enumerate(layers):
            g = f.create_group(f"layer/{i}")
            for key, value in layer.items():
                if key == "neuron":
                    n = g.create_group("neuron")
                    for k, v in value.items():
                        n.create_dataset(k, data=v)
                else:
                    g.create_dataset(key, data=value)
    return path


NEURON = {"type": np.bytes_("CUBA"), "iDecay": 1024, "vDecay": 128, "vThMant": 80,
          "refDelay": 1, "gradedSpike": False}


def _strided_conv(out=(4, 8, 8)):
    return {"type": np.array([b"conv"]), "inChannels": 2, "outChannels": out[0],
            "kernelSize": np.array([3, 3]), "stride": np.array([2, 2]),
            "padding": np.array([1, 1]), "dilation": np.array([1, 1]), "groups": 1,
            "weight": np.full((out[0], 2, 3, 3), 2.0, np.float32), "shape": np.array(out),
            "neuron": NEURON}


def test_import_accepts_every_input_size_a_strided_first_layer_maps_to_its_output(tmp_path):
    from spikeline.deploy.from_netx import netx_to_nir
    from spikeline.errors import BadInput

    path = _netx(tmp_path / "s.net", [_strided_conv()])
    # (n + 2 - 3) // 2 + 1 == 8  <=>  n in {15, 16}
    assert list(netx_to_nir(path).nodes["input"].input_type["input"]) == [2, 15, 15]
    for shape in ((2, 15, 16), (2, 16, 16), (2, 16, 15)):
        graph = netx_to_nir(path, input_shape=shape)
        assert tuple(graph.nodes["input"].input_type["input"]) == shape
        assert simulate(graph, torch.ones(3, 1, *shape)).output.shape == (3, 1, 4, 8, 8)
    for bad in ((2, 14, 16), (2, 17, 16), (3, 16, 16), (2, 16)):
        with pytest.raises(BadInput, match="input"):
            netx_to_nir(path, input_shape=bad)


def test_import_keeps_netx_pool_padding(tmp_path):
    from spikeline.deploy.from_netx import netx_to_nir

    pool = {"type": np.array([b"pool"]), "kernelSize": np.array([2, 2]),
            "stride": np.array([2, 2]), "padding": np.array([1, 1]),
            "weight": np.full((1,), 64.0), "shape": np.array([2, 5, 5]), "neuron": NEURON}
    graph = netx_to_nir(_netx(tmp_path / "p.net", [pool]), input_shape=(2, 8, 8))
    node = graph.nodes["0_pool"]
    assert isinstance(node, nir.SumPool2d) and list(node.padding) == [1, 1]
    assert simulate(graph, torch.ones(2, 1, 2, 8, 8)).output.shape == (2, 1, 2, 5, 5)


def test_grouped_conv_imports_as_the_equivalent_dense_conv(tmp_path):
    """NIR 1.0.8 infers a grouped conv's input channels wrongly; the import expands it."""
    from spikeline.deploy.from_netx import netx_to_nir

    rng = np.random.default_rng(0)
    weight = rng.integers(-4, 5, (4, 1, 3, 3)).astype(np.float32) * 2
    conv = {"type": np.array([b"conv"]), "inChannels": 2, "outChannels": 4, "groups": 2,
            "kernelSize": np.array([3, 3]), "stride": np.array([1, 1]),
            "padding": np.array([1, 1]), "weight": weight, "shape": np.array([4, 6, 6]),
            "neuron": NEURON}
    graph = netx_to_nir(_netx(tmp_path / "g.net", [conv]), delay_shift=False)
    dense = graph.nodes["0_conv"].weight
    assert dense.shape == (4, 2, 3, 3)
    x = torch.from_numpy(rng.integers(0, 2, (1, 2, 6, 6)).astype(np.float32))
    grouped = torch.nn.functional.conv2d(x, torch.from_numpy(weight / 64), padding=1, groups=2)
    full = torch.nn.functional.conv2d(x, torch.from_numpy(dense).float(), padding=1)
    torch.testing.assert_close(grouped, full, rtol=0, atol=1e-6)


def _lone_spike_pool_graph(tmp_path, layer):
    from spikeline.deploy.from_netx import netx_to_nir

    return netx_to_nir(_netx(tmp_path / "w.net", [layer]), input_shape=(2, 4, 4),
                       delay_shift=False)


@pytest.mark.parametrize("form", ["pool", "grouped conv"])
def test_a_weighted_netx_pool_imports_as_a_sum_pool_and_a_scale(tmp_path, form):
    """lava-dl's Pool(weight_scale=w) and spikeline's netx form of it (a grouped conv of one
    weight) import as SumPool2d -> Scale(w).  A lone spike in a window crosses in the step it
    arrives at w = 84/64 (above the threshold, 80/64); at w = 1 the current's tail carries it
    over the threshold one step later."""
    first_step = {}
    for mant in (64.0, 84.0):
        if form == "pool":
            layer = {"type": np.array([b"pool"]), "kernelSize": np.array([2, 2]),
                     "weight": np.full((1,), mant), "shape": np.array([2, 2, 2]),
                     "neuron": NEURON}
        else:
            layer = {"type": np.array([b"conv"]), "inChannels": 2, "outChannels": 2,
                     "groups": 2, "kernelSize": np.array([2, 2]), "stride": np.array([2, 2]),
                     "weight": np.full((2, 1, 2, 2), mant, np.float32),
                     "shape": np.array([2, 2, 2]), "neuron": NEURON}
        graph = _lone_spike_pool_graph(tmp_path, layer)
        kinds = [type(n).__name__ for n in graph.nodes.values()]
        assert "SumPool2d" in kinds and ("Scale" in kinds) == (mant != 64), kinds
        x = torch.zeros(4, 1, 2, 4, 4)
        x[0, 0, 0, 0, 0] = 1  # one spike in the top-left window
        out = simulate(graph, x).output
        first_step[mant] = int(out.flatten(1).sum(1).nonzero()[0])
    assert first_step == {64.0: 1, 84.0: 0}
