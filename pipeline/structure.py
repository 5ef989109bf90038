"""A network of spikeline blocks described as data, so that it rebuilds without the registry.

The model registry (``models.build_model``) rebuilds its networks from a name and options.  A
network a user assembled from ``blocks.py`` (a ``SpikingNet`` of ``Conv``, ``Pool``, ``Dense``,
``Flatten``, ``Dropout``, ``models.ResidualBlock`` and an ``Affine`` readout, in
``nn.Sequential`` stages), or a registry network changed after building, has no name:
:func:`describe` writes its structure as a JSON-ready ``model_spec`` (``"name": "custom"``),
and :func:`build_custom` builds the same module tree from it, so its ``state_dict`` loads.  This
is what lets such a network export, verify (``folded.pt`` holds the spec, never a pickle) and
be priced.

A layer is ``{"type": <block>, <its constructor arguments>}``; a stage or readout made of
several is ``{"type": "Sequential", "layers": [...]}``.  A synapse's BatchNorm is ``"norm"``:
``false`` (none), ``true`` (scale and shift) or ``"scale"`` (scale-only, ``--batchnorm scale``:
no voltage bias).  A ``ResidualBlock`` (``models.py``; the registry's ResNets are made of them)
records its ``kind``, ``rezero``, the identity shortcut's ``identity_weight`` (84/64 by default,
``models.relay_weight_for``) and ``delay_shift``: whether its hops are delayed one step each
(``loihi`` timing, as ``SpikingNet.set_timing`` sets them) or none are.  The network records
its ``timing`` and ``resets_at_arrival`` (``SpikingNet``; absent: false, as written before the
reset existed); a rebuilt ``loihi`` network is timed by ``set_timing``, as the registry's are
(an ``ideal`` one keeps each layer's ``delay_shift`` as described: lava-dl's blocks default to it).
"""
from __future__ import annotations

import dataclasses

from torch import nn

from spikeline.errors import BadInput

from .blocks import LIF, Affine, Conv, Dense, Dropout, Flatten, Pool, remove_norm_shifts
from .models import RESIDUAL_KINDS, ResidualBlock, SpikingNet
from .neuron import CubaParams
from .timing import check_timing

__all__ = ["CUSTOM", "build_custom", "describe"]

CUSTOM = "custom"  # the model_spec name of a described network


def _neuron(params: CubaParams) -> dict:
    return dataclasses.asdict(params)


def _norm(synapse) -> bool | str:
    """A synapse's BatchNorm as data: False, True (scale and shift) or ``"scale"``."""
    if synapse.norm is None:
        return False
    return "scale" if synapse.norm.shift is None else True


def _residual(module: ResidualBlock, where: str) -> dict:
    synapses = [module.conv1, module.conv2] + ([module.down] if module.down is not None else [])
    norms = {_norm(s) for s in synapses}
    lifs = [module.lif1, module.lif2] + ([module.down_lif] if module.down is not None
                                         and module.down_lif is not None else [])
    shifts = {lif.delay_shift for lif in lifs} | {bool(module.skip_delay)}
    if len(norms) != 1 or len(shifts) != 1 or module.skip_delay not in (0, 1):
        raise BadInput(f"{where}: a ResidualBlock is described with one BatchNorm form for all "
                       f"its synapses (got {sorted(map(str, norms))}) and its hops all delayed "
                       "one step or none (SpikingNet.set_timing sets them)")
    return {"type": "ResidualBlock", "neuron": _neuron(module.lif1.neuron),
            "cin": module.conv1.in_features, "cout": module.conv1.out_features,
            "stride": module.conv1.stride[0], "kind": module.kind,
            "rezero": module.gate is not None, "identity_weight": module.identity_weight,
            "norm": norms.pop(), "delay_shift": shifts.pop()}


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
                "norm": _norm(s), "bias": s.bias is not None,
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
                "norm": _norm(s), "bias": s.bias is not None,
                "delay_shift": module.lif.delay_shift}
    if isinstance(module, Affine):
        s = module.synapse
        return {"type": "Affine", "neuron": _neuron(module.neuron),
                "in_neurons": s.in_features, "out_neurons": s.out_features}
    if isinstance(module, ResidualBlock):
        return _residual(module, where)
    if isinstance(module, Flatten):
        return {"type": "Flatten"}
    if isinstance(module, Dropout):
        return {"type": "Dropout", "p": module.p}
    raise BadInput(f"{where}: a {type(module).__name__} cannot be described as data; a custom "
                   "network is built from spikeline blocks (Conv, Pool, Dense, Flatten, "
                   "Dropout, Affine, ResidualBlock) in nn.Sequential stages")


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
            "resets_at_arrival": bool(model.resets_at_arrival),
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
        if kind == "ResidualBlock":
            return _build_residual(args)
        norm = args.get("norm", False)
        if norm not in (False, True, "scale"):
            raise ValueError(f"norm must be false, true or 'scale', got {norm!r}")
        if "norm" in args:
            args["norm"] = bool(norm)
        blocks = {"Conv": Conv, "Pool": Pool, "Dense": Dense, "Affine": Affine,
                  "Flatten": Flatten, "Dropout": Dropout}
        module = blocks[kind](**args)
        if norm == "scale":
            remove_norm_shifts(module)
        return module
    except (KeyError, TypeError, ValueError) as err:
        raise BadInput(f"model_spec {where}: cannot build {layer!r} "
                       f"({type(err).__name__}: {err})") from None


def _build_residual(args: dict) -> ResidualBlock:
    if args["kind"] not in RESIDUAL_KINDS:
        raise ValueError(f"kind must be one of {RESIDUAL_KINDS}, got {args['kind']!r}")
    if args["norm"] not in (True, "scale"):  # every synapse of a block has a BatchNorm
        raise ValueError(f"norm must be true or 'scale', got {args['norm']!r}")
    weight = float(args["identity_weight"])
    if not weight > 0:
        raise ValueError(f"identity_weight must be > 0, got {weight!r}")
    delayed = args["delay_shift"]
    if not isinstance(delayed, bool):
        raise ValueError(f"delay_shift must be true or false, got {delayed!r}")
    block = ResidualBlock(args["neuron"], int(args["cin"]), int(args["cout"]),
                          int(args["stride"]), args["kind"], bool(args["rezero"]), weight)
    if args["norm"] == "scale":
        remove_norm_shifts(block)
    for m in block.modules():
        if isinstance(m, LIF):
            m.delay_shift = delayed
    block.skip_delay = int(delayed)
    return block


def build_custom(spec: dict) -> SpikingNet:
    """The untrained network a :func:`describe` spec holds (the same module tree)."""
    try:
        stages = [_build(layer, f"stages.{i}") for i, layer in enumerate(spec["stages"])]
        model = SpikingNet(stages, _build(spec["readout"], "readout"), spec["encoding"],
                           list(spec["stage_channels"]))
        # absent: a spec written before neurons restarted at their input's arrival
        model.resets_at_arrival = bool(spec.get("resets_at_arrival", False))
        model.timing = check_timing(spec.get("timing", "ideal"))
        if model.timing == "loihi":  # its windows and resets (every hop is delayed, as described)
            model.set_timing("loihi")
    except (KeyError, TypeError, ValueError) as err:
        raise BadInput(f"model_spec: not a custom network ({type(err).__name__}: {err})") \
            from None
    return model
