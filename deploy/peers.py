"""Run an exported NIR graph in other simulators (SpikingJelly 2.0, snnTorch 1.0).

They implement NIR's float semantics (forward Euler, docs/reference.md §5), not Loihi's fixed point, so
they are checked against our simulator in ``mode='float'`` on the same graph.  What they cannot
import is lowered first, exactly:

- SumPool2d -> an ungrouped Conv2d with one-hot weights (sums of 0/1 spikes are exact);
- Scale (one factor per channel: a weighted identity shortcut) -> a diagonal 1x1 Conv2d;
- the non-spiking readout (CubaLI, which neither imports) is cut: the graph's output becomes the
  last spiking population, whose spikes are compared.
A voltage bias (``v_leak``, folded BatchNorm) has no counterpart there: such graphs are refused.
"""
from __future__ import annotations

import contextlib
import io

import nir
import numpy as np
import torch

from spikeline.errors import SpikelineError

from .graph import edges as graph_edges, walk

PEERS = ("spikingjelly", "snntorch")
# SpikingJelly's Heaviside is 1 at 0: it fires at v == v_threshold, where NIR (and snnTorch)
# need v > v_threshold.  Each peer is held to its own rule; the ties are counted apart.
FIRES_AT_THRESHOLD = {"spikingjelly": True, "snntorch": False}


class PeerUnsupported(SpikelineError):
    """The graph uses something the peer simulators cannot import."""


def _sumpool_as_conv(node: nir.SumPool2d, channels: int, size) -> nir.Conv2d:
    kh, kw = (int(v) for v in node.kernel_size)
    weight = np.zeros((channels, channels, kh, kw))
    weight[np.arange(channels), np.arange(channels)] = 1.0
    return nir.Conv2d(input_shape=np.array(size), weight=weight, stride=node.stride,
                      padding=node.padding, dilation=np.array([1, 1]), groups=1,
                      bias=np.zeros(channels))


def _scale_as_conv(name: str, node: nir.Scale) -> nir.Conv2d:
    """A per-channel ``Scale`` of a (C, H, W) map (a Spiking ResNet's identity shortcut of
    weight 84/64) as a diagonal 1x1 ``Conv2d``: the peers import no ``Scale``."""
    scale = np.asarray(node.scale, dtype=np.float64)
    if scale.ndim != 3 or np.ptp(scale.reshape(scale.shape[0], -1), axis=1).any():
        raise PeerUnsupported(f"node {name!r}: a Scale that is not one factor per channel of a "
                              "(C, H, W) map")
    channels = scale.shape[0]
    weight = np.zeros((channels, channels, 1, 1))
    weight[np.arange(channels), np.arange(channels), 0, 0] = scale[:, 0, 0]
    return nir.Conv2d(input_shape=np.array(scale.shape[1:]), weight=weight,
                      stride=np.array([1, 1]), padding=np.array([0, 0]),
                      dilation=np.array([1, 1]), groups=1, bias=np.zeros(channels))


def lower_for_peers(graph: nir.NIRGraph) -> nir.NIRGraph:
    """An equivalent graph the peers import; its output is the last spiking population."""
    nodes, edges = dict(graph.nodes), graph_edges(graph)
    for name, node in nodes.items():
        leak = getattr(node, "v_leak", None)
        if leak is not None and np.any(np.asarray(leak) != 0):
            raise PeerUnsupported(f"node {name!r} has a voltage bias (v_leak, from a folded "
                                  "BatchNorm), which SpikingJelly and snnTorch do not import")
        if isinstance(node, nir.SumPool2d):
            channels, *size = (int(v) for v in node.input_type["input"])
            nodes[name] = _sumpool_as_conv(node, channels, size)
        elif isinstance(node, nir.Scale):
            nodes[name] = _scale_as_conv(name, node)
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(outputs) > 1:
        raise PeerUnsupported(f"the graph has {len(outputs)} Output nodes {outputs}; the peer "
                              "comparison keeps one output population (the last spiking one "
                              "and what feeds it), so it would certify only part of the graph")
    steps = walk(graph)
    spiking = [n for n in steps.order if isinstance(nodes[n], nir.CubaLIF)]
    if not spiking:
        raise PeerUnsupported("the graph has no CubaLIF population to compare")
    keep, stack = set(), [spiking[-1]]
    while stack:  # the last spiking population and everything upstream of it
        name = stack.pop()
        if name not in keep:
            keep.add(name)
            stack += [src for src, _ in steps.preds[name]]
    out_shape = nodes[spiking[-1]].output_type["output"]
    nodes = {n: node for n, node in nodes.items() if n in keep}
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    edges = [(s, d) for s, d in edges if s in keep and d in keep] + [(spiking[-1], "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata or {}))


def run_peer(peer: str, graph: nir.NIRGraph, x: torch.Tensor, dt: float) -> torch.Tensor:
    """Output ``[T, N, ...]`` of ``peer`` running the (lowered) ``graph`` on ``x [T, N, ...]``."""
    quiet = contextlib.redirect_stdout(io.StringIO())  # importers print warnings
    if peer == "spikingjelly":
        from spikingjelly.activation_based.nir_exchange import import_from_nir  # optional: a peer

        with quiet:
            net = import_from_nir(graph, dt=dt)
        steps, state = [], None
        with torch.no_grad():
            for t in range(x.shape[0]):
                out, state = net(x[t], state)
                steps.append(out)
        return torch.stack(steps)
    if peer == "snntorch":
        from snntorch.import_nir import import_from_nir  # optional: a peer

        samples = []
        for i in range(x.shape[1]):  # snnTorch flattens from dim 0: one sample at a time
            with quiet:
                net = import_from_nir(graph)
            steps = []
            with torch.no_grad():
                for t in range(x.shape[0]):
                    out = net(x[t, i:i + 1])
                    out = out[0] if isinstance(out, tuple) else out
                    steps.append(out.reshape(1, -1))
            samples.append(torch.stack(steps))
        shape = [int(v) for v in next(n for n in graph.nodes.values()
                                      if isinstance(n, nir.Output)).output_type["output"]]
        return torch.cat(samples, dim=1).reshape(x.shape[0], x.shape[1], *shape)
    raise SpikelineError(f"unknown peer simulator {peer!r}; known: {', '.join(PEERS)}")
