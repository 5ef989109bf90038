"""CUBA-LIF dynamics: the one source of truth for training, export and simulation.

Bit-exact with lava-dl 0.6.0 SLAYER (``neuron/cuba.py``, ``neuron/dynamics/leaky_integrator.py``,
``spike/spike.py``) and with Loihi's fixed-point CUBA neuron.  States are integers scaled by
``s_scale = scale * 64 = 4096``; decays are 12-bit integers::

    x_int[t] = trunc(4096 * x[t])                                   (cast toward zero)
    u[t]     = rshift0(u[t-1] * (4096 - iDecay), 12) + x_int[t]
    v[t]     = rshift0(v[t-1] * (4096 - vDecay), 12) + trunc(4096 * u[t]/4096) + bias_int
    s[t]     = v[t]/4096 >= theta + eps,   eps = 0.01 / 4096        (Loihi's strict v > theta)
    v[t]     <- 0 where s[t]                                         (u is never reset)

``rshift0`` rounds toward zero.  ``theta`` is the threshold quantized to the weight grid
(``int(threshold * 64) / 64``), ``iDecay = round(4096 * current_decay)``.  ``bias`` is Loihi's
per-neuron bias, added to the voltage every step (lava-dl SLAYER has none; we use it to fold the
shift of a BatchNorm, see ``blocks.py``).  It must lie on the 1/64 grid to be exact on Loihi.

Every tensor here is time-first, ``[T, ...]``: one step is one contiguous slice.

The loop below (``eager``) is the definition.  Training runs it through ``kernels/``: one
Triton kernel for the whole loop on CUDA (``triton``), the loop compiled by numba on CPU
(``compiled``); both give the same spikes and voltages bit for bit and the same gradients within
float rounding.  ``SPIKELINE_NEURON=eager|compiled|triton`` forces one (``kernels/__init__.py``).

Gradient (lava-dl's): the spike's surrogate is
``dS/dv = scale_rho / (2 tau_rho) * exp(-|v - theta'| / tau_rho)`` with
``tau_rho = 100 * tau_grad * theta`` and ``scale_rho = 0.1 * scale_grad``; both integrators
are differentiated as the linear leaky integrators they are below threshold (reset ignored):
``g_in[t] = g_out[t] + (1 - decay/4096) * g_in[t+1]``.
"""
from __future__ import annotations


import torch

from .cuba import P_SCALE, SCALE_RHO_MULT, TAU_RHO_MULT, CubaParams  # noqa: F401 (re-exported)
from .cuba import decay_int as _decay_int  # noqa: F401 (re-exported)
from .cuba import reset_threshold, spike_threshold  # noqa: F401 (re-exported)
from .kernels import choose

def integrate(x: torch.Tensor, decay: int, s_scale: int, state: torch.Tensor):
    """One leaky-integrator step on int64 states; ``x`` is float32 as lava-dl feeds it.
    (The energy counter rebuilds a node's current with it: ``deploy/energy/counts.py``.)"""
    x_int = (s_scale * x).to(torch.int64)
    return torch.div(state * (P_SCALE - decay), P_SCALE, rounding_mode="trunc") + x_int


def _fixed_point_step(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                      bias_int: torch.Tensor | None, i_decay: int, v_decay: int, s: int,
                      reset_at: float, spiking: bool):
    """The arithmetic of one step: ``(pre-reset voltage, u, v after reset)``.

    A pure function of tensors and scalars, so that ``torch.compile`` can fuse its dozen
    element-wise ops into one kernel (``fused=True``) with the very same results.
    """
    u = integrate(x, i_decay, s, u)
    v = integrate(u / s, v_decay, s, v)  # lava-dl hands the voltage integrator u as float32
    if bias_int is not None:
        v = v + bias_int
    voltage = v / s
    if spiking:
        # lava-dl's reset test compares the int64 state with a float threshold: float32 both
        v = v.masked_fill(v.to(torch.float32) >= reset_at, 0)
    return voltage, u, v


_COMPILED_STEP = None


def _step_function(compiled: bool):
    """The step, or the step fused into one kernel by ``torch.compile`` (the ``compiled`` path
    on CUDA, where a dozen small kernels per step dominate; compiling costs ~20 s)."""
    global _COMPILED_STEP
    if not compiled:
        return _fixed_point_step
    if _COMPILED_STEP is None:
        _COMPILED_STEP = torch.compile(_fixed_point_step, dynamic=True)
    return _COMPILED_STEP


