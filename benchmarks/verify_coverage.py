"""How many real inputs the spike certificate needs to catch a one-grid-step weight change.

For each weight layer (Conv2d / Linear node) of ``EXPORT_DIR/model.nir``: ``--trials`` times,
one weight chosen at random is moved by one step of the quantization grid (2/64, staying inside
[-256, 254]/64), and the changed graph runs in our simulator (Loihi fixed point, the ``nir``
backend) on the first ``--samples`` ndigits test samples and on the real recordings of
tests/data/events.  A trial is *caught within n samples* when some node's output (spikes, or the
readout voltage) differs from the unchanged graph's on one of the first n samples.  Printed and
written (``--json``): per layer, the fraction caught within n = 1, 2, 4, ... samples, the samples
that catch every trial (or "not within S"), the catch rate on the recordings, and per spiking
layer the coverage (the fraction of its neurons that spiked at least once) on n samples.

``deploy/verify.py``'s ``DEFAULT_SAMPLES`` are chosen from this output (see its comment).

    nice -n 10 .venv/bin/python benchmarks/verify_coverage.py runs/demo/export \\
        --samples 64 --trials 20 --json coverage_cnn.json
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import nir
import numpy as np
import torch

from spikeline.cli.inputs import encode, inputs_from_dataset, inputs_from_events
from spikeline.deploy.export import load_folded
from spikeline.deploy.simulate import simulate

STEP = 2 / 64  # one step of the 8-bit weight grid (deploy/export.py QUANTIZATION)
EVENTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "events"


def differs_per_sample(base: dict, other: dict) -> np.ndarray:
    """``[N]`` bool: some node's output differs on that sample."""
    out = None
    for name, value in base.items():
        d = (value != other[name]).flatten(2).any(-1).any(0).numpy()
        out = d if out is None else out | d
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir")
    p.add_argument("--json")
    args = p.parse_args()
    export = Path(args.export)
    model, meta, _ = load_folded(export)
    graph = nir.read(export / "model.nir")
    shape, T = tuple(meta["input_shape"]), int(meta["T"])
    frames = inputs_from_dataset(meta.get("dataset") or "ndigits", args.samples, T, shape,
                                 "test", cache_dir=args.cache_dir)
    recordings = inputs_from_events(sorted(EVENTS.iterdir()), T, shape)

    def chip_input(f):
        f = torch.from_numpy(encode(f, meta["input_encoding"]))
        return model.network_input(f.transpose(0, 1))

    x, xr = chip_input(frames), chip_input(recordings)
    started = time.perf_counter()
    base, base_r = simulate(graph, x, mode="loihi").outputs, simulate(graph, xr, mode="loihi").outputs
    sim_seconds = time.perf_counter() - started
    rng = np.random.default_rng(args.seed)
    layers = [n for n, node in graph.nodes.items() if isinstance(node, (nir.Conv2d, nir.Linear))]
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n < args.samples] + [args.samples]
    result = {"export": str(export), "samples": args.samples, "trials": args.trials,
              "recordings": len(recordings[0]), "seconds_per_simulation": round(sim_seconds, 3),
              "layers": {}, "coverage": {}}
    for layer in layers:
        weight = np.asarray(graph.nodes[layer].weight)
        firsts, caught_r = [], 0
        for _ in range(args.trials):
            index = tuple(int(rng.integers(s)) for s in weight.shape)
            value = weight[index]
            sign = 1 if value + STEP <= 254 / 64 else -1
            changed = copy.deepcopy(graph)
            changed.nodes[layer].weight = weight.copy()
            changed.nodes[layer].weight[index] = value + sign * STEP
            first = None
            for lo, hi in zip([0, *ns], ns):  # samples in growing chunks, until one differs
                part = {n: v[:, lo:hi] for n, v in base.items()}
                d = differs_per_sample(part, simulate(changed, x[:, lo:hi], mode="loihi")
                                       .outputs)
                if d.any():
                    first = lo + int(np.argmax(d)) + 1
                    break
            firsts.append(first)
            caught_r += bool(differs_per_sample(base_r, simulate(changed, xr, mode="loihi")
                                                .outputs).any())
        within = {n: sum(f is not None and f <= n for f in firsts) / args.trials for n in ns}
        needed = None if any(f is None for f in firsts) else max(firsts)
        result["layers"][layer] = {"caught_within": within, "samples_to_catch_all": needed,
                                   "first_catch": firsts,
                                   "caught_on_recordings": caught_r / args.trials}
        print(f"{layer:14s} caught within n samples: "
              + ", ".join(f"{n}: {100 * v:.0f}%" for n, v in within.items())
              + f"; all caught by {needed if needed else 'not within %d' % args.samples}; "
              f"recordings: {100 * caught_r / args.trials:.0f}%", flush=True)
    for name, value in base.items():
        if isinstance(graph.nodes[name], nir.CubaLIF):
            fired = (value != 0).flatten(2).cumsum(0).bool().any(0)  # [N, neurons] ever fired
            seen = fired.cumsum(0).bool()  # up to sample n
            result["coverage"][name] = {n: round(float(seen[n - 1].float().mean()), 4) for n in ns}
            print(f"coverage {name:12s} " + ", ".join(
                f"{n}: {100 * v:.1f}%" for n, v in result["coverage"][name].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
