"""The integer synapse (pipeline/kernels/int_synapse.py) against the float path: the same
outputs and gradients bit for bit where the inputs are exact, the float path (and the reason)
where they are not.  The whole pipeline's equivalence tests run on either path with
SPIKELINE_SYNAPSE=int|float (``make test-synapse-paths``)."""
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeline.errors import BadInput
from spikeline.pipeline import blocks
from spikeline.pipeline.kernels import int_synapse as isyn
from spikeline.pipeline.neuron import CubaParams

P = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
               scale_grad=3.0)


def spikes(shape, rate=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < rate).float()


def grid(shape, seed=1, low=-128, high=128):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=g).float() / 32


def both(fn):
    """``{path: (result, counts)}`` of ``fn()`` with each path forced."""
    out = {}
    for path in ("float", "int"):
        isyn.reset_counts()
        with isyn.synapse_path(path):
            out[path] = fn(), isyn.counts()
    return out


def with_grads(op, x, w):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    z = op(x, w)
    g = torch.Generator().manual_seed(3)
    z.backward(torch.randn(z.shape, generator=g))
    return z.detach(), x.grad, w.grad


def assert_same(a, b):
    for p, q in zip(a, b):
        assert torch.equal(p, q)


@pytest.mark.parametrize("shape,k,n", [((7, 33), 33, 5), ((3, 4, 100), 100, 24),
                                       ((64, 300), 300, 10)])
def test_linear_is_bit_exact_forward_and_backward(shape, k, n):
    x, w = spikes(shape), grid((n, k))
    out = both(lambda: with_grads(isyn.linear, x, w))
    assert out["int"][1] == {"int": 1} and out["float"][1] == {"float": 1}
    assert_same(out["float"][0], out["int"][0])
    ref = with_grads(F.linear, x, w)
    assert_same(ref, out["int"][0])  # the float path is F.linear itself


CONVS = [dict(), dict(stride=2, padding=1), dict(padding=(2, 0), dilation=2),
         dict(groups=4, padding=1), dict(stride=(2, 1), padding=1, groups=2)]