def cuba_step(x: torch.Tensor, p: CubaParams, u: torch.Tensor, v: torch.Tensor,
              bias_int: torch.Tensor | None = None, spiking: bool = True):
    """One time step.  ``u``, ``v``: int64 states (4096-scaled); ``x``: float32 input.

    Returns ``(spike or None, voltage, u, v)``: float32 spike and pre-reset voltage, new states.
    """
    voltage, u, v = _fixed_point_step(x, u, v, bias_int, p.i_decay, p.v_decay, p.s_scale,
                                      reset_threshold(p), spiking)
    if not spiking:
        return None, voltage, u, v
    return (voltage >= p.theta + p.threshold_eps).to(voltage.dtype), voltage, u, v


def bias_to_int(bias: torch.Tensor | None, p: CubaParams) -> torch.Tensor | None:
    """Voltage bias in the 4096-scaled integer units of the states."""
    return None if bias is None else (p.s_scale * bias.detach().to(torch.float32)).to(torch.int64)


def cuba_forward(
    x: torch.Tensor, p: CubaParams, bias: torch.Tensor | None = None, spiking: bool = True,
    impl: str | None = None,
):
    """Run the fixed-point dynamics over ``x`` of shape ``[T, ...]`` (no autograd).

    ``bias`` (optional) broadcasts against one step ``x[t]``.  Returns ``(spikes, voltage)``,
    both float32 ``[T, ...]``; ``voltage`` is the pre-reset value (what the surrogate reads).
    With ``spiking=False`` the neuron never resets and ``spikes`` is None (Affine readout).
    ``impl`` (``eager``, ``compiled``, ``triton``; default: ``kernels.choose``) picks the code
    that runs the loop; all give the same result bit for bit.
    """
    x = x.detach().to(torch.float32)
    return _run_forward(choose(x.device, impl), x, bias_to_int(bias, p), p, spiking)


def _eager_forward(x: torch.Tensor, bias_int: torch.Tensor | None, p: CubaParams,
                   spiking: bool, compiled: bool = False):
    """The definition: the step above, looped over time in Python."""
    u = torch.zeros(x.shape[1:], dtype=torch.int64, device=x.device)
    v = torch.zeros_like(u)
    voltage = torch.empty_like(x)
    step = _step_function(compiled)
    reset_at = reset_threshold(p)
    for t in range(x.shape[0]):
        voltage[t], u, v = step(x[t], u, v, bias_int, p.i_decay, p.v_decay, p.s_scale,
                                reset_at, spiking)
    spikes = (voltage >= p.theta + p.threshold_eps).to(voltage.dtype) if spiking else None
    return spikes, voltage


def _run_forward(impl: str, x: torch.Tensor, bias_int: torch.Tensor | None, p: CubaParams,
                 spiking: bool, write_voltage: bool = True, delayed: bool = False):
    """``(spikes or None, voltage)`` by ``impl``; ``voltage`` may be None when not asked for
    (the kernels then skip writing it).  ``delayed``: spikes ``[T + 1, ...]``, row 0 zero (the
    numba kernel writes them so; the others pay one copy)."""
    if impl == "compiled" and x.device.type == "cpu":
        from .kernels import cpu  # lazy: numba, 0.5 s (measured)

        return cpu.forward(x, bias_int, p, spiking, write_voltage=write_voltage,
                           delayed=delayed)  # any dense layout (channels-last convs: no copy)
    if impl == "triton":
        from .kernels import triton_cuba  # optional dependency (triton); imported when chosen

        spikes, voltage = triton_cuba.forward(x.contiguous(), bias_int, p, spiking,
                                              write_voltage=write_voltage or not spiking)
    else:
        spikes, voltage = _eager_forward(x, bias_int, p, spiking, compiled=impl == "compiled")
    if delayed and spikes is not None:
        spikes = torch.cat([torch.zeros_like(spikes[:1]), spikes])
    return spikes, voltage


def _leaky_backward(grad: torch.Tensor, decay: int) -> torch.Tensor:
    """Adjoint of the linear leaky integrator: ``g[t] += (1 - decay/4096) g[t+1]``."""
    keep = 1.0 - decay / P_SCALE
    out = torch.empty_like(grad)
    acc = torch.zeros_like(grad[0])
    for t in range(grad.shape[0] - 1, -1, -1):
        acc = grad[t] + keep * acc
        out[t] = acc
    return out


def surrogate(voltage: torch.Tensor, p: CubaParams) -> torch.Tensor:
    """lava-dl's spike-function derivative ``dS/dv`` at the pre-reset voltage."""
    theta = torch.tensor(p.theta + p.threshold_eps, dtype=voltage.dtype)
    return p.scale_rho / 2 / p.tau_rho * torch.exp(-torch.abs(voltage - theta) / p.tau_rho)


