"""deploy/graph.py: the one graph walk that simulate, energy and peers share."""
import numpy as np
import pytest
import torch

import nir
from spikeline.deploy.graph import edges, gather, recorded_input, topological_order, walk
from spikeline.errors import SpikelineError


def lif(n):
    one = np.ones(n)
    return nir.LIF(tau=one, r=one, v_leak=0 * one, v_threshold=one)


def residual():
    return nir.NIRGraph(nodes={
        "input": nir.Input(np.array([2])), "a": nir.Linear(np.eye(2)), "na": lif(2),
        "b": nir.Linear(np.eye(2)), "nb": lif(2), "output": nir.Output(np.array([2]))},
        edges=[("input", "a"), ("a", "na"), ("na", "b"), ("b", "nb"), ("na", "nb"),
               ("nb", "output")], type_check=False)


def test_order_respects_every_edge_and_preds_keep_edge_order():
    g = residual()
    steps = walk(g)
    pos = {n: i for i, n in enumerate(steps.order)}
    assert all(pos[s] < pos[d] for s, d in g.edges) and not steps.has_cycles
    assert steps.preds["nb"] == [("b", False), ("na", False)]


def test_back_edge_of_a_cycle_and_recorded_input_shifts_it():
    g = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([1])), "fin": nir.Linear(np.eye(1)), "n": lif(1),
        "rec": nir.Linear(np.eye(1)), "output": nir.Output(np.array([1]))},
        edges=[("input", "fin"), ("fin", "n"), ("n", "output"), ("n", "rec"), ("rec", "fin")],
        type_check=False)
    steps = walk(g)
    assert steps.back == {("rec", "fin")}
    outputs = {"input": torch.tensor([1.0, 2, 3]).reshape(3, 1, 1),
               "rec": torch.tensor([10.0, 20, 30]).reshape(3, 1, 1)}
    got = recorded_input("fin", steps.preds["fin"], outputs)
    assert got.reshape(-1).tolist() == [1, 12, 23]  # rec delivers its previous step
    # the simulator's step-wise view of the same rule
    assert gather("fin", steps.preds["fin"], {"input": torch.tensor([2.0])},
                  {"rec": torch.tensor([10.0])}).item() == 12
    assert gather("fin", steps.preds["fin"], {"input": torch.tensor([1.0])}).item() == 1


def test_port_suffixes_and_bad_edges():
    g = residual()
    g.edges = [("input", "a.input"), *g.edges[1:]]
    assert edges(g)[0] == ("input", "a")
    g.edges = [("input", "ghost"), *g.edges[1:]]
    with pytest.raises(SpikelineError, match="'ghost'"):
        walk(g)
    lonely = residual()
    lonely.nodes["island"] = nir.Linear(np.eye(2))
    lonely.edges.append(("island", "island"))  # only reachable from itself
    with pytest.raises(SpikelineError, match="cannot be reached"):
        topological_order(lonely)


def test_shapes_that_do_not_add_up_name_the_node():
    preds = [("x", False), ("y", False)]
    with pytest.raises(SpikelineError, match="node 'z'.*do not add up"):
        recorded_input("z", preds, {"x": torch.zeros(2, 1, 3), "y": torch.zeros(2, 1, 4)})
    with pytest.raises(SpikelineError, match="no output for node 'y'"):
        recorded_input("z", preds, {"x": torch.zeros(2, 1, 3)})


def test_simulator_and_energy_share_the_walk():
    from spikeline.deploy import simulate as sim_module
    from spikeline.deploy.energy import counts as counts_module

    assert sim_module.walk is walk and counts_module.walk is walk
    assert not hasattr(counts_module, "_node_input")  # the copy is gone


def _recurrent(sep: str, w_rec: float = -0.6) -> nir.NIRGraph:
    """A recurrent CUBA-LIF layer as snnTorch's RSynaptic and Norse export it: one flat graph
    whose node names hold dots ('rnn.w_in', 'rnn.lif', 'rnn.w_rec')."""
    n = 4
    full = lambda v: np.full(n, v)  # noqa: E731
    rng = np.random.default_rng(0)
    name = lambda part: f"rnn{sep}{part}"  # noqa: E731
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             name("w_in"): nir.Linear(weight=rng.uniform(0, 1.5, (n, 3))),
             name("lif"): nir.CubaLIF(tau_syn=full(2e-3), tau_mem=full(4e-3), r=full(1.0),
                                      v_leak=full(0.0), v_threshold=full(0.5),
                                      v_reset=full(0.0), w_in=full(1.0)),
             name("w_rec"): nir.Linear(weight=w_rec * (1 - np.eye(n))),
             "output": nir.Output(output_type={"output": np.array([n])})}
    edges = [("input", name("w_in")), (name("w_in"), name("lif")),
             (name("lif"), name("w_rec")), (name("w_rec"), name("lif")),
             (name("lif"), "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1e-3})


def test_a_recurrent_graph_with_dotted_node_names_reads_and_simulates(tmp_path, capsys):
    """Issue 18 item 6: the validator took 'rnn.lif' for port 'lif' of a node 'rnn' and refused
    the file.  Read from a file, the dotted graph simulates exactly as the same graph with
    plain names, and its recurrent edge matters."""
    from spikeline.cli import main
    from spikeline.deploy.nir_check import read_nir
    from spikeline.deploy.simulate import simulate

    nir.write(tmp_path / "rnn.nir", _recurrent("."))
    graph = read_nir(tmp_path / "rnn.nir")
    assert {"rnn.lif", "rnn.w_rec", "rnn.w_in"} <= set(graph.nodes)
    x = torch.from_numpy((np.random.default_rng(1).random((30, 2, 3)) < 0.5).astype(np.float32))
    dotted = simulate(graph, x, mode="float").output
    plain = simulate(_recurrent("_"), x, mode="float").output
    assert torch.equal(dotted, plain) and dotted.sum() > 0
    assert not torch.equal(dotted, simulate(_recurrent(".", 0.0), x, mode="float").output)
    np.save(tmp_path / "x.npy", x[:, 0].numpy())
    assert main(["simulate", str(tmp_path / "rnn.nir"), "--input", str(tmp_path / "x.npy")]) == 0
    assert '"spikes_per_node"' in capsys.readouterr().out
