"""What differs between the tasks once a network is deployed, in one place: the NIR graph of
a folded network (a classifier: one Output; a detector's spiking part: P4 and P5, its readout
off-chip).  Export, verify and the parameter certificate dispatch here on the task the
``model_spec`` names (``artifact.spec_task``)."""
from __future__ import annotations

from .artifact import spec_task
from .detector import detector_to_nir
from .to_nir import Export, model_to_nir

__all__ = ["TO_NIR", "to_nir"]

TO_NIR = {"classify": model_to_nir, "detection": detector_to_nir}


def to_nir(folded, spec: dict, input_shape, metadata: dict | None = None) -> Export:
    """The NIR graph (and node -> module mapping) of a folded network of ``spec``'s task."""
    return TO_NIR[spec_task(spec)](folded, tuple(input_shape), metadata)
