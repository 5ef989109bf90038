"""Folded sequential ``SpikingNet`` -> lava-dl netx HDF5 (Loihi through Lava).

Schema as lava-dl 0.6.0's ``export_hdf5`` writes it (``lava/lib/dl/slayer/block/base.py``):
``layer/<i>`` groups with ``type``, ``shape`` (C, H, W), weights x64 as floats, and a
``neuron/`` group (``CUBA``, ``iDecay``, ``vDecay``, ``vThMant``, ``refDelay``,
``gradedSpike``).  What netx cannot load is
lowered exactly:

- sum pooling (netx raises NotImplementedError for ``pool``) -> a grouped, strided conv whose
  weights are the pool weight (64 = 1.0);
- the Affine readout -> ``dense`` with ``vThMant = 262143``: it never spikes, its voltage is
  the readout.

Residual networks have no netx form (no add layer): they get an error naming the edge.
Neither do voltage biases (folded BatchNorm) or lava-dl's ``delay_shift``: Lava delays layer
i's input by i + 1 steps, which only a bias-free network without delay_shift tolerates.
"""
from __future__ import annotations

import functools

import h5py
import numpy as np
from torch import nn

from spikeline.errors import ExportUnsupported, SpikelineError
from spikeline.pipeline.blocks import Affine, Conv, Dense, Dropout, Flatten, Pool
from spikeline.pipeline.geometry import conv_output_size
from spikeline.pipeline.models import ResidualBlock, SpikingNet
from spikeline.pipeline.neuron import CubaParams
from spikeline.pipeline.quantize import weight_mantissa

NEVER_SPIKES = 262143  # the largest vThMant: an Affine readout exported as dense


def _layers(model: SpikingNet) -> list[nn.Module]:
    flat = []

    def walk(m):
        if isinstance(m, nn.Sequential):
            for child in m:
                walk(child)
        elif isinstance(m, Dropout):
            return
        elif isinstance(m, ResidualBlock):
            raise ExportUnsupported(
                "netx export: a residual block's shortcut edge (block input -> its second "
                "neuron) has no netx layer type (netx nets are sequential); export NIR instead")
        else:
            if getattr(getattr(m, "lif", None), "delay_shift", False):
                raise ExportUnsupported(
                    "netx export: layers with delay_shift (--timing loihi) are not written as "
                    "netx (netx adds its own per-layer delay); the Lava process graph of "
                    "model.nir (to_lava) runs them")
            flat.append(m)

    for stage in model.stages:
        walk(stage)
    walk(model.readout)
    return flat


def netx_layer_modules(model: SpikingNet) -> list[nn.Module]:
    """For each netx layer (Flatten has none in Lava), the module whose output it reproduces:
    the LIF population of a spiking block, the Affine readout itself."""
    return [m.lif.spikes if hasattr(m, "lif") else m for m in _layers(model)
            if not isinstance(m, Flatten)]


def _neuron(group: h5py.Group, p: CubaParams, never_spikes: bool = False) -> None:
    neuron = group.create_group("neuron")
    for key, value in p.device_params().items():
        if key == "type":
            neuron.create_dataset("type", data=np.bytes_(value))
        else:
            neuron.create_dataset(key, data=value)
    if never_spikes:
        del neuron["vThMant"]
        neuron.create_dataset("vThMant", data=NEVER_SPIKES)


def _type(group: h5py.Group, name: str) -> None:
    group.create_dataset("type", data=np.array([name.encode()], dtype="S10"))


def _check_synapse(syn) -> None:
    if syn.norm is not None:
        raise SpikelineError("netx export needs a folded model (BatchNorm still present)")
    if syn.bias is not None:
        # Lava delays each layer's input by one more step than the last; a bias integrates
        # from Lava's step 0 regardless, i.e. before the input it was trained with arrives.
        raise ExportUnsupported(
            "netx export: a voltage bias (a folded BatchNorm) would act on Loihi before the "
            "layer's input arrives (Lava adds one step of delay per layer), so the artifact "
            "could not spike like the trained net; export NIR, or train without BatchNorm")


