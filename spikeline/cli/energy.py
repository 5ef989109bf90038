"""``spikeline energy``: count the operations of an exported NIR model on real inputs and price
them on hardware models (45 nm CMOS, Loihi, TrueNorth, or your own ``--hardware`` file)."""
from __future__ import annotations

import numpy as np

from .inputs import add_input_arguments, graph_input_shape, load_inputs, load_model, positive_int

SIM_MODES = ("auto", "loihi", "float")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "energy", help="count synaptic ops / MACs / spikes of a NIR model on inputs and price "
                       "them in joules per inference (SNN and ANN equivalent)",
        description="Simulate EXPORT_DIR/model.nir (or MODEL.nir) on event files, an input "
                    "array or dataset samples; count per-inference synaptic operations (exact "
                    "fan-out), MACs, neuron updates and spikes; price them on each hardware "
                    "model against the dense ANN of the same architecture.")
    p.add_argument("model", metavar="EXPORT_DIR|MODEL.nir",
                   help="an export folder (model.nir [+ metadata.json]) or a .nir file")
    add_input_arguments(p)
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.add_argument("--report", metavar="DIR",
                   help="write energy.json, energy.md, energy_layers.png, energy_models.png")
    p.add_argument("--hardware", metavar="FILE",
                   help="TOML file of extra hardware models (same name replaces a bundled one)")
    p.add_argument("--models", type=lambda s: [v for v in s.split(",") if v],
                   metavar="NAME[,NAME...]", help="price on these models only (default: all)")
    p.add_argument("--fanout", choices=("structural", "nonzero"), default="structural",
                   help="count every synapse (structural, as Sinabs) or only nonzero weights "
                        "(as NeuroBench); default structural")
    p.add_argument("--mode", choices=SIM_MODES, default="auto", help="simulator mode")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="samples simulated at once (memory); counts do not depend on it")
    p.set_defaults(handler=run)


def count_in_batches(graph, x: np.ndarray, batch_size: int, mode: str, fanout: str):
    import torch

    from spikeline.deploy.energy import combine_counts, count_operations
    from spikeline.deploy.simulate import simulate

    parts = []
    for start in range(0, x.shape[1], batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(x[:, start:start + batch_size]))
        with torch.no_grad():
            sim = simulate(graph, chunk, mode=mode)
        parts.append(count_operations(graph, sim, fanout=fanout))
        del sim
    return combine_counts(parts)


def run(args) -> int:
    from spikeline.deploy.energy import load_hardware_models, price, select_models
    from spikeline.deploy.report import build_report, summary_text, write_json, write_report

    from spikeline.paths import output_dir, output_file

    if args.json:  # fail before any work on an output that cannot be written
        output_file(args.json, "--json")
    if args.report:
        output_dir(args.report, "--report")
    models = load_hardware_models(args.hardware)  # fail early on a bad file or model name
    chosen = select_models(models, args.models)
    graph, metadata, nir_path = load_model(args.model)
    shape = graph_input_shape(graph)
    x, source = load_inputs(args, graph, metadata)
    counts = count_in_batches(graph, x, args.batch_size, args.mode, args.fanout)
    estimates = [price(counts, model) for model in chosen]
    meta = {"model": str(nir_path), "source": source, "simulator_mode": args.mode,
            "input_shape": list(shape)}
    if metadata:
        meta["export_metadata"] = metadata
    report = build_report(counts, estimates, {m.name: m for m in chosen}, meta)
    print(summary_text(report))
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    if args.report:
        for path in write_report(report, args.report).values():
            print(f"wrote {path}")
    return 0
