"""The NIR <-> CUBA neuron-parameter mapping, shared by the exporter and the simulator.

CUBA-LIF with 12-bit decays ``iDecay``, ``vDecay`` and threshold ``theta`` is written as NIR
CubaLIF (SpikingJelly 2.0, snnTorch 1.0 and Norse 1.1 import it exactly)::

    dt = 1e-4, tau_syn = dt * 4096 / iDecay, tau_mem = dt * 4096 / vDecay,
    w_in = tau_syn / dt, r = tau_mem / dt, v_threshold = theta, v_reset = 0,
    v_leak = bias * 4096 / vDecay        (Loihi's voltage bias; 0 where there is none)

so that forward Euler gives ``I[t] = (1 - iDecay/4096) I[t-1] + x[t]`` and
``v[t] = (1 - vDecay/4096) v[t-1] + I[t] + bias``.  A non-spiking readout is a CubaLI.
"""
from __future__ import annotations

import nir
import numpy as np

from spikeline.errors import SpikelineError
from spikeline.pipeline.neuron import P_SCALE, CubaParams

from .nir_check import DT

__all__ = ["cuba_to_nir", "nir_to_cuba"]


def cuba_to_nir(p: CubaParams, shape: tuple[int, ...], bias: np.ndarray | None,
                spiking: bool = True) -> nir.NIRNode:
    """NIR CubaLIF (or CubaLI when not spiking) for a population of ``shape``."""
    if p.i_decay == 0 or p.v_decay == 0:
        raise SpikelineError(
            "NIR export: a CUBA decay of 0 (no leak) has no time constant in NIR's CubaLIF; "
            f"got iDecay={p.i_decay}, vDecay={p.v_decay}")
    full = lambda value: np.full(shape, value, dtype=np.float64)  # noqa: E731
    tau_syn, tau_mem = DT * P_SCALE / p.i_decay, DT * P_SCALE / p.v_decay
    v_leak = full(0.0)
    if bias is not None:
        v_leak = v_leak + np.asarray(bias, dtype=np.float64).reshape(
            (-1,) + (1,) * (len(shape) - 1)) * P_SCALE / p.v_decay
    common = dict(tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(tau_mem / DT),
                  v_leak=v_leak, w_in=full(tau_syn / DT))
    if not spiking:
        return nir.CubaLI(**common)
    return nir.CubaLIF(**common, v_threshold=full(p.theta), v_reset=full(0.0))


def nir_to_cuba(node: nir.NIRNode, dt: float) -> tuple[CubaParams, np.ndarray | None] | None:
    """Inverse of ``cuba_to_nir``: the fixed-point neuron a CubaLIF/CubaLI node stands for, or
    None when its parameters are not of that form (then it is simulated in float)."""
    if not isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        return None
    tau_syn, tau_mem = np.asarray(node.tau_syn), np.asarray(node.tau_mem)
    i_decay, v_decay = P_SCALE * dt / tau_syn, P_SCALE * dt / tau_mem
    spiking = isinstance(node, nir.CubaLIF)
    uniform = [tau_syn, tau_mem, np.asarray(node.r), np.asarray(node.w_in)]
    if spiking:
        uniform += [np.asarray(node.v_threshold), np.asarray(node.v_reset)]
    if any(np.ptp(a) > 0 for a in uniform if a.size) or not (
        np.allclose(i_decay, np.round(i_decay), atol=1e-6)
        and np.allclose(v_decay, np.round(v_decay), atol=1e-6)
        and np.allclose(node.w_in, tau_syn / dt) and np.allclose(node.r, tau_mem / dt)
        and (not spiking or np.all(np.asarray(node.v_reset) == 0))
    ):
        return None
    iv, vv = int(np.round(i_decay.flat[0])), int(np.round(v_decay.flat[0]))
    theta = float(np.asarray(node.v_threshold).flat[0]) if spiking else 1.0
    p = CubaParams(threshold=theta, current_decay=iv / P_SCALE, voltage_decay=vv / P_SCALE,
                   tau_grad=1.0)
    if p.i_decay != iv or p.v_decay != vv or (spiking and p.theta != theta):
        return None
    v_leak = np.asarray(node.v_leak, dtype=np.float64)
    bias = None if not np.any(v_leak) else v_leak * vv / P_SCALE
    return p, bias
