"""A network of spikeline blocks described as data, so that it rebuilds without the registry.

The model registry (``models.build_model``) rebuilds its networks from a name and options.  A
network a user assembled from ``blocks.py`` (a ``SpikingNet`` of ``Conv``, ``Pool``, ``Dense``,
``Flatten``, ``Dropout`` and an ``Affine`` readout, in ``nn.Sequential`` stages) has no name:
:func:`describe` writes its structure as a JSON-ready ``model_spec`` (``"name": "custom"``),
and :func:`build_custom` builds the same module tree from it, so its ``state_dict`` loads.  This
is what lets such a network export, verify (``folded.pt`` holds the spec, never a pickle) and
be priced.

A layer is ``{"type": <block>, <its constructor arguments>}``; a stage or readout made of
several is ``{"type": "Sequential", "layers": [...]}``.  Residual blocks are not described:
build those through the registry.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from spikeline.errors import BadInput

from .blocks import Affine, Conv, Dense, Dropout, Flatten, Pool
from .models import SpikingNet
from .neuron import CubaParams
from .timing import check_timing

__all__ = ["CUSTOM", "build_custom", "describe"]

CUSTOM = "custom"  # the model_spec name of a described network


def _neuron(params: CubaParams) -> dict:
    return dataclasses.asdict(params)


def _layer(module: nn.Module, where: str) -> dict:
    """One module as data (the arguments its constructor needs to rebuild it)."""
    if isinstance(module, nn.Sequential):
        return {"type": "Sequential",
                "layers": [_layer(m, f"{where}.{i}") for i, m in enumerate(module)]}
    if isinstance(module, Conv):
        s = module.synapse
        return {"type": "Conv", "neuron": _neuron(module.neuron),
                "in_features": s.in_features, "out_features": s.out_features,
                "kernel_size": list(s.kernel_size), "stride": list(s.stride),
                "padding": list(s.padding), "dilation": list(s.dilation), "groups": s.groups,
                "norm": s.norm is not None, "bias": s.bias is not None,
                "delay_shift": module.lif.delay_shift}
    if isinstance(module, Pool):
        s = module.synapse
        return {"type": "Pool", "neuron": _neuron(module.neuron),
                "kernel_size": list(s.kernel_size), "stride": list(s.stride),
                "padding": list(s.padding), "delay_shift": module.lif.delay_shift}
    if isinstance(module, Dense):
        s = module.synapse
        return {"type": "Dense", "neuron": _neuron(module.neuron),
                "in_neurons": s.in_features, "out_neurons": s.out_features,
                "norm": s.norm is not None, "bias": s.bias is not None,
                "delay_shift": module.lif.delay_shift}
    if isinstance(module, Affine):
        s = module.synapse
        return {"type": "Affine", "neuron": _neuron(module.neuron),
                "in_neurons": s.in_features, "out_neurons": s.out_features}
    if isinstance(module, Flatten):
        return {"type": "Flatten"}
    if isinstance(module, Dropout):
        return {"type": "Dropout", "p": module.p}
    raise BadInput(f"{where}: a {type(module).__name__} cannot be described as data; a custom "
                   "network is built from spikeline blocks (Conv, Pool, Dense, Flatten, "
                   "Dropout, Affine) in nn.Sequential stages; residual networks come from the "
                   "registry (models.build_model)")


def describe(model: SpikingNet, input_shape) -> dict:
    """``model``'s ``model_spec``: its structure as data, with its input ``(C, H, W)``."""
    if not isinstance(model, SpikingNet):
        raise BadInput(f"expected a SpikingNet (encoder -> stages -> readout) built from "
                       f"spikeline blocks, got {type(model).__name__}")
    channels, *size = (int(v) for v in input_shape)
    if len(size) != 2:
        raise BadInput(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    return {"name": CUSTOM, "in_channels": channels, "input_size": size,
            "encoding": model.encoding, "timing": model.timing,
            "stage_channels": [int(c) for c in model.stage_channels],
            "stages": [_layer(m, f"stages.{i}") for i, m in enumerate(model.stages)],
            "readout": _layer(model.readout, "readout")}


def _build(layer: dict, where: str) -> nn.Module:
    try:
        kind = layer["type"]
        args = {k: v for k, v in layer.items() if k != "type"}
        if kind == "Sequential":
            return nn.Sequential(*(_build(child, f"{where}.{i}")
                                   for i, child in enumerate(args["layers"])))
        if "neuron" in args:
            args["neuron"] = CubaParams(**args["neuron"])
        blocks = {"Conv": Conv, "Pool": Pool, "Dense": Dense, "Affine": Affine,
                  "Flatten": Flatten, "Dropout": Dropout}
        return blocks[kind](**args)
    except (KeyError, TypeError, ValueError) as err:
        raise BadInput(f"model_spec {where}: cannot build {layer!r} "
                       f"({type(err).__name__}: {err})") from None


def build_custom(spec: dict) -> SpikingNet:
    """The untrained network a :func:`describe` spec holds (the same module tree)."""
    try:
        stages = [_build(layer, f"stages.{i}") for i, layer in enumerate(spec["stages"])]
        model = SpikingNet(stages, _build(spec["readout"], "readout"), spec["encoding"],
                           list(spec["stage_channels"]))
        model.timing = check_timing(spec.get("timing", "ideal"))
    except (KeyError, TypeError, ValueError) as err:
        raise BadInput(f"model_spec: not a custom network ({type(err).__name__}: {err})") \
            from None
    return model
