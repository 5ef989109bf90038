"""``spikeline export | simulate | verify | import``: from a training run to a checked artifact."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from spikeline.errors import BadInput, DataNotFound, SpikelineError
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
    from spikeline.deploy.export import check_formats, export_run

    formats = check_formats(f.strip() for f in args.format.split(",") if f.strip())
    out = output_dir(args.out, "--out")
    result = export_run(args.run_dir, out, formats, which=args.checkpoint)
    for fmt, name in result.files.items():
        print(f"{fmt:7s} {result.out_dir / name}")
    for fmt, why in result.skipped.items():
        print(f"{fmt:7s} not written: {why}")
    if args.accuracy and args.checkpoint == "best" and "nir" in result.files:
        detector = "readout" in result.files
        try:
            if detector:
                fields = report_deployed_map(args.run_dir, result.out_dir, args.data_dir,
                                             args.cache_dir)
            else:
                fields = report_deployed_accuracy(args.run_dir, result.out_dir, args.data_dir,
                                                  args.cache_dir)
        except SpikelineError as why:  # the export is complete; say what was not measured
            print(f"deployed {'mAP' if detector else 'accuracy'}: not measured ({why})",
                  file=sys.stderr)
        else:
            print(map_line(fields) if detector else accuracy_line(fields))
    return 0


def report_deployed_map(run_dir, export_dir, data_dir=None, cache_dir=None,
                        limit: int | None = None, batch_size: int = 50) -> dict:
    """A detector's mAP on the run's test split, deployed (``model.nir`` in the fixed-point
    simulator + the off-chip ``readout.npz``, decode, NMS, pycocotools) next to the trained
    network's (``best.pt``, float, unfolded, the same decode / NMS / scorer), both written
    into the run's ``summary.json`` (created when absent).  ``limit``: the first K scenes."""
    import nir
    import torch

    from spikeline.atomic import atomic_text
    from spikeline.datasets.detection import detection_collate, load_detection
    from spikeline.deploy.detector import deployed_detections, load_readout
    from spikeline.pipeline.checkpoint import load_run_model
    from spikeline.pipeline.detect_train import predict, score_detections

    run_dir, export_dir = Path(run_dir), Path(export_dir)
    model, ckpt = load_run_model(run_dir)
    config, spec = ckpt.get("config") or {}, ckpt["model_spec"]
    if not config.get("dataset") or not config.get("T"):
        raise BadInput(f"{run_dir / 'best.pt'}: the training config names no dataset or T")
    size = tuple(int(v) for v in (config.get("size") or spec.get("input_size")))
    test = load_detection(config["dataset"], "test", T=int(config["T"]), size=size,
                          data_dir=data_dir, cache_dir=cache_dir)
    if limit is not None:
        test = torch.utils.data.Subset(test, range(min(limit, len(test))))
    loader = torch.utils.data.DataLoader(test, batch_size=batch_size,
                                         collate_fn=detection_collate)
    graph, readout = nir.read(export_dir / "model.nir"), load_readout(export_dir / "readout.npz")
    encoding = spec.get("encoding", "binary")
    nc = readout.num_classes
    deployed = score_detections(lambda f: deployed_detections(graph, readout, f, encoding),
                                loader, nc)
    trained = score_detections(lambda f: predict(model, f), loader, nc)
    fields = {"trained_test_mAP50": trained["mAP50"], "trained_test_mAP50_95": trained["mAP50_95"],
              "deployed_test_mAP50": deployed["mAP50"],
              "deployed_test_mAP50_95": deployed["mAP50_95"],
              "deployed_minus_trained_mAP50": deployed["mAP50"] - trained["mAP50"],
              "deployed_num_test": deployed["count"]}
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    except (OSError, ValueError) as err:
        raise BadInput(f"{summary_path}: cannot read the run's summary ({err})") from None
    summary.update(fields)
    atomic_text(summary_path, json.dumps(summary, indent=2) + "\n")
    return fields


def map_line(fields: dict) -> str:
    return (f"mAP on the test split ({fields['deployed_num_test']} scenes): deployed (folded, "
            f"quantized, fixed-point spiking part + off-chip readout) mAP@0.5 "
            f"{fields['deployed_test_mAP50']:.4f} / mAP@0.5:0.95 "
            f"{fields['deployed_test_mAP50_95']:.4f}; trained {fields['trained_test_mAP50']:.4f}"
            f" / {fields['trained_test_mAP50_95']:.4f}; delta mAP@0.5 "
            f"{fields['deployed_minus_trained_mAP50']:+.4f}")


