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
    is one whose reset threshold is +inf.  A ``voltage`` of one row is a scratch row that
    every step overwrites (the caller does not need the voltage: it stays in L1 instead of
    streaming ``T`` rows to memory)."""
    T, n = x.shape
    every_step = voltage.shape[0] == T
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        lo = blk * BLOCK
        hi = min(lo + BLOCK, n)
        u = np.zeros(hi - lo, np.int64)
        v = np.zeros(hi - lo, np.int64)
        b = bias[lo:hi]
        for t in range(T):
            x_t, s_t = x[t, lo:hi], spikes[t, lo:hi]
            v_t = voltage[t if every_step else 0, lo:hi]
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


def memory_order(t: torch.Tensor) -> list[int]:
    """A permutation of ``t``'s dimensions, time first, under which ``t`` is contiguous: the
    neuron is elementwise over ``[T, n]``, so a channels-last tensor (what oneDNN's
    convolutions are fastest on) runs in its own memory order with no copy.  Identity when
    ``t`` is contiguous or not dense (the caller then copies)."""
    identity = list(range(t.dim()))
    order = [0, *sorted(range(1, t.dim()), key=lambda d: (-t.stride(d), d))]
    if order == identity or not t.permute(order).is_contiguous():
        return identity
    return order


def _inverse(order: list[int]) -> list[int]:
    return sorted(range(len(order)), key=order.__getitem__)


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
            write_spikes: bool = True, write_voltage: bool = True, delayed: bool = False):
    """``(spikes or None, voltage or None)`` of ``x`` ``[T, ...]`` (float32, CPU, any dense
    layout: the outputs have ``x``'s, see :func:`memory_order`).

    ``write_spikes`` is accepted for the signature of ``triton_cuba.forward``; here a spiking
    neuron always writes its spikes.  ``write_voltage=False`` (a spiking neuron whose voltage
    nobody reads): the voltage goes to
    a scratch row and None is returned.  ``delayed``: the spikes come back as ``[T + 1, ...]``
    with row 0 zero and row ``t + 1`` the spikes of step ``t``, so that the one-step delay
    (``out[:-1]``) and the spikes themselves (``out[1:]``) are both views, with no copy.
    """
    order = memory_order(x)
    xp = x.permute(order).contiguous()  # a view unless x was not dense
    back = _inverse(order)
    steps = xp.shape[0]
    spikes = torch.empty((steps + delayed, *xp.shape[1:]), dtype=xp.dtype)
    if delayed:
        spikes[0] = 0
    keep_voltage = write_voltage or not spiking
    voltage = torch.empty_like(xp) if keep_voltage else torch.empty_like(xp[:1])
    if steps and xp[0].numel():
        if bias_int is None:
            bias = np.zeros(xp[0].numel(), np.int64)
        else:  # broadcast against one step of x, then in x's memory order
            bias = bias_int.expand(x.shape[1:]).permute([d - 1 for d in order[1:]]) \
                .contiguous().reshape(-1).numpy()
        reset_at = reset_threshold(p) if spiking else np.inf
        with _threads():
            _forward(_flat(xp), bias, _flat(spikes[int(delayed):]), _flat(voltage),
                     np.int64(4096 - p.i_decay), np.int64(4096 - p.v_decay), _f32(p.s_scale),
                     _f32(1.0 / p.s_scale), _f32(reset_at), _f32(spike_threshold(p)))
    return (spikes.permute(back) if spiking else None), \
        (voltage.permute(back) if keep_voltage else None)


def backward(grad: torch.Tensor, voltage: torch.Tensor | None, p, bias_grad: bool):
    """``(grad_x, grad of the bias summed over time or None)``, as ``triton_cuba.backward``;
    in the voltage's memory order (the forward's), which ``grad`` is copied to if it differs."""
    order = memory_order(grad if voltage is None else voltage)
    back = _inverse(order)
    grad = grad.to(torch.float32).permute(order).contiguous()
    grad_x = torch.empty_like(grad)
    grad_bias = torch.zeros(grad.shape[1:], dtype=torch.float32)
    if grad.shape[0] and grad[0].numel():
        _backward_kernel(grad, voltage, order, grad_x, grad_bias, p)
    return grad_x.permute(back), \
        (grad_bias.permute([d - 1 for d in back[1:]]) if bias_grad else None)


def _backward_kernel(grad, voltage, order, grad_x, grad_bias, p):
    if voltage is None:  # no surrogate: 1 * exp(-|0 - 0| / inf) = 1 (calloc'd zeros: no copy)
        volt = np.zeros((grad.shape[0], grad[0].numel()), np.float32)
        theta, tau_rho, amp = _f32(0.0), _f32(np.inf), _f32(1.0)
    else:
        volt = _flat(voltage.permute(order).contiguous())
        theta, tau_rho, amp = (_f32(p.theta + p.threshold_eps), _f32(p.tau_rho),
                               _f32(p.scale_rho / 2 / p.tau_rho))
    with _threads():
        _backward(_flat(grad), volt, _flat(grad_x), grad_bias.reshape(-1).numpy(),
                  _f32(1.0 - p.i_decay / P_SCALE), _f32(1.0 - p.v_decay / P_SCALE), theta,
                  tau_rho, amp)


@numba.njit(cache=True, parallel=True)
def _to_u8(x, out, top, bad):  # pragma: no cover - compiled
    """One pass: ``out = uint8(x)``; per block, the largest value and whether any value is not
    an integer in [0, 255] (the float -> uint8 -> float round trip must give ``x`` back)."""
    n = x.shape[0]
    for blk in numba.prange((n + CAST_BLOCK - 1) // CAST_BLOCK):
        lo = blk * CAST_BLOCK
        hi = min(lo + CAST_BLOCK, n)
        m = np.uint8(0)
        wrong = False
        for i in range(lo, hi):
            v = x[i]
            inside = v >= 0 and v <= 255
            u = np.uint8(v) if inside else np.uint8(0)
            wrong |= not inside or np.float32(u) != v
            m = max(m, u)
            out[i] = u
        top[blk] = m
        bad[blk] = wrong


CAST_BLOCK = 1 << 16


def to_uint8_checked(x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """``(uint8 copy of x, its max)`` if every value of the float32 CPU tensor ``x`` is an
    integer in [0, 255], else None: the cast, the round-trip check and the max in one parallel
    pass (the torch ops take four: 15 ms against 2 on a 3200x1024 spike batch, measured)."""
    flat = x.detach().contiguous().reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.uint8)
    blocks = max(1, (flat.numel() + CAST_BLOCK - 1) // CAST_BLOCK)
    top, bad = np.zeros(blocks, np.uint8), np.zeros(blocks, np.bool_)
    if flat.numel():
        with _threads():
            _to_u8(flat.numpy(), out.numpy(), top, bad)
    if bad.any():
        return None
    return out.reshape(x.shape), int(top.max())
