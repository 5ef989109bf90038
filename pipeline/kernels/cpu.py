"""The whole CUBA-LIF time loop on CPU, compiled by numba (no Python per time step).

The same arithmetic as ``pipeline/neuron.py`` and ``triton_cuba.py``, written as one loop over
blocks of neurons (split across threads) and, inside, over time with the block's states in a
small array, so that each step's inner loop is a vectorizable pass over contiguous memory.
numba compiles it at first use (about 2 s, cached on disk afterwards, ``cache=True``).

Why numba: measured on the 2-core CPU this project is developed on (benchmarks/FIGURES_kernel.md),
it removes the per-step overhead as well as a C++ extension would without a compiler at install
time, and unlike ``torch.compile`` of the whole loop it does not unroll ``T`` (which costs
minutes of compile for ``T = 100``).
"""
from __future__ import annotations

import numba
import numpy as np
import torch

BLOCK = 256  # neurons per task: the states of one block stay in L1


@numba.njit(cache=True, parallel=True, fastmath=False)
def _forward(x, bias, spikes, voltage, keep_u, keep_v, s_scale, inv_scale, reset_at, theta,
             has_bias, spiking, write_spikes, write_voltage):  # pragma: no cover - compiled
    T, n = x.shape
    blocks = (n + BLOCK - 1) // BLOCK
    for blk in numba.prange(blocks):
        lo = blk * BLOCK
        hi = min(lo + BLOCK, n)
        width = hi - lo
        u = np.zeros(width, np.int64)
        v = np.zeros(width, np.int64)
        for t in range(T):
            for j in range(width):
                x_int = np.int64(x[t, lo + j] * s_scale)
                a = u[j] * keep_u
                uj = ((a + ((a >> 63) & 4095)) >> 12) + x_int
                u[j] = uj
                a = v[j] * keep_v
                vj = ((a + ((a >> 63) & 4095)) >> 12) + np.int64(np.float32(uj))
                if has_bias:
                    vj += bias[lo + j]
                v_f = np.float32(vj)
                volt = v_f * inv_scale
                if write_voltage:
                    voltage[t, lo + j] = volt
                if spiking:
                    if write_spikes:
                        spikes[t, lo + j] = np.float32(1.0) if volt >= theta else np.float32(0.0)
                    if v_f >= reset_at:
                        vj = 0
                v[j] = vj


@numba.njit(cache=True, parallel=True, fastmath=False)
def _backward(grad, voltage, grad_x, grad_bias, keep_u, keep_v, theta, tau_rho, amp,
              surrogate, bias_grad):  # pragma: no cover - compiled
    T, n = grad.shape
    blocks = (n + BLOCK - 1) // BLOCK
    for blk in numba.prange(blocks):
        lo = blk * BLOCK
        hi = min(lo + BLOCK, n)
        width = hi - lo
        acc_v = np.zeros(width, np.float32)
        acc_u = np.zeros(width, np.float32)
        total = np.zeros(width, np.float32)
        for t in range(T - 1, -1, -1):
            for j in range(width):
                g = grad[t, lo + j]
                if surrogate:
                    g = g * (amp * np.exp(-np.abs(voltage[t, lo + j] - theta) / tau_rho))
                av = g + keep_v * acc_v[j]
                acc_v[j] = av
                if bias_grad:
                    total[j] += av
                au = av + keep_u * acc_u[j]
                acc_u[j] = au
                grad_x[t, lo + j] = au
        if bias_grad:
            for j in range(width):
                grad_bias[lo + j] = total[j]


def _flat(t: torch.Tensor) -> np.ndarray:
    """``[T, ...]`` tensor as a ``[T, n]`` numpy view (no copy for contiguous CPU tensors)."""
    return t.reshape(t.shape[0], -1).numpy()


def _f32(value: float) -> np.float32:
    return np.float32(value)


def forward(x: torch.Tensor, bias_int: torch.Tensor | None, p, spiking: bool,
            write_spikes: bool = True, write_voltage: bool = True):
    """``(spikes or None, voltage or None)`` of ``x`` ``[T, ...]`` (float32, contiguous, CPU)."""
    from ..neuron import reset_threshold, spike_threshold

    spikes = torch.empty_like(x) if spiking and write_spikes else None
    voltage = torch.empty_like(x) if write_voltage else None
    if x.shape[0] == 0 or x[0].numel() == 0:
        return spikes, voltage
    empty2 = np.zeros((1, 1), np.float32)
    bias = np.zeros(1, np.int64)
    if bias_int is not None:
        bias = bias_int.expand(x.shape[1:]).contiguous().reshape(-1).numpy()
    _forward(_flat(x), bias, empty2 if spikes is None else _flat(spikes),
             empty2 if voltage is None else _flat(voltage),
             np.int64(4096 - p.i_decay), np.int64(4096 - p.v_decay), _f32(p.s_scale),
             _f32(1.0 / p.s_scale), _f32(reset_threshold(p)), _f32(spike_threshold(p)),
             bias_int is not None, spiking, spikes is not None, voltage is not None)
    return spikes, voltage


def backward(grad: torch.Tensor, voltage: torch.Tensor | None, p, bias_grad: bool):
    """``(grad_x, grad of the bias summed over time or None)``, as ``triton_cuba.backward``."""
    from ..neuron import P_SCALE

    grad = grad.contiguous().to(torch.float32)
    grad_x = torch.empty_like(grad)
    grad_bias = torch.zeros(grad.shape[1:], dtype=torch.float32) if bias_grad else None
    if grad.shape[0] == 0 or grad[0].numel() == 0:
        return grad_x, grad_bias
    empty2 = np.zeros((1, 1), np.float32)
    _backward(_flat(grad), empty2 if voltage is None else _flat(voltage), _flat(grad_x),
              np.zeros(1, np.float32) if grad_bias is None else grad_bias.reshape(-1).numpy(),
              _f32(1.0 - p.i_decay / P_SCALE), _f32(1.0 - p.v_decay / P_SCALE),
              _f32(p.theta + p.threshold_eps), _f32(p.tau_rho), _f32(p.scale_rho / 2 / p.tau_rho),
              voltage is not None, bias_grad)
    return grad_x, grad_bias
