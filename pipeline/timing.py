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
    voltage bias      added from step 0, after the decay and before the threshold test
                      (Lava's LIF ``subthr_dynamics``): a layer k hops deep integrates k
                      bias-only steps before its first input arrives, on the chip and here

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

from .blocks import Affine, Dropout, Flatten, SpikingBlock

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
