"""The whole CUBA-LIF time loop as two Triton kernels (forward, backward).

One program owns ``BLOCK`` neurons and walks all ``T`` steps with the states in registers, so
each element of the input is read once and each output written once.  The arithmetic is
``pipeline/neuron.py``'s, operation for operation (see its docstring):

- states are int64 like the eager code (an int32 state would overflow: with ``current_decay=0``
  the current is a plain sum of ``4096 * x``, unbounded in ``T``);
- ``rshift0(a) = (a + ((a >> 63) & 4095)) >> 12`` is the arithmetic shift rounded toward zero
  (``torch.div(a, 4096, rounding_mode="trunc")``);
- the voltage integrator is fed ``int64(float32(u))``, as the eager ``s * (u / s)`` is;
- the reset compares ``float32(v)`` with the float32 threshold, as lava-dl does.

The backward kernel reads the pre-reset voltage the forward kernel saved and runs both leaky
adjoints in reverse time (``g_in[t] = g_out[t] + keep * g_in[t+1]``) with lava-dl's surrogate in
front; float32 like the eager code, so gradients agree within rounding (``exp`` and a fused
multiply-add may differ in the last bit on a GPU).

The kernels are decorated with ``triton.jit`` at first use and again whenever
``TRITON_INTERPRET`` changes, so that the interpreter (``TRITON_INTERPRET=1``, which runs them on
CPU tensors with numpy) can be switched on by a test without re-importing this module.  They therefore call only
Triton's builtins (``tl.full``, not ``tl.zeros``): the helpers of ``triton.language.standard`` are
decorated once, at import, in whichever mode was on then.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import triton
import triton.language as tl

from ..cuba import P_SCALE, reset_threshold, spike_threshold

BLOCK = 1024
NUM_WARPS = 8  # H100 sweep (FIGURES_kernel.md): 1024 x 8 warps was fastest both ways


def _cuba_fwd(x_ptr, bias_ptr, spike_ptr, volt_ptr, N, T,
              keep_u, keep_v, s_scale, reset_at, theta,
              HAS_BIAS: tl.constexpr, SPIKING: tl.constexpr, WRITE_SPIKES: tl.constexpr,
              WRITE_VOLT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    u = tl.full([BLOCK], 0, tl.int64)
    v = tl.full([BLOCK], 0, tl.int64)
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs, mask=mask, other=0)
    x_p = x_ptr + offs
    s_p = spike_ptr + offs
    v_p = volt_ptr + offs
    for _ in range(T):
        x = tl.load(x_p, mask=mask, other=0.0)
        x_int = (x * s_scale).to(tl.int64)  # float32 product, cast toward zero
        a = u * keep_u
        u = ((a + ((a >> 63) & 4095)) >> 12) + x_int
        v_in = u.to(tl.float32).to(tl.int64)
        a = v * keep_v
        v = ((a + ((a >> 63) & 4095)) >> 12) + v_in
        if HAS_BIAS:
            v = v + b
        v_f = v.to(tl.float32)
        voltage = v_f / s_scale
        if WRITE_VOLT:
            tl.store(v_p, voltage, mask=mask)
        if SPIKING:
            if WRITE_SPIKES:
                tl.store(s_p, (voltage >= theta).to(tl.float32), mask=mask)
            v = tl.where(v_f >= reset_at, 0, v)
        x_p += N
        s_p += N
        v_p += N


def _cuba_bwd(g_ptr, volt_ptr, gx_ptr, gbias_ptr, N, T, last,
              keep_u, keep_v, theta, tau_rho, amp,
              SURROGATE: tl.constexpr, BIAS_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc_v = tl.full([BLOCK], 0.0, tl.float32)
    acc_u = tl.full([BLOCK], 0.0, tl.float32)
    total = tl.full([BLOCK], 0.0, tl.float32)
    g_p = g_ptr + last + offs
    v_p = volt_ptr + last + offs
    o_p = gx_ptr + last + offs
    for _ in range(T):
        g = tl.load(g_p, mask=mask, other=0.0)
        if SURROGATE:
            voltage = tl.load(v_p, mask=mask, other=0.0)
            g = g * (amp * tl.exp(-tl.abs(voltage - theta) / tau_rho))
        acc_v = g + keep_v * acc_v
        if BIAS_GRAD:
            total += acc_v
        acc_u = acc_v + keep_u * acc_u
        tl.store(o_p, acc_u, mask=mask)
        g_p -= N
        v_p -= N
        o_p -= N
    if BIAS_GRAD:
        tl.store(gbias_ptr + offs, total, mask=mask)


_JITTED: dict = {}


def _kernel(fn):
    interpret = interpreting()
    key = (fn.__name__, interpret)
    if key not in _JITTED:
        _JITTED[key] = triton.jit(fn)
    return _JITTED[key]


def interpreting() -> bool:
    """Whether kernels run in Triton's interpreter (``TRITON_INTERPRET=1``), i.e. on CPU."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; the variable itself before
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")


