"""``spikeline export | simulate | verify | import``: from a training run to a checked artifact."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch  # loaded by the parser already (spikeline/cli/__init__.py)

from spikeline.atomic import atomic_file, atomic_path
from spikeline.errors import BadInput, DataNotFound, SpikelineError, VerifyFailed
from spikeline.paths import output_dir, output_file

from .inputs import add_input_arguments, load_inputs, load_model, positive_float, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="strip heads, fold BatchNorm, quantize; write NIR and lava-dl netx",
        description="Export the trained network of RUN_DIR (heads removed, BatchNorm folded, "
                    "weights quantized the Loihi way) to EXPORT_DIR: model.nir, model.net "
                    "(sequential networks), folded.pt (the reference) and metadata.json.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", default="nir,netx", help="comma list of nir, netx")
    p.add_argument("--out", required=True, metavar="EXPORT_DIR")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                   help="skip the deployed network's accuracy on the test split (it needs the "
                        "run's dataset)")
    p.add_argument("--data-dir", help="where the run's dataset lives (default $SPIKELINE_DATA)")
    p.add_argument("--cache-dir", help="frame cache (default $SPIKELINE_CACHE)")
    p.set_defaults(handler=run_export)

    p = subparsers.add_parser(
        "simulate", help="run a NIR graph (ours or another tool's) and record every node",
        description="Simulate MODEL.nir (or EXPORT_DIR/model.nir) on a recording, a raw input "
                    "array [T, *input_shape] or dataset samples; print a JSON summary.")
    p.add_argument("model", metavar="MODEL.nir|EXPORT_DIR")
    add_input_arguments(p, default_samples=1)
    p.add_argument("--mode", choices=("auto", "loihi", "float"), default="auto",
                   help="neuron arithmetic: Loihi fixed point where parameters allow (auto)")
    p.add_argument("--dt", type=positive_float, default=None,
                   help="time step in seconds (default: the graph's)")
    p.add_argument("--save-output", metavar="OUT.npy",
                   help="save the output node's per-step values [T, *output_shape]")
    p.set_defaults(handler=run_simulate)

    p = subparsers.add_parser(
        "verify", help="prove the exported artifacts spike exactly like the trained network",
        description="First the parameters: every weight, bias, decay, threshold, delay and edge "
                    "of model.nir, model.net and the Lava process graph against the training "
                    "run's checkpoint, folded and quantized again (an export without its run "
                    "says this was not checked). Then spikes: the same inputs through the "
                    "trained network, our NIR simulation (nir) and Lava (lava), every layer "
                    "compared; SpikingJelly and snnTorch are held to our float reading of "
                    "model.nir (each one reads model.nir as spikeline does, float semantics). "
                    "Prints per-layer coverage; exit 1 on "
                    "any difference or on a compared layer that never spiked.")
    p.add_argument("model", metavar="EXPORT_DIR")
    add_input_arguments(p, default_samples=None)  # None: deploy.verify.DEFAULT_SAMPLES
    p.add_argument("--lava-samples", type=positive_int, default=None,
                   help="of these samples, the first K run in Lava (about 10 s each; default: "
                        "deploy.verify.DEFAULT_SAMPLES['lava'], printed by verify)")
    p.add_argument("--backends", default="nir,lava,spikingjelly,snntorch")
    p.add_argument("--lava-timeout", type=float, default=300.0,
                   help="seconds per Lava run before it is killed")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON")
    p.add_argument("--allow-skip", action="store_true",
                   help="exit 0 when a backend could not run (it is still reported as skipped)")
    p.set_defaults(handler=run_verify)

    p = subparsers.add_parser(
        "import", help="convert a NIR graph of another tool or a lava-dl netx file to NIR",
        description="Read FILE (.nir from another tool, or a lava-dl netx .net/.h5 file), check "
                    "that the simulator runs it, and write it as NIR.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--out", required=True, metavar="MODEL.nir")
    p.add_argument("--no-delay-shift", action="store_true",
                   help="netx: do not add lava-dl's one-step delay after each layer")
    p.add_argument("--input-shape", type=positive_int, nargs="+", metavar="N",
                   help="netx: input shape (C H W); default: the smallest input that gives the "
                        "first layer's recorded output (a strided layer accepts several)")
    p.set_defaults(handler=run_import)


def run_export(args) -> int:
    from spikeline.deploy.artifact import ExportMeta  # lazy: CLI start-up (cli/__init__)
    from spikeline.deploy.export import check_formats, export_run  # lazy: as above
    from spikeline.workflow import deployed_score  # lazy: as above

    formats = check_formats(f.strip() for f in args.format.split(",") if f.strip())
    out = output_dir(args.out, "--out")
    result = export_run(args.run_dir, out, formats, which=args.checkpoint)
    for fmt, name in result.files.items():
        print(f"{fmt:7s} {result.out_dir / name}")
    for fmt, why in result.skipped.items():
        print(f"{fmt:7s} not written: {why}")
    if args.accuracy and args.checkpoint == "best" and "nir" in result.files:
        task = ExportMeta.read(result.out_dir).task
        try:
            fields = deployed_score(args.run_dir, result.out_dir, args.data_dir, args.cache_dir)
        except SpikelineError as why:  # the export is complete; say what was not measured
            print(f"deployed {SCORE_NAMES[task]}: not measured ({why})", file=sys.stderr)
        else:
            print(SCORE_LINES[task](fields))
    return 0


def map_line(fields: dict) -> str:
    return (f"mAP on the test split ({fields['deployed_num_test']} scenes): deployed (folded, "
            f"quantized, fixed-point spiking part + off-chip readout) mAP@0.5 "
            f"{fields['deployed_test_mAP50']:.4f} / mAP@0.5:0.95 "
            f"{fields['deployed_test_mAP50_95']:.4f}; trained {fields['trained_test_mAP50']:.4f}"
            f" / {fields['trained_test_mAP50_95']:.4f}; delta mAP@0.5 "
            f"{fields['deployed_minus_trained_mAP50']:+.4f}")


def accuracy_line(fields: dict) -> str:
    trained, deployed = fields["trained_test_acc"], fields["deployed_test_acc"]
    text = (f"test accuracy on the test split ({fields['deployed_num_test']} samples): deployed "
            f"(folded, quantized, fixed-point) {100 * deployed:.2f}%")
    if trained is None:
        return text + " (the trained network's is not in summary.json)"
    return (f"{text}, trained {100 * trained:.2f}%, delta "
            f"{100 * fields['deployed_minus_trained']:+.2f} points")


# how `spikeline export` names and prints each task's deployed score
SCORE_NAMES = {"classify": "accuracy", "detection": "mAP"}
SCORE_LINES = {"classify": accuracy_line, "detection": map_line}


def run_simulate(args) -> int:
    from spikeline.deploy.nir_check import validate_graph  # lazy: CLI start-up (cli/__init__)
    from spikeline.workflow import simulate_model, simulation_summary  # lazy: as above

    save = output_file(args.save_output, "--save-output") if args.save_output else None
    graph, meta, path = load_model(args.model)
    if args.dt is not None:  # delays in steps of the new dt
        validate_graph(graph, str(path), dt=args.dt)
    x, source = load_inputs(args, graph, meta)
    sim, pad = simulate_model(graph, x, args.mode, args.dt)
    if pad > 0:  # hardware timing: the last input step needs `pad` more steps to the readout
        source["input_pad_steps"] = pad
    if len(sim.output_nodes) > 1 and save is not None:
        raise BadInput(f"--save-output saves one output; {path} has "
                       f"{len(sim.output_nodes)} ({', '.join(sim.output_nodes)})")
    summary = simulation_summary(graph, sim, str(path), source)
    if save is not None:
        values = sim.output.numpy()
        with atomic_file(save) as fh:
            np.save(fh, values[:, 0] if values.shape[1] == 1 else values)
        summary["saved_output"] = str(save)
    print(json.dumps(summary, indent=2))
    return 0


def run_verify(args) -> int:
    from spikeline.deploy.verify import DEFAULT_SAMPLES, report_lines, verify_export  # lazy: CLI start-up (cli/__init__)

    if args.samples is None:
        args.samples = max(DEFAULT_SAMPLES.values())
    if args.lava_samples is None:
        args.lava_samples = DEFAULT_SAMPLES["lava"]
    graph, metadata, _ = load_model(args.model)
    x, _ = load_inputs(args, graph, metadata)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    report = verify_export(args.model, x, backends, args.lava_timeout,
                           progress=lambda b: print(f"verify: checking {b} ...", flush=True),
                           lava_samples=args.lava_samples)
    for line in report_lines(report):
        print(line)
    if args.json:
        with atomic_file(Path(args.json)) as fh:
            fh.write(json.dumps(report.to_dict(), indent=2).encode())
    problems = report.problems(allow_skip=args.allow_skip)
    if problems:
        raise VerifyFailed("verify: FAILED: " + "; ".join(problems))
    print("verify: OK, " + report.summary())
    return 0


def run_import(args) -> int:
    import nir  # lazy: nir, 0.1 s after torch (measured)

    from spikeline.deploy.artifact import graph_input_shape  # lazy: CLI start-up (cli/__init__)
    from spikeline.deploy.from_netx import netx_to_nir  # lazy: as above
    from spikeline.deploy.nir_check import validate_graph  # lazy: as above
    from spikeline.deploy.simulate import simulate  # lazy: as above

    path = Path(args.file)
    if not path.is_file():
        raise DataNotFound(f"{path}: no such file")
    out = output_file(args.out, "--out")
    if path.suffix == ".nir":
        graph, _, _ = load_model(path)
    elif path.suffix in (".net", ".h5", ".hdf5"):
        graph = validate_graph(netx_to_nir(path, delay_shift=not args.no_delay_shift,
                                           input_shape=args.input_shape), str(path))
    else:
        raise BadInput(f"{path}: expected a .nir graph or a lava-dl netx file "
                       "(.net, .h5, .hdf5)")
    shape = graph_input_shape(graph)
    with torch.no_grad():  # the simulator must accept it: types, shapes, edges
        simulate(graph, torch.zeros(2, 1, *shape))
    with atomic_path(out) as tmp:
        nir.write(tmp, graph)
    print(f"wrote {out}: {len(graph.nodes)} nodes, {len(graph.edges)} edges, input "
          f"{list(shape)}")
    return 0


def __getattr__(name):
    # moved to spikeline.workflow; still importable from here for callers of the old place
    if name == "report_deployed_map":
        from spikeline.workflow import deployed_map  # lazy: CLI start-up (cli/__init__)

        return deployed_map
    if name == "report_deployed_accuracy":
        from spikeline.workflow import deployed_test_accuracy  # lazy: CLI start-up (cli/__init__)

        return deployed_test_accuracy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
