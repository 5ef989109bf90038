"""When each layer sees its input: ``ideal`` (no synaptic delay) or ``loihi`` (one step per hop).

``ideal`` (the default): a synapse delivers its input in the step it arrives, so every layer of
the network sees input step t at step t.  That is what floating-point simulators run, and what
netx runs for a bias-free sequential net once its output is re-aligned.

``loihi``: every synaptic hop delays by one step, as Lava's Dense/Conv/Sparse processes do
(each sends last step's accumulation before receiving this step's spikes; see
``lava/proc/dense/models.py``, ``run_spk``) and as lava-dl's ``delay_shift=True`` trains::

    layer input       x_1[t]  = x[t - 1]                  (the input's hop into the first synapse)
    every LIF output  s_k'[t] = s_k[t - 1]                (the hop into the next synapse)
    skip edges        delayed to the path they join: a Spiking ResNet's shortcut input is
                      x'[t - 1], a SEW ADD's identity term x'[t - 2], where x' is the block input
    voltage bias      added every step, after the decay and before the threshold test
                      (Lava's LIF ``subthr_dynamics``): a layer k hops deep integrates k
                      bias-only steps before its first input arrives, on the chip and here
    reset             with voltage biases, each neuron's current and voltage restart from 0
                      at its arrival (``LIF.reset_step``; on the chip Lava's ``LIFReset``
                      with ``reset_interval = T + latency``, as lava-dl's netx resets layer
                      i at offset i + 1), so the bias-only steps leave no trace

Each layer's own ``T`` steps are ``[arrival, arrival + T)``, ``arrival`` the step its synaptic
input first carries input step 0 (``arrival``, set on every BatchNorm by ``set_timing`` as its
``window``): BatchNorm statistics and shortcut heads use those steps only.  Without voltage
biases (scale-only BatchNorm) every layer is exactly silent before its arrival, so a
loihi-timed network is the ideal one shifted in time: same weights, same logits.  With biases
(the shifting BatchNorm, the default) the reset at arrival gives the same: before it a
layer's spikes come from its bias alone, and they reach every later layer, skip edges included
(delayed to match), before that layer's own reset; the readout restarts at ``readout_start``.

The readout (the Affine, ``latency`` hops deep) first sees input step 0 at step ``latency``, so
the input is padded with ``latency`` zero frames, the network runs ``T + latency`` steps and the
logits are the readout voltage averaged over steps ``[latency, T + latency)``: the same number
of steps as ``ideal``, shifted by the depth.  The NIR graph records both numbers in its metadata
(``input_pad_steps`` and ``readout_start``) and its delays as ``Delay`` nodes.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from .blocks import LIF, Affine, BiasNorm, Dropout, Flatten, SpikingBlock, Synapse

TIMINGS = ("ideal", "loihi")


def check_timing(timing: str) -> str:
    if timing not in TIMINGS:
        raise ValueError(f"timing must be one of {TIMINGS}, got {timing!r}")
    return timing


def shift(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``out[t] = x[t - steps]`` (zeros for ``t < steps``), time on the first axis."""
    if steps <= 0:
        return x
    steps = min(steps, x.shape[0])
    return torch.cat([torch.zeros_like(x[:steps]), x[:x.shape[0] - steps]])


def pad_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Append ``steps`` zero frames on the time axis (the first)."""
    if steps <= 0:
        return x
    return torch.cat([x, x.new_zeros((steps, *x.shape[1:]))])


@functools.singledispatch
def hops(module: nn.Module) -> int:
    """Synaptic hops from a module's input to its output along the main path."""
    raise TypeError(f"no hop count for {type(module).__name__}")


@hops.register
def _(module: nn.Sequential) -> int:
    return sum(hops(m) for m in module)


@hops.register
def _(module: SpikingBlock) -> int:
    return 1


@hops.register
def _(module: Affine) -> int:
    return 1


@hops.register(Flatten)
@hops.register(Dropout)
def _(module) -> int:
    return 0


def set_window(synapse: Synapse | None, arrival: int, pad: int) -> None:
    """Give ``synapse``'s BatchNorm the window ``[arrival, arrival + T)`` of a run of
    ``T + pad`` steps."""
    norm = getattr(synapse, "norm", None)
    if isinstance(norm, BiasNorm):
        if not 0 <= arrival <= pad:
            raise ValueError(f"arrival step {arrival} outside [0, {pad}]")
        norm.window = (arrival, pad - arrival)


def has_voltage_bias(model: nn.Module) -> bool:
    """Whether any neuron of ``model`` gets a voltage bias (a shifting BatchNorm, or its fold)."""
    return any((isinstance(m, BiasNorm) and m.shift is not None)
               or (isinstance(m, Synapse) and m.bias is not None) for m in model.modules())


def keep_resets(model: nn.Module, on: bool) -> None:
    """Clear every neuron's ``reset_step`` unless ``on``: a network without voltage biases is
    silent before each layer's arrival, so its resets would change nothing and cost a split."""
    if not on:
        for m in model.modules():
            if isinstance(m, (LIF, Affine)):
                m.reset_step = 0


@functools.singledispatch
def arrival(module: nn.Module, start: int, pad: int) -> int:
    """Walk ``module`` whose input first carries input step 0 at step ``start`` in a run padded
    with ``pad`` steps: set each BatchNorm's window (``set_window``) and return the step at
    which the module's output first carries input step 0."""
    raise TypeError(f"no arrival rule for {type(module).__name__}")


@arrival.register
def _(module: nn.Sequential, start: int, pad: int) -> int:
    for m in module:
        start = arrival(m, start, pad)
    return start


@arrival.register
def _(module: SpikingBlock, start: int, pad: int) -> int:
    set_window(module.synapse, start, pad)
    module.lif.reset_step = start
    return start + int(module.lif.delay_shift)


@arrival.register
def _(module: Affine, start: int, pad: int) -> int:
    module.reset_step = start
    return start


@arrival.register(Flatten)
@arrival.register(Dropout)
def _(module, start: int, pad: int) -> int:
    return start
