"""The whole CUBA-LIF time loop on CPU, compiled by numba (no Python per time step).

The same arithmetic as ``pipeline/neuron.py`` and ``triton_cuba.py``, written as one loop over
blocks of neurons (split across threads) and, inside, over time with the block's states in a
small array, so that each step's inner loop is a vectorizable pass over contiguous memory.
numba compiles both loops at first use (16 s measured on a loaded 2-core machine), then loads
them from its disk cache (``cache=True``; 1.7 s).

Why numba (measured on the 2-core CPU this project is developed on, benchmarks/FIGURES_kernel.md):
1.6x faster than ``torch.compile`` of the step or of the whole loop, no C++ compiler needed (an
extension built with ``torch.utils.cpp_extension`` would need one at first use), and no
unrolling of ``T`` (``torch.compile`` of the whole loop compiles 12-39 s per shape and ``T``).
"""
from __future__ import annotations

import contextlib

import numba
import numpy as np
import torch

from ..cuba import P_SCALE, reset_threshold, spike_threshold

BLOCK = 512  # neurons per task: the states of one block stay in L1


@numba.njit(cache=True, parallel=True)
def _forward(x, bias, spikes, voltage, keep_u, keep_v, s_scale, inv_scale, reset_at,
             theta):  # pragma: no cover - compiled
    """Branch-free (so that the inner loop vectorizes, 3x faster measured): the bias is always
    added (zeros when there is none), both outputs always written, and a non-spiking neuron
    is one whose reset threshold is +inf."""
    T, n = x.shape
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(lo + BLOCK, n)
        u = np.zeros(hi - lo, np.int64)
        v = np.zeros(hi - lo, np.int64)
        b = bias[lo:hi]
        for t in range(T):
            x_t, s_t, v_t = x[t, lo:hi], spikes[t, lo:hi], voltage[t, lo:hi]
            for j in range(hi - lo):
                a = u[j] * keep_u
                u_j = ((a + ((a >> 63) & 4095)) >> 12) + np.int64(x_t[j] * s_scale)
                u[j] = u_j
                a = v[j] * keep_v
                v_j = ((a + ((a >> 63) & 4095)) >> 12) + np.int64(np.float32(u_j)) + b[j]
                v_f = np.float32(v_j)
                volt = v_f * inv_scale
                v_t[j] = volt
                s_t[j] = np.float32(volt >= theta)
                v[j] = 0 if v_f >= reset_at else v_j


@numba.njit(cache=True, parallel=True)
def _backward(grad, voltage, grad_x, grad_bias, keep_u, keep_v, theta, tau_rho,
              amp):  # pragma: no cover - compiled
    """Branch-free as ``_forward``: the non-spiking neuron's adjoint has no surrogate, which is
    ``amp = 1, tau_rho = inf`` (``exp(-0) = 1`` exactly); the bias gradient is always summed."""
    T, n = grad.shape
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(lo + BLOCK, n)
        acc_v = np.zeros(hi - lo, np.float32)
        acc_u = np.zeros(hi - lo, np.float32)
        total = np.zeros(hi - lo, np.float32)
        for t in range(T - 1, -1, -1):
            g_t, v_t, o_t = grad[t, lo:hi], voltage[t, lo:hi], grad_x[t, lo:hi]
            for j in range(hi - lo):
                g = g_t[j] * (amp * np.exp(-np.abs(v_t[j] - theta) / tau_rho))
                av = g + keep_v * acc_v[j]
                acc_v[j] = av
                total[j] += av
                au = av + keep_u * acc_u[j]
                acc_u[j] = au
                o_t[j] = au
        grad_bias[lo:hi] = total


def _flat(t: torch.Tensor) -> np.ndarray:
    """``[T, ...]`` tensor as a ``[T, n]`` numpy view (no copy for contiguous CPU tensors)."""
    return t.detach().reshape(t.shape[0], -1).numpy()


@contextlib.contextmanager
def _threads():
    """Use as many threads as torch does (``torch.set_num_threads``), not all the cores, and
    give torch its setting back: numba's OpenMP pool shares the OpenMP runtime with torch, and
    its first launch resets torch's thread count (measured)."""
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _f32(value: float) -> np.float32:
    return np.float32(value)


def forward(x: torch.Tensor, bias_int: torch.Tensor | None, p, spiking: bool,
            write_spikes: bool = True, write_voltage: bool = True):
    """``(spikes or None, voltage)`` of ``x`` ``[T, ...]`` (float32, contiguous, CPU).

    Both are always computed (see ``_forward``); ``write_*`` only say what the caller needs.
    """
    spikes, voltage = torch.empty_like(x), torch.empty_like(x)
    if x.shape[0] == 0 or x[0].numel() == 0:
        return (spikes if spiking else None), voltage
    if bias_int is None:
        bias = np.zeros(x[0].numel(), np.int64)
    else:
        bias = bias_int.expand(x.shape[1:]).contiguous().reshape(-1).numpy()
    reset_at = reset_threshold(p) if spiking else np.inf
    with _threads():
        _forward(_flat(x), bias, _flat(spikes), _flat(voltage), np.int64(4096 - p.i_decay),
                 np.int64(4096 - p.v_decay), _f32(p.s_scale), _f32(1.0 / p.s_scale),
                 _f32(reset_at), _f32(spike_threshold(p)))
    return (spikes if spiking else None), voltage


def backward(grad: torch.Tensor, voltage: torch.Tensor | None, p, bias_grad: bool):
    """``(grad_x, grad of the bias summed over time or None)``, as ``triton_cuba.backward``."""
    grad = grad.contiguous().to(torch.float32)
    grad_x = torch.empty_like(grad)
    grad_bias = torch.zeros(grad.shape[1:], dtype=torch.float32)
    if grad.shape[0] == 0 or grad[0].numel() == 0:
        return grad_x, (grad_bias if bias_grad else None)
    if voltage is None:  # no surrogate: 1 * exp(-|0 - 0| / inf) = 1 (calloc'd zeros: no copy)
        volt = np.zeros((grad.shape[0], grad[0].numel()), np.float32)
        theta, tau_rho, amp = _f32(0.0), _f32(np.inf), _f32(1.0)
    else:
        volt = _flat(voltage)
        theta, tau_rho, amp = (_f32(p.theta + p.threshold_eps), _f32(p.tau_rho),
                               _f32(p.scale_rho / 2 / p.tau_rho))
    with _threads():
        _backward(_flat(grad), volt, _flat(grad_x), grad_bias.reshape(-1).numpy(),
                  _f32(1.0 - p.i_decay / P_SCALE), _f32(1.0 - p.v_decay / P_SCALE), theta,
                  tau_rho, amp)
    return grad_x, (grad_bias if bias_grad else None)
