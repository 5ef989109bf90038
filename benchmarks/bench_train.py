"""Training throughput: Spiking ResNet-18, and our blocks against lava-dl's on one conv stack.

Every measurement is a full training step (forward, backward, optimizer step) on fixed inputs,
after two warm-up steps; it repeats steps until ``--seconds`` have passed (at least
``--min-steps``) and reports the median step time.  Prints one JSON line per measurement, then a ratio line.

    .venv/bin/python benchmarks/bench_train.py            # device auto (CUDA when present)
    .venv/bin/python benchmarks/bench_train.py --device cpu --seconds 10

1. ``resnet18``: ``build_model('resnet18')`` (Spiking ResNet-18, paper widths), 48x48, T=10,
   without heads and with evolutionary shortcut heads (the training-only overhead).
   ``--modes eager,compile,compile_bf16`` instead times the main network alone (no heads) in
   each execution mode, with the peak device memory of the timed steps (CUDA only).
   ``--timings`` instead times it (no heads, ``--width``, ``--depths``) under ``ideal`` timing
   and under ``loihi`` timing with the shifting BatchNorm (each neuron restarts at its
   input's arrival) and with scale-only BatchNorm (no bias, no restart): the cost of the
   chip's timing next to the ``(T + latency) / T`` more steps it runs.
2. ``conv_stack``: the same SLAYER CUBA conv stack built from lava-dl 0.6.0's
   ``slayer.block.cuba`` blocks and from ``pipeline/blocks.py`` (spike-identical, see
   tests/test_pipeline_lava_equivalence.py), same weights, same input.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

NEURON = dict(threshold=1.25, current_decay=0.25, voltage_decay=0.03, tau_grad=0.03,
              scale_grad=3.0)


def measure(step, seconds: float, min_steps: int, device) -> tuple[float, int]:
    """Median seconds per step after two warm-up steps (the machine may be shared: the
    median ignores the odd step slowed down by another process)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        step()
    sync()
    times, start = [], time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def bench_resnet18(args, device) -> list[dict]:
    from spikeline.pipeline.heads import ShortcutHeads
    from spikeline.pipeline.models import build_model

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (args.batch, args.T, 2, args.size, args.size), generator=g)
    x, y = x.float().to(device), torch.randint(0, 10, (args.batch,), generator=g).to(device)
    rows = []
    for mode in ("none", "evolutionary"):
        torch.manual_seed(0)
        model = build_model("resnet18", in_channels=2, num_classes=10,
                            input_size=(args.size, args.size))
        heads = ShortcutHeads(model, 10, mode).to(device)
        opt = torch.optim.Adam(heads.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss, _ = heads.loss(x, y, 0.5)
            loss.backward()
            opt.step()

        sec, n = measure(step, args.seconds, args.min_steps, device)
        rows.append({"bench": "resnet18", "heads": mode, "device": str(device),
                     "batch": args.batch, "T": args.T, "size": args.size, "steps": n,
                     "s_per_step": round(sec, 4), "samples_per_s": round(args.batch / sec, 3),
                     "params": sum(p.numel() for p in model.parameters())})
    return rows


def bench_resnet18_modes(args, device) -> list[dict]:
    """Spiking ResNet-18 training steps per second: eager fp32, torch.compile fp32, and
    torch.compile under bf16 autocast; peak memory of the timed steps on CUDA."""
    from spikeline.pipeline.models import build_model

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (args.batch, args.T, 2, args.size, args.size), generator=g)
    x, y = x.float().to(device), torch.randint(0, 10, (args.batch,), generator=g).to(device)
    rows = []
    for mode in [m for m in args.modes.split(",") if m]:
        torch.manual_seed(0)
        model = build_model("resnet18", in_channels=2, num_classes=10,
                            input_size=(args.size, args.size), width=args.width).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        forward = torch.compile(model, dynamic=False) if mode.startswith("compile") else model
        bf16 = mode.endswith("bf16")

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(forward(x), y)
            loss.backward()
            opt.step()

        row = {"bench": "resnet18_modes", "mode": mode, "device": str(device),
               "batch": args.batch, "T": args.T, "size": args.size, "width": args.width}
        try:
            t0 = time.perf_counter()
            step()  # the first step compiles
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            first = time.perf_counter() - t0
            sec, n = measure(step, args.seconds, args.min_steps, device)
        except Exception as err:  # a compiler failure is a result, not a crash of the bench
            rows.append({**row, "error": repr(err)[:500]})
            continue
        rows.append({**row, "steps": n, "first_step_s": round(first, 2),
                     "s_per_step": round(sec, 4), "samples_per_s": round(args.batch / sec, 2),
                     "peak_mem_GiB": (round(torch.cuda.max_memory_allocated() / 2**30, 3)
                                      if device.type == "cuda" else None)})
    base = next((r for r in rows if r.get("mode") == "eager" and "samples_per_s" in r), None)
    for r in rows:
        if base and "samples_per_s" in r:
            r["speedup_vs_eager"] = round(r["samples_per_s"] / base["samples_per_s"], 3)
    return rows


