"""Our CUBA-LIF blocks vs lava-dl 0.6.0's own blocks: same net, same weights, same input.

One JSON line per case and neuron implementation: ``case``, ``pass`` (forward |
forward+backward), ``ours_s``, ``lava_dl_s`` (best of ``--repeat`` runs), ``ratio`` =
lava_dl_s / ours_s, and ``spikes_identical`` (outputs compared bit for bit).  Rows of the
implementation a user gets by default (``kernels.choose``: ``compiled`` on CPU, ``triton`` on
CUDA) carry no ``default`` field; rows of the others carry ``"impl": NAME, "default": false``.
``synapse``: the synapse path asked for (``--synapses``, ``kernels/int_synapse.py``: ``auto``
is the default, ``int`` forces integers wherever exact, ``float`` never), and ``int_calls`` /
``float_calls``: how many of our synapse calls in the timed run took each path.
Run: python benchmarks/bench_blocks.py [--device cpu|cuda] [--impls eager,compiled,triton]
     [--synapses auto,int,float]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from functools import partial

import torch
from lava.lib.dl import slayer

from spikeline.pipeline import blocks, kernels
from spikeline.pipeline.kernels import int_synapse
from spikeline.pipeline.blocks import from_lava, to_lava
from spikeline.pipeline.neuron import CubaParams
from timing import best_of

P = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
               scale_grad=3.0)
LP = {"threshold": 1.25, "current_decay": 0.25, "voltage_decay": 0.03, "tau_grad": 0.03,
      "scale_grad": 3.0}


def cases():
    """(name, our module, lava-dl module, input [N, C, (H, W), T])."""
    yield ("dense 1024->512, N=32, T=100", blocks.Dense(P, 1024, 512),
           slayer.block.cuba.Dense(LP, 1024, 512), (32, 1024, 100))
    yield ("conv 16->32 3x3 on 32x32, N=16, T=50", blocks.Conv(P, 16, 32, 3, padding=1),
           slayer.block.cuba.Conv(LP, 16, 32, 3, padding=1), (16, 16, 32, 32, 50))
    yield ("pool 2x2 on 32ch 32x32, N=16, T=50", blocks.Pool(P, 2),
           slayer.block.cuba.Pool(LP, 2), (16, 32, 32, 32, 50))
    ours = torch.nn.Sequential(
        blocks.Conv(P, 2, 16, 3, padding=1, stride=2), blocks.Conv(P, 16, 32, 3, padding=1),
        blocks.Pool(P, 2), blocks.Flatten(), blocks.Dense(P, 32 * 8 * 8, 128),
        blocks.Affine(P, 128, 10))
    lava = torch.nn.Sequential(
        slayer.block.cuba.Conv(LP, 2, 16, 3, padding=1, stride=2),
        slayer.block.cuba.Conv(LP, 16, 32, 3, padding=1), slayer.block.cuba.Pool(LP, 2),
        slayer.block.cuba.Flatten(), slayer.block.cuba.Dense(LP, 32 * 8 * 8, 128),
        slayer.block.cuba.Affine(LP, 128, 10))
    yield "conv net 32x32 -> 10, N=32, T=100", ours, lava, (32, 2, 32, 32, 100)


def copy_weights(ours, lava):
    pairs = zip(ours, lava) if isinstance(ours, torch.nn.Sequential) else [(ours, lava)]
    for o, l in pairs:
        if hasattr(l, "synapse") and hasattr(o, "weight") and o.weight.dim() > 0:
            with torch.no_grad():
                o.weight.mul_(3.0)
                l.synapse.weight.copy_(o.weight.reshape(l.synapse.weight.shape))


def one_pass(module, x, backward: bool) -> torch.Tensor:
    """Forward (and backward of the summed output) of ``module`` on a fresh copy of ``x``."""
    inp = x.clone().requires_grad_(backward)
    with torch.set_grad_enabled(backward):
        y = module(inp)
        if backward:
            y.sum().backward()
    if y.is_cuda:
        torch.cuda.synchronize()
    return y.detach()


@contextlib.contextmanager
def forced(impl: str | None):
    """Run our neurons with ``impl`` (``SPIKELINE_NEURON``) inside the block; None: default."""
    old = os.environ.pop("SPIKELINE_NEURON", None)
    if impl is not None:
        os.environ["SPIKELINE_NEURON"] = impl
    try:
        yield
    finally:
        os.environ.pop("SPIKELINE_NEURON", None)
        if old is not None:
            os.environ["SPIKELINE_NEURON"] = old


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--impls", default=None,
                        help="comma-separated neuron implementations besides the default "
                             "(default: those that run on the device, but not the per-step "
                             "torch.compile path on CUDA, which compiles for minutes)")
    parser.add_argument("--synapses", default="auto",
                        help="comma-separated synapse paths to run ours with (auto, int, float)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device here")
        if torch.cuda.get_device_capability(device)[0] >= 9:
            # lava-dl's JIT builds for sm_80 only otherwise: "no kernel image" on Hopper
            slayer.jitconfig.TORCH_CUDA_ARCH_LIST = "9.0"
    default = kernels.choose(device)
    if args.impls is None:
        others = [i for i in kernels.IMPLS if i != default
                  and kernels.unavailable(i, device) is None
                  and not (device.type == "cuda" and i == "compiled")]
    else:
        others = [i for i in args.impls.split(",") if i and i != default]
    torch.manual_seed(0)
    for name, ours, lava, shape in cases():
        copy_weights(ours, lava)
        ours, lava = ours.to(device), lava.to(device)
        xt = (torch.rand(shape[-1], *shape[:-1]) < 0.2).float().to(device)  # ours: time first
        x = to_lava(xt).contiguous()  # lava-dl: time last
        for mode in ("forward", "forward+backward"):
            backward = mode != "forward"
            t_lava, y_lava = best_of(partial(one_pass, lava, x, backward), args.repeat)
            for impl, path in [(i, p) for i in [None, *others]
                               for p in args.synapses.split(",")]:
                with forced(impl), int_synapse.synapse_path(path):
                    one_pass(ours, xt, backward)  # warm-up: compiles kernels at first use
                    int_synapse.reset_counts()
                    t_ours, y_ours = best_of(partial(one_pass, ours, xt, backward), 1)
                    calls = int_synapse.counts()
                    if args.repeat > 1:
                        t_more, _ = best_of(partial(one_pass, ours, xt, backward),
                                            args.repeat - 1)
                        t_ours = min(t_ours, t_more)
                row = {"case": name, "pass": mode, "ours_s": round(t_ours, 4),
                       "lava_dl_s": round(t_lava, 4), "ratio": round(t_lava / t_ours, 2),
                       "spikes_identical": bool(torch.equal(y_ours, from_lava(y_lava))),
                       "synapse": path, "int_calls": calls.get("int", 0),
                       "float_calls": calls.get("float", 0),
                       "threads": torch.get_num_threads(), "load1": round(os.getloadavg()[0], 2)}
                if device.type == "cuda":
                    row["device"] = torch.cuda.get_device_name(device)
                if impl is not None:
                    row.update(impl=impl, default=False)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
