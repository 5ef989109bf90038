"""deploy/energy: hand-computed operation counts, pricing formulas, hardware model files."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nir
from spikeline.deploy.energy import (
    EnergyCounts, GradedEventsRefused, LayerCounts, NeuronCounts, combine_counts, conv_fanout,
    count_operations, load_hardware_models, price, price_lemaire, select_models)
from spikeline.errors import SpikelineError

ZERO = np.zeros


def lif(shape):
    one = np.ones(shape)
    return nir.LIF(tau=one, r=one, v_leak=0 * one, v_threshold=one)


def graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


# ---------------------------------------------------------------------------------------------
# Convolution: exact fan-out with borders, stride 2, padding 1
# ---------------------------------------------------------------------------------------------

def conv_graph(c_out=3, size=5, stride=2, padding=1):
    w = np.ones((c_out, 1, 3, 3))
    h_out = (size + 2 * padding - 3) // stride + 1
    return graph({"input": nir.Input(np.array([1, size, size])),
                  "conv": nir.Conv2d((size, size), w, stride, padding, 1, 1, ZERO(c_out)),
                  "lif": lif((c_out, h_out, h_out)),
                  "output": nir.Output(np.array([c_out, h_out, h_out]))},
                 [("input", "conv"), ("conv", "lif"), ("lif", "output")]), h_out


def test_conv_stride2_padding1_synops_by_hand():
    g, h_out = conv_graph()
    assert h_out == 3  # floor((5 + 2 - 3) / 2) + 1
    # Output row i reads input rows 2i-1 .. 2i+1 (row -1 and 5 are padding):
    # i=0 -> rows {0, 1}; i=1 -> {1, 2, 3}; i=2 -> {3, 4}.  Windows per input row / column:
    cover = [1, 2, 1, 2, 1]
    x = torch.zeros(2, 2, 1, 5, 5)  # [T, N, C, H, W]
    spikes = {(0, 0): [(0, 0), (1, 3), (4, 4), (2, 2)], (1, 0): [(3, 1)],
              (1, 1): [(0, 4), (4, 0)]}  # (t, n): positions
    for (t, n), positions in spikes.items():
        for r, c in positions:
            x[t, n, 0, r, c] = 1
    # each spike reaches cover[r] * cover[c] windows in each of the 3 output channels
    expected = sum(cover[r] * cover[c] * 3 for ps in spikes.values() for r, c in ps)
    assert expected == (3 + 12 + 3 + 3) + 12 + (3 + 3)  # 39 over both samples
    outputs = {"input": x, "conv": torch.zeros(2, 2, 3, 3, 3), "lif": torch.zeros(2, 2, 3, 3, 3)}
    counts = count_operations(g, outputs)
    layer = counts.layer("conv")
    assert (counts.T, counts.samples) == (2, 2)
    assert layer.synops == expected / 2 == 19.5  # per inference = mean over the 2 samples
    assert layer.macs == 0
    assert layer.input_events == 7 / 2
    assert layer.firing_rate == pytest.approx(3.5 / (2 * 25))
    assert layer.connections == sum(cover) * sum(cover) * 3 == 147
    assert layer.dense_ops == 3 * 3 * 3 * 3 * 1 * 3  # k^2 H_out W_out C_in C_out = 243
    assert layer.output_shape == (3, 3, 3)
    assert counts.network_input_events == 3.5


def _fanout_by_autograd(shape, weight, stride, padding, dilation, groups):
    """Independent reference: d/dx sum(conv(x, [w != 0])) = synapses leaving each input."""
    x = torch.zeros(1, *shape, dtype=torch.float64, requires_grad=True)
    F.conv2d(x, (weight != 0).double(), stride=stride, padding=padding, dilation=dilation,
             groups=groups).sum().backward()
    return x.grad[0]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation,groups", [
    ((2, 7, 6), (3, 3), (2, 2), (1, 1), (1, 1), 1),
    ((4, 9, 9), (3, 2), (2, 3), (0, 1), (2, 1), 2),
    ((3, 5, 8), (5, 5), (1, 1), (2, 2), (1, 1), 3),
    ((2, 6, 6), (1, 1), (2, 2), (0, 0), (1, 1), 1),
])
def test_conv_fanout_map_equals_autograd_reference(shape, kernel, stride, padding, dilation,
                                                   groups):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, shape[0] // groups, *kernel, generator=g, dtype=torch.float64)
    weight[weight.abs() < 0.3] = 0  # some pruned synapses
    mask = (weight != 0).double()
    fan, out = conv_fanout(shape, mask, stride, (padding[0], padding[0], padding[1], padding[1]),
                           dilation, groups)
    ref = _fanout_by_autograd(shape, weight, stride, padding, dilation, groups)
    torch.testing.assert_close(fan, ref, rtol=0, atol=0)
    expected_out = F.conv2d(torch.zeros(1, *shape, dtype=torch.float64), weight, stride=stride,
                            padding=padding, dilation=dilation, groups=groups).shape[-2:]
    assert out == tuple(expected_out)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_and_conv1d():
    x = torch.zeros(1, 1, 2, 6, 6)
    x[0, 0, :, 0, 5] = 1  # top-right corner, both channels
    w = np.ones((3, 2, 4, 4))
    g = graph({"input": nir.Input(np.array([2, 6, 6])),
               "conv": nir.Conv2d((6, 6), w, 1, "same", 1, 1, ZERO(3)),
               "output": nir.Output(np.array([3, 6, 6]))},
              [("input", "conv"), ("conv", "output")])
    counts = count_operations(g, {"input": x, "conv": torch.zeros(1, 1, 3, 6, 6)})
    ref = _fanout_by_autograd((2, 6, 6), torch.ones(3, 2, 4, 4), 1, "same", 1, 1)
    assert counts.layer("conv").synops == 2 * ref[0, 0, 5].item()
    # torch 'same' with k=4 pads 1 before and 2 after: corner (0, 5) is read by 2 x 3 windows
    assert ref[0, 0, 5].item() == 3 * 2 * 3

    x1 = torch.zeros(1, 1, 1, 7)
    x1[0, 0, 0, [0, 3, 6]] = 1
    g1 = graph({"input": nir.Input(np.array([1, 7])),
                "conv": nir.Conv1d(7, np.ones((2, 1, 3)), 2, 1, 1, 1, ZERO(2)),
                "output": nir.Output(np.array([2, 4]))},
               [("input", "conv"), ("conv", "output")])
    layer = count_operations(g1, {"input": x1, "conv": torch.zeros(1, 1, 2, 4)}).layer("conv")
    # outputs j read inputs 2j-1..2j+1: input 0 -> 1 window, 3 -> 2 (j=1,2), 6 -> 1; x 2 channels
    assert layer.synops == (1 + 2 + 1) * 2
    assert layer.output_shape == (2, 4)
    assert layer.dense_ops == 3 * 4 * 1 * 2


# ---------------------------------------------------------------------------------------------
# Linear, non-binary input, pooling, residual sums, neurons, recurrence
# ---------------------------------------------------------------------------------------------

def linear_graph(weight):
    n_out, n_in = weight.shape
    return graph({"input": nir.Input(np.array([n_in])), "fc": nir.Linear(weight),
                  "lif": lif((n_out,)), "output": nir.Output(np.array([n_out]))},
                 [("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_linear_synops_structural_and_nonzero_fanout():
    weight = np.arange(1.0, 13.0).reshape(4, 3)
    weight[1, 0] = 0.0  # one pruned synapse leaving input 0
    g = linear_graph(weight)
    x = torch.tensor([[1.0, 0, 1], [0, 1, 0]]).reshape(2, 1, 3)  # T=2, N=1
    outputs = {"input": x, "fc": torch.zeros(2, 1, 4),
               "lif": torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 1]]).reshape(2, 1, 4)}
    structural = count_operations(g, outputs).layer("fc")
    assert structural.synops == 3 * 4  # 3 input spikes x out_features
    assert structural.dense_ops == 12 and structural.connections == 12
    nonzero = count_operations(g, outputs, fanout="nonzero").layer("fc")
    assert nonzero.synops == 3 + 4 + 4  # input 0 has 3 nonzero weights
    assert nonzero.connections == 11
    # the LIF node after fc is attributed to it
    assert structural.neuron_nodes == ("lif",)
    assert structural.neurons == 4 and structural.neuron_updates == 8 and structural.spikes == 3


def test_non_binary_input_counts_macs_not_acs():
    g = linear_graph(np.ones((4, 3)))
    x = torch.tensor([[2.0, 0, -1],      # a count of 2: not binary -> 2 nonzero x 4 MACs
                      [1.0, -1, 0],      # {-1, 0, 1}: binary -> 2 x 4 ACs
                      [0.5, 0, 0]])      # graded value: MAC
    outputs = {"input": x.reshape(3, 1, 3), "fc": torch.zeros(3, 1, 4),
               "lif": torch.zeros(3, 1, 4)}
    layer = count_operations(g, outputs).layer("fc")
    assert layer.macs == 8 + 4
    assert layer.synops == 8
    assert layer.binary_fraction == pytest.approx(1 / 3)
    assert layer.input_events == 5


@pytest.mark.parametrize("pool", [nir.SumPool2d, nir.AvgPool2d])
def test_pooling_counts_as_synaptic_with_exact_fanout(pool):
    node = pool(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    g = graph({"input": nir.Input(np.array([2, 5, 5])), "pool": node,
               "output": nir.Output(np.array([2, 2, 2]))},
              [("input", "pool"), ("pool", "output")])
    x = torch.zeros(1, 1, 2, 5, 5)
    x[0, 0, 0, 0, 0] = x[0, 0, 1, 3, 2] = 1  # each in exactly one window
    x[0, 0, 0, 4, 1] = 1                     # row 4 lies in no window (floor): fan-out 0
    layer = count_operations(g, {"input": x, "pool": torch.zeros(1, 1, 2, 2, 2)}).layer("pool")
    assert layer.synops == 2
    assert layer.input_events == 3
    assert layer.output_shape == (2, 2, 2)
    assert layer.dense_ops == 2 * 2 * 2 * 2 * 2 and layer.dense_op_kind == "add"
    assert layer.connections == 2 * 4 * 4


def test_residual_inputs_are_summed_and_neurons_counted():
    # A -> fc <- B: two spike trains add; where both fire the input is 2 (SEW ADD) -> MAC
    g = graph({"input": nir.Input(np.array([3])),
               "fa": nir.Linear(np.eye(3)), "a": lif((3,)),
               "fb": nir.Linear(np.eye(3)), "b": lif((3,)),
               "fc": nir.Linear(np.ones((2, 3))), "out": lif((2,)),
               "output": nir.Output(np.array([2]))},
              [("input", "fa"), ("fa", "a"), ("input", "fb"), ("fb", "b"), ("a", "fc"),
               ("b", "fc"), ("fc", "out"), ("out", "output")])
    T = 2
    a = torch.tensor([[1.0, 0, 0], [1.0, 1, 0]]).reshape(T, 1, 3)
    b = torch.tensor([[0.0, 1, 0], [1.0, 0, 0]]).reshape(T, 1, 3)
    inp = torch.tensor([[1.0, 1, 0], [0, 0, 0]]).reshape(T, 1, 3)
    outputs = {"input": inp, "fa": inp, "a": a, "fb": inp, "b": b, "fc": torch.zeros(T, 1, 2),
               "out": torch.tensor([[0.0, 1], [0, 0]]).reshape(T, 1, 2)}
    counts = count_operations(g, outputs)
    fc = counts.layer("fc")
    assert fc.synops == 2 * 2          # step 0: a+b = [1, 1, 0] binary, 2 events x 2
    assert fc.macs == 2 * 2            # step 1: a+b = [2, 1, 0], 2 events x 2 outputs
    assert fc.input_events == 4
    names = [n.name for n in counts.neuron_nodes]
    assert names.index("a") < names.index("out") and names.index("b") < names.index("out")
    by_name = {n.name: n for n in counts.neuron_nodes}
    assert by_name["a"].layer == "fa" and by_name["out"].layer == "fc"
    assert by_name["a"].updates == 3 * T and by_name["a"].spikes == 3
    assert by_name["a"].active_updates == 2   # the input of `a` is nonzero twice
    assert by_name["out"].active_updates == 0  # fc's output is all zero here
    totals = counts.totals()
    assert totals["neurons"] == 3 + 3 + 2
    assert totals["neuron_updates"] == (3 + 3 + 2) * T
    assert totals["spikes"] == 3 + 2 + 1
    assert totals["synops"] == counts.layer("fa").synops + counts.layer("fb").synops + 4


def test_recurrent_edge_delivers_previous_step():
    # input -> fin -> lif -> rec -> fin: walking depth-first from the input (as the simulator
    # does), (rec, fin) closes the cycle, so fin reads input[t] + rec[t-1]
    g = graph({"input": nir.Input(np.array([2])), "fin": nir.Linear(np.ones((2, 2))),
               "lif": lif((2,)), "rec": nir.Linear(np.ones((2, 2))),
               "output": nir.Output(np.array([2]))},
              [("input", "fin"), ("fin", "lif"), ("lif", "output"), ("lif", "rec"),
               ("rec", "fin")])
    rec_out = torch.tensor([[1.0, 0], [0, 0], [3.0, 3]]).reshape(3, 1, 2)
    outputs = {"input": torch.zeros(3, 1, 2), "fin": torch.zeros(3, 1, 2),
               "lif": torch.zeros(3, 1, 2), "rec": rec_out}
    fin = count_operations(g, outputs).layer("fin")
    # step 1 sees rec's [1, 0] of step 0 (binary: 1 event x 2 ACs); step 2's [3, 3] is never
    # delivered, and nothing arrives at step 0
    assert fin.input_events == 1 and fin.synops == 2 and fin.macs == 0


def test_counting_in_batches_equals_counting_at_once():
    g = graph({"input": nir.Input(np.array([3])), "fc": nir.Linear(np.ones((4, 3))),
               "lif": lif((4,)), "output": nir.Output(np.array([4]))},
              [("input", "fc"), ("fc", "lif"), ("lif", "output")])
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (5, 4, 3), generator=gen).float()
    s = torch.randint(0, 2, (5, 4, 4), generator=gen).float()
    z = torch.zeros(5, 4, 4)

    def count(sl):
        return count_operations(g, {"input": x[:, sl], "fc": z[:, sl], "lif": s[:, sl]})

    whole = count(slice(0, 4))
    merged = combine_counts([count(slice(0, 1)), count(slice(1, 4))])
    assert merged.samples == 4
    for key, value in whole.totals().items():
        assert merged.totals()[key] == pytest.approx(value)
    assert merged.layers[0].binary_fraction == pytest.approx(whole.layers[0].binary_fraction)


def test_counting_errors_name_the_node():
    g = linear_graph(np.ones((4, 3)))
    with pytest.raises(SpikelineError, match="'input'"):
        count_operations(g, {"fc": torch.zeros(1, 1, 4), "lif": torch.zeros(1, 1, 4)})
    with pytest.raises(SpikelineError, match="last dimension 3"):
        count_operations(g, {"input": torch.zeros(1, 1, 5), "fc": torch.zeros(1, 1, 4),
                             "lif": torch.zeros(1, 1, 4)})
    with pytest.raises(SpikelineError, match="fanout"):
        count_operations(g, {}, fanout="dense")


# ---------------------------------------------------------------------------------------------
# Pricing
# ---------------------------------------------------------------------------------------------

def hand_counts():
    conv = LayerCounts(name="c", op="Conv2d", input_shape=(2, 4, 4), output_shape=(4, 2, 2),
                       T=5, input_events=10, firing_rate=0.0625, synops=100, macs=20,
                       binary_fraction=0.8, connections=200, dense_ops=1000,
                       dense_op_kind="mac", neuron_nodes=("n1",), neurons=16,
                       neuron_updates=80, active_neuron_updates=30, spikes=7)
    fc = LayerCounts(name="f", op="Linear", input_shape=(16,), output_shape=(3,), T=5,
                     input_events=7, firing_rate=7 / 80, synops=21, macs=0, binary_fraction=1,
                     connections=48, dense_ops=48, dense_op_kind="mac", neuron_nodes=("n2",),
                     neurons=3, neuron_updates=15, active_neuron_updates=5, spikes=2)
    pool = LayerCounts(name="p", op="SumPool2d", input_shape=(4, 2, 2), output_shape=(4, 1, 1),
                       T=5, input_events=7, firing_rate=7 / 80, synops=7, macs=0,
                       binary_fraction=1, connections=16, dense_ops=16, dense_op_kind="add")
    neurons = (NeuronCounts("n1", "LIF", 16, 5, 80, 30, 7, True, "c"),
               NeuronCounts("n2", "LIF", 3, 5, 15, 5, 2, True, "f"))
    return EnergyCounts((conv, pool, fc), neurons, T=5, samples=1, network_input_events=10)


def test_price_cmos_formula():
    models = load_hardware_models()
    est = price(hand_counts(), models["cmos45_fp32"])
    pj = 1e-12
    snn = 4.6 * pj * 20 + 0.9 * pj * (100 + 7 + 21)       # E_MAC*MACs + E_AC*ACs
    ann = 4.6 * pj * (1000 + 48) + 0.9 * pj * 16          # dense MACs + pooling adds
    assert est.snn.total == pytest.approx(snn, rel=1e-12) and est.snn.memory == 0
    assert est.ann.total == pytest.approx(ann, rel=1e-12) and est.ann.memory == 0
    assert est.ratio == pytest.approx(ann / snn)
    assert (est.layers["c"].snn.total, est.layers["c"].ann.total) == pytest.approx(
        (4.6 * pj * 20 + 0.9 * pj * 100, 4.6 * pj * 1000))
    assert sum(v.snn.total for v in est.layers.values()) == pytest.approx(est.snn.total)
    assert (est.convention, est.model) == ("event", "cmos45_fp32")
    int8 = price(hand_counts(), models["cmos45_int8"])
    assert int8.snn.total == pytest.approx(0.23 * pj * 20 + 0.03 * pj * 128)


def binary_counts():
    """hand_counts() with the conv layer's graded events made binary (120 synops, 0 MACs)."""
    c = hand_counts()
    conv = LayerCounts(**{**c.layers[0].__dict__, "synops": 120, "macs": 0,
                          "binary_fraction": 1.0, "spike_events": None})
    return EnergyCounts((conv, *c.layers[1:]), c.neuron_nodes, T=5, samples=1,
                        network_input_events=10)


