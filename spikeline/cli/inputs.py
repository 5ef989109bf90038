"""Input options shared by `simulate`, `verify` and `energy`: a model to run and what to feed it.

A model is an export folder (``model.nir`` + ``metadata.json``) or a ``.nir`` file
(``deploy.artifact.read_model``).  Inputs are event recordings, a raw array or dataset samples;
``spikeline.workflow.model_inputs`` turns them into what the model receives.  This module only
adds the flags and hands them over.
"""
from __future__ import annotations

import argparse
import math

from spikeline.datasets import inputs
from spikeline.pipeline.config import DEFAULT_T


def add_input_arguments(p: argparse.ArgumentParser, default_samples: int | None = 8) -> None:
    """--events / --input / --dataset (one of them), with --samples, --split, --T ..."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--events", nargs="+", metavar="FILE",
                     help="event recordings (one sample each), binned into T frames of counts "
                          "and resized to the model's input")
    src.add_argument("--input", metavar="ARRAY.npy",
                     help="input array [T, *input_shape] or [T, N, *input_shape], fed as is")
    src.add_argument("--dataset", metavar="NAME", help="a dataset of `spikeline data`")
    p.add_argument("--samples", type=positive_int, default=default_samples,
                   help="samples of --dataset to run (the first K of the split; default "
                        + (f"{default_samples})" if default_samples else
                           "deploy.verify.DEFAULT_SAMPLES, the most of any backend)"))
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="--dataset split (default test)")
    p.add_argument("--data-dir", help="folder with downloaded datasets")
    p.add_argument("--cache-dir", help="frame cache and generated data")
    p.add_argument("--T", type=positive_int, default=None,
                   help=f"time bins for --events / --dataset (default: metadata.json's T, "
                        f"else {DEFAULT_T})")


def load_model(target):
    """(graph, metadata dict, path of the .nir file): ``deploy.artifact.read_model``."""
    from spikeline.deploy.artifact import read_model  # lazy: CLI start-up (cli/__init__)

    return read_model(target)


def load_inputs(args, graph, meta):
    """``(x [T, N, *input_shape] float32, description of the source)`` from the input flags."""
    from spikeline.workflow import model_inputs  # lazy: CLI start-up (cli/__init__)

    return model_inputs(graph, meta, events=args.events, array=args.input,
                        dataset=args.dataset, samples=args.samples, split=args.split, T=args.T,
                        data_dir=args.data_dir, cache_dir=args.cache_dir, what=str(args.model))


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (``--dt``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def __getattr__(name):
    # moved to the library; still importable from here for callers of the old place
    if name in ("fit_frames", "inputs_from_array", "inputs_from_dataset", "inputs_from_events"):
        return getattr(inputs, name)
    if name in ("DEFAULT_T", "encode", "check_activity", "resolve_T"):
        from spikeline import workflow  # lazy: CLI start-up (cli/__init__)

        return getattr(workflow, name)
    if name == "graph_input_shape":
        from spikeline.deploy.artifact import graph_input_shape  # lazy: CLI start-up (cli/__init__)

        return graph_input_shape
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
