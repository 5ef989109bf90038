"""Integer synapses (``pipeline/kernels/int_synapse.py``) against the float path, side by side.

One JSON line per row, both paths measured in this run, interleaved (float, int, float, int,
...; best of ``--repeat`` each): ``float_s``, ``int_s``, ``speedup`` = float_s / int_s and
``identical`` (outputs, and gradients for forward+backward, compared bit for bit).

* ``layer``: one synapse per layer type and shape, ``forward`` (no autograd, as the simulator
  and evaluation run it) and ``forward+backward`` (training; backward is float on both paths);
* ``crossover``: dense and conv sizes swept to find where integer starts to pay;
* ``simulate``: the whole fixed-point simulation (``deploy.simulate``, mode ``loihi``) of the
  demo ``cnn`` and of a Spiking ResNet-18 export (``--width 16``), T=10, 34x34, in samples/s:
  the float synapse, the integer synapse, and the simulator as it was before (the fixed-point
  neuron stepped in PyTorch once per time step, float synapse: ``before_s``).

Run: python benchmarks/bench_synapse.py [--threads 2] [--repeat 5] [--only layer,simulate]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from spikeline.pipeline.kernels import int_synapse as isyn

PATHS = ("float", "int")
DEVICE = torch.device("cpu")


def _load() -> float:
    """The 1-minute load average (``uptime``): other processes compete for the cores."""
    return round(os.getloadavg()[0], 2)


def side_by_side(fn, repeat: int):
    """``{path: (best seconds, result)}`` for ``fn()`` under each forced path, interleaved."""
    best = {p: float("inf") for p in PATHS}
    out = {}
    for p in PATHS:  # warm-up (kernel selection, weight packing caches of oneDNN)
        with isyn.synapse_path(p):
            fn()
    for _ in range(repeat):
        for p in PATHS:
            with isyn.synapse_path(p):
                isyn.reset_counts()
                start = time.perf_counter()
                out[p] = fn()
                if DEVICE.type == "cuda":
                    torch.cuda.synchronize()
                best[p] = min(best[p], time.perf_counter() - start)
                out[p] = (out[p], isyn.counts())
    return best, out


def _equal(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return all(_equal(a[k], b[k]) for k in a)
    return a is None and b is None or bool(torch.equal(a, b))


def emit(row: dict, best: dict, out: dict, **extra):
    row.update(float_s=round(best["float"], 5), int_s=round(best["int"], 5),
               speedup=round(best["float"] / best["int"], 2),
               identical=_equal(out["float"][0], out["int"][0]),
               int_calls=out["int"][1].get("int", 0),
               float_calls_on_int_path=out["int"][1].get("float", 0),
               threads=torch.get_num_threads(), load1=_load(), **extra)
    if DEVICE.type == "cuda" and row.get("bench") != "simulate":
        row["device"] = torch.cuda.get_device_name(DEVICE)
    print(json.dumps(row), flush=True)


def spikes(shape, rate=0.2, seed=0, device=None):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < rate).float().to(device or DEVICE)


def grid_weight(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-128, 128, shape, generator=g).float() / 32).to(DEVICE)


def layer_cases():
    """(name, kind, input shape, weight shape, conv options)."""
    yield "dense 1024->512, M=3200 (bench_blocks dense)", "linear", (3200, 1024), (512, 1024), {}
    yield "dense 2048->128, M=320 (cnn readin)", "linear", (320, 2048), (128, 2048), {}
    yield "affine readout 128->10, M=3200", "linear", (3200, 128), (10, 128), {}
    yield "affine readout 512->10, M=320", "linear", (320, 512), (10, 512), {}
    yield ("conv 16->32 3x3 p1 on 32x32, B=800 (bench_blocks conv)", "conv",
           (800, 16, 32, 32), (32, 16, 3, 3), dict(padding=1))
    yield ("conv 2->16 3x3 s2 p1 on 32x32, B=3200 (conv net layer 1)", "conv",
           (3200, 2, 32, 32), (16, 2, 3, 3), dict(padding=1, stride=2))
    yield ("conv 32->64 3x3 p1 on 32x32, B=160 (issue 20's row)", "conv",
           (160, 32, 32, 32), (64, 32, 3, 3), dict(padding=1))
    yield ("conv 64->64 3x3 p1 groups=4 on 16x16, B=320", "conv",
           (320, 64, 16, 16), (64, 16, 3, 3), dict(padding=1, groups=4))
    yield ("conv 32->64 1x1 s2 on 16x16, B=320 (resnet shortcut)", "conv",
           (320, 32, 16, 16), (64, 32, 1, 1), dict(stride=2))
    yield ("sumpool 2x2 as depthwise conv, 32ch 32x32, B=800", "conv",
           (800, 32, 32, 32), (32, 1, 2, 2), dict(stride=2, groups=32))


def run_layer(name, kind, xshape, wshape, opts, repeat, backward):
    x, w = spikes(xshape), grid_weight(wshape)
    if kind == "conv" and opts.get("groups", 1) == wshape[0] and wshape[1] == 1:
        w = torch.ones(wshape, device=DEVICE)  # sum pooling

    def fn():
        xi = x.clone().requires_grad_(backward)
        wi = w.clone().requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            z = isyn.linear(xi, wi) if kind == "linear" else isyn.conv2d(xi, wi, None, **opts)
            if not backward:
                return z
            z.backward(torch.ones(z.shape, device=z.device))  # the same contiguous upstream gradient on both
            return z.detach(), xi.grad, wi.grad

    best, out = side_by_side(fn, repeat)
    macs = x.shape[0] * w.numel() if kind == "linear" else None
    emit({"bench": "layer", "case": name, "pass": "forward+backward" if backward else "forward"},
         best, out, **({"macs": macs} if macs else {}))


def crossover(repeat):
    for m in (64, 256, 1024, 4096):
        for k, n in ((256, 128), (1024, 512)):
            x, w = spikes((m, k)), grid_weight((n, k))
            best, out = side_by_side(lambda: isyn.linear(x, w), repeat)
            emit({"bench": "crossover", "case": f"dense {k}->{n}, M={m}", "macs": m * k * n},
                 best, out)
    for b in (8, 32, 128, 512):
        for c in (8, 32):
            x, w = spikes((b, c, 32, 32)), grid_weight((c, c, 3, 3))
            best, out = side_by_side(lambda: isyn.conv2d(x, w, None, padding=1), repeat)
            emit({"bench": "crossover", "case": f"conv {c}->{c} 3x3 on 32x32, B={b}",
                  "macs": b * 32 * 32 * w.numel()}, best, out)


def simulation(repeat, batch, widths):
    from spikeline.deploy import simulate as sim
    from spikeline.deploy.fold import fold_model
    from spikeline.deploy.to_nir import model_to_nir
    from spikeline.pipeline.models import build_model

    for name, opts in (("cnn", {}), ("resnet18", {"width": widths})):
        torch.manual_seed(0)
        model = fold_model(build_model(name, **opts).eval())
        graph = model_to_nir(model, (2, 34, 34)).graph
        x = spikes((10, batch, 2, 34, 34), rate=0.1, device="cpu")  # the simulator: CPU

        def fn():
            with torch.no_grad():
                return sim.simulate(graph, x, mode="loihi").outputs

        best, out = side_by_side(fn, repeat)
        # the simulator before this change: the neuron stepped once per time step in PyTorch
        run = sim._FixedCuba.run
        del sim._FixedCuba.run
        try:
            with isyn.synapse_path("float"), torch.no_grad():
                sim.simulate(graph, x, mode="loihi")
                before = float("inf")
                for _ in range(max(1, repeat // 2)):
                    start = time.perf_counter()
                    old = sim.simulate(graph, x, mode="loihi").outputs
                    before = min(before, time.perf_counter() - start)
        finally:
            sim._FixedCuba.run = run
        label = name + (f" --width {widths}" if opts else "")
        emit({"bench": "simulate", "case": f"{label}, T=10, 34x34, N={batch}",
              "samples_per_s_float": round(batch / best["float"], 2),
              "samples_per_s_int": round(batch / best["int"], 2),
              "before_s": round(before, 4), "speedup_over_before": round(before / best["int"], 2),
              "identical_to_before": _equal(old, out["int"][0])}, best, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="simulation samples per batch")
    parser.add_argument("--width", type=int, default=16, help="ResNet-18 width")
    parser.add_argument("--only", default="layer,crossover,simulate")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the layer and crossover rows run (the simulator: CPU)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    torch.set_num_threads(args.threads)
    parts = set(args.only.split(","))
    if "layer" in parts:
        for case in layer_cases():
            for backward in (False, True):
                run_layer(*case, args.repeat, backward)
    if "crossover" in parts:
        crossover(args.repeat)
    if "simulate" in parts:
        simulation(args.repeat, args.batch, args.width)


if __name__ == "__main__":
    main()
