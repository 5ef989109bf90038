"""Integer synapses: binary (or small integer) spikes times 8-bit weights, in integer arithmetic.

The synapse computes ``z = x W`` (or a convolution) with

* ``x`` a float tensor whose values are integers in ``[0, 127]`` (spikes are 0/1; event
  counts are small integers),
* ``W`` on a power-of-two grid: ``W = k / s`` with ``k`` an integer in ``[-128, 127]`` and
  ``s = 2**j`` (Loihi's 8-bit grid ``k * 2/64`` is ``s = 32``, ``quantize.quantize_weight``).

Then ``z = (x k) / s`` where ``x k`` is an integer sum.  In float32 every product ``x_i w_i``
is exact, and every partial sum is a multiple of ``1/s``; while ``|x| sum_i |k_i| <= 2**24``
(float32's 24-bit significand) each partial sum is exactly representable, so the float path
is exact whatever order it sums in.  The integer path computes the same sum in int32 (u8 x s8
products, int32 accumulation) and multiplies by ``1/s`` once: ``float32(acc) * 2**-j`` is exact
for ``|acc| <= 2**24``.  Under these conditions both paths give the *same* float32 ``z``, bit
for bit, hence the same spikes and voltages downstream.  The conditions are checked per call
(inputs) and per weight (grid, range, the 24-bit bound ``max(x) * max_o sum_i |k_oi|``);
whatever fails them runs the float path (``last_reason()`` says why).

The 7-bit input range (``x <= 127``, not 255): oneDNN's int8 kernels on CPUs without VNNI
(AVX2 only, as here) multiply u8 by s8 into *saturating* int16 pairs (``vpmaddubsw``);
``2 * 127 * 128 = 32512`` cannot saturate.

Kernels (measured in ``benchmarks/bench_synapse.py``; figures in docs/benchmarks.md).  The
int8 kernels run at full rate only with 8-bit dot-product instructions (VNNI); on a CPU without
them (AVX2 only, like the 2-core AMD EPYC this was written on) they gain little over MKL's fp32,
and ``auto`` stays float there (``cpu_has_vnni``, ``pays``).

* CPU, dense: oneDNN ``qlinear_pointwise`` (u8 input, s8 weights, per-channel scale ``1/s``,
  float32 output).  ``torch._int_mm`` is exact too but without VNNI (this machine) torch runs
  it through a reference loop, 15x slower than the fp32 matmul.
* CPU, conv (any stride, padding, dilation, groups): oneDNN ``qconv2d_pointwise`` with float32
  output on channels-last u8 input (``REFERENCE.md`` §18).
* CUDA, dense: ``torch._int_mm`` (int8 tensor cores), padded to its shape constraints (rows
  > 16, inner and output sizes multiples of 8); ``int_mm_padded`` is that code, tested on CPU
  tensors.  CUDA convolutions stay float (torch ships no exact int8 conv on CUDA).

Modes: ``float`` never uses integers; ``int`` uses them wherever exact; ``auto`` (default) where
exact *and* measured to pay (``pays``: large enough products, not a depthwise/pooling conv).
Never under autocast (the float path rounds to bf16/fp16 there, and is what is reproduced) or
inside ``torch.compile``.  ``SPIKELINE_SYNAPSE=auto|int|float`` or ``with synapse_path("int")``
forces one.  Backward is always float: ``torch.ops.aten.convolution_backward`` and ``mm``, the
calls autograd makes for ``F.conv2d``/``F.linear``, so gradients equal the float path's.
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spikeline.errors import BadInput

from ..geometry import conv_output_size, pair

__all__ = ["MODES", "IntWeight", "conv2d", "counts", "int_mm_padded", "last_reason", "linear",
           "cpu_has_vnni", "mode", "pays", "prepare_weight", "reset_counts", "synapse_path", "total_counts"]

MODES = ("auto", "int", "float")
ENV = "SPIKELINE_SYNAPSE"
MAX_INPUT = 127       # 7-bit inputs: no int16 saturation in non-VNNI u8 x s8 kernels
MANTISSA = 1 << 24    # float32 represents every integer up to 2**24 exactly
MAX_SHIFT = 12        # grids 1, 1/2, ..., 1/4096 are searched when no grid is given
LOIHI_SHIFT = 5       # 2/64 = 2**-5: quantize_weight's grid, tried first
# auto: integer only for products of at least this many multiply-accumulates (bench_synapse's
# crossover rows; below, conversions and weight packing cost more than they save).  Measured on
# an AVX2 CPU without VNNI (where auto stays float anyway, see ``pays``), 1 thread: 3x3 convs
# from ~1e8 MACs gain 1.1-1.9x, a 1x1 conv of 4e7 loses (0.5x), dense layers lose up to ~1e8
# (0.04-0.8x) and gain 1.2-1.6x from 5e8.  On CUDA the threshold is a guess, not a measurement
# (no GPU was lent to this work): gpu_check.sh's int_synapse step measures it.
MIN_MACS = {("cpu", "conv"): 1 << 27, ("cpu", "dense"): 1 << 31, ("cuda", "dense"): 1 << 27}

_forced: list[str] = []
_counts: Counter = Counter()
_total: Counter = Counter()  # since import, never reset (a test session's summary)
_last = {"path": None, "reason": None}


def mode() -> str:
    """The active mode: ``synapse_path``'s, else ``$SPIKELINE_SYNAPSE``, else ``auto``."""
    if _forced:
        return _forced[-1]
    name = os.environ.get(ENV, "").strip().lower() or "auto"
    if name not in MODES:
        raise BadInput(f"{ENV}={name!r}: expected one of {', '.join(MODES)}")
    return name


