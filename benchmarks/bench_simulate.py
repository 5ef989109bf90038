"""Our NIR simulator vs SpikingJelly's and snnTorch's NIR imports, same graph, same input.

The graph is the ndigits CNN exported by ``deploy.to_nir`` and lowered for the peers
(``deploy.peers.lower_for_peers``: sum pooling as a conv, readout cut at the last spiking
layer).  All three run NIR's float semantics; ours also runs Loihi fixed point.  Outputs are
compared spike for spike.  One JSON line per simulator with ``seconds`` (best of
``--repeat``), ``ratio`` (its time / ours in float mode) and ``identical``.
Run: python benchmarks/bench_simulate.py
"""
from __future__ import annotations

import argparse
import json
import torch

from spikeline.deploy.fold import fold_model
from spikeline.deploy.peers import lower_for_peers, run_peer
from spikeline.deploy.simulate import simulate
from spikeline.deploy.to_nir import model_to_nir
from spikeline.pipeline.models import build_model
from timing import best_of


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--T", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = fold_model(build_model("cnn"))
    graph = lower_for_peers(model_to_nir(model, (2, 34, 34)).graph)
    x = (torch.rand(args.T, args.batch, 2, 34, 34) < 0.1).float()
    with torch.no_grad():
        t_ours, ref = best_of(lambda: simulate(graph, x, mode="float").output, args.repeat)
        t_fixed, _ = best_of(lambda: simulate(graph, x, mode="loihi").output, args.repeat)
        rows = [("spikeline (float)", t_ours, ref), ("spikeline (loihi fixed point)", t_fixed,
                                                     None)]
        for peer in ("spikingjelly", "snntorch"):
            t, out = best_of(lambda: run_peer(peer, graph, x, 1e-4), args.repeat)
            rows.append((peer, t, out))
    for name, t, out in rows:
        print(json.dumps({"simulator": name, "T": args.T, "batch": args.batch,
                          "seconds": round(t, 4), "ratio": round(t / t_ours, 2),
                          "identical": None if out is None else bool(torch.equal(out, ref)),
                          "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
