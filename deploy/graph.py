"""The walk over a NIR graph that the simulator, the energy counter and the peer lowering share.

One definition of three things:

- **edges**: ``graph.edges`` with port suffixes removed (NIR allows ``"node.port"``; a
  spikeline graph has one port per node), every end checked to be a node;
- **order**: depth-first topological order from the Input nodes (then from nodes without
  predecessors), following the edges in the order the graph lists them.  An edge that closes a
  cycle is a *back* edge: it delivers its source's output of the previous step, as in NIR's
  recurrent examples;
- **input of a node**: the sum of what its incoming edges deliver (several edges into one node
  add up, which is how a residual sum or a SEW ADD junction is written in NIR).

:func:`gather` sums the values of one step or one whole sequence (what the simulator feeds a
node); :func:`recorded_input` rebuilds a node's input from recorded outputs ``[T, N, ...]`` of
its predecessors (what the energy counter needs), a back edge shifted by one step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import nir
import torch

from spikeline.errors import SpikelineError

__all__ = ["Walk", "edges", "gather", "recorded_input", "topological_order", "walk",
           "upstream"]


def edges(graph: nir.NIRGraph) -> list[tuple[str, str]]:
    """``graph.edges`` with ``node.port`` names reduced to ``node``; unknown ends raise."""

    def base(name: str, edge) -> str:
        if name in graph.nodes:
            return name
        head = name.split(".", 1)[0]
        if head in graph.nodes:
            return head
        raise SpikelineError(f"edge {edge!r} names {name!r}, which is not a node of the graph")

    return [(base(src, (src, dst)), base(dst, (src, dst))) for src, dst in graph.edges]


def topological_order(graph: nir.NIRGraph, edge_list=None):
    """``(order, back_edges)``: depth-first topological order from the Input nodes (then from
    nodes without predecessors), following ``edge_list`` (default: :func:`edges`) in order.
    Edges that close a cycle are returned as back edges; unreachable nodes raise."""
    edge_list = edges(graph) if edge_list is None else edge_list
    succ = {name: [] for name in graph.nodes}
    for src, dst in edge_list:
        for end in (src, dst):
            if end not in graph.nodes:
                raise SpikelineError(f"edge ({src!r}, {dst!r}) names {end!r}, which is not a "
                                     "node of the graph")
        succ[src].append(dst)
    has_pred = {dst for _, dst in edge_list}
    starts = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    starts += [n for n in graph.nodes if n not in has_pred and n not in starts]
    state, post, back = {}, [], set()
    for start in starts:
        if start in state:
            continue
        stack = [(start, iter(succ[start]))]
        state[start] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "done"
                post.append(node)
                stack.pop()
            elif state.get(child) == "open":
                back.add((node, child))
            elif child not in state:
                state[child] = "open"
                stack.append((child, iter(succ[child])))
    missing = set(graph.nodes) - set(state)
    if missing:
        raise SpikelineError(f"nodes {sorted(missing)} cannot be reached from the input")
    return post[::-1], back


@dataclass(frozen=True)
class Walk:
    """``order`` (topological), ``back`` (edges closing a cycle) and ``preds``: node ->
    ``[(predecessor, is_back_edge)]`` in the graph's edge order."""

    order: list[str]
    back: set
    preds: dict[str, list[tuple[str, bool]]]

    @property
    def has_cycles(self) -> bool:
        return bool(self.back)


def walk(graph: nir.NIRGraph) -> Walk:
    """The :class:`Walk` of ``graph`` (see the module docstring)."""
    edge_list = edges(graph)
    order, back = topological_order(graph, edge_list)
    preds: dict[str, list[tuple[str, bool]]] = {name: [] for name in graph.nodes}
    for src, dst in edge_list:
        preds[dst].append((src, (src, dst) in back))
    return Walk(order, back, preds)


def _sum(name: str, terms: list[torch.Tensor]) -> torch.Tensor:
    if len(terms) == 1:
        return terms[0]
    try:
        if len(terms) == 2:  # one rounding either way; no stacked copy (and any memory layout)
            return torch.add(*torch.broadcast_tensors(*terms))
        return torch.stack(torch.broadcast_tensors(*terms)).sum(0)
    except RuntimeError:
        shapes = [list(t.shape) for t in terms]
        raise SpikelineError(f"node {name!r}: incoming edges have shapes {shapes}, which do "
                             "not add up") from None


def gather(name: str, preds: list[tuple[str, bool]], values: Mapping[str, torch.Tensor],
           previous: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Sum of the predecessors' ``values``; a back edge reads ``previous`` (the last step's
    values) and delivers nothing at the first step (``previous`` None or without the node)."""
    terms = []
    for src, is_back in preds:
        value = (previous or {}).get(src) if is_back else values[src]
        if value is not None:
            terms.append(value)
    if not terms:
        raise SpikelineError(f"node {name!r} has no input")
    return _sum(name, terms)


def recorded_input(name: str, preds: list[tuple[str, bool]],
                   outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Input of ``name`` over time from recorded outputs ``[T, N, ...]`` of its predecessors:
    their sum, a back edge delivering step t-1 (zeros at t = 0)."""
    if not preds:
        raise SpikelineError(f"node {name!r} has no incoming edge")
    terms = []
    for pred, is_back in preds:
        if pred not in outputs:
            raise SpikelineError(f"the simulation has no output for node {pred!r} (input of "
                                 f"{name!r})")
        value = torch.as_tensor(outputs[pred]).detach()
        if value.ndim < 3:
            raise SpikelineError(f"output of node {pred!r} must be [T, N, ...], got "
                                 f"{list(value.shape)}")
        if is_back:
            value = torch.cat([torch.zeros_like(value[:1]), value[:-1]])
        terms.append(value)
    return _sum(name, terms)


def upstream(name: str, graph: nir.NIRGraph, preds: Mapping[str, list[tuple[str, bool]]],
             stop, through) -> str | None:
    """First node upstream of ``name`` (breadth first) that ``stop(node)`` accepts, walking
    only through nodes that ``through(node)`` accepts; None when there is none."""
    frontier, seen = [p for p, _ in preds[name]], set()
    while frontier:
        nxt = []
        for pred in frontier:
            if pred in seen:
                continue
            seen.add(pred)
            node = graph.nodes[pred]
            if stop(node):
                return pred
            if through(node):
                nxt.extend(p for p, _ in preds[pred])
        frontier = nxt
    return None