def test_price_neuromorphic_formulas():
    models = load_hardware_models()
    pj = 1e-12
    loihi = price(binary_counts(), models["loihi1"])
    synaptic = 23.6 * pj * (120 + 7 + 21)
    neuron = 81 * pj * (30 + 5) + 52 * pj * ((80 - 30) + (15 - 5))
    spike = 1.7 * pj * (7 + 2)
    assert loihi.snn.total == pytest.approx(synaptic + neuron + spike, rel=1e-12)
    assert loihi.breakdown["neuron"] == pytest.approx(neuron)
    # the ANN of the same architecture is priced with memory (Lemaire model) on the model's
    # cmos baseline, never as arithmetic alone
    assert models["loihi1"].ann_baseline == "cmos45_int8"
    lemaire = price_lemaire(binary_counts(), models["cmos45_int8"])
    assert loihi.ann == lemaire.ann and loihi.ann.memory > 0
    assert loihi.ann.compute > 0.23 * pj * 1048 + 0.03 * pj * 16  # + addressing
    sanafe = price(binary_counts(), models["loihi1_sanafe"])
    expected = (24.0 * 120 + 35.5 * (7 + 21)  # conv synapses are cheaper on Loihi
                + 72.8 * 35 + 51.2 * 60 + 69.3 * 9) * pj
    assert sanafe.snn.total == pytest.approx(expected, rel=1e-12)
    tn = price(binary_counts(), models["truenorth"])
    assert tn.snn.total == pytest.approx(26 * pj * 148, rel=1e-12)