def write_netx(model: SpikingNet, input_shape: tuple[int, int, int], path) -> list[str]:
    """Write ``model`` (folded, sequential) to ``path``; returns the layer types.  (The export
    writes through ``spikeline.atomic.atomic_path``.)"""
    if model.encoding != "binary":
        raise ExportUnsupported("netx export: Loihi input layers take binary spikes; train with "
                             "--encoding binary")
    shape = tuple(input_shape)
    layers = _layers(model)
    kinds = []
    with h5py.File(path, "w") as f:
        root = f.create_group("layer")
        for i, m in enumerate(layers):
            g = root.create_group(str(i))
            shape = _write_layer(m, g, shape)
            kinds.append(g["type"][0].decode())
    return kinds


@functools.singledispatch
def _write_layer(m: nn.Module, g: h5py.Group, shape):
    """Write one layer into group ``g``; returns its output shape.  One function per block
    type (``functools.singledispatch``)."""
    raise ExportUnsupported(f"netx export: unsupported layer {type(m).__name__}; supported: "
                            "Conv, Pool, Flatten, Dense, Affine")


@_write_layer.register(Conv)
@_write_layer.register(Pool)
def _(m, g: h5py.Group, shape):
    c, h, w = shape
    syn = m.synapse
    if isinstance(m, Conv):
        weight = weight_mantissa(syn.weight, syn.scale).numpy().astype(np.float32)
        cout, groups = weight.shape[0], syn.groups
        dilation = syn.dilation
        _check_synapse(syn)
    else:
        if h % syn.kernel_size[0] or w % syn.kernel_size[1] or any(syn.padding):
            raise ExportUnsupported(f"netx export: sum pooling of a {h}x{w} map needs "
                                    "lava-dl's one-sided padding, which netx cannot express")
        mant = float(weight_mantissa(syn.weight, syn.scale))
        weight = np.full((c, 1, *syn.kernel_size), mant, dtype=np.float32)
        cout, groups, dilation = c, c, (1, 1)
    out = conv_output_size((h, w), syn.kernel_size, syn.stride, syn.padding, dilation)
    _type(g, "conv")
    for key, value in (("inChannels", c), ("outChannels", cout), ("groups", groups)):
        g.create_dataset(key, data=value)
    for key, value in (("kernelSize", syn.kernel_size), ("stride", syn.stride),
                       ("padding", syn.padding), ("dilation", dilation)):
        g.create_dataset(key, data=np.array(value))
    g.create_dataset("weight", data=weight)
    g.create_dataset("shape", data=np.array([cout, *out]))
    _neuron(g, m.neuron)
    return (cout, *out)


@_write_layer.register
def _(m: Flatten, g: h5py.Group, shape):
    _type(g, "flatten")
    g.create_dataset("shape", data=np.array([int(np.prod(shape)), 1, 1]))
    return (int(np.prod(shape)),)


@_write_layer.register(Dense)
@_write_layer.register(Affine)
def _(m, g: h5py.Group, shape):
    syn = m.synapse
    weight = weight_mantissa(syn.weight, syn.scale).numpy().astype(np.float32)
    if weight.shape[1] != int(np.prod(shape)):
        raise ExportUnsupported(f"netx export: dense layer expects {weight.shape[1]} inputs, "
                                f"the previous layer gives {shape}")
    _type(g, "dense")
    g.create_dataset("inFeatures", data=weight.shape[1])
    g.create_dataset("outFeatures", data=weight.shape[0])
    g.create_dataset("weight", data=weight)
    g.create_dataset("shape", data=np.array([weight.shape[0]]))
    _check_synapse(syn)
    _neuron(g, m.neuron, never_spikes=isinstance(m, Affine))
    return (weight.shape[0],)
