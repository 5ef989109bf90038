"""Our blocks against lava-dl 0.6.0 SLAYER's own blocks: identical spikes, close gradients."""
import pytest
import torch

from spikeline.pipeline import blocks
from spikeline.pipeline.blocks import from_lava
from spikeline.pipeline.neuron import CubaParams

slayer = pytest.importorskip("lava.lib.dl.slayer")

PARAMS = CubaParams(threshold=0.5, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
                    scale_grad=3.0)
LAVA_PARAMS = dict(threshold=0.5, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
                   scale_grad=3.0)


def spikes(*shape, rate=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < rate).float()


def run_both(ours, lava, x_lava, *, check_grad=True):
    """Run lava's block on [N, ..., T] input and ours on [T, N, ...]; compare."""
    x1 = x_lava.clone().requires_grad_()
    x2 = from_lava(x_lava).requires_grad_()
    y_lava = lava(x1)
    y_ours = ours(x2)
    assert y_ours.shape == from_lava(y_lava).shape
    torch.testing.assert_close(y_ours, from_lava(y_lava), rtol=0, atol=0)
    if check_grad:
        g = torch.randn_like(y_lava)
        y_lava.backward(g)
        y_ours.backward(from_lava(g))
        torch.testing.assert_close(x2.grad, from_lava(x1.grad), rtol=1e-4, atol=1e-5)
        w_lava = lava.synapse.weight.grad
        if w_lava is not None:
            torch.testing.assert_close(ours.weight.grad, w_lava.reshape(ours.weight.shape),
                                       rtol=1e-4, atol=1e-4)
    return y_ours


def copy_weight(ours, lava, scale=3.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(ours.weight.shape, generator=g) * scale / ours.weight[0].numel() ** 0.5
    with torch.no_grad():
        ours.weight.copy_(w)
        lava.synapse.weight.copy_(w.reshape(lava.synapse.weight.shape))


@pytest.mark.parametrize("delay_shift", [True, False])
def test_dense_matches_lava(delay_shift):
    lava = slayer.block.cuba.Dense(LAVA_PARAMS, 40, 30, delay_shift=delay_shift)
    ours = blocks.Dense(PARAMS, 40, 30, delay_shift=delay_shift)
    copy_weight(ours, lava)
    y = run_both(ours, lava, spikes(4, 40, 25))
    assert 0 < y.sum() < y.numel()  # the comparison is about real spiking activity


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 1), (1, 1, 2)])
def test_conv_matches_lava(stride, padding, groups):
    lava = slayer.block.cuba.Conv(LAVA_PARAMS, 4, 6, 3, stride=stride, padding=padding,
                                  groups=groups)
    ours = blocks.Conv(PARAMS, 4, 6, 3, stride=stride, padding=padding, groups=groups)
    copy_weight(ours, lava)
    y = run_both(ours, lava, spikes(3, 4, 11, 11, 12))
    assert 0 < y.sum() < y.numel()


def test_conv_on_event_counts_matches_lava():
    """The first layer sees frame counts, not spikes."""
    g = torch.Generator().manual_seed(3)
    counts = torch.randint(0, 5, (2, 2, 12, 12, 10), generator=g).float()
    lava = slayer.block.cuba.Conv(LAVA_PARAMS, 2, 5, 3, padding=1)
    ours = blocks.Conv(PARAMS, 2, 5, 3, padding=1)
    copy_weight(ours, lava, scale=1.0)
    y = run_both(ours, lava, counts)
    assert 0 < y.sum() < y.numel()  # the comparison is about real spiking activity


@pytest.mark.parametrize("size", [8, 9])  # 9: lava-dl's padding of an odd size
def test_pool_matches_lava(size):
    lava = slayer.block.cuba.Pool(LAVA_PARAMS, 2)
    ours = blocks.Pool(PARAMS, 2)
    y = run_both(ours, lava, spikes(2, 3, size, size, 15, rate=0.4), check_grad=True)
    assert y.shape[-1] == (size + size % 2) // 2


def test_flatten_and_affine_match_lava():
    x = spikes(3, 4, 5, 5, 10)
    torch.testing.assert_close(blocks.Flatten()(from_lava(x)),
                               from_lava(slayer.block.cuba.Flatten()(x)))
    lava = slayer.block.cuba.Affine(LAVA_PARAMS, 100, 7)
    ours = blocks.Affine(PARAMS, 100, 7)
    copy_weight(ours, lava)
    run_both(ours, lava, spikes(3, 100, 10))


def test_stack_matches_lava():
    lava = torch.nn.Sequential(
        slayer.block.cuba.Conv(LAVA_PARAMS, 2, 8, 3, padding=1, stride=2),
        slayer.block.cuba.Pool(LAVA_PARAMS, 2),
        slayer.block.cuba.Conv(LAVA_PARAMS, 8, 8, 3, padding=1),
        slayer.block.cuba.Flatten(),
        slayer.block.cuba.Dense(LAVA_PARAMS, 8 * 4 * 4, 20),
        slayer.block.cuba.Affine(LAVA_PARAMS, 20, 5),
    )
    ours = torch.nn.Sequential(
        blocks.Conv(PARAMS, 2, 8, 3, padding=1, stride=2),
        blocks.Pool(PARAMS, 2),
        blocks.Conv(PARAMS, 8, 8, 3, padding=1),
        blocks.Flatten(),
        blocks.Dense(PARAMS, 8 * 4 * 4, 20),
        blocks.Affine(PARAMS, 20, 5),
    )
    for i, (o, l) in enumerate(zip(ours, lava)):
        if isinstance(o, (blocks.Conv, blocks.Dense, blocks.Affine)):
            copy_weight(o, l, seed=i)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 3, (2, 2, 16, 16, 20), generator=g).float()
    x1, x2 = x.clone().requires_grad_(), from_lava(x).requires_grad_()
    y_lava, y_ours = lava(x1), ours(x2)
    torch.testing.assert_close(y_ours, from_lava(y_lava), rtol=0, atol=0)
    y_lava.square().sum().backward()
    y_ours.square().sum().backward()
    torch.testing.assert_close(x2.grad, from_lava(x1.grad), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ours[0].weight.grad,
                               lava[0].synapse.weight.grad.reshape(ours[0].weight.shape),
                               rtol=1e-3, atol=1e-5)
    assert x2.grad.abs().sum() > 0


def test_weight_quantization_matches_lava_hook():
    w = torch.randn(1000) * 3
    neuron = slayer.neuron.cuba.Neuron(**LAVA_PARAMS)
    from spikeline.pipeline.quantize import quantize_weight, weight_mantissa
    torch.testing.assert_close(quantize_weight(w), neuron.quantize_8bit(w), rtol=0, atol=0)
    m = weight_mantissa(w)
    assert m.min() >= -256 and m.max() <= 254 and (m % 2 == 0).all()