def test_loihi1_refuses_graded_events_and_loihi2_prices_them_not_measured():
    models = load_hardware_models()
    pj = 1e-12
    with pytest.raises(GradedEventsRefused, match=r"loihi1 sends binary spikes only.*\['c'\]"):
        price(hand_counts(), models["loihi1"])
    loihi2 = price(hand_counts(), models["loihi2"])
    assert loihi2.measured is False and models["loihi2"].measured is False
    assert any("NOT MEASURED" in note for note in loihi2.notes)
    # conv: 100 binary synops at synop_conv, 20 graded events at graded_synop
    assert loihi2.breakdown["graded"] == pytest.approx(35.5 * pj * 20)
    assert loihi2.breakdown["synaptic"] == pytest.approx((24.0 * 100 + 35.5 * 28) * pj)


def test_zero_activity_gives_no_ratio():
    counts = hand_counts()
    silent = EnergyCounts(tuple(LayerCounts(**{**l.__dict__, "synops": 0, "macs": 0})
                                for l in counts.layers), (), T=5, samples=1,
                          network_input_events=0)
    est = price(silent, load_hardware_models()["cmos45_fp16"])
    assert est.snn.total == 0 and est.ann.total > 0 and est.ratio is None


def test_count_dataclasses_validate():
    with pytest.raises(ValueError, match="synops"):
        LayerCounts(name="x", op="Linear", input_shape=(1,), output_shape=(1,), T=1,
                    input_events=0, firing_rate=0, synops=-1, macs=0, binary_fraction=1,
                    connections=1, dense_ops=1, dense_op_kind="mac")
    with pytest.raises(ValueError, match="synaptic NIR node"):
        LayerCounts(name="x", op="LIF", input_shape=(1,), output_shape=(1,), T=1,
                    input_events=0, firing_rate=0, synops=0, macs=0, binary_fraction=1,
                    connections=1, dense_ops=1, dense_op_kind="mac")
    with pytest.raises(ValueError, match="cannot emit spikes"):
        NeuronCounts("li", "LI", 2, 1, 2, 0, 1, False)


