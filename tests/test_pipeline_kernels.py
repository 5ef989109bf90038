"""The fused CUBA-LIF kernels against neuron.py's eager loop: same spikes and voltages bit for
bit, gradients equal within float rounding.  The Triton kernels run on CPU tensors in Triton's
interpreter (TRITON_INTERPRET=1), so no GPU is needed; on a CUDA machine they also run compiled.
"""
import pytest
import torch

from spikeline.errors import BadInput, SpikelineError
from spikeline.pipeline import blocks, kernels
from spikeline.pipeline.neuron import CubaParams, cuba_forward, cuba_spikes, cuba_voltage

pytest.importorskip("numba")
pytest.importorskip("triton")

PARAMS = [
    CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03),
    CubaParams(threshold=0.5, current_decay=0.0, voltage_decay=0.0),  # u, v are plain sums
    CubaParams(threshold=2.0, current_decay=1.0, voltage_decay=0.7, tau_grad=0.1),
]
# (T, one step's shape): a single step, sizes below, at and above the kernels' blocks (256 on
# CPU, 1024 in Triton) and not multiples of them
SHAPES = [(1, (3, 5)), (7, (2, 3, 4, 5)), (33, (1030,)), (12, (2, 300))]


@pytest.fixture
def interpret(monkeypatch):
    """Run Triton kernels in the interpreter for this test only."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _inputs(T, shape, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *shape, generator=g)
    if kind == "spiky":  # mostly positive drive, with spikes and resets
        return x * 1.5 + 0.3
    if kind == "negative":
        return -x.abs() * 2
    if kind == "large":  # states beyond 2**24: float32(u) rounds, int32 would overflow
        return x * 3e4 + 2e4
    raise ValueError(kind)


def _bias(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape[-1], generator=g) / 4).reshape(shape[-1])


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("impl", ["compiled", "triton"])
@pytest.mark.parametrize("p", PARAMS)
@pytest.mark.parametrize("T,shape", SHAPES)
@pytest.mark.parametrize("kind", ["spiky", "negative", "large"])
def test_forward_is_bit_exact(impl, p, T, shape, kind, interpret):
    x = _inputs(T, shape, kind)
    fired = 0
    for bias in (None, _bias(shape)):
        for spiking in (True, False):
            want = cuba_forward(x, p, bias, spiking, impl="eager")
            got = cuba_forward(x, p, bias, spiking, impl=impl)
            assert torch.equal(got[1], want[1]), "pre-reset voltage (the v state / 4096) differs"
            if spiking:
                assert torch.equal(got[0], want[0])
                fired += int(want[0].sum())
            else:
                assert got[0] is None
    if kind == "spiky" and T > 1:  # the comparison covers spikes and resets
        assert 0 < fired < 2 * x.numel()


@pytest.mark.parametrize("impl", ["compiled", "triton"])
def test_large_inputs_reach_states_beyond_int32(impl, interpret):
    """The case the int64 states exist for: the current is a plain sum with current_decay=0."""
    p = PARAMS[1]
    x = torch.full((40, 3), 2e4)
    spikes, voltage = cuba_forward(x, p, impl=impl)
    want = cuba_forward(x, p, impl="eager")
    assert torch.equal(voltage, want[1]) and torch.equal(spikes, want[0])
    assert voltage[:, 0].max() * 4096 > 2**31


def test_compiled_path_keeps_torch_thread_count():
    """numba's OpenMP pool shares the runtime with torch; torch's setting must survive it."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x = torch.randn(4, 600, requires_grad=True)
        cuba_spikes(x, PARAMS[0]).sum().backward()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("impl", ["compiled", "triton"])
