"""Turn a trained network into what the chip runs: BatchNorm and ReZero gates folded, quantized.

For a synapse with BiasNorm (``z -> s * z``, voltage bias ``b = beta - s * mean``)::

    W' = quantize_weight(s * quantize_weight(W))      (s per output channel)
    b' = quantize_bias(b)                              (1/64 grid: Loihi's bias mantissa)

A ReZero gate ``g`` on a residual branch multiplies that branch's weights and bias before
quantization.  The folded model is an ordinary ``SpikingNet`` without norms: it is the
reference every export is checked against, spike for spike.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from spikeline.pipeline.blocks import ConvSynapse, DenseSynapse, Synapse
from spikeline.pipeline.models import ResidualBlock, SpikingNet
from spikeline.pipeline.quantize import quantize_bias, quantize_weight


def _fold_synapse(syn: Synapse, gate: torch.Tensor | None = None) -> None:
    """Fold ``syn.norm`` (and a gate) into its weight and voltage bias, in place."""
    with torch.no_grad():
        weight = quantize_weight(syn.weight, syn.scale)
        shape = [-1] + [1] * (weight.dim() - 1)
        if syn.norm is not None:
            scale, bias = syn.norm.folded()
            weight = weight * scale.view(shape)
        elif syn.bias is not None:
            bias = syn.bias.detach().clone()
        else:
            bias = None
        if gate is not None:
            weight = weight * gate
            bias = None if bias is None else bias * gate
        syn.weight.copy_(quantize_weight(weight, syn.scale))
        syn.norm = None
        syn.bias = None if bias is None else torch.nn.Parameter(quantize_bias(bias, syn.scale))


@functools.singledispatch
def fold_module(module: nn.Module) -> None:
    """Fold one module in place (no-op for modules without a norm or gate).  One function per
    block type (``functools.singledispatch``); ``fold_model`` applies it to every module,
    residual blocks (their gates) before synapses (their norms)."""


@fold_module.register
def _(module: ResidualBlock) -> None:
    gate = module.gate.detach() if module.gate is not None else None
    _fold_synapse(module.conv2, gate)
    module.gate = None


@fold_module.register(ConvSynapse)
@fold_module.register(DenseSynapse)
def _(module) -> None:
    _fold_synapse(module)


def fold_model(model: SpikingNet) -> SpikingNet:
    """A folded, quantized copy of ``model`` in eval mode (the original is left untouched)."""
    folded = copy.deepcopy(model).eval()
    modules = list(folded.modules())
    for module in modules:  # gates first: a gate scales the norm's output it multiplies
        if isinstance(module, ResidualBlock):
            fold_module(module)
    for module in modules:
        if not isinstance(module, ResidualBlock):
            fold_module(module)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
