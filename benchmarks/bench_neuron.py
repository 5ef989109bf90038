"""The CUBA-LIF neuron alone: each implementation's time loop against a plain copy of the bytes.

A training pass of the neuron must at least read the input and write the spikes and the
pre-reset voltage (forward: 12 bytes per element and step), then read the output gradient and
the voltage and write the input gradient (backward: 12 bytes).  ``GB_s`` is those minimal bytes
over the measured time; ``copy_GB_s`` is what ``torch.clone`` of a float32 tensor of the same
element count moves on the same device (bytes read + written, so 8 per element) in the same run;
``of_copy`` is their ratio, the fraction of the memory bandwidth the neuron reaches.  lava-dl's
own CUBA neuron (``slayer.neuron.cuba``, time-last layout) is timed too where it is installed.

One JSON line per (size, implementation, pass); ``--json OUT`` also writes them to a file.
Run: python benchmarks/bench_neuron.py [--device cpu|cuda] [--json OUT]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

import torch

from spikeline.pipeline import kernels
from spikeline.pipeline.neuron import CubaParams, cuba_spikes
from timing import best_of

P = CubaParams(threshold=1.25, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
               scale_grad=3.0)
LP = {"threshold": 1.25, "current_decay": 0.25, "voltage_decay": 0.03, "tau_grad": 0.03,
      "scale_grad": 3.0}
FORWARD_BYTES = 12  # read x, write spikes, write voltage (float32 each)
TRAIN_BYTES = 24  # forward, then read grad and voltage, write grad_x
# (T, neurons per step): the CUDA sizes hold 47 M elements, the anchor's tensor (README)
SIZES = {"cpu": [(100, 1 << 18), (10, 1 << 20)], "cuda": [(10, 4_700_000), (100, 470_000)]}


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat):
    def run():
        out = fn()
        sync(device)
        return out
    sync(device)
    run()  # warm-up: compiles the kernels, fills caches
    return best_of(run, repeat)[0]


def lava_neuron(device):
    try:
        from lava.lib.dl import slayer
    except ImportError:
        return None
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9:
        slayer.jitconfig.TORCH_CUDA_ARCH_LIST = "9.0"  # lava-dl's JIT targets 8.0 only otherwise
    return slayer.neuron.cuba.Neuron(**LP).to(device)


@contextlib.contextmanager
def forced(impl: str):
    """Run the neuron with ``impl`` (``SPIKELINE_NEURON``) inside the block."""
    old = os.environ.get("SPIKELINE_NEURON")
    os.environ["SPIKELINE_NEURON"] = impl
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SPIKELINE_NEURON")
        else:
            os.environ["SPIKELINE_NEURON"] = old


def measure(impl, x, grad, device, repeat):
    """(forward seconds, forward+backward seconds) of one implementation, in training mode
    (the forward pass keeps what backward needs)."""
    if impl == "lava-dl":
        neuron = lava_neuron(device)
        x, grad = x.movedim(0, -1).contiguous(), grad.movedim(0, -1).contiguous()
    else:
        def neuron(inp):
            return cuba_spikes(inp, P)

    def forward():
        return neuron(x.detach().requires_grad_())

    def train():
        xg = x.detach().requires_grad_()
        neuron(xg).backward(grad)
        return xg.grad

    if impl == "lava-dl":
        return timed(forward, device, repeat), timed(train, device, repeat)
    with forced(impl):
        return timed(forward, device, repeat), timed(train, device, repeat)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--sizes", default=None,
                        help="T:neurons pairs, comma separated (default: per device)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    sizes = SIZES[device.type] if args.sizes is None else [
        tuple(int(v) for v in pair.split(":")) for pair in args.sizes.split(",")]
    default = kernels.choose(device)
    impls = [name for name in kernels.IMPLS if kernels.unavailable(name, device) is None]
    if device.type == "cuda" and "compiled" in impls:
        impls.remove("compiled")  # the per-step torch.compile path: ~20 s compile per shape
    has_lava = lava_neuron(device) is not None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    torch.manual_seed(0)
    for T, n in sizes:
        x = torch.randn(T, 1, n, device=device) * 1.5 + 0.3  # [T, batch, neurons]
        grad = torch.randn(T, 1, n, device=device)
        copy_s = timed(x.clone, device, args.repeat)
        copy_gbs = 8 * x.numel() / copy_s / 1e9
        times = {impl: measure(impl, x, grad, device, args.repeat)
                 for impl in impls + (["lava-dl"] if has_lava else [])}
        for impl, (fwd_s, train_s) in times.items():
            for mode, seconds, nbytes in (("forward", fwd_s, FORWARD_BYTES),
                                          ("forward+backward", train_s, TRAIN_BYTES)):
                gbs = nbytes * x.numel() / seconds / 1e9
                row = {"device": name, "impl": impl, "pass": mode, "T": T, "neurons": n,
                       "seconds": round(seconds, 5), "GB_s": round(gbs, 2),
                       "copy_GB_s": round(copy_gbs, 2), "of_copy": round(gbs / copy_gbs, 3),
                       "vs_eager": round(times["eager"][mode != "forward"] / seconds, 2),
                       "threads": torch.get_num_threads()}
                if "lava-dl" in times:
                    row["vs_lava_dl"] = round(times["lava-dl"][mode != "forward"] / seconds, 2)
                if impl != default:
                    row["default"] = False
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
