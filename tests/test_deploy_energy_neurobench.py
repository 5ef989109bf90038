"""Cross-check of deploy/energy.py against NeuroBench 2.3's SynapticOperations.

The same network exists twice: an snnTorch per-step model (what NeuroBench measures, wrapped in
``SNNTorchModel``, input [B, T, ...]) and a hand-built NIR graph whose per-node activity is
recorded from that very model, so both counters see identical spikes.  The network has a
count-valued first layer (MACs on steps with counts >= 2, ACs otherwise), a grouped strided
convolution, a SEW-ADD style sum of two spike trains (non-binary -> MACs), zero weights and a
Linear readout.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

nir = pytest.importorskip("nir")
snn = pytest.importorskip("snntorch")
nb_models = pytest.importorskip("neurobench.models")
nb_metrics = pytest.importorskip("neurobench.metrics.workload")
nb_bench = pytest.importorskip("neurobench.benchmarks")

from spikeline.deploy.energy import count_operations  # noqa: E402

T, N = 4, 3


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.lif1 = snn.Leaky(beta=0.5, threshold=0.2, init_hidden=True)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=1, padding=1, groups=2)
        self.lif2 = snn.Leaky(beta=0.5, threshold=0.2, init_hidden=True)
        self.conv3 = nn.Conv2d(4, 6, 2, stride=2, padding=0)
        self.lif3 = snn.Leaky(beta=0.5, threshold=0.1, init_hidden=True)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6 * 2 * 2, 5)
        self.lif4 = snn.Leaky(beta=0.5, threshold=0.1, init_hidden=True, output=True)
        with torch.no_grad():
            for layer in (self.conv1, self.conv2, self.conv3, self.fc):
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) * 0.6 - 0.1)
            self.conv2.weight[0, 1] = 0.0          # pruned synapses
            self.fc.weight[:, 3] = 0.0
            self.fc.weight[2, :7] = 0.0
        self.record = None

    def forward(self, x):
        c1 = self.conv1(x)
        s1 = self.lif1(c1)
        c2 = self.conv2(s1)
        s2 = self.lif2(c2)
        c3 = self.conv3(s1 + s2)                  # SEW ADD: values in {0, 1, 2}
        s3 = self.lif3(c3)
        f = self.flat(s3)
        c4 = self.fc(f)
        s4, mem = self.lif4(c4)
        if self.record is not None:
            for name, value in (("input", x), ("conv1", c1), ("lif1", s1), ("conv2", c2),
                                ("lif2", s2), ("conv3", c3), ("lif3", s3), ("flat", f),
                                ("fc", c4), ("lif4", s4), ("output", s4)):
                self.record.setdefault(name, []).append(value.detach().clone())
        return s4, mem


def graph_of(net: Net) -> nir.NIRGraph:
    def w(layer):
        return layer.weight.detach().numpy().astype(np.float64)

    def b(layer):
        return layer.bias.detach().numpy().astype(np.float64)

    def lif(shape):
        one = np.ones(shape)
        return nir.LIF(tau=one, r=one, v_leak=0 * one, v_threshold=one)

    nodes = {
        "input": nir.Input(np.array([2, 8, 8])),
        "conv1": nir.Conv2d((8, 8), w(net.conv1), 2, 1, 1, 1, b(net.conv1)),
        "lif1": lif((4, 4, 4)),
        "conv2": nir.Conv2d((4, 4), w(net.conv2), 1, 1, 1, 2, b(net.conv2)),
        "lif2": lif((4, 4, 4)),
        "conv3": nir.Conv2d((4, 4), w(net.conv3), 2, 0, 1, 1, b(net.conv3)),
        "lif3": lif((6, 2, 2)),
        "flat": nir.Flatten(input_type={"input": np.array([6, 2, 2])}, start_dim=0),
        "fc": nir.Affine(w(net.fc), b(net.fc)),
        "lif4": lif((5,)),
        "output": nir.Output(np.array([5])),
    }
    edges = [("input", "conv1"), ("conv1", "lif1"), ("lif1", "conv2"), ("conv2", "lif2"),
             ("lif1", "conv3"), ("lif2", "conv3"), ("conv3", "lif3"), ("lif3", "flat"),
             ("flat", "fc"), ("fc", "lif4"), ("lif4", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def run_both(fanout):
    torch.manual_seed(0)
    net = Net()
    g = torch.Generator().manual_seed(1)
    # event counts: mostly 0/1, some 2s and 3s, and step 0 of sample 0 purely binary
    x = torch.randint(0, 4, (N, T, 2, 8, 8), generator=g).float()
    x = torch.where(torch.rand(x.shape, generator=g) < 0.6, torch.zeros_like(x), x)
    x[0, 0] = (x[0, 0] > 0).float()

    model = nb_models.SNNTorchModel(net)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(N)),
                                         batch_size=1)  # NeuroBench decides AC/MAC per batch
    bench = nb_bench.Benchmark(model, loader, [], [], [[], [nb_metrics.SynapticOperations]])
    nb = bench.run(quiet=True)["SynapticOperations"]

    net.record = {}
    model(x)  # same dynamics on the whole batch, recorded per node
    outputs = {k: torch.stack(v) for k, v in net.record.items()}  # [T, N, ...]
    counts = count_operations(graph_of(net), outputs, fanout=fanout)
    return nb, counts, outputs


def test_counts_equal_neurobench_effective_acs_and_macs_with_nonzero_fanout():
    nb, counts, outputs = run_both("nonzero")
    layers = [counts.layer(n) for n in ("conv1", "conv2", "conv3", "fc")]
    # the case is not degenerate: every layer has activity, both kinds of operation occur
    assert all(layer.input_events > 0 for layer in layers)
    assert counts.layer("conv1").macs > 0 and counts.layer("conv1").synops > 0
    assert counts.layer("conv3").macs > 0
    assert counts.layer("conv2").macs == 0 and counts.layer("fc").macs == 0
    totals = counts.totals()
    assert totals["synops"] == pytest.approx(nb["Effective_ACs"], rel=0, abs=1e-6)
    assert totals["macs"] == pytest.approx(nb["Effective_MACs"], rel=0, abs=1e-6)


def test_structural_fanout_counts_pruned_synapses_and_dense_matches_neurobench():
    nb, counts, _ = run_both("structural")
    totals = counts.totals()
    # zero weights in conv2 / fc are synapses for Sinabs-style counting, not for NeuroBench
    assert totals["synops"] + totals["macs"] > nb["Effective_ACs"] + nb["Effective_MACs"]
    # NeuroBench "Dense" = every in-bounds connection at every step = T x connections
    assert T * totals["connections"] == pytest.approx(nb["Dense"], rel=0, abs=1e-6)
    # ... which is below the FLOPs formula (it counts padded taps too) for the padded convs
    conv1 = counts.layer("conv1")
    assert conv1.connections < conv1.dense_ops == 3 * 3 * 4 * 4 * 2 * 4