def report_deployed_accuracy(run_dir, export_dir, data_dir=None, cache_dir=None) -> dict:
    """The exported graph's accuracy on the run's whole test split (fixed-point simulator,
    which equals Lava), next to the trained network's (best.pt, from summary.json), both
    written into the run's summary.json.  Returns those fields."""
    import nir

    from spikeline.atomic import atomic_text
    from spikeline.datasets.registry import load_splits, make_loader
    from spikeline.deploy.accuracy import deployed_accuracy
    from spikeline.pipeline.checkpoint import load_checkpoint
    from spikeline.pipeline.config import TrainConfig

    run_dir = Path(run_dir)
    config = TrainConfig.from_dict(load_checkpoint(run_dir / "best.pt")["config"])
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as err:
        raise BadInput(f"{summary_path}: cannot read the run's summary ({err}): train the run "
                       "to its end, or export with --no-accuracy") from None
    test = load_splits(config.dataset, T=config.T, size=tuple(config.size), augment=False,
                       val_fraction=config.val_fraction, limit_test=config.limit_test,
                       data_dir=data_dir, cache_dir=cache_dir).test
    deployed = deployed_accuracy(nir.read(Path(export_dir) / "model.nir"),
                                 make_loader(test, config.batch_size, shuffle=False),
                                 config.encoding)
    trained = summary.get("test_acc")
    fields = {"trained_test_acc": trained, "deployed_test_acc": deployed.accuracy,
              "deployed_minus_trained": None if trained is None
              else deployed.accuracy - trained, "deployed_num_test": deployed.count}
    summary.update(fields)
    atomic_text(summary_path, json.dumps(summary, indent=2) + "\n")
    return fields


def accuracy_line(fields: dict) -> str:
    trained, deployed = fields["trained_test_acc"], fields["deployed_test_acc"]
    text = (f"test accuracy on the test split ({fields['deployed_num_test']} samples): deployed "
            f"(folded, quantized, fixed-point) {100 * deployed:.2f}%")
    if trained is None:
        return text + " (the trained network's is not in summary.json)"
    return (f"{text}, trained {100 * trained:.2f}%, delta "
            f"{100 * fields['deployed_minus_trained']:+.2f} points")


def run_simulate(args) -> int:
    import torch

    from spikeline.atomic import atomic_file
    from spikeline.deploy.nir_check import validate_graph
    from spikeline.deploy.simulate import simulate

    save = output_file(args.save_output, "--save-output") if args.save_output else None
    graph, metadata, path = load_model(args.model)
    if args.dt is not None:  # delays in steps of the new dt
        validate_graph(graph, str(path), dt=args.dt)
    x, source = load_inputs(args, graph, metadata)
    pad = int((graph.metadata or {}).get("input_pad_steps", 0))
    if pad > 0:  # hardware timing: the last input step needs `pad` more steps to the readout
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)])
        source["input_pad_steps"] = pad
    with torch.no_grad():
        sim = simulate(graph, torch.from_numpy(np.ascontiguousarray(x)), args.mode, args.dt)
    if len(sim.output_nodes) > 1:  # a detector's spiking part: P4 and P5 spike maps
        if save is not None:
            raise BadInput(f"--save-output saves one output; {path} has "
                           f"{len(sim.output_nodes)} ({', '.join(sim.output_nodes)})")
        summary = {
            "model": str(path), "source": source, "T": int(x.shape[0]),
            "samples": int(x.shape[1]), "output_nodes": list(sim.output_nodes),
            "outputs": {n: {"shape": list(sim.outputs[n].shape[2:]),
                            "spikes_per_sample": sim.outputs[n].flatten(2).sum(-1).sum(0)
                            .tolist()} for n in sim.output_nodes},
            "spikes_per_node": {n: int(v.sum()) for n, v in sim.outputs.items()
                                if _is_spiking(graph.nodes[n])},
        }
        print(json.dumps(summary, indent=2))
        return 0
    out = sim.output
    summary = {
        "model": str(path), "source": source, "T": int(x.shape[0]), "samples": int(x.shape[1]),
        "output_node": sim.output_node, "output_shape": list(out.shape[2:]),
        "output_sum_per_sample": out.sum(dim=tuple(range(2, out.dim()))).sum(0).tolist(),
        "output_mean_over_time": out.mean(0).reshape(out.shape[1], -1).tolist(),
        "spikes_per_node": {n: int(v.sum()) for n, v in sim.outputs.items()
                            if _is_spiking(graph.nodes[n])},
    }
    if save is not None:
        values = out.numpy()
        with atomic_file(save) as fh:
            np.save(fh, values[:, 0] if values.shape[1] == 1 else values)
        summary["saved_output"] = str(save)
    print(json.dumps(summary, indent=2))
    return 0


def _is_spiking(node) -> bool:
    import nir

    return isinstance(node, (nir.CubaLIF, nir.LIF, nir.IF, nir.Threshold))


def run_verify(args) -> int:
    from spikeline.deploy.verify import DEFAULT_SAMPLES, report_lines, verify_export
    from spikeline.errors import VerifyFailed

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
        from spikeline.atomic import atomic_file

        with atomic_file(Path(args.json)) as fh:
            fh.write(json.dumps(report.to_dict(), indent=2).encode())
    problems = report.problems(allow_skip=args.allow_skip)
    if problems:
        raise VerifyFailed("verify: FAILED: " + "; ".join(problems))
    print("verify: OK, " + report.summary())
    return 0


def run_import(args) -> int:
    import nir
    import torch

    from spikeline.atomic import atomic_path
    from spikeline.deploy.from_netx import netx_to_nir
    from spikeline.deploy.nir_check import validate_graph
    from spikeline.deploy.simulate import simulate

    from .inputs import graph_input_shape

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