@contextlib.contextmanager
def synapse_path(name: str):
    """Force ``auto``, ``int`` or ``float`` synapses inside the block."""
    if name not in MODES:
        raise BadInput(f"synapse path {name!r}: expected one of {', '.join(MODES)}")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def counts() -> dict[str, int]:
    """How many synapse calls ran each path since ``reset_counts`` (``int``, ``float``)."""
    return dict(_counts)


def total_counts() -> dict[str, int]:
    """Like ``counts`` since the module was imported (``reset_counts`` leaves it)."""
    return dict(_total)


def reset_counts() -> None:
    _counts.clear()


def last_reason() -> str | None:
    """Why the last call ran float (None when it ran integer)."""
    return _last["reason"]


def _record(path: str, reason: str | None = None) -> None:
    _counts[path] += 1
    _total[path] += 1
    _last["path"], _last["reason"] = path, reason


# --- weights ---------------------------------------------------------------------------------

@dataclass
class IntWeight:
    """``w = k / s``: int8 ``k`` (same shape as ``w``), ``s = 2**shift``, and the largest
    ``sum_i |k_oi|`` over output channels (for the 24-bit bound)."""

    k: torch.Tensor
    shift: int
    abs_sum: int
    _packed: dict | None = None

    @property
    def inv_scale(self) -> float:
        return 2.0 ** -self.shift

    def packed(self, key, make):
        if self._packed is None:
            self._packed = {}
        if key not in self._packed:
            self._packed[key] = make()
        return self._packed[key]


def prepare_weight(w: torch.Tensor, grid_shift: int | None = None) -> IntWeight | str:
    """``IntWeight`` of float ``w``, or the reason it is not on an 8-bit power-of-two grid.

    ``grid_shift``: try only ``s = 2**grid_shift`` (a block knows its grid).  Else Loihi's
    ``s = 32`` first, then the smallest ``s`` in ``1 .. 2**MAX_SHIFT`` that makes every
    ``w * s`` an integer (those ``s`` are all multiples of the smallest: bisection)."""
    if w.dtype != torch.float32:
        return f"weights are {w.dtype}, not float32"
    w = w.detach()

    def on_grid(shift):
        scaled = w * float(2 ** shift)
        k = scaled.round()
        return k if torch.equal(k, scaled) else None

    def in_range(k):
        low, high = torch.aminmax(k)
        return low >= -128 and high <= 127

    shift = LOIHI_SHIFT if grid_shift is None else grid_shift
    k = on_grid(shift)
    if grid_shift is None and (k is None or not in_range(k)):
        # the smallest grid the weights lie on gives the smallest integers
        shift, k = None, None
        if on_grid(MAX_SHIFT) is not None:
            lo, shift = -1, MAX_SHIFT
            while shift - lo > 1:
                mid = (lo + shift) // 2
                lo, shift = (lo, mid) if on_grid(mid) is not None else (mid, shift)
            k = on_grid(shift)
    if k is None:
        return "weights are not on an 8-bit power-of-two grid"
    if not in_range(k):
        return f"weights x 2**{shift} exceed the 8-bit range [-128, 127]"
    abs_sum = int(k.abs().flatten(1).sum(1).max()) if k.dim() > 1 else int(k.abs().sum())
    return IntWeight(k.to(torch.int8), shift, abs_sum)


def _input_u8(x: torch.Tensor, memory_format=torch.contiguous_format,
              known_max: int | None = None):
    """``(x as uint8, max)`` when every value is an integer in ``[0, MAX_INPUT]``, else a reason.

    The round trip ``float -> uint8 -> float`` reproduces ``x`` exactly only for such values
    (a fraction, a negative, NaN or anything above 255 changes), whatever the cast does with
    them.  ``known_max``: the caller knows ``x`` holds integers in ``[0, known_max]`` by how it
    was made (the simulator: sums of fixed-point neurons' 0/1 spikes); the check is skipped."""
    if x.dtype != torch.float32:
        return f"input is {x.dtype}, not float32"
    xi = x.to(torch.uint8)
    if known_max is not None and known_max <= MAX_INPUT:
        return xi.contiguous(memory_format=memory_format), known_max
    if not torch.equal(xi.to(torch.float32), x):
        return "input is not integer-valued in [0, 255]"
    top = int(xi.max()) if xi.numel() else 0
    if top > MAX_INPUT:
        return f"input reaches {top} > {MAX_INPUT} (7-bit limit of int8 kernels)"
    if memory_format is not torch.contiguous_format:
        xi = xi.contiguous(memory_format=memory_format)
    return xi, top


