"""Energy cross-check: spikeline's conventions beside SpikingJelly 2.0's estimators on the same
networks and activity, and break-even spike rates beside Yan et al. (arXiv 2409.08290).

    python benchmarks/energy_crosscheck.py            # prints the tables of FIGURES_energy.md

Networks are built twice with the same weights: a NIR graph (run by spikeline's simulator in
float mode with SpikingJelly's threshold rule) and a SpikingJelly module; the script asserts the
spikes agree before comparing any energy.
"""
from __future__ import annotations

import warnings

import nir
import numpy as np
import torch
from torch import nn

from spikeline.deploy.energy import (
    count_operations, load_hardware_models, price_ems, price_event, price_lemaire)
from spikeline.deploy.simulate import simulate

PJ = 1e-12
torch.set_num_threads(1)


def _lif(shape, tau):
    one = np.ones(shape)
    return nir.LIF(tau=tau * one, r=one, v_leak=0 * one, v_threshold=one, v_reset=0 * one)


def build(layers, in_shape, seed=0, tau=2e-3, dt=1e-3):
    """``layers``: ("conv", c_out, k, stride, pad) | ("fc", out).  Returns NIR graph, torch
    SNN (single step), torch ANN, last neuron node name."""
    from spikingjelly.activation_based import neuron

    rng = np.random.default_rng(seed)
    nodes, edges, prev = {"input": nir.Input(np.array(in_shape))}, [], "input"
    snn, ann, shape = [], [], tuple(in_shape)
    for i, spec in enumerate(layers):
        if spec[0] == "conv":
            _, c_out, k, s, p = spec
            w = rng.uniform(-0.1, 0.35, (c_out, shape[0], k, k))
            h = (shape[1] + 2 * p - k) // s + 1
            nodes[f"l{i}"] = nir.Conv2d(shape[1:], w, s, p, 1, 1, np.zeros(c_out))
            mod = nn.Conv2d(shape[0], c_out, k, s, p, bias=False)
            shape = (c_out, h, h)
        else:
            if len(shape) > 1:
                nodes[f"f{i}"] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0)
                edges.append((prev, f"f{i}"))
                prev = f"f{i}"
                snn.append(nn.Flatten())
                ann.append(nn.Flatten())
                shape = (int(np.prod(shape)),)
            w = rng.uniform(-0.1, 0.35, (spec[1], shape[0]))
            nodes[f"l{i}"] = nir.Linear(w)
            mod = nn.Linear(shape[0], spec[1], bias=False)
            shape = (spec[1],)
        mod.weight.data = torch.tensor(w, dtype=torch.float32)
        nodes[f"n{i}"] = _lif(shape, tau)
        edges += [(prev, f"l{i}"), (f"l{i}", f"n{i}")]
        prev = f"n{i}"
        snn += [mod, neuron.LIFNode(tau=tau / dt, decay_input=True, v_reset=0.0)]
        ann += [mod, nn.ReLU()]
    nodes["output"] = nir.Output(np.array(shape))
    edges.append((prev, "output"))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt}, type_check=False)
    return graph, nn.Sequential(*snn), nn.Sequential(*ann), prev


