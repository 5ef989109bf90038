"""The fixed-point CUBA-LIF dynamics, pinned by hand and in its torch.compile'd form (the
``compiled`` path on CUDA); the fused kernels are held to it in test_pipeline_kernels.py."""
import shutil

import pytest
import torch

from spikeline.pipeline.neuron import (CubaParams, _eager_forward, bias_to_int, cuba_forward,
                                       cuba_spikes, delay_shift)


def reference(xs, p, bias=0.0):
    """Integer arithmetic written out with Python ints (rshift toward zero)."""
    def rshift0(a):
        return -((-a) >> 12) if a < 0 else a >> 12

    u = v = 0
    spikes, volts = [], []
    reset_at = (p.theta + p.threshold_eps) * 4096
    for x in xs:
        u = rshift0(u * (4096 - p.i_decay)) + int(4096 * x)
        v = rshift0(v * (4096 - p.v_decay)) + u + int(4096 * bias)
        volts.append(v / 4096)
        spikes.append(float(v / 4096 >= p.theta + p.threshold_eps))
        if v >= reset_at:
            v = 0
    return spikes, volts


def test_params_quantize_like_lava_dl():
    p = CubaParams(threshold=1.27, current_decay=0.25, voltage_decay=0.03)
    assert (p.i_decay, p.v_decay, p.v_th_mant) == (1024, 123, 81)
    assert p.theta == 81 / 64
    with pytest.raises(ValueError, match="voltage_decay"):
        CubaParams(voltage_decay=1.5)
    with pytest.raises(ValueError, match="threshold"):
        CubaParams(threshold=0)


@pytest.mark.parametrize("bias", [0.0, 0.125, -0.25])
def test_dynamics_match_integer_arithmetic(bias):
    p = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03)
    xs = [0.4, 0.0, 0.3, -0.2, 0.9, 0.9, 0.0, 0.0, 0.1, 0.7, 0.0, 0.5]
    x = torch.tensor(xs).reshape(-1, 1)
    spikes, volts = cuba_forward(x, p, torch.tensor([bias]) if bias else None)
    want_s, want_v = reference(xs, p, bias)
    assert spikes[:, 0].tolist() == want_s
    assert volts[:, 0].tolist() == pytest.approx(want_v, abs=0)
    assert 0 < sum(want_s) < len(xs)


def test_delay_shift_moves_one_step():
    s = torch.tensor([[1.0], [0.0], [1.0]])
    assert delay_shift(s)[:, 0].tolist() == [0.0, 1.0, 0.0]


def test_surrogate_peak_is_scale_rho_over_two_tau_rho():
    p = CubaParams(threshold=1.25, tau_grad=0.004, scale_grad=10.0)
    # a single step that lands exactly on the threshold (+eps) gets the peak slope
    x = torch.tensor([[p.theta + p.threshold_eps]], requires_grad=True)
    cuba_spikes(x, p).sum().backward()
    assert x.grad.item() == pytest.approx(p.scale_rho / (2 * p.tau_rho), rel=1e-3)
    assert p.scale_rho / (2 * p.tau_rho) == pytest.approx(1.0)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on CPU needs a C compiler")
def test_compiled_step_equals_the_eager_step():
    """The torch.compile'd time step (``compiled`` on CUDA) is the same arithmetic, bit for bit."""
    torch.manual_seed(0)
    p = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03)
    x = torch.randn(16, 3, 4, 5, 5) * 1.5
    bias = torch.randn(4, 1, 1) / 4
    for b in (None, bias):
        b = bias_to_int(b, p)
        fused = _eager_forward(x, b, p, True, compiled=True)
        eager = _eager_forward(x, b, p, True, compiled=False)
        assert torch.equal(fused[0], eager[0]) and torch.equal(fused[1], eager[1])
        assert 0 < eager[0].sum() < eager[0].numel()


@pytest.mark.parametrize("impl", ["eager", "compiled"])
def test_every_path_matches_integer_arithmetic(impl):
    p = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03)
    xs = [0.4, 0.0, 0.3, -0.2, 0.9, 0.9, 0.0, 0.0, 0.1, 0.7, 0.0, 0.5, -3.0, 2.5]
    spikes, volts = cuba_forward(torch.tensor(xs).reshape(-1, 1), p, impl=impl)
    want_s, want_v = reference(xs, p)
    assert spikes[:, 0].tolist() == want_s and volts[:, 0].tolist() == want_v
