"""Inputs shared by `simulate`, `verify` and `energy`: a model to run and what to feed it.

A model is an export folder (``model.nir`` + ``metadata.json``) or a ``.nir`` file.  Inputs are
event recordings (binned into T frames of counts, resized to the model's input), a raw array,
or dataset samples.  Frames of counts are encoded as the model was trained (``binary``: a pixel
spikes in a bin where it saw an event); a raw ``--input`` array goes in as it is.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from spikeline.errors import BadInput, DataNotFound, check_size

DEFAULT_T = 10
MAX_EXACT_INPUT = 2 ** 24  # the largest count float32 holds exactly (with all below it)


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


def resolve_T(args, metadata: dict, what: str) -> int:
    T = args.T
    if T is None:
        T = metadata.get("T")
        T = DEFAULT_T if T is None else T
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise BadInput(f"{what}: metadata.json field 'T' must be a positive "
                                 f"integer, got {T!r}; pass --T")
    return T


def load_inputs(args, graph, metadata: dict) -> tuple[np.ndarray, dict]:
    """``(x [T, N, *input_shape] float32, description of the source)`` for the graph."""
    shape = graph_input_shape(graph)
    if args.input:
        x = inputs_from_array(args.input, shape, graph)
        return x, {"input": args.input}
    T = resolve_T(args, metadata, str(args.model))
    check_activity(graph, T, _count_samples(args), str(args.model))
    if args.events:
        x, source = inputs_from_events(args.events, T, shape), {"events": list(args.events)}
    else:
        x = inputs_from_dataset(args.dataset, args.samples, T, shape, args.split,
                                args.data_dir, args.cache_dir)
        source = {"dataset": args.dataset, "split": args.split}
    encoding = metadata.get("input_encoding") or (graph.metadata or {}).get("input_encoding")
    source["encoding"] = encoding or "counts"
    return encode(x, encoding), source


def encode(frames: np.ndarray, encoding: str | None) -> np.ndarray:
    """Frames of event counts -> what the network's input layer receives (see
    ``pipeline.models.encode_frames``); no encoding recorded: as is."""
    import torch

    from spikeline.pipeline.models import encode_frames

    return frames if encoding is None else encode_frames(torch.from_numpy(frames), encoding).numpy()


def _count_samples(args) -> int:
    return len(args.events) if args.events else int(args.samples)


def check_activity(graph, T: int, samples: int, what: str) -> None:
    """Refuse a run whose recorded activity (every node, every step) would not fit in memory."""
    from spikeline.deploy.nir_check import activity_bytes

    check_size(activity_bytes(graph, T, samples),
               f"{what}: simulating {samples} sample(s) of T = {T} steps")


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


# --------------------------------------------------------------------------------------------

def load_model(target: str | Path):
    """(graph, metadata dict, path of the .nir file) for an export folder or a .nir file.

    An export folder must be complete and consistent (its ``manifest.json``, see
    ``spikeline.deploy.export.check_manifest``); the graph is validated by
    ``spikeline.deploy.nir_check.read_nir`` before anything runs it."""
    from spikeline.deploy.nir_check import read_nir

    target = Path(target)
    metadata = {}
    if target.is_dir():
        from spikeline.deploy.export import check_manifest

        path = target / "model.nir"
        meta_path = target / "metadata.json"
        if not path.is_file():
            raise DataNotFound(f"{target}: no model.nir in this folder (expected an export "
                               f"folder with model.nir and metadata.json, or a .nir file)")
        check_manifest(target)
        if meta_path.is_file():
            try:
                metadata = json.loads(meta_path.read_text())
            except (OSError, ValueError) as err:
                raise BadInput(f"{meta_path}: not valid JSON ({err})") from None
            if not isinstance(metadata, dict):
                raise BadInput(f"{meta_path}: expected a JSON object")
    else:
        path = target
        if not path.is_file():
            raise DataNotFound(f"{path}: no such file or folder")
    return read_nir(path), metadata, path


def graph_input_shape(graph) -> tuple[int, ...]:
    import nir

    inputs = [(n, node) for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise BadInput(f"the graph needs exactly one Input node, it has "
                             f"{[n for n, _ in inputs]}")
    shape = inputs[0][1].input_type.get("input")
    if shape is None or not len(shape):
        raise BadInput(f"the graph's Input node {inputs[0][0]!r} has no input shape")
    return tuple(int(v) for v in np.asarray(shape).reshape(-1))


def fit_frames(frames: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``[T, P, H, W]`` event-count frames -> ``[T, *shape]`` (resize with the datasets' area
    resampling; polarities summed when the model takes one channel)."""
    from spikeline.datasets.frames import resize_frames

    if len(shape) != 3:
        raise BadInput(f"{what}: the model input {list(shape)} is not [C, H, W]; event "
                             f"frames need a [C, H, W] input (use --input for other shapes)")
    channels, height, width = shape
    if frames.shape[1] != channels:
        if channels == 1:
            frames = frames.sum(axis=1, keepdims=True)
        else:
            raise BadInput(f"{what}: frames have {frames.shape[1]} polarity channel(s), "
                                 f"the model expects {channels}")
    return resize_frames(frames, (height, width))