def _common_checks(x, w, bias, macs: int, conv_kind: str | None):
    """``(mode, reason)``: reason is None when integers may run."""
    m = mode()
    if m == "float":
        return m, "forced float"
    if torch.compiler.is_compiling():
        return m, "inside torch.compile (data-dependent checks would break the graph)"
    if torch.is_autocast_enabled(x.device.type):
        return m, "autocast is on: the float path rounds to its dtype"
    if bias is not None and bool((bias != 0).any()):
        return m, "nonzero bias"
    if x.device.type == "cuda" and conv_kind is not None:
        return m, "no exact int8 convolution on CUDA in torch"
    if x.device.type not in ("cpu", "cuda"):
        return m, f"no integer kernel for {x.device.type}"
    if m == "auto":
        return m, pays(x.device.type, conv_kind, macs)
    return m, None


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether the CPU has 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX), with
    which oneDNN's int8 kernels (and ``torch._int_mm`` on CPU) run at their full rate."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def pays(device: str, conv_kind: str | None, macs: int) -> str | None:
    """None where ``auto`` runs integers (measured to be faster), else why not."""
    if device == "cpu" and not cpu_has_vnni():
        return ("no VNNI on this CPU: int8 gains 1.1-1.9x per conv with 1 thread and loses "
                "with 2 under load (bench_synapse), so it does not pay here")
    if conv_kind == "depthwise":
        return "depthwise/pooling conv: integer does not pay (bench_synapse: 0.7-0.9x)"
    least = MIN_MACS.get((device, "dense" if conv_kind is None else "conv"))
    if least is None or macs < least:
        return f"{macs} multiply-accumulates < {least}: integer does not pay here"
    return None


# --- the CUDA dense kernel (also runs on CPU tensors, for tests) ----------------------------

def int_mm_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for int8 ``a [M, K]`` and ``b [K, N]`` by ``torch._int_mm``, int32 out.

    CUDA's ``_int_mm`` needs ``M > 16`` and ``K``, ``N`` multiples of 8: zero rows and columns
    are padded on and cut off again (zeros add nothing to the sums)."""
    m, k = a.shape
    n = b.shape[1]
    pm, pk, pn = max(17 - m, 0), -k % 8, -n % 8
    if pm or pk:
        a = F.pad(a, (0, pk, 0, pm))
    if pk or pn:
        b = F.pad(b, (0, pn, 0, pk))
    out = torch._int_mm(a.contiguous(), b)
    return out[:m, :n] if (pm or pn) else out


# --- forward kernels --------------------------------------------------------------------------

def _linear_int(x2, iw: IntWeight, int_mm: bool) -> torch.Tensor:
    """``[M, K]`` input -> float32 ``[M, O]``.  ``int_mm`` (CUDA; tests on CPU tensors):
    ``x2`` is the integer-valued float32 input, ``torch._int_mm``; else ``x2`` is uint8 and
    oneDNN's ``qlinear_pointwise`` runs."""
    if int_mm:
        acc = int_mm_padded(x2.to(torch.int8), iw.packed(("t", x2.device), lambda: iw.k.t().to(
            x2.device)))
        return acc.to(torch.float32) * iw.inv_scale
    packed = iw.packed("qlinear", lambda: torch.ops.onednn.qlinear_prepack(iw.k, None))
    scales = iw.packed("scales", lambda: torch.full((iw.k.shape[0],), iw.inv_scale))
    zeros = iw.packed("zeros", lambda: torch.zeros(iw.k.shape[0], dtype=torch.int64))
    return torch.ops.onednn.qlinear_pointwise(x2, 1.0, 0, packed, scales, zeros, None, 1.0, 0,
                                              torch.float32, "none", [], "")


def _conv_int(xu, iw: IntWeight, stride, padding, dilation, groups) -> torch.Tensor:
    """uint8 channels-last ``[B, C, H, W]`` -> float32 (channels-last) conv output."""
    key = ("qconv", stride, padding, dilation, groups)
    scales = iw.packed("scales", lambda: torch.full((iw.k.shape[0],), iw.inv_scale))
    zeros = iw.packed("zeros", lambda: torch.zeros(iw.k.shape[0], dtype=torch.int64))
    packed = iw.packed(key, lambda: torch.ops.onednn.qconv_prepack(
        iw.k, scales, 1.0, 0, list(stride), list(padding), list(dilation), groups, None))
    return torch.ops.onednn.qconv2d_pointwise(
        xu, 1.0, 0, packed, scales, zeros, None, list(stride), list(padding), list(dilation),
        groups, 1.0, 0, torch.float32, "none", [], "")


