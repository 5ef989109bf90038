"""The deployed network's accuracy: the folded, quantized graph in the fixed-point simulator.

Training reports the accuracy of the unfolded float network (BatchNorm as a separate scale,
weights quantized once).  What the chip runs is the export: ``W' = q(s * q(W))``, the bias
rounded to the 1/64 grid.  ``deployed_accuracy`` runs the exported NIR graph through
``deploy.simulate.simulate(graph, x, mode="loihi")`` (the fixed-point CUBA neuron, which equals
Lava spike for spike; see ``deploy.verify``) over a whole split and scores its logits:

    logits = mean over steps t in [readout_start, T + L) of the output voltage

where ``L = metadata["input_pad_steps"]`` zero frames are appended to the ``T`` input steps
(hardware timing may need them to flush the pipeline; default 0) and ``readout_start``
(default 0) skips the first steps.  Both come from the graph's metadata.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import torch

from spikeline.errors import BadInput

from spikeline.pipeline.models import encode_frames
from spikeline.pipeline.precision import exact_fp32

from .artifact import GraphTiming
from . import simulate as simulation  # looked up at call time: tests put a fake in its place

__all__ = ["DeployedAccuracy", "deployed_accuracy", "deployed_logits", "readout_window"]


@dataclass(frozen=True)
class DeployedAccuracy:
    correct: int
    count: int
    input_pad_steps: int
    readout_start: int

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)


def readout_window(graph: nir.NIRGraph) -> tuple[int, int]:
    """``(input_pad_steps, readout_start)`` from the graph's metadata (defaults 0, 0)."""
    timing = GraphTiming.of(graph)
    return timing.input_pad_steps, timing.readout_start


@torch.no_grad()
def deployed_accuracy(graph: nir.NIRGraph, loader, encoding: str = "binary",
                      mode: str = "loihi") -> DeployedAccuracy:
    """Accuracy of ``graph`` over ``loader``'s ``(frames [N, T, C, H, W], labels [N])``, in
    exact float32 (TF32 off, no autocast)."""
    pad, start = readout_window(graph)
    correct = count = 0
    with exact_fp32():
        for frames, labels in loader:
            logits = deployed_logits(graph, frames, encoding, mode, pad, start)
            correct += int((logits.argmax(-1) == labels).sum())
            count += int(labels.numel())
    return DeployedAccuracy(correct, count, pad, start)


def deployed_logits(graph: nir.NIRGraph, frames: torch.Tensor, encoding: str, mode: str,
                    pad: int, start: int) -> torch.Tensor:
    """``[N, classes]``: the output voltage averaged over steps ``[start, T + pad)``."""
    x = encode_frames(frames.float().transpose(0, 1), encoding)  # [T, N, C, H, W]
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    if start >= x.shape[0]:
        raise BadInput(f"NIR metadata readout_start {start} leaves no step of the "
                       f"{x.shape[0]} the network runs")
    return simulation.simulate(graph, x, mode=mode).output[start:].mean(0)  # [T + L, N, classes] -> mean
