"""``spikeline energy``: count the operations of an exported NIR model on real inputs and price
them under a convention (event, ems, lemaire) on hardware models (45 nm CMOS, Loihi, TrueNorth,
or your own ``--hardware-file``)."""
from __future__ import annotations

from pathlib import Path

from spikeline.errors import SpikelineError
from spikeline.paths import output_dir, output_file

from .inputs import add_input_arguments, load_inputs, load_model, positive_int

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
    from spikeline.deploy.artifact import graph_input_shape  # lazy: CLI start-up (cli/__init__)
    from spikeline.deploy.energy.report import summary_text, write_json, write_report  # lazy: as above
    from spikeline.workflow import energy_report, hardware_selection  # lazy: as above

    if args.json:  # fail before any work on an output that cannot be written
        output_file(args.json, "--json")
    if args.report:
        output_dir(args.report, "--report")
    name, path = _hardware_args(args)
    chosen, memory = hardware_selection(name, path, args.models)
    graph, meta, nir_path = load_model(args.model)
    shape = graph_input_shape(graph)
    x, source = load_inputs(args, graph, meta)
    report = energy_report(graph, meta, x, chosen, memory, convention=args.convention,
                           single=bool(name), fanout=args.fanout, mode=args.mode,
                           batch_size=args.batch_size,
                           meta={"model": str(nir_path), "source": source,
                                 "input_shape": list(shape)})
    print(summary_text(report))
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    if args.report:
        for out in write_report(report, args.report).values():
            print(f"wrote {out}")
    return 0


def __getattr__(name):
    if name == "latency_steps":  # moved to spikeline.workflow
        from spikeline.workflow import latency_steps  # lazy: CLI start-up (cli/__init__)

        return latency_steps
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