def inputs_from_events(files, T: int, shape) -> np.ndarray:
    """Each recording binned into ``T`` frames and fitted to ``shape``: ``[T, N, *shape]``."""
    from spikeline.datasets.events import read_events
    from spikeline.datasets.frames import events_to_frames

    samples = []
    for file in files:
        stream = read_events(file)
        frames = events_to_frames(stream.events, stream.sensor_size, T)
        samples.append(fit_frames(frames, shape, str(file)))
    return np.stack(samples, axis=1)


def inputs_from_array(path, shape, graph=None) -> np.ndarray:
    """A ``.npy`` array ``[T, *shape]`` or ``[T, N, *shape]``: its size (and the activity it
    makes the simulator record, given ``graph``) is checked from the header before it is read;
    NaN or Inf values are refused."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:  # the header only: shape and dtype before any data
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            dims, _, dtype = read(fh)
    except FileNotFoundError:
        raise DataNotFound(f"{path}: no such file") from None
    except (OSError, ValueError) as err:
        raise BadInput(f"{path}: not a .npy array ({err})") from None
    if dtype.kind not in "biuf":
        raise BadInput(f"{path}: expected a numeric array, got {dtype}")
    dims = tuple(int(v) for v in dims)
    if dims[1:] == tuple(shape):
        dims = (dims[0], 1, *dims[1:])
    elif dims[2:] != tuple(shape):
        raise BadInput(f"{path}: shape {list(dims)} does not fit the model input "
                       f"{list(shape)}; expected [T, {', '.join(map(str, shape))}] or "
                       f"[T, N, {', '.join(map(str, shape))}]")
    if dims[0] < 1 or dims[1] < 1:
        raise BadInput(f"{path}: empty array {list(dims)}")
    check_size(float(np.prod(dims, dtype=np.float64)) * 4, f"{path}: the input array")
    if graph is not None:
        check_activity(graph, dims[0], dims[1], str(path))
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # a header claiming more than the file holds
        raise BadInput(f"{path}: cannot read the array ({err})") from None
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise BadInput(f"{path}: holds NaN or Inf values; inputs must be finite")
    low, high = raw.min().item(), raw.max().item()
    if low < 0:
        raise BadInput(f"{path}: holds negative values (min {low!r}); inputs are spikes or "
                       "event counts, >= 0")
    if high > MAX_EXACT_INPUT:
        raise BadInput(f"{path}: holds values up to {high!r}, above {MAX_EXACT_INPUT} = 2**24, "
                       "beyond which float32 (what the simulator computes in) no longer holds "
                       "integers exactly")
    return np.ascontiguousarray(raw.astype(np.float32).reshape(dims))


def inputs_from_dataset(name, samples: int, T: int, shape, split="test", data_dir=None,
                        cache_dir=None) -> np.ndarray:
    from spikeline.datasets.detection import DETECTION_DATASETS, load_detection
    from spikeline.datasets.registry import load_dataset

    if len(shape) != 3:
        raise BadInput(f"--dataset: the model input {list(shape)} is not [C, H, W]")
    load = load_detection if name in DETECTION_DATASETS else load_dataset  # frames come first
    dataset = load(name, split, T=T, size=tuple(shape[1:]), data_dir=data_dir,
                   cache_dir=cache_dir)
    count = min(samples, len(dataset))
    if count < 1:
        raise BadInput(f"--dataset {name}: the {split} split is empty")
    frames = [fit_frames(np.asarray(dataset[i][0]), shape, f"{name}[{i}]") for i in range(count)]
    return np.stack(frames, axis=1)