def _run_backward(impl: str, grad: torch.Tensor, voltage: torch.Tensor | None, p: CubaParams,
                  bias_grad: bool):
    """``(grad_x, grad_v summed over time or None)``: the surrogate at ``voltage`` (spiking
    neurons; None for the non-spiking readout), then the voltage and current adjoints."""
    grad = grad.to(torch.float32)
    if impl == "triton":
        from .kernels import triton_cuba  # optional dependency (triton); imported when chosen

        return triton_cuba.backward(grad, voltage, p, bias_grad)
    if impl == "compiled" and grad.device.type == "cpu":
        from .kernels import cpu  # lazy: numba, 0.5 s (measured)

        return cpu.backward(grad, voltage, p, bias_grad)
    if voltage is not None:
        grad = grad * surrogate(voltage, p)
    grad_v = _leaky_backward(grad, p.v_decay)
    return _leaky_backward(grad_v, p.i_decay), grad_v.sum(0) if bias_grad else None


class _CubaSpike(torch.autograd.Function):
    """Spikes ``[T, ...]``; with ``delayed``, ``[T + 1, ...]``: row 0 zero, row ``t + 1`` the
    spikes of step ``t``, so that both the spikes (``[1:]``) and their one-step delay
    (``[:-1]``) are views of one tensor."""

    @staticmethod
    def forward(ctx, x, bias, p, delayed):
        x = x.detach().to(torch.float32)
        ctx.impl, ctx.delayed = choose(x.device), delayed
        needs_grad = any(ctx.needs_input_grad[:2])
        spikes, voltage = _run_forward(ctx.impl, x, bias_to_int(bias, p), p, True,
                                       write_voltage=needs_grad, delayed=delayed)
        ctx.p = p
        ctx.bias_shape = None if bias is None else bias.shape
        if needs_grad:
            ctx.save_for_backward(voltage)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        (voltage,) = ctx.saved_tensors
        bias_grad = ctx.needs_input_grad[1]  # the bias enters v every step, like u does
        grad = grad_spikes[1:] if ctx.delayed else grad_spikes
        grad_x, grad_v_sum = _run_backward(ctx.impl, grad, voltage, ctx.p, bias_grad)
        grad_bias = _sum_to(grad_v_sum, ctx.bias_shape) if bias_grad else None
        return grad_x, grad_bias, None, None


class _CubaVoltage(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        x = x.detach().to(torch.float32)
        ctx.p, ctx.impl = p, choose(x.device)
        return _run_forward(ctx.impl, x, None, p, False)[1]

    @staticmethod
    def backward(ctx, grad_v):
        return _run_backward(ctx.impl, grad_v, None, ctx.p, False)[0], None


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient back to ``shape`` (leading and size-1 dims summed)."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for dim, size in enumerate(shape):
        if size == 1 and grad.shape[dim] != 1:
            grad = grad.sum(dim, keepdim=True)
    return grad


# A whole-network torch.compile must not trace into the neuron: its kernels (numba, Triton) are
# already fused over the time loop, and dynamo cannot trace numba; the neuron runs as one
# opaque step of the compiled graph.
@torch.compiler.disable
def cuba_spikes(x: torch.Tensor, p: CubaParams, bias: torch.Tensor | None = None):
    """Spikes ``[T, ...]`` of a CUBA-LIF population driven by ``x`` ``[T, ...]``, differentiable
    with lava-dl's surrogate gradient."""
    return _CubaSpike.apply(x, bias, p, False)


@torch.compiler.disable
def cuba_spikes_padded(x: torch.Tensor, p: CubaParams, bias: torch.Tensor | None = None):
    """:func:`cuba_spikes` with a zero step in front, ``[T + 1, ...]``: ``[1:]`` are the
    spikes and ``[:-1]`` the spikes after a one-step delay (:func:`delay_shift`), both views
    (the delay costs no copy; measured 11% of a conv block's forward as ``torch.cat``)."""
    return _CubaSpike.apply(x, bias, p, True)


@torch.compiler.disable
def cuba_voltage(x: torch.Tensor, p: CubaParams) -> torch.Tensor:
    """Voltage ``[T, ...]`` of a non-spiking CUBA population (lava-dl's Affine readout)."""
    return _CubaVoltage.apply(x, p)


def delay_shift(spikes: torch.Tensor) -> torch.Tensor:
    """One-step axonal delay (lava-dl's ``delay_shift=True``): ``out[t] = in[t-1]``, ``out[0] = 0``."""
    return torch.cat([torch.zeros_like(spikes[:1]), spikes[:-1]])
