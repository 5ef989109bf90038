"""``spikeline energy``: count the operations of an exported NIR model on real inputs and price
them under a convention (event, ems, lemaire) on hardware models (45 nm CMOS, Loihi, TrueNorth,
or your own ``--hardware-file``)."""
from __future__ import annotations

from pathlib import Path

from spikeline.errors import SpikelineError

from .inputs import add_input_arguments, graph_input_shape, load_inputs, load_model, positive_int

SIM_MODES = ("auto", "loihi", "float")
CONVENTIONS = ("event", "ems", "lemaire")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "energy", help="count synaptic ops / MACs / spikes of a NIR model on inputs and price "
                       "them in joules per inference (SNN and the ANN of the same architecture)",
        description="Simulate EXPORT_DIR/model.nir (or MODEL.nir) on event files, an input "
                    "array or dataset samples; count per-inference synaptic operations (exact "
                    "fan-out), MACs, neuron updates and spikes; price them against the ANN of "
                    "the same architecture. With --convention and --hardware: one convention "
                    "on one model; without: every valid pairing.")
    p.add_argument("model", metavar="EXPORT_DIR|MODEL.nir",
                   help="an export folder (model.nir [+ metadata.json]) or a .nir file")
    add_input_arguments(p)
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.add_argument("--report", metavar="DIR",
                   help="write energy.json, energy.md, energy_layers.png, energy_models.png")
    p.add_argument("--convention", choices=CONVENTIONS, default=None,
                   help="event: spikeline's event-exact pricing; ems: EMS-YOLO Eq. 6; lemaire: "
                        "Lemaire et al. 2022 ops + addressing + memory (default: all)")
    p.add_argument("--hardware", metavar="NAME", default=None,
                   help="price on this hardware model only (see --list-hardware); a path to a "
                        "TOML file is still read as --hardware-file")
    p.add_argument("--hardware-file", metavar="FILE",
                   help="TOML file of extra hardware models (same name replaces a bundled one)")
    p.add_argument("--models", type=lambda s: [v for v in s.split(",") if v],
                   metavar="NAME[,NAME...]", help="price on these models only (default: all)")
    p.add_argument("--fanout", choices=("structural", "nonzero"), default="structural",
                   help="count every synapse (structural, as Sinabs) or only nonzero weights "
                        "(nonzero: the counts equal NeuroBench's Effective ACs/MACs); default "
                        "structural")
    p.add_argument("--mode", choices=SIM_MODES, default="auto", help="simulator mode")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="samples simulated at once (memory); counts do not depend on it")
    p.set_defaults(handler=run)


def latency_steps(metadata: dict) -> int:
    """``metadata.json``'s ``latency_steps`` (extra steps a chip runs while the input crosses the
    network's depth), 0 when absent; anything but an integer >= 0 is refused."""
    value = (metadata or {}).get("latency_steps", 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpikelineError(f"metadata.json field 'latency_steps' must be an integer >= 0, "
                             f"got {value!r}")
    return value


def _hardware_args(args) -> tuple[str | None, str | None]:
    """(model name, extra model file) from --hardware / --hardware-file."""
    name, path = args.hardware, args.hardware_file
    if name is not None and (name.endswith(".toml") or Path(name).is_file()):
        if path is not None:
            raise SpikelineError("--hardware names a file and --hardware-file is given too; "
                                 "name a model with --hardware NAME")
        return None, name
    return name, path


def run(args) -> int:
    from spikeline.deploy.energy import (
        count_in_batches, load_hardware_models, load_memory, price, price_table, select_models,
    )
    from spikeline.deploy.energy.report import build_report, summary_text, write_json, write_report

    from spikeline.paths import output_dir, output_file

    if args.json:  # fail before any work on an output that cannot be written
        output_file(args.json, "--json")
    if args.report:
        output_dir(args.report, "--report")
    name, path = _hardware_args(args)
    models = load_hardware_models(path)  # fail early on a bad file or model name
    memory = load_memory(path)
    chosen = select_models(models, [name] if name else args.models)
    graph, metadata, nir_path = load_model(args.model)
    shape = graph_input_shape(graph)
    x, source = load_inputs(args, graph, metadata)
    latency = latency_steps(metadata)
    counts = count_in_batches(graph, x, args.batch_size, args.mode, args.fanout, latency)
    if args.convention and name:
        estimates, refused = [price(counts, chosen[0], args.convention, memory)], {}
    else:
        conventions = (args.convention,) if args.convention else CONVENTIONS
        estimates, refused = price_table(counts, chosen, conventions, memory)
        if not estimates:
            raise SpikelineError(f"no pricing possible: {refused or 'no model fits'}; the "
                                 "ems and lemaire conventions need a cmos model")
    meta = {"model": str(nir_path), "source": source, "simulator_mode": args.mode,
            "input_shape": list(shape), "memory_model": memory.source}
    if metadata:
        meta["export_metadata"] = metadata
    readout = None
    if isinstance(metadata.get("readout"), dict):  # a detector: its Detect readout is off-chip
        from spikeline.deploy.energy.readout import readout_report

        readout = readout_report(metadata["readout"], counts, estimates,
                                 {m.name: m for m in chosen})
    report = build_report(counts, estimates, {m.name: m for m in chosen}, meta, refused,
                          readout)
    print(summary_text(report))
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    if args.report:
        for out in write_report(report, args.report).values():
            print(f"wrote {out}")
    return 0