@pytest.mark.parametrize("p", PARAMS[::2])
@pytest.mark.parametrize("T,shape", SHAPES[1:3])
def test_gradients_match_eager(impl, p, T, shape, interpret, monkeypatch):
    x0 = _inputs(T, shape, "spiky", seed=2)
    g = torch.Generator().manual_seed(3)
    grad_out = torch.randn(x0.shape, generator=g)
    bias0 = _bias(shape)
    results = {}
    for name in ("eager", impl):
        monkeypatch.setenv("SPIKELINE_NEURON", name)
        x, bias = x0.clone().requires_grad_(), bias0.clone().requires_grad_()
        spikes = cuba_spikes(x, p, bias)
        (spikes * grad_out).sum().backward()
        xv = x0.clone().requires_grad_()
        (cuba_voltage(xv, p) * grad_out).sum().backward()
        results[name] = spikes, x.grad, bias.grad, xv.grad
    (s_e, gx_e, gb_e, gv_e), (s_k, gx_k, gb_k, gv_k) = results["eager"], results[impl]
    assert torch.equal(s_k, s_e)
    assert gx_e.abs().sum() > 0 and gb_e.abs().sum() > 0
    torch.testing.assert_close(gx_k, gx_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gb_k, gb_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gv_k, gv_e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["compiled", "triton"])
def test_conv_block_trains_like_eager(impl, interpret, monkeypatch):
    """A Conv block with a folded-BatchNorm bias: same spikes, same weight gradient."""
    torch.manual_seed(0)
    block = blocks.Conv(PARAMS[0], 2, 4, 3, padding=1, norm=True)
    x = (torch.rand(6, 2, 2, 9, 9) < 0.4).float()
    grads = {}
    for name in ("eager", impl):
        monkeypatch.setenv("SPIKELINE_NEURON", name)
        block.zero_grad()
        y = block(x)
        y.square().sum().backward()
        grads[name] = y, block.weight.grad.clone(), block.synapse.norm.shift.grad.clone()
    assert torch.equal(grads[impl][0], grads["eager"][0])
    assert grads["eager"][1].abs().sum() > 0
    for got, want in zip(grads[impl][1:], grads["eager"][1:]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["spiky", "large"])
def test_triton_on_cuda_is_bit_exact(kind):
    p = PARAMS[0]
    x = _inputs(50, (4, 3000), kind).cuda()
    bias = _bias((4, 3000)).cuda()
    want = cuba_forward(x.cpu(), p, bias.cpu(), impl="eager")
    got = cuba_forward(x, p, bias, impl="triton")
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_on_cuda_gradients_match_eager(monkeypatch):
    p = PARAMS[0]
    x0, bias0 = _inputs(20, (3, 2000), "spiky"), _bias((3, 2000))
    grad_out = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    grads = []
    for name, device in (("eager", "cpu"), ("triton", "cuda")):
        monkeypatch.setenv("SPIKELINE_NEURON", name)
        x = x0.clone().to(device).requires_grad_()
        bias = bias0.clone().to(device).requires_grad_()
        spikes = cuba_spikes(x, p, bias)
        (spikes * grad_out.to(device)).sum().backward()
        grads.append((spikes.cpu(), x.grad.cpu(), bias.grad.cpu()))
    assert torch.equal(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1][2], grads[0][2], rtol=1e-5, atol=1e-5)


def test_default_choice_per_device(monkeypatch):
    monkeypatch.delenv("SPIKELINE_NEURON", raising=False)
    monkeypatch.delenv("SPIKELINE_FUSED", raising=False)
    assert kernels.choose(torch.device("cpu")) == "compiled"
    assert kernels.choose(torch.device("meta")) == "eager"
    if torch.cuda.is_available():
        assert kernels.choose(torch.device("cuda")) == "triton"