def bench_resnet18_timings(args, device) -> list[dict]:
    """Spiking ResNet-18 training steps under each timing (``pipeline/timing.py``)."""
    from spikeline.pipeline.models import build_model

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (args.batch, args.T, 2, args.size, args.size), generator=g)
    x, y = x.float().to(device), torch.randint(0, 10, (args.batch,), generator=g).to(device)
    depths = tuple(int(v) for v in args.depths.split(",")) if args.depths else None
    rows = []
    for timing, batchnorm in (("ideal", "shift"), ("loihi", "shift"), ("loihi", "scale")):
        torch.manual_seed(0)
        model = build_model("resnet18", in_channels=2, num_classes=10, timing=timing,
                            batchnorm=batchnorm, input_size=(args.size, args.size),
                            width=args.width, depths=depths).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        sec, n = measure(step, args.seconds, args.min_steps, device)
        rows.append({"bench": "resnet18_timings", "timing": timing, "batchnorm": batchnorm,
                     "restarts": any(getattr(m, "reset_step", 0) for m in model.modules()),
                     "device": str(device), "batch": args.batch, "T": args.T,
                     "steps_run": args.T + model.input_pad_steps, "size": args.size,
                     "width": args.width, "depths": args.depths, "steps": n,
                     "s_per_step": round(sec, 4)})
    for r in rows:
        r["time_vs_ideal"] = round(r["s_per_step"] / rows[0]["s_per_step"], 3)
        r["steps_vs_ideal"] = round(r["steps_run"] / rows[0]["steps_run"], 3)
    return rows


def _lava_arch_fix() -> None:
    """lava-dl 0.6.0 JIT-builds its CUDA kernels for TORCH_CUDA_ARCH_LIST = '8.0' on every
    capability >= 8 (``slayer/jitconfig.py``); Hopper (9.0) then has no kernel image.  Ask for
    the device's own architecture before first use."""
    if not torch.cuda.is_available():
        return
    major, minor = torch.cuda.get_device_capability()
    if major >= 9:
        from lava.lib.dl.slayer import jitconfig

        jitconfig.TORCH_CUDA_ARCH_LIST = f"{major}.{minor}"


