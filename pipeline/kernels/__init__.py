"""Which implementation runs the CUBA-LIF time loop (``pipeline/neuron.py`` defines it).

=============  ==============================================================================
``eager``      ``neuron.py``'s own loop: a dozen PyTorch ops per time step (any device)
``compiled``   the loop without Python per step: numba on CPU (``cpu.py``, whole loop compiled);
               on CUDA each step fused by ``torch.compile``
``triton``     one Triton kernel for the whole loop, forward and backward (``triton_cuba.py``);
               on CUDA, or on CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``)
=============  ==============================================================================

All three give the same spikes, voltages and states bit for bit, and gradients equal within
float rounding (tests/test_pipeline_kernels.py).  By default CUDA tensors run ``triton`` and CPU
tensors ``compiled``; where that cannot run (numba or triton not installed), ``eager`` runs
silently.  ``SPIKELINE_NEURON=eager|compiled|triton`` forces one: a forced choice that cannot
run raises ``SpikelineError`` saying why.  ``SPIKELINE_FUSED=1`` (older name) means
``compiled``, ``SPIKELINE_FUSED=0`` means ``eager``.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

from spikeline.errors import BadInput, SpikelineError

IMPLS = ("eager", "compiled", "triton")
DEFAULTS = {"cuda": "triton", "cpu": "compiled"}


def requested() -> str | None:
    """The implementation the environment asks for, or None."""
    name = os.environ.get("SPIKELINE_NEURON", "").strip().lower()
    if name:
        if name not in IMPLS:
            raise BadInput(f"SPIKELINE_NEURON={name!r}: expected one of {', '.join(IMPLS)}")
        return name
    fused = os.environ.get("SPIKELINE_FUSED", "").strip()
    if fused in ("", "auto"):
        return None
    if fused not in ("0", "1"):
        raise BadInput(f"SPIKELINE_FUSED={fused!r}: expected 1 (compiled) or 0 (eager)")
    return "compiled" if fused == "1" else "eager"


@functools.cache
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def unavailable(impl: str, device: torch.device) -> str | None:
    """Why ``impl`` cannot run on ``device``, or None when it can."""
    if impl not in IMPLS:
        return f"unknown implementation {impl!r} (expected one of {', '.join(IMPLS)})"
    if impl == "eager":
        return None
    if impl == "compiled":
        if device.type == "cpu":
            return None if _installed("numba") else "numba is not installed (pip install numba)"
        if device.type == "cuda":
            return None if _installed("triton") else "torch.compile on CUDA needs triton"
        return f"there is no compiled path for {device.type} tensors"
    if not _installed("triton"):
        return "triton is not installed (pip install triton)"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        from . import triton_cuba  # optional dependency (triton), installed as checked above

        if triton_cuba.interpreting():
            return None
        return "Triton runs CPU tensors only in its interpreter: set TRITON_INTERPRET=1"
    return f"Triton has no backend for {device.type} tensors here"


def choose(device: torch.device, impl: str | None = None) -> str:
    """The implementation for tensors on ``device``: ``impl`` or the environment's choice (an
    error if it cannot run), else the device's default (``eager`` where that cannot run)."""
    asked = impl or requested()
    if asked is not None:
        why = unavailable(asked, device)
        if why is not None:
            raise SpikelineError(f"neuron implementation {asked!r} cannot run on {device}: {why}")
        return asked
    default = DEFAULTS.get(device.type, "eager")
    return default if unavailable(default, device) is None else "eager"
