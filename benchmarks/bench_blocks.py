"""Our CUBA-LIF blocks vs lava-dl 0.6.0's own blocks: same net, same weights, same input, CPU.

One JSON line per case: ``case``, ``pass`` (forward | forward+backward), ``ours_s``,
``lava_dl_s`` (best of ``--repeat`` runs), ``ratio`` = lava_dl_s / ours_s, and
``spikes_identical`` (outputs compared bit for bit).  Run: python benchmarks/bench_blocks.py
"""
from __future__ import annotations

import argparse
import json
import torch
from lava.lib.dl import slayer

from spikeline.pipeline import blocks
from spikeline.pipeline.blocks import from_lava, to_lava
from spikeline.pipeline.neuron import CubaParams
from timing import best_of

P = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
               scale_grad=3.0)
LP = dict(threshold=1.25, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
          scale_grad=3.0)


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
    return y.detach()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, ours, lava, shape in cases():
        copy_weights(ours, lava)
        xt = (torch.rand(shape[-1], *shape[:-1]) < 0.2).float()  # ours: time first
        x = to_lava(xt)  # lava-dl: time last
        for mode in ("forward", "forward+backward"):
            backward = mode != "forward"
            t_ours, y_ours = best_of(lambda: one_pass(ours, xt, backward), args.repeat)
            t_lava, y_lava = best_of(lambda: one_pass(lava, x, backward), args.repeat)
            print(json.dumps({"case": name, "pass": mode, "ours_s": round(t_ours, 4),
                              "lava_dl_s": round(t_lava, 4), "ratio": round(t_lava / t_ours, 2),
                              "spikes_identical": bool(torch.equal(y_ours, from_lava(y_lava))),
                              "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
