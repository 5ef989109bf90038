"""Counting a run in batches of samples: simulate a batch, count it, merge the counts.

Because the binary rule is applied per sample and step, counting in batches and merging
(:func:`~.counts.combine_counts`) gives the numbers of counting all samples at once; the batch
size only bounds memory.
"""
from __future__ import annotations

import numpy as np
import nir
import torch

from ..artifact import GraphTiming
from ..simulate import simulate
from .counts import EnergyCounts, combine_counts, count_operations

__all__ = ["count_in_batches"]


def count_in_batches(graph: nir.NIRGraph, x: np.ndarray, batch_size: int = 8,
                     mode: str = "auto", fanout: str = "structural",
                     latency_steps: int = 0) -> EnergyCounts:
    """Simulate ``graph`` on ``x`` ``[T, N, ...]`` ``batch_size`` samples at a time and return
    the merged per-inference counts.

    A graph trained with hardware timing (``--timing loihi``) says in its metadata how many
    zero steps follow the input (``input_pad_steps``) so that the last input step reaches the
    readout; those steps are simulated and counted like the others, and count towards the
    chip's ``latency_steps`` (only the rest, if any, is priced as input-free updates)."""
    pad = GraphTiming.of(graph).input_pad_steps
    if pad > 0:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)])
        latency_steps = max(latency_steps - pad, 0)
    parts = []
    for start in range(0, x.shape[1], batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(x[:, start:start + batch_size]))
        with torch.no_grad():
            sim = simulate(graph, chunk, mode=mode)
        parts.append(count_operations(graph, sim, fanout=fanout, latency_steps=latency_steps))
        del sim
    return combine_counts(parts)