class Steps(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.stack([self.net(x[t]) for t in range(x.shape[0])])


def crosscheck(name, layers, in_shape, T=6, rate=0.3):
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.op_counter import analytical_energy as lem
    from spikingjelly.activation_based.op_counter import simple_energy as simple

    graph, snn, ann, last = build(layers, in_shape)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(T, 1, *in_shape, generator=gen) < rate).float()
    sim = simulate(graph, x, mode="float", fire_at_threshold=True)
    with torch.no_grad():
        assert torch.equal(Steps(snn)(x), sim.outputs[last]), "spikes differ"
    counts = count_operations(graph, sim)
    models = load_hardware_models()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        functional.reset_net(snn)
        sj_lem = lem.estimate_lemaire_energy(Steps(snn), x,
                                             config=lem.LemaireEnergyConfig(strict=False))
        sj_lem_ann = lem.estimate_lemaire_energy(
            ann, torch.rand(1, *in_shape, generator=gen) + 0.1,
            config=lem.LemaireEnergyConfig(strict=False))
        functional.reset_net(snn)
        sj_simple = simple.estimate_simple_energy(Steps(snn), x)
    ours_lem = price_lemaire(counts, models["cmos45_int32"])
    ours_ems = price_ems(counts, models["cmos45_fp32"])
    ours_event = price_event(counts, models["cmos45_fp32"])
    t = counts.totals()
    print(f"\n### {name}: T={T}, input rate {rate}, {t['spikes']:.0f} spikes, "
          f"{t['synops']:.0f} synops\n")
    print("| figure | spikeline | SpikingJelly 2.0 | ratio |")
    print("|---|---:|---:|---:|")
    rows = [
        ("Lemaire SNN total (cmos45_int32)", ours_lem.snn.total / PJ, sj_lem.total_pj),
        ("Lemaire SNN ops", ours_lem.breakdown["ops"] / PJ, sj_lem.breakdown_pj["ops_pj"]),
        ("Lemaire SNN addressing", ours_lem.breakdown["addressing"] / PJ,
         sj_lem.breakdown_pj["addressing_pj"]),
        ("Lemaire SNN memory", ours_lem.snn.memory / PJ, sj_lem.breakdown_pj["memory_pj"]),
        ("Lemaire ANN total", ours_lem.ann.total / PJ, sj_lem_ann.total_pj),
        ("Lemaire synaptic events (SJ: ceil(k/s)^2 C_out per spike)", t["synops"],
         sj_lem.counts["synop"]),
        ("Lemaire weight reads, words (SJ: k^2 C_out per spike)",
         t["synops"], sj_lem.counts["read_params_bytes"] / 4),
        ("synaptic ACs (ours: synops; SJ simple: SynOps)", t["synops"],
         sj_simple.counts["synop"]),
        ("event (fp32, arithmetic) vs SJ simple compute", ours_event.snn.total / PJ,
         sj_simple.energy_compute_pj),
        ("EMS Eq. 6 (fp32) vs SJ simple total", ours_ems.snn.total / PJ,
         sj_simple.energy_total_pj),
    ]
    for label, a, b in rows:
        print(f"| {label} | {a:,.1f} | {b:,.1f} | {a / b if b else float('nan'):.4f} |")
    print(f"\nSJ simple counts: {sj_simple.counts}")


def break_even_table():
    """Break-even uniform spike rate of VGG-11 (CIFAR10-DVS shapes, 2x48x48) at T = 5 and 10."""
    vgg = [("conv", 64, 3, 1, 1), ("conv", 128, 3, 2, 1), ("conv", 256, 3, 2, 1),
           ("conv", 256, 3, 1, 1), ("conv", 512, 3, 2, 1), ("conv", 512, 3, 1, 1),
           ("conv", 512, 3, 2, 1), ("conv", 512, 3, 1, 1), ("fc", 10)]
    graph, _, _, _ = build(vgg, (2, 48, 48))
    models = load_hardware_models()
    print("\n### Break-even spike rate, VGG-11 on 2x48x48 (stride-2 convs for pooling)\n")
    print("| T | cmos45_int8 | cmos45_fp16 | cmos45_int32 | cmos45_fp32 |")
    print("|---:|---:|---:|---:|---:|")
    for T in (5, 10):
        x = (torch.rand(T, 1, 2, 48, 48, generator=torch.Generator().manual_seed(0)) < 0.05)
        sim = simulate(graph, x.float(), mode="float")
        counts = count_operations(graph, sim)
        cells = []
        for m in ("cmos45_int8", "cmos45_fp16", "cmos45_int32", "cmos45_fp32"):
            r = price_lemaire(counts, models[m]).break_even_rate
            cells.append("never" if r is None else f"{100 * r:.2f}%")
        print(f"| {T} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    crosscheck("MLP 64-48-32-10", [("fc", 48), ("fc", 32), ("fc", 10)], (64,))
    crosscheck("CNN conv3x3 s1 p1 8ch -> conv3x3 s2 p1 16ch -> fc 10",
               [("conv", 8, 3, 1, 1), ("conv", 16, 3, 2, 1), ("fc", 10)], (2, 12, 12))
    break_even_table()