# ---------------------------------------------------------------------------------------------
# Hardware model files
# ---------------------------------------------------------------------------------------------

def test_bundled_models_have_sources_and_flags():
    models = load_hardware_models()
    assert {"cmos45_fp32", "cmos45_fp16", "cmos45_int8", "cmos45_int32", "loihi1",
            "loihi1_sanafe", "loihi2", "truenorth"} <= set(models)
    for model in models.values():
        for const in [*model.constants.values(), *model.unpriced.values()]:
            assert const.source.strip() and const.joules >= 0
    assert models["cmos45_fp32"].joules("mac") == pytest.approx(4.6e-12)
    assert models["cmos45_fp16"].joules("ac") == pytest.approx(0.4e-12)
    assert models["loihi1"].pre_silicon is True
    assert models["loihi1"].joules("synop") == pytest.approx(23.6e-12)
    assert models["loihi1"].unpriced["synaptic_update"].joules == pytest.approx(120e-12)
    assert models["loihi1_sanafe"].pre_silicon is False
    assert models["truenorth"].joules("synop") == pytest.approx(26e-12)


def test_user_file_extends_and_overrides(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text("""
[models.cmos45_int8]
kind = "cmos"
mac = { pj = 0.5, source = "my measurement" }
ac = { pj = 0.05, source = "my measurement" }

[models.mychip]
kind = "neuromorphic"
ann_baseline = "cmos45_fp16"
synop = { pj = 2.0, source = "datasheet p. 3", pre_silicon = true }
spike = { pj = 1.0, source = "datasheet p. 3" }
""")
    models = load_hardware_models(path)
    assert models["cmos45_int8"].joules("mac") == pytest.approx(0.5e-12)
    assert models["cmos45_fp32"].joules("mac") == pytest.approx(4.6e-12)  # bundled kept
    assert models["loihi1"].ann_mac == pytest.approx(0.5e-12)  # baseline now overridden
    mine = models["mychip"]
    assert mine.ann_mac == pytest.approx(1.5e-12) and mine.pre_silicon is True
    assert [m.name for m in select_models(models, ["mychip"])] == ["mychip"]
    with pytest.raises(SpikelineError, match="unknown hardware model.*'nochip'"):
        select_models(models, ["mychip", "nochip"])


@pytest.mark.parametrize("text,match", [
    ("[models.x\nkind=", "not valid TOML"),
    ("[other]\na = 1", "unknown top-level key"),
    ("[models.x]\nkind = \"gpu\"", r"models\.x\.kind: expected one of"),
    ("[models.x]\nkind = \"cmos\"\nmac = { pj = 1, source = \"s\" }", r"missing constant.*'ac'"),
    ("[models.x]\nkind = \"cmos\"\nmac = { pj = 1 }\nac = { pj = 1, source = \"s\" }",
     r"models\.x\.mac\.source: expected a non-empty string"),
    ("[models.x]\nkind = \"cmos\"\nmac = { pj = -1, source = \"s\" }\nac = { pj = 1, source = \"s\" }",
     r"models\.x\.mac\.pj: expected a number"),
    ("[models.x]\nkind = \"cmos\"\nmac = 4.6\nac = { pj = 1, source = \"s\" }",
     r"models\.x\.mac: expected a table"),
    ("[models.x]\nkind = \"cmos\"\nmac = { pj = 1, source = \"s\" }\nac = { pj = 1, source = \"s\" }\nmax = 3",
     r"unknown key\(s\) \['max'\]"),
    ("[models.x]\nkind = \"neuromorphic\"\nann_baseline = \"loihi1\"\nsynop = { pj = 1, source = \"s\" }",
     r"ann_baseline: 'loihi1' is not a cmos model"),
    ("[models.x]\nkind = \"neuromorphic\"\nsynop = { pj = 1, source = \"s\", pre_silicon = \"yes\" }",
     r"pre_silicon: expected true or false"),
])
def test_malformed_hardware_files_name_file_and_field(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpikelineError, match=match) as err:
        load_hardware_models(path)
    assert str(path) in str(err.value)


def test_missing_hardware_file(tmp_path):
    with pytest.raises(SpikelineError, match="no such hardware model file"):
        load_hardware_models(tmp_path / "nope.toml")


# ---------------------------------------------------------------------------------------------
# Real NIR file through the reference simulator
# ---------------------------------------------------------------------------------------------

def test_sinabs_nmnist_graph_counts_are_consistent():
    from conftest import real_path

    from spikeline.deploy.simulate import simulate

    path = real_path("nir/nmnist_cnn_sinabs.nir")  # ships in tests/data: fails if absent
    g = nir.read(str(path))
    x = (torch.rand(4, 2, 2, 34, 34, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    sim = simulate(g, x)
    counts = count_operations(g, sim)
    assert [l.name for l in counts.layers] == ["0", "2", "4", "5", "7", "9", "11"]
    for layer in counts.layers:
        assert layer.event_ops <= layer.T * layer.connections + 1e-9
    # the input of conv 2 is exactly the spikes of IF node 1, which conv 0 owns
    assert counts.layer("2").input_events == counts.layer("0").spikes
    assert counts.layer("0").synops > 0 and counts.layer("0").macs == 0  # binary input
    assert counts.layer("5").op == "Conv2d" and counts.layer("4").op == "SumPool2d"
    assert math.isclose(counts.network_input_events, float((x != 0).sum()) / 2)
