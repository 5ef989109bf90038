"""What an export folder promises, read once: the graph, its metadata and where they came from.

A *model* to run is either an export folder (``model.nir`` + ``metadata.json`` +
``manifest.json``, written by ``deploy/export.py``) or a ``.nir`` file written by any tool.
:func:`read_model` reads either: an export folder must be complete and consistent (its
manifest, ``export.check_manifest``), and the graph is validated by ``nir_check.read_nir``
before anything runs it.
"""
from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np

from spikeline.errors import BadInput, DataNotFound

from .export import check_manifest
from .nir_check import read_nir

__all__ = ["graph_input_shape", "read_model"]


def read_model(target: str | Path) -> tuple[nir.NIRGraph, dict, Path]:
    """``(graph, metadata dict, path of the .nir file)`` of an export folder or a .nir file
    (a bare .nir file has no metadata: ``{}``)."""
    target = Path(target)
    metadata = {}
    if target.is_dir():
        path = target / "model.nir"
        meta_path = target / "metadata.json"
        if not path.is_file():
            raise DataNotFound(f"{target}: no model.nir in this folder (expected an export "
                               f"folder with model.nir and metadata.json, or a .nir file)")
        check_manifest(target)
        if meta_path.is_file():
            try:
                metadata = json.loads(meta_path.read_text())
            except (OSError, ValueError) as err:
                raise BadInput(f"{meta_path}: not valid JSON ({err})") from None
            if not isinstance(metadata, dict):
                raise BadInput(f"{meta_path}: expected a JSON object")
    else:
        path = target
        if not path.is_file():
            raise DataNotFound(f"{path}: no such file or folder")
    return read_nir(path), metadata, path


def graph_input_shape(graph: nir.NIRGraph) -> tuple[int, ...]:
    """The input shape of the graph's one ``Input`` node."""
    inputs = [(n, node) for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise BadInput(f"the graph needs exactly one Input node, it has "
                       f"{[n for n, _ in inputs]}")
    shape = inputs[0][1].input_type.get("input")
    if shape is None or not len(shape):
        raise BadInput(f"the graph's Input node {inputs[0][0]!r} has no input shape")
    return tuple(int(v) for v in np.asarray(shape).reshape(-1))