def test_environment_forces_an_implementation(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("SPIKELINE_NEURON", "eager")
    assert kernels.choose(cpu) == "eager"
    monkeypatch.setenv("SPIKELINE_NEURON", "fast")
    with pytest.raises(BadInput, match="SPIKELINE_NEURON"):
        kernels.choose(cpu)
    monkeypatch.delenv("SPIKELINE_NEURON")
    monkeypatch.setenv("SPIKELINE_FUSED", "1")  # the older name
    assert kernels.choose(cpu) == "compiled"
    monkeypatch.setenv("SPIKELINE_FUSED", "0")
    assert kernels.choose(cpu) == "eager"


def test_a_forced_choice_that_cannot_run_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("SPIKELINE_NEURON", "triton")
    with pytest.raises(SpikelineError, match="TRITON_INTERPRET=1"):
        cuba_spikes(torch.zeros(3, 2), PARAMS[0])
    with pytest.raises(SpikelineError, match="no compiled path for meta"):
        kernels.choose(torch.device("meta"), "compiled")


def test_without_numba_the_default_falls_back_silently(monkeypatch):
    monkeypatch.delenv("SPIKELINE_NEURON", raising=False)
    monkeypatch.delenv("SPIKELINE_FUSED", raising=False)
    real = kernels._installed
    monkeypatch.setattr(kernels, "_installed", lambda name: name != "numba" and real(name))
    assert kernels.choose(torch.device("cpu")) == "eager"
    x = torch.randn(5, 4) + 1
    assert torch.equal(cuba_forward(x, PARAMS[0])[0],
                       cuba_forward(x, PARAMS[0], impl="eager")[0])
    with pytest.raises(SpikelineError, match="numba is not installed"):
        kernels.choose(torch.device("cpu"), "compiled")


def _grads(fn, x, bias):
    x, bias = x.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    out = fn(x, bias)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), x.grad, bias.grad


@pytest.mark.parametrize("p", PARAMS[:2])
def test_channels_last_runs_in_place_and_matches_contiguous(p):
    """A channels-last input (what the conv synapse gives) runs in its own memory order: same
    spikes, voltages and gradients as the contiguous input, and the outputs keep its layout."""
    x = _inputs(6, (4, 3, 5, 7), "spiky").flatten(0, 1)  # [T*N, C, H, W]
    x_cl = x.contiguous(memory_format=torch.channels_last).unflatten(0, (6, 4))
    x = x.unflatten(0, (6, 4))
    assert not x_cl.is_contiguous()
    bias = _bias((3,)).reshape(3, 1, 1)
    for fn in (lambda a, b: cuba_spikes(a, p, b), lambda a, b: cuba_voltage(a + b, p)):
        want = _grads(fn, x, bias)
        got = _grads(fn, x_cl, bias)
        for w, g in zip(want, got):
            assert torch.equal(w, g)
    spikes, voltage = cuba_forward(x_cl, p, bias)
    assert spikes.stride() == x_cl.stride() and voltage.stride() == x_cl.stride()


def test_padded_spikes_are_the_spikes_and_their_delay_without_copies():
    """``cuba_spikes_padded``: ``[1:]`` is ``cuba_spikes``, ``[:-1]`` is ``delay_shift`` of it,
    with the same gradients as the copying ``torch.cat`` delay."""
    from spikeline.pipeline.neuron import cuba_spikes_padded, delay_shift

    p = PARAMS[0]
    x, bias = _inputs(9, (2, 300), "spiky"), _bias((2, 300))
    padded = cuba_spikes_padded(x, p, bias)
    assert padded.shape[0] == 10 and not padded[0].any()
    assert torch.equal(padded[1:], cuba_spikes(x, p, bias))
    want = _grads(lambda a, b: delay_shift(cuba_spikes(a, p, b)), x, bias)
    got = _grads(lambda a, b: cuba_spikes_padded(a, p, b)[:-1], x, bias)
    for w, g in zip(want, got):
        assert torch.equal(w, g)


def test_forward_without_voltage_gives_the_same_spikes():
    """The spikes-only forward (no autograd: the voltage goes to a scratch row)."""
    from spikeline.pipeline.kernels import cpu

    x = _inputs(33, (1030,), "spiky")
    full, voltage = cpu.forward(x, None, PARAMS[0], True)
    only, none = cpu.forward(x, None, PARAMS[0], True, write_voltage=False)
    assert none is None and voltage is not None and torch.equal(full, only)
