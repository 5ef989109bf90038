"""deploy/energy/conventions.py: EMS-YOLO Eq. 6 by hand, Lemaire et al. 2022 against
SpikingJelly 2.0's implementation, break-even rates, and the counts they rest on (CUBA current,
shortcut adds, latency steps)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import nir
from spikeline.deploy.energy import (
    EnergyCounts, GradedEventsRefused, count_operations, load_hardware_models, load_memory,
    price, price_ems, price_lemaire)
from spikeline.deploy.energy.conventions import _at_rate, _lemaire_snn_layer
from spikeline.errors import SpikelineError
from spikeline.deploy.export import write_manifest

PJ = 1e-12


def lif(shape, tau=1.0, threshold=1.0):
    one = np.ones(shape)
    return nir.LIF(tau=tau * one, r=one, v_leak=0 * one, v_threshold=threshold * one,
                   v_reset=0 * one)


def conv_fc_graph():
    """Input [1, 4, 4] -> Conv2d 3x3 pad 1 (2 channels) -> LIF -> Flatten -> Linear 32->3 ->
    LIF."""
    w = np.ones((2, 1, 3, 3))
    return nir.NIRGraph(nodes={
        "input": nir.Input(np.array([1, 4, 4])),
        "conv": nir.Conv2d((4, 4), w, 1, 1, 1, 1, np.zeros(2)),
        "lif1": lif((2, 4, 4)),
        "flat": nir.Flatten(input_type={"input": np.array([2, 4, 4])}, start_dim=0),
        "fc": nir.Linear(np.ones((3, 32))),
        "lif2": lif((3,)),
        "output": nir.Output(np.array([3]))},
        edges=[("input", "conv"), ("conv", "lif1"), ("lif1", "flat"), ("flat", "fc"),
               ("fc", "lif2"), ("lif2", "output")], type_check=False)


def test_ems_equation_6_by_hand():
    T = 2
    x = torch.zeros(T, 1, 1, 4, 4)
    x[0, 0, 0, 1, 1] = 1
    s1 = torch.zeros(T, 1, 2, 4, 4)
    s1[0, 0, 0, 0, :] = 1       # 4 spikes at t=0
    s1[1, 0, 1, 2, 1:3] = 1     # 2 spikes at t=1
    outputs = {"input": x, "conv": torch.zeros(T, 1, 2, 4, 4), "lif1": s1,
               "flat": s1.reshape(T, 1, 32), "fc": torch.zeros(T, 1, 3),
               "lif2": torch.zeros(T, 1, 3)}
    counts = count_operations(conv_fc_graph(), outputs)
    est = price_ems(counts, load_hardware_models()["cmos45_fp32"])
    # E = T * (fr * E_AC * OP_AC + E_MAC * OP_MAC); the conv is the first layer -> MAC
    flops_conv = 3 * 3 * 4 * 4 * 1 * 2      # k^2 H_out W_out C_in C_out = 288
    flops_fc = 32 * 3                       # 96
    fr_fc = 6 / (T * 32)                    # 6 spikes over T steps and 32 inputs
    snn = T * (fr_fc * 0.9 * PJ * flops_fc + 4.6 * PJ * flops_conv)
    ann = 4.6 * PJ * (flops_conv + flops_fc)
    assert counts.layer("conv").first_layer and not counts.layer("fc").first_layer
    assert est.snn.total == pytest.approx(snn, rel=1e-12) and est.snn.memory == 0
    assert est.ann.total == pytest.approx(ann, rel=1e-12)
    assert est.layers["fc"].snn.total == pytest.approx(T * fr_fc * 0.9 * PJ * flops_fc)
    assert est.convention == "ems" and est.model == "cmos45_fp32"
    with pytest.raises(SpikelineError, match="ems prices arithmetic"):
        price(counts, load_hardware_models()["loihi1"], "ems")


# ---------------------------------------------------------------------------------------------
# Lemaire et al. 2022 against SpikingJelly 2.0's implementation of the paper
# ---------------------------------------------------------------------------------------------

def _mlp(sizes, seed=0, tau=2e-3, dt=1e-3):
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(-0.2, 0.6, (o, i)) for i, o in zip(sizes, sizes[1:])]
    nodes, edges, prev = {"input": nir.Input(np.array([sizes[0]]))}, [], "input"
    for k, w in enumerate(weights):
        nodes[f"fc{k}"] = nir.Linear(w)
        nodes[f"lif{k}"] = lif((w.shape[0],), tau=tau)
        edges += [(prev, f"fc{k}"), (f"fc{k}", f"lif{k}")]
        prev = f"lif{k}"
    nodes["output"] = nir.Output(np.array([sizes[-1]]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt}, type_check=False), \
        weights, prev


def test_lemaire_equals_spikingjelly_analytical_energy_on_the_same_network():
    """Lemaire et al. published no code; SpikingJelly 2.0's ``estimate_lemaire_energy`` is a
    paper-fidelity implementation (arXiv 2210.13107, 45 nm int32: E_ADD 0.1 pJ, E_MUL 3.1 pJ,
    SRAM 8 kB 10 pJ / 32 kB 20 pJ / 1 MB 100 pJ, FIFO of 1000 words).  On a fully connected
    network (where both count exact fan-out) our SNN and ANN figures equal its output."""
    sj = pytest.importorskip("spikingjelly.activation_based.op_counter.analytical_energy")
    from spikingjelly.activation_based import functional, neuron

    from spikeline.deploy.simulate import simulate

    sizes = [20, 16, 12, 6]
    graph, weights, last = _mlp(sizes)
    T = 6
    x = (torch.rand(T, 1, sizes[0], generator=torch.Generator().manual_seed(1)) < 0.4).float()
    sim = simulate(graph, x, mode="float", fire_at_threshold=True)  # SpikingJelly's rule
    mods = []
    for w in weights:
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight.data = torch.tensor(w, dtype=torch.float32)
        mods += [layer, neuron.LIFNode(tau=2.0, decay_input=True, v_reset=0.0, v_threshold=1.0)]
    snn = nn.Sequential(*mods)

    class Steps(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.stack([self.net(x[t]) for t in range(x.shape[0])])

    with torch.no_grad():
        assert torch.equal(Steps(snn)(x), sim.outputs[last])  # the same activity
    functional.reset_net(snn)
    config = sj.LemaireEnergyConfig(strict=False)
    theirs = sj.estimate_lemaire_energy(Steps(snn), x, config=config)
    ann = nn.Sequential(*[m if isinstance(m, nn.Linear) else nn.ReLU() for m in mods])
    with pytest.warns(RuntimeWarning):  # it warns that ReLU has no Lemaire formula
        theirs_ann = sj.estimate_lemaire_energy(
            ann, torch.rand(1, sizes[0], generator=torch.Generator().manual_seed(2)) + 0.1,
            config=config)

    counts = count_operations(graph, sim)
    ours = price_lemaire(counts, load_hardware_models()["cmos45_int32"])
    assert counts.totals()["spikes"] > 10  # the comparison is not on silence
    assert ours.snn.total / PJ == pytest.approx(theirs.total_pj, rel=1e-12)
    assert ours.snn.memory / PJ == pytest.approx(theirs.breakdown_pj["memory_pj"], rel=1e-12)
    assert ours.breakdown["ops"] / PJ == pytest.approx(theirs.breakdown_pj["ops_pj"], rel=1e-12)
    assert ours.breakdown["addressing"] / PJ == pytest.approx(
        theirs.breakdown_pj["addressing_pj"], rel=1e-12)
    assert ours.ann.total / PJ == pytest.approx(theirs_ann.total_pj, rel=1e-12)


def test_lemaire_terms_of_one_conv_layer_by_hand():
    T = 2
    x = torch.zeros(T, 1, 1, 4, 4)
    x[0, 0, 0, 0, 0] = 1   # corner: reaches 2x2 windows x 2 channels = 8 synapses
    x[1, 0, 0, 2, 2] = 1   # interior: 3x3 x 2 = 18
    s1 = torch.zeros(T, 1, 2, 4, 4)
    s1[1, 0, 0, 0, 0] = 1
    outputs = {"input": x, "conv": torch.zeros(T, 1, 2, 4, 4), "lif1": s1,
               "flat": s1.reshape(T, 1, 32), "fc": torch.zeros(T, 1, 3),
               "lif2": torch.zeros(T, 1, 3)}
    counts = count_operations(conv_fc_graph(), outputs)
    conv = counts.layer("conv")
    assert (conv.synops, conv.spike_events, conv.kernel_fanout, conv.params) == (26, 2, 18, 18)
    mem = load_memory()
    model = load_hardware_models()["cmos45_int32"]
    energy, parts = _lemaire_snn_layer(conv, model.joules("mac"), model.joules("ac"), 4, mem)
    e_add, e_mac = 0.1 * PJ, 3.2 * PJ
    word = mem.access_joules
    assert word(8192) == pytest.approx(10 * PJ) and word(20480) == pytest.approx(15 * PJ)
    assert parts["ops"] == pytest.approx(e_add * (26 + 1) + e_mac * 32 * T)  # one LIF leak
    assert parts["addressing"] == pytest.approx(e_add * 2 * 18 + e_mac * 2 * 2)
    assert parts["read_in"] == pytest.approx(2 * word(4000))
    assert parts["read_params"] == pytest.approx(26 * word(72))  # 18 weights, zero bias
    assert parts["potential"] == pytest.approx(2 * 26 * word(128) + 2 * 64 * word(128))
    assert parts["write_out"] == pytest.approx(1 * word(4000))
    assert energy.compute == pytest.approx(parts["ops"] + parts["addressing"])


def test_break_even_rate_is_where_snn_and_ann_cost_the_same():
    graph, _, _ = _mlp([64, 64, 10])
    T = 5
    gen = torch.Generator().manual_seed(0)
    outputs = {"input": (torch.rand(T, 1, 64, generator=gen) < 0.1).float(),
               "fc0": torch.zeros(T, 1, 64),
               "lif0": (torch.rand(T, 1, 64, generator=gen) < 0.1).float(),
               "fc1": torch.zeros(T, 1, 10), "lif1": torch.zeros(T, 1, 10)}
    counts = count_operations(graph, outputs)
    model = load_hardware_models()["cmos45_int8"]
    est = price_lemaire(counts, model)
    r = est.break_even_rate
    assert r is not None and 0 < r < 1
    at_r = EnergyCounts(tuple(_at_rate(layer, r) for layer in counts.layers),
                        counts.neuron_nodes, T=T, samples=1, network_input_events=0)
    assert price_lemaire(at_r, model).snn.total == pytest.approx(est.ann.total, rel=1e-9)
    for layer in counts.layers:
        lr = est.layers[layer.name].break_even_rate
        if lr is not None:
            one = EnergyCounts((_at_rate(layer, lr),), (), T=T, samples=1,
                               network_input_events=0)
            assert price_lemaire(one, model).snn.total == pytest.approx(
                est.layers[layer.name].ann.total, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Counts the conventions rest on
# ---------------------------------------------------------------------------------------------

def test_cuba_neuron_is_active_while_its_current_is_nonzero():
    from spikeline.deploy.nir_check import DT
    from spikeline.deploy.nir_params import cuba_to_nir
    from spikeline.pipeline.neuron import CubaParams

    p = CubaParams(threshold=10.0, current_decay=0.5, voltage_decay=0.03, tau_grad=1.0)
    node = cuba_to_nir(p, (1,), None)
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([1])), "fc": nir.Linear(np.eye(1)),
                            "n": node, "output": nir.Output(np.array([1]))},
                     edges=[("input", "fc"), ("fc", "n"), ("n", "output")],
                     metadata={"dt": DT}, type_check=False)
    T = 16
    x = torch.zeros(T, 1, 1)
    x[0] = 1.0  # one input at t = 0; the current halves each step until it truncates to 0
    counts = count_operations(g, {"input": x, "fc": x, "n": torch.zeros(T, 1, 1)})
    (n,) = counts.neuron_nodes
    # u(0) = s_scale * 1 in the fixed-point units; u <- trunc(u / 2) reaches 0 after
    # bit_length(u(0)) steps, so the neuron is active for that many steps, not one
    u0 = int(p.s_scale * 1.0)
    assert n.active_updates == min(T, u0.bit_length()) > 1


def test_shortcut_adds_event_driven_and_dense():
    # two spike trains into one linear layer (a SEW ADD junction), one shortcut into a neuron
    one = np.ones(3)
    g = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([3])), "fa": nir.Linear(np.eye(3)), "a": lif((3,)),
        "fb": nir.Linear(np.eye(3)), "b": lif((3,)), "fc": nir.Linear(np.eye(3)),
        "out": nir.LIF(tau=one, r=one, v_leak=0 * one, v_threshold=one),
        "output": nir.Output(np.array([3]))},
        edges=[("input", "fa"), ("fa", "a"), ("input", "fb"), ("fb", "b"), ("a", "fc"),
               ("b", "fc"), ("fc", "out"), ("a", "out"), ("out", "output")], type_check=False)
    T = 2
    a = torch.tensor([[1.0, 0, 0], [1.0, 1, 0]]).reshape(T, 1, 3)
    b = torch.tensor([[0.0, 1, 0], [1.0, 0, 0]]).reshape(T, 1, 3)
    inp = torch.ones(T, 1, 3)
    fc = torch.tensor([[0.0, 0, 2], [0, 0, 0]]).reshape(T, 1, 3)
    outputs = {"input": inp, "fa": inp, "a": a, "fb": inp, "b": b, "fc": fc,
               "out": torch.zeros(T, 1, 3)}
    counts = count_operations(g, outputs)
    layer = counts.layer("fc")
    # fc's junction a + b: both nonzero only at (t=1, j=0) -> 1 add; out's a + fc: both nonzero
    # nowhere (fc is nonzero at j=2 where a is 0) -> 0 adds
    assert layer.shortcut_adds == 1 and layer.dense_shortcut_adds == 3 + 3
    assert counts.totals()["shortcut_adds"] == 1
    est = price(counts, load_hardware_models()["cmos45_fp32"])
    assert est.breakdown["shortcut"] == pytest.approx(0.9 * PJ)
    with pytest.raises(GradedEventsRefused, match=r"\['fc'\]"):  # a + b = 2 at t=1
        price(counts, load_hardware_models()["loihi1"])


def test_latency_steps_add_input_free_neuron_updates():
    graph, _, _ = _mlp([4, 3])
    T = 3
    outputs = {"input": torch.ones(T, 1, 4), "fc0": torch.ones(T, 1, 3),
               "lif0": torch.zeros(T, 1, 3)}
    base = count_operations(graph, outputs)
    late = count_operations(graph, outputs, latency_steps=5)
    (b,), (n,) = base.neuron_nodes, late.neuron_nodes
    assert (b.updates, n.updates) == (3 * T, 3 * (T + 5))
    assert n.active_updates == b.active_updates
    loihi = load_hardware_models()["loihi1"]
    extra = price(late, loihi).snn.total - price(base, loihi).snn.total
    assert extra == pytest.approx(52 * PJ * 3 * 5)  # inactive updates of the extra steps
    with pytest.raises(SpikelineError, match="latency_steps"):
        count_operations(graph, outputs, latency_steps=-1)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def _cli(argv):
    from spikeline.cli import main

    return main(argv)


@pytest.fixture
def export_dir(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    nir.write(str(folder / "model.nir"), conv_fc_graph())
    (folder / "metadata.json").write_text(json.dumps({"T": 3}))
    write_manifest(folder)  # a folder made by hand is committed like `spikeline export` does
    x = (np.random.default_rng(0).random((3, 2, 1, 4, 4)) < 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return folder


def test_cli_one_convention_on_one_model(export_dir, tmp_path):
    out = tmp_path / "ems.json"
    assert _cli(["energy", str(export_dir), "--input", str(tmp_path / "x.npy"),
                 "--convention", "ems", "--hardware", "cmos45_fp32", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["convention"], data["hardware"]) == ("ems", "cmos45_fp32")
    assert list(data["energy"]) == ["ems/cmos45_fp32"]
    T = data["meta"]["T"]
    expected = 0.0
    for layer in data["layers"]:
        if layer["first_layer"] or layer["binary_fraction"] < 1:
            expected += T * 4.6 * PJ * layer["dense_ops"]
        else:
            expected += T * layer["firing_rate"] * 0.9 * PJ * layer["dense_ops"]
        assert layer["snn_J"] == pytest.approx(layer["snn"]["total_J"])
    assert data["snn"]["total_J"] == pytest.approx(expected, rel=1e-12)
    assert data["snn"]["memory_J"] == 0 and data["ann"]["memory_J"] == 0
    assert set(data["snn"]) == {"compute_J", "memory_J", "total_J"}

    out = tmp_path / "lemaire.json"
    assert _cli(["energy", str(export_dir), "--input", str(tmp_path / "x.npy"),
                 "--convention", "lemaire", "--hardware", "cmos45_int8", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["convention"] == "lemaire" and data["snn"]["memory_J"] > 0
    assert data["ann"]["memory_J"] > 0 and "break_even_rate" in data
    assert all("break_even_rate" in layer for layer in data["layers"])


def test_cli_refusals_and_latency_from_metadata(export_dir, tmp_path, capsys):
    assert _cli(["energy", str(export_dir), "--input", str(tmp_path / "x.npy"),
                 "--convention", "lemaire", "--hardware", "loihi1"]) == 2
    assert "cmos model" in capsys.readouterr().err
    np.save(tmp_path / "counts.npy", 2 * np.load(tmp_path / "x.npy"))
    assert _cli(["energy", str(export_dir), "--input", str(tmp_path / "counts.npy"),
                 "--convention", "event", "--hardware", "loihi1"]) == 2
    assert "loihi1 sends binary spikes only" in capsys.readouterr().err
    assert _cli(["energy", str(export_dir), "--input", str(tmp_path / "counts.npy"),
                 "--convention", "event", "--hardware", "loihi2"]) == 0
    assert "(not measured)" in capsys.readouterr().out

    meta = export_dir / "metadata.json"
    meta.write_text(json.dumps({"T": 3, "latency_steps": 4}))
    write_manifest(export_dir)
    out = tmp_path / "late.json"
    assert _cli(["energy", str(export_dir), "--input", str(tmp_path / "x.npy"),
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["latency_steps"] == 4
    assert data["totals"]["neuron_updates"] == (32 + 3) * (3 + 4)
    meta.write_text(json.dumps({"T": 3, "latency_steps": "two"}))
    write_manifest(export_dir)
    assert _cli(["energy", str(export_dir), "--input", str(tmp_path / "x.npy")]) == 2
    assert "latency_steps" in capsys.readouterr().err
