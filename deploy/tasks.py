"""What differs between the tasks once a network is deployed, in one place: one object per task
(``CLASSIFY``, ``DETECTION``), looked up once on the task the ``model_spec`` or
``metadata.json`` names (``artifact.spec_task``, ``ExportMeta.task``).

- ``to_nir``: the NIR graph of a folded network (a classifier: one Output; a detector's spiking
  part: P4 and P5, its readout off-chip);
- ``output_pairs``: what verify compares beyond the neuron nodes (a classifier: nothing, its
  readout is a graph node; a detector: the Output nodes, what leaves the chip, and the off-chip
  readout applied to them);
- ``lava_note``: why a Lava run was skipped, in the task's terms.

Export, verify and the parameter certificate see the tasks only through these objects."""
from __future__ import annotations

from pathlib import Path

import torch

from spikeline.errors import SpikelineError

from .artifact import GraphTiming, spec_task
from .detector import LEVELS, detector_to_nir, load_readout, reference_features
from .to_nir import Export, model_to_nir

__all__ = ["CLASSIFY", "DETECTION", "DeployTask", "TASKS", "deploy_task", "to_nir"]


class DeployTask:
    """A classifier's deployment: its whole network is one graph with one Output node, whose
    readout is a node of the graph (so verify compares it with the neurons)."""

    name = "classify"

    def to_nir(self, folded, input_shape, metadata: dict | None = None) -> Export:
        """The NIR graph (and node -> module mapping) of a folded network."""
        return model_to_nir(folded, tuple(input_shape), metadata)

    def output_pairs(self, export_dir: Path, model, fresh: Export, frames: torch.Tensor,
                     outputs: dict) -> list:
        """``(node, reference, backend)`` entries verify compares beyond the neuron nodes;
        ``frames [T, N, ...]`` the input, ``outputs`` the backend's signal per node name (what
        each Output node received)."""
        return []

    def lava_note(self, note: str) -> str:
        """``note`` of a skipped Lava run, with what it means for this task."""
        return note


class DetectionDeploy(DeployTask):
    """A detector's deployment (``deploy/detector.py``): the spiking part is the graph, with two
    Output nodes (P4, P5); the Detect readout runs off-chip from ``readout.npz``."""

    name = "detection"

    def to_nir(self, folded, input_shape, metadata: dict | None = None) -> Export:
        return detector_to_nir(folded, tuple(input_shape), metadata)

    def output_pairs(self, export_dir: Path, model, fresh: Export, frames: torch.Tensor,
                     outputs: dict) -> list:
        """The Output nodes (P4, P5) and the off-chip readout against the folded detector."""
        features, raw = reference_features(model, frames.transpose(0, 1))
        readout = load_readout(Path(export_dir) / "readout.npz")
        outs = list(GraphTiming.of(fresh.graph).output_nodes)  # as folded.pt's graph names them
        pairs = [(name, ref, outputs.get(name, torch.empty(0)))
                 for name, ref in zip(outs, features)]
        try:
            theirs = readout.raw([outputs[n] for n in readout.input_nodes])
        except (KeyError, RuntimeError, SpikelineError):  # nodes of the wrong shape, or none
            theirs = [torch.empty(0)] * len(raw)
        pairs += [(f"readout_{level}", ours, t) for level, ours, t in zip(LEVELS, raw, theirs)]
        return pairs

    def lava_note(self, note: str) -> str:
        if "delay" not in note:
            return note
        return ("the detector was trained with ideal timing (no step per synaptic hop), while "
                "every Lava synapse adds one step, so its process graph would run a different "
                "network; train it with --timing loihi. " + note)


CLASSIFY = DeployTask()
DETECTION = DetectionDeploy()
TASKS: dict[str, DeployTask] = {t.name: t for t in (CLASSIFY, DETECTION)}


def deploy_task(task_or_spec: str | dict) -> DeployTask:
    """The task object of a task name (``ExportMeta.task``) or of a ``model_spec``."""
    return TASKS[task_or_spec if isinstance(task_or_spec, str) else spec_task(task_or_spec)]


def to_nir(folded, spec: dict, input_shape, metadata: dict | None = None) -> Export:
    """The NIR graph (and node -> module mapping) of a folded network of ``spec``'s task."""
    return deploy_task(spec).to_nir(folded, input_shape, metadata)