@pytest.mark.parametrize("opts", CONVS)
def test_conv_is_bit_exact_any_stride_padding_groups(opts):
    groups = opts.get("groups", 1)
    x, w = spikes((5, 8, 11, 9)), grid((12, 8 // groups, 3, 3))
    op = lambda x, w: isyn.conv2d(x, w, None, **opts)  # noqa: E731
    out = both(lambda: with_grads(op, x, w))
    assert out["int"][1] == {"int": 1}
    assert_same(out["float"][0], out["int"][0])
    ref = with_grads(lambda x, w: F.conv2d(x, w, None, **opts), x, w)
    assert_same(ref, out["int"][0])


def test_sumpool_as_depthwise_conv_and_small_counts_are_exact():
    x = spikes((4, 6, 8, 8)) + spikes((4, 6, 8, 8), seed=5) * 3  # counts 0, 1, 3, 4
    w = torch.ones(6, 1, 2, 2)
    out = both(lambda: isyn.conv2d(x, w, None, stride=2, groups=6))
    assert out["int"][1] == {"int": 1}
    assert torch.equal(out["int"][0], F.avg_pool2d(x, 2, divisor_override=1))


def test_cuda_int_mm_branch_on_cpu_tensors():
    """The code CUDA runs (``torch._int_mm`` padded to its shape constraints), on CPU."""
    g = torch.Generator().manual_seed(0)
    for m, k, n in [(3, 13, 5), (17, 8, 8), (40, 100, 10)]:
        a = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
        b = torch.randint(-128, 128, (k, n), generator=g, dtype=torch.int8)
        got = isyn.int_mm_padded(a, b)
        assert got.dtype == torch.int32 and got.shape == (m, n)
        assert torch.equal(got.long(), a.long() @ b.long())
    x, w = spikes((3, 20, 37)), grid((11, 37))
    iw = isyn.prepare_weight(w)
    x2 = x.reshape(-1, 37).clone().requires_grad_()
    wg = w.clone().requires_grad_()
    z = isyn._IntLinear.apply(x2, wg, x2.detach(), iw)  # float input: the _int_mm branch
    z.backward(torch.randn(z.shape, generator=torch.Generator().manual_seed(3)))
    ref = with_grads(F.linear, x.reshape(-1, 37), w)
    assert_same(ref, (z.detach(), x2.grad, wg.grad))


@pytest.mark.parametrize("case,reason", [
    ("fractional", "not integer-valued"),
    ("negative", "not integer-valued"),
    ("large count", "7-bit"),
    ("off grid", "not on an 8-bit"),
    ("out of range", "exceed the 8-bit range"),
    ("24-bit", "exceed 2**24"),
    ("bias", "nonzero bias"),
])
def test_inexact_inputs_fall_back_to_float(case, reason):
    x, w, bias = spikes((16, 40)), grid((8, 40)), None
    if case == "fractional":
        x = x * 1.5
    elif case == "negative":
        x = -x
    elif case == "large count":
        x = x * 200
    elif case == "off grid":
        w = w + 1e-3
    elif case == "out of range":
        w[0, 0] = 4.0  # 128 / 32
    elif case == "24-bit":  # 127 * 128 * 1100 > 2**24: the float sum itself could round
        x, w = torch.full((4, 1100), 127.0), torch.full((3, 1100), -4.0)
    elif case == "bias":
        bias = torch.full((8,), 0.25)
    isyn.reset_counts()
    with isyn.synapse_path("int"):
        z = isyn.linear(x, w, bias)
    assert isyn.counts() == {"float": 1}
    assert reason in isyn.last_reason()
    assert torch.equal(z, F.linear(x, w, bias))


def test_autocast_falls_back():
    x, w = spikes((16, 40)), grid((8, 40))
    isyn.reset_counts()
    with isyn.synapse_path("int"), torch.autocast("cpu", dtype=torch.bfloat16):
        isyn.conv2d(x.reshape(16, 10, 2, 2), w.reshape(8, 10, 2, 2))
    assert isyn.counts() == {"float": 1} and "autocast" in isyn.last_reason()


def test_switch_env_and_context(monkeypatch):
    monkeypatch.setenv("SPIKELINE_SYNAPSE", "float")
    assert isyn.mode() == "float"
    with isyn.synapse_path("int"):
        assert isyn.mode() == "int"
        with isyn.synapse_path("auto"):
            assert isyn.mode() == "auto"
    assert isyn.mode() == "float"
    monkeypatch.setenv("SPIKELINE_SYNAPSE", "fast")
    with pytest.raises(BadInput, match="SPIKELINE_SYNAPSE"):
        isyn.mode()
    with pytest.raises(BadInput):
        with isyn.synapse_path("integer"):
            pass


def test_auto_uses_int_only_where_it_pays():
    x, w = spikes((4, 40)), grid((8, 40))
    isyn.reset_counts()
    with isyn.synapse_path("auto"):
        isyn.linear(x, w)
    assert isyn.counts() == {"float": 1} and "does not pay" in isyn.last_reason()


def test_weight_grid_search():
    w = grid((6, 5))
    assert isyn.prepare_weight(w).shift == 5
    assert isyn.prepare_weight(torch.tensor([[0.5, -1.0, 3.0]])).shift == 5  # Loihi's grid
    assert isyn.prepare_weight(torch.tensor([[60.0, 0.5]])).shift == 1  # 1920 > 127 on 1/32
    assert isyn.prepare_weight(torch.tensor([[1 / 4096, 0.0]])).shift == 12
    assert "not on" in isyn.prepare_weight(torch.tensor([[1 / 8192]]))
    assert isyn.prepare_weight(grid((6, 5), low=-2, high=2), grid_shift=5).abs_sum <= 10


@pytest.mark.parametrize("make,shape", [
    (lambda: blocks.Dense(P, 60, 20), (6, 4, 60)),
    (lambda: blocks.Conv(P, 4, 8, 3, padding=1, stride=2), (6, 3, 4, 10, 10)),
    (lambda: blocks.Conv(P, 4, 8, 3, padding=1, groups=2, norm=True), (6, 3, 4, 10, 10)),
    (lambda: blocks.Affine(P, 60, 10), (6, 4, 60)),
])
def test_blocks_spikes_voltages_and_gradients_equal_on_both_paths(make, shape):
    torch.manual_seed(0)
    block = make()
    with torch.no_grad():
        block.weight.mul_(4)
    x = spikes(shape)

    def run():
        block.zero_grad()
        xi = x.clone().requires_grad_()
        y = block(xi)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        return y.detach(), xi.grad, block.weight.grad.clone()

    out = both(run)
    assert out["int"][1].get("int") == 1
    assert_same(out["float"][0], out["int"][0])
    assert out["float"][0][0].abs().sum() > 0  # something fired (or a voltage moved)


def test_simulation_equal_on_both_paths_and_planted_weight_still_differs():
    """A folded conv net's export simulated (fixed point) on either path gives the same spikes
    and voltages; one weight moved by one grid step changes the integer path's output."""
    from spikeline.deploy import simulate as sim
    from spikeline.deploy.fold import fold_model
    from spikeline.deploy.to_nir import model_to_nir
    from spikeline.pipeline.models import build_model

    torch.manual_seed(0)
    model = fold_model(build_model("cnn", input_size=(16, 16)).eval())
    for m in model.modules():
        if isinstance(m, (blocks.ConvSynapse, blocks.DenseSynapse)):
            m.weight.data.mul_(3)
    graph = model_to_nir(model, (2, 16, 16)).graph
    x = spikes((6, 3, 2, 16, 16), rate=0.3)
    out = both(lambda: sim.simulate(graph, x, mode="loihi").outputs)
    assert out["int"][1].get("int", 0) >= 3
    for name, value in out["float"][0].items():
        assert torch.equal(value, out["int"][0][name]), name
    first = next(n for n, node in graph.nodes.items() if isinstance(node, nir.Conv2d))
    weight = np.array(graph.nodes[first].weight, dtype=np.float64)
    weight.flat[int(np.argmax(np.abs(weight)))] -= np.sign(weight.flat[np.argmax(
        np.abs(weight))]) * 2 / 64
    graph.nodes[first].weight = weight
    with isyn.synapse_path("int"):
        isyn.reset_counts()
        planted = sim.simulate(graph, x, mode="loihi").outputs
        assert isyn.counts().get("int", 0) >= 3
    assert any(not torch.equal(planted[n], out["int"][0][n]) for n in planted)


def test_whole_sequence_neuron_equals_per_step_loop(monkeypatch):
    """The simulator's fixed-point neurons run whole sequences by ``cuba_forward``; the
    per-step loop (``cuba_step``) is their definition."""
    from spikeline.deploy import simulate as sim
    from spikeline.deploy.fold import fold_model
    from spikeline.deploy.to_nir import model_to_nir
    from spikeline.pipeline.models import build_model

    torch.manual_seed(1)
    model = fold_model(build_model("cnn", input_size=(16, 16)).eval())
    for m in model.modules():
        if isinstance(m, (blocks.ConvSynapse, blocks.DenseSynapse)):
            m.weight.data.mul_(3)
    graph = model_to_nir(model, (2, 16, 16)).graph
    x = spikes((8, 2, 2, 16, 16), rate=0.3)
    whole = sim.simulate(graph, x, mode="loihi").outputs
    monkeypatch.delattr(sim._FixedCuba, "run")
    stepped = sim.simulate(graph, x, mode="loihi").outputs
    fired = 0
    for name, value in whole.items():
        assert torch.equal(value, stepped[name]), name
        fired += int(value.abs().sum() > 0)
    assert fired >= 3


def test_seven_bit_inputs_with_extreme_weights_do_not_saturate():
    """u8 x s8 pairs summed in int16 (oneDNN without VNNI) would saturate above 2*127*128:
    the largest inputs allowed with the largest weights of both signs stay exact."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(120, 128, (32, 64), generator=g).float()
    w = torch.where(torch.rand(16, 64, generator=g) < 0.5, -4.0, 127 / 32)
    isyn.reset_counts()
    with isyn.synapse_path("int"):
        z = isyn.linear(x, w)
        c = isyn.conv2d(x.reshape(32, 16, 2, 2), w.reshape(16, 16, 2, 2))
    assert isyn.counts() == {"int": 2}
    assert torch.equal(z, F.linear(x, w))
    assert torch.equal(c, F.conv2d(x.reshape(32, 16, 2, 2), w.reshape(16, 16, 2, 2)))


@pytest.mark.parametrize("w_shape,opts", [((16, 8, 1, 1), dict(stride=2)),
                                          ((16, 8, 3, 3), dict(stride=2, padding=1)),
                                          ((16, 8, 1, 1), dict(stride=1))])
def test_repeated_two_thread_convs_stay_exact(w_shape, opts):
    """oneDNN's int8 1x1 conv with a stride, on 2 threads, intermittently wrote wrong sums
    (5 of 30 runs on this AVX2 CPU; found by test_deploy_nir under SPIKELINE_SYNAPSE=int):
    the integer path must stay exact run after run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    try:
        for _ in range(20):
            x = (torch.rand((24, 8, 48, 48), generator=g) < 0.3).float()
            w = torch.randint(-128, 128, w_shape, generator=g).float() / 32
            with isyn.synapse_path("int"):
                got = isyn.conv2d(x, w, None, **opts)
            assert torch.equal(got, F.conv2d(x, w, None, **opts))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("path", ["float", "int"])
@pytest.mark.parametrize("size", [34, 33, 32])
def test_strided_1x1_channels_last_backward(path, size):
    """torch 2.13's float 1x1 stride-2 conv on a channels-last input corrupted the heap in
    backward (a segfault at 34x34 and 32x32, 4->8 channels): the synapse runs it as the 1x1
    conv of the subsampled input, with the same outputs and gradients as the NCHW conv."""
    g = torch.Generator().manual_seed(size)
    x = (torch.rand((16, 4, size, size), generator=g) < 0.3).float()
    w = torch.randint(-128, 128, (8, 4, 1, 1), generator=g).float() / 32
    want_x, want_w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    want = F.conv2d(want_x, want_w, None, stride=2)
    want.sum().backward()
    got_x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    got_w = w.clone().requires_grad_(True)
    with isyn.synapse_path(path):
        got = isyn.conv2d(got_x, got_w, None, stride=2)
    got.sum().backward()
    assert torch.equal(got, want)
    assert torch.equal(got_x.grad, want_x.grad) and torch.equal(got_w.grad, want_w.grad)