class _IntLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, xin, iw):
        ctx.save_for_backward(x, w)
        return _linear_int(xin, iw, int_mm=xin.dtype != torch.uint8)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        # the products autograd's mm backward forms for F.linear(x, w) = x @ w.t() (w.t() is
        # column-major, so its gradient is grad.t() @ x)
        gx = grad.mm(w) if ctx.needs_input_grad[0] else None
        gw = grad.t().mm(x) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None


class _IntConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, xin, iw, stride, padding, dilation, groups, int_stride):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, dilation, groups)
        return _conv_int(xin, iw, int_stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad, x, w, None, list(stride), list(padding), list(dilation), False, [0, 0],
            groups, need)
        return gx, gw, None, None, None, None, None, None, None


def _plan(x2, w, bias, macs, kind, grid_shift, prepared, memory_format, known_max=None):
    """``(uint8 input, IntWeight)`` when the integer path runs, else the reason it does not."""
    _, reason = _common_checks(x2, w, bias, macs, kind)
    if reason is not None:
        return reason
    iw = prepare_weight(w, grid_shift) if prepared is None else prepared
    if isinstance(iw, str):
        return iw
    checked = _input_u8(x2, memory_format, known_max)
    if isinstance(checked, str):
        return checked
    xu, top = checked
    if top * iw.abs_sum > MANTISSA:
        return f"sums up to {top} x {iw.abs_sum} exceed 2**24"
    return xu, iw


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, *,
           grid_shift: int | None = None, prepared: IntWeight | str | None = None,
           known_max: int | None = None) -> torch.Tensor:
    """``F.linear(x, w, bias)``, on integers where exact (see the module docstring).

    ``grid_shift``: the weights' grid ``2**-grid_shift`` when known; ``prepared``: the
    ``prepare_weight`` of ``w`` (or its reason), for weights used many times; ``known_max``:
    ``x`` is known to hold integers in ``[0, known_max]`` (its check is skipped)."""
    x2 = x.reshape(-1, x.shape[-1])
    plan = _plan(x2, w, bias, x2.shape[0] * w.numel(), None, grid_shift, prepared,
                 torch.contiguous_format, known_max)
    if isinstance(plan, str):
        _record("float", plan)
        return F.linear(x, w, bias)
    _record("int")
    xu, iw = plan
    z = _IntLinear.apply(x2, w, x2 if x.device.type == "cuda" else xu, iw)
    return z.reshape(*x.shape[:-1], w.shape[0])


def conv2d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
           padding=0, dilation=1, groups: int = 1, *, grid_shift: int | None = None,
           prepared: IntWeight | str | None = None, known_max: int | None = None
           ) -> torch.Tensor:
    """``F.conv2d`` on ``[B, C, H, W]``, on integers where exact (see the module docstring;
    the keywords as in ``linear``).

    The integer result is channels-last (the same values; the neuron makes it contiguous)."""
    if isinstance(padding, str) or x.dim() != 4:
        _record("float", "string padding or not a 4-D input")
        return F.conv2d(x, w, bias, stride, padding, dilation, groups)
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    if w.shape[2:] == (1, 1) and stride != (1, 1) and padding == (0, 0):
        # A strided 1x1 conv is the 1x1 conv of the subsampled input: run that instead.
        # oneDNN's strided 1x1 convs are broken here: the int8 one (3.12, AVX2, 2 threads)
        # intermittently writes wrong sums (5 of 30 runs, 8->16 channels on 48x48;
        # tests/test_pipeline_int_synapse.py), and torch 2.13's float one on a channels-last
        # input corrupts the heap in backward (4->8 channels, 34x34 -> 17x17: a segfault).
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        x = x[:, :, ::stride[0], ::stride[1]].contiguous(memory_format=layout)
        stride = (1, 1)
    out = conv_output_size(x.shape[2:], w.shape[2:], stride, padding, dilation)
    macs = x.shape[0] * max(out[0], 0) * max(out[1], 0) * w.numel()
    kind = "depthwise" if groups > 1 and w.shape[1] == 1 else "conv"
    plan = _plan(x, w, bias, macs, kind, grid_shift, prepared, torch.channels_last, known_max)
    if isinstance(plan, str):
        _record("float", plan)
        return F.conv2d(x, w, bias, stride, padding, dilation, groups)
    _record("int")
    xu, iw = plan
    return _IntConv.apply(x, w, xu, iw, stride, padding, dilation, groups, stride)