def _stacks(size: int):
    """The same conv stack from lava-dl's and from our blocks, with the same weights."""
    import lava.lib.dl.slayer as slayer

    from spikeline.pipeline import blocks
    from spikeline.pipeline.neuron import CubaParams

    p = CubaParams(**NEURON)
    s = size // 2 // 2 // 2  # stride-2 conv, then two 2x2 pools
    lava = torch.nn.Sequential(
        slayer.block.cuba.Conv(NEURON, 2, 16, 3, padding=1, stride=2),
        slayer.block.cuba.Conv(NEURON, 16, 32, 3, padding=1),
        slayer.block.cuba.Pool(NEURON, 2),
        slayer.block.cuba.Conv(NEURON, 32, 64, 3, padding=1),
        slayer.block.cuba.Pool(NEURON, 2),
        slayer.block.cuba.Flatten(),
        slayer.block.cuba.Dense(NEURON, 64 * s * s, 128),
        slayer.block.cuba.Affine(NEURON, 128, 10),
    )
    ours = torch.nn.Sequential(
        blocks.Conv(p, 2, 16, 3, padding=1, stride=2),
        blocks.Conv(p, 16, 32, 3, padding=1),
        blocks.Pool(p, 2),
        blocks.Conv(p, 32, 64, 3, padding=1),
        blocks.Pool(p, 2),
        blocks.Flatten(),
        blocks.Dense(p, 64 * s * s, 128),
        blocks.Affine(p, 128, 10),
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for o, l in zip(ours, lava):
            if isinstance(o, (blocks.Conv, blocks.Dense, blocks.Affine)):
                w = torch.randn(o.weight.shape, generator=g) * 2.5 / o.weight[0].numel() ** 0.5
                o.weight.copy_(w)
                l.synapse.weight.copy_(w.reshape(l.synapse.weight.shape))
    return lava, ours


def bench_conv_stack(args, device) -> list[dict]:
    from spikeline.pipeline.blocks import from_lava

    try:
        if device.type == "cuda":
            _lava_arch_fix()
        lava, ours = _stacks(args.size)
    except Exception as err:  # lava-dl missing or broken
        return [{"bench": "conv_stack", "impl": "lava-dl", "error": repr(err)}]
    g = torch.Generator().manual_seed(2)
    x_lava = torch.randint(0, 3, (args.stack_batch, 2, args.size, args.size, args.T),
                           generator=g).float().to(device)
    x_ours = from_lava(x_lava)
    y = torch.randint(0, 10, (args.stack_batch,), generator=g).to(device)
    with torch.no_grad():  # same stack, same weights (before any step): same output
        out_l, out_o = lava.to(device)(x_lava[:1]), ours.to(device)(x_ours[:, :1])
    rows = [{"bench": "conv_stack", "check": "same_output_before_training",
             "max_abs_diff": float((from_lava(out_l) - out_o).abs().max())}]
    for impl, net, x, time_dim in (("lava-dl", lava, x_lava, -1), ("spikeline", ours, x_ours, 0)):
        net = net.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            logits = net(x).mean(time_dim)
            F.cross_entropy(logits, y).backward()
            opt.step()

        row = {"bench": "conv_stack", "impl": impl, "device": str(device),
               "batch": args.stack_batch, "T": args.T, "size": args.size}
        try:
            sec, n = measure(step, args.seconds, args.min_steps, device)
        except Exception as err:  # e.g. lava-dl's CUDA extension failing to build
            rows.append({**row, "error": repr(err)})
            continue
        rows.append({**row, "steps": n, "s_per_step": round(sec, 4),
                     "samples_per_s": round(args.stack_batch / sec, 3)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=2, help="ResNet-18 batch")
    ap.add_argument("--stack-batch", type=int, default=8, help="conv stack batch")
    ap.add_argument("--T", type=int, default=10)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=15.0, help="timed seconds per measurement")
    ap.add_argument("--min-steps", type=int, default=2)
    ap.add_argument("--skip-resnet", action="store_true")
    ap.add_argument("--skip-stack", action="store_true")
    ap.add_argument("--modes", default=None,
                    help="time ResNet-18 in these modes instead (eager,compile,compile_bf16)")
    ap.add_argument("--width", type=int, default=64,
                    help="ResNet-18 channel scale (--modes, --timings)")
    ap.add_argument("--timings", action="store_true",
                    help="time ResNet-18 under ideal and loihi timing instead")
    ap.add_argument("--depths", default=None, help="ResNet-18 blocks per stage (--timings)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    print(json.dumps({"bench": "env", "torch": torch.__version__, "device": str(device),
                      "threads": torch.get_num_threads(), "python": platform.python_version(),
                      "cpu": platform.processor() or platform.machine(),
                      "loadavg_1min": round(os.getloadavg()[0], 2)}), flush=True)
    if args.timings:
        for row in bench_resnet18_timings(args, device):
            print(json.dumps(row), flush=True)
        return 0
    if args.modes:
        for row in bench_resnet18_modes(args, device):
            print(json.dumps(row), flush=True)
        return 0
    rows = [] if args.skip_resnet else bench_resnet18(args, device)
    for row in rows:
        print(json.dumps(row), flush=True)
    if len(rows) == 2:
        print(json.dumps({"bench": "resnet18", "ratio": "evolutionary_heads/none",
                          "samples_per_s_ratio": round(rows[1]["samples_per_s"]
                                                       / rows[0]["samples_per_s"], 3)}))
    stack = [] if args.skip_stack else bench_conv_stack(args, device)
    for row in stack:
        print(json.dumps(row), flush=True)
    speed = {r["impl"]: r["samples_per_s"] for r in stack if "samples_per_s" in r}
    if len(speed) == 2:
        print(json.dumps({"bench": "conv_stack", "ratio": "spikeline/lava-dl",
                          "samples_per_s_ratio": round(speed["spikeline"] / speed["lava-dl"],
                                                       3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