def _f32(value: float) -> float:
    """``value`` rounded to float32, as Triton receives Python floats."""
    return float(np.float32(value))


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


def forward(x: torch.Tensor, bias_int: torch.Tensor | None, p, spiking: bool,
            write_spikes: bool = True, write_voltage: bool = True):
    """``(spikes or None, voltage or None)`` of ``x`` ``[T, ...]`` (float32, contiguous).

    ``bias_int`` is the 4096-scaled integer bias, broadcast to one step's shape.
    """
    T = x.shape[0]
    n = x[0].numel() if T else 0
    spikes = torch.empty_like(x) if spiking and write_spikes else None
    voltage = torch.empty_like(x) if write_voltage else None
    if T == 0 or n == 0:
        return spikes, voltage
    bias = None
    if bias_int is not None:
        bias = bias_int.expand(x.shape[1:]).contiguous()
    dummy = x
    _kernel(_cuba_fwd)[_grid(n)](
        x, dummy if bias is None else bias,
        dummy if spikes is None else spikes, dummy if voltage is None else voltage, n, T,
        4096 - p.i_decay, 4096 - p.v_decay, float(p.s_scale), reset_threshold(p),
        spike_threshold(p), HAS_BIAS=bias is not None, SPIKING=spiking,
        WRITE_SPIKES=spikes is not None, WRITE_VOLT=voltage is not None, BLOCK=BLOCK,
        num_warps=NUM_WARPS)
    return spikes, voltage


def backward(grad: torch.Tensor, voltage: torch.Tensor | None, p, bias_grad: bool):
    """``(grad_x, grad of the bias summed over time or None)``: both leaky adjoints, with the
    surrogate at ``voltage`` in front when it is given (spiking neurons)."""
    grad = grad.contiguous().to(torch.float32)
    T = grad.shape[0]
    n = grad[0].numel() if T else 0
    grad_x = torch.empty_like(grad)
    grad_bias = torch.zeros(grad.shape[1:], dtype=torch.float32, device=grad.device) \
        if bias_grad else None
    if T == 0 or n == 0:
        return grad_x, grad_bias
    f32 = _f32
    theta = f32(p.theta + p.threshold_eps)
    _kernel(_cuba_bwd)[_grid(n)](
        grad, grad if voltage is None else voltage, grad_x,
        grad_x if grad_bias is None else grad_bias, n, T, (T - 1) * n,
        f32(1.0 - p.i_decay / P_SCALE), f32(1.0 - p.v_decay / P_SCALE), theta,
        f32(p.tau_rho), f32(p.scale_rho / 2 / p.tau_rho),
        SURROGATE=voltage is not None, BIAS_GRAD=grad_bias is not None, BLOCK=BLOCK,
        num_warps=NUM_WARPS)
    return grad_x, grad_bias
