"""Training checkpoints: atomic writes, ``weights_only`` loads, RNG state, model rebuild.

A checkpoint is a plain dict of tensors and primitive containers, so that
``torch.load(path, weights_only=True)`` reads it without unpickling any code::

    format            "spikeline-train/1"
    config            the full training config (plain dict, see ``train.TrainConfig``)
    model_spec        keyword arguments of ``models.build_model`` (name, in_channels, ...)
    epoch             epochs completed
    iteration         optimizer steps done so far (i of the lambda schedule)
    total_iterations  I, the steps of the whole run (lambda(i) = lam * (1 - i / I))
    model             state_dict of the training module (network + shortcut heads)
    model_stripped    state_dict of the main network alone (what export/deploy load)
    optimizer         optimizer.state_dict()
    scheduler         lr_scheduler.state_dict()
    rng               torch / numpy / python (/ cuda) RNG states and the data position
    history           the metrics.jsonl records so far (list of dicts)
    best              {"val_acc", "epoch"} of the best epoch so far (chosen on validation)
    partial_epoch     True when --max-steps cut the epoch short (such a run is not resumable)

``save_checkpoint`` writes a temporary file in the same directory and ``os.replace``s it, so a
crash mid-write never leaves a truncated ``last.pt``/``best.pt``.  ``save_epoch`` writes
``last.pt`` first and then copies it to ``best.pt`` when the epoch is the best: a kill between
the two leaves a ``last.pt`` whose ``best`` record names its own epoch, and ``repair_best``
(run on resume and before a run's ``best.pt`` is read) restores ``best.pt`` from it.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from spikeline.atomic import atomic_file
from spikeline.errors import BadInput, SpikelineError

from .detection import Anchors
from .ems import DETECTORS
from .models import build_model
from .neuron import CubaParams
from .structure import CUSTOM, build_custom

log = logging.getLogger(__name__)

FORMAT = "spikeline-train/1"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    path = Path(path)
    with atomic_file(path, fsync=True) as fh:
        torch.save(payload, fh)
    return path


def save_epoch(run_dir: str | os.PathLike, payload: dict, is_best: bool) -> None:
    """``last.pt`` <- ``payload``, then ``best.pt`` <- a copy of it when ``is_best``."""
    run_dir = Path(run_dir)
    save_checkpoint(run_dir / "last.pt", payload)
    if is_best:
        _copy_atomic(run_dir / "last.pt", run_dir / "best.pt")


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_file(dst, fsync=True) as fh, open(src, "rb") as source:
        shutil.copyfileobj(source, fh, 1 << 20)


def _epoch_of(path: Path) -> int | None:
    """The epoch ``path`` records; None when there is no such file.  A file that is there but
    cannot be read (no permission, truncated, refused by ``weights_only``) is an error: it is
    never replaced silently."""
    if not path.exists():
        return None
    ckpt = load_checkpoint(path)
    try:
        return int(ckpt["epoch"])
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"{path}: field 'epoch' must be an integer, got "
                       f"{ckpt.get('epoch')!r}") from None


def repair_best(run_dir: str | os.PathLike, last: dict | None = None) -> bool:
    """Restore ``best.pt`` from ``last.pt`` when a kill fell between their writes.

    ``last.pt``'s ``best`` record names the best epoch; when that is ``last.pt``'s own epoch,
    ``last.pt`` holds the best weights, and ``best.pt`` must be a copy of it.  Returns True when
    ``best.pt`` was rewritten.
    """
    run_dir = Path(run_dir)
    last_path = run_dir / "last.pt"
    if not last_path.is_file():
        return False
    if last is None:
        last = load_checkpoint(last_path)
    best_epoch = int(last.get("best", {}).get("epoch", 0))
    if best_epoch != int(last["epoch"]) or _epoch_of(run_dir / "best.pt") == best_epoch:
        return False
    _copy_atomic(last_path, run_dir / "best.pt")
    log.warning("%s: restored from %s (a run stopped between writing last.pt and copying "
                "it to best.pt)", run_dir / "best.pt", last_path)
    return True


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a missing or foreign file is a
    ``SpikelineError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SpikelineError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle errors, truncated files, non-weights content
        raise SpikelineError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SpikelineError(f"{path} is not a spikeline training checkpoint "
                             f"(expected format {FORMAT!r})")
    return ckpt


def resolve_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """``best``/``last`` -> ``RUN_DIR/best.pt``/``last.pt``; anything else is a path."""
    run_dir = Path(run_dir)
    if which in ("best", "last"):
        if which == "best":
            repair_best(run_dir)
        path = run_dir / f"{which}.pt"
        if not path.is_file():
            raise SpikelineError(f"{run_dir} holds no {which}.pt: is it a `spikeline train` "
                                 "run directory?")
        return path
    return Path(which)


# --- RNG state as tensors and primitive containers -----------------------------------------

def rng_state(loader_generator: torch.Generator | None = None) -> dict:
    """Every RNG a training step may touch, in a ``weights_only``-loadable form."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(py_version), "internal": [int(v) for v in py_internal],
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


# --- rebuilding the deployable network -----------------------------------------------------

def build_from_spec(spec: dict):
    """The network a checkpoint's ``model_spec`` describes (untrained weights).

    Classifiers (``models.build_model``), or, with ``"task": "detection"``, a detector of
    ``ems.DETECTORS`` (``anchors`` as nested ``[[w, h], ...]`` lists per level, and optional
    ``strides``; ``deployable`` picks the all-spike form that exports; ``timing``, absent for
    ``ideal``, as for classifiers: ``loihi`` builds the deployable form with one step per
    synaptic hop, and is refused with ``BadInput`` for the published form; ``batchnorm``,
    ``scale`` or ``shift``, is ``shift`` when absent, ``identity_weight`` 1.0 and
    ``resets_at_arrival`` False: specs written before they existed).  A network
    assembled from blocks (``"name": "custom"``, ``structure.describe``) rebuilds from its
    described structure."""
    if spec.get("name") == CUSTOM:
        return build_custom(spec)
    kwargs = dict(spec)
    name = kwargs.pop("name")
    # specs written before scale-only BatchNorm existed describe the shifting one
    kwargs.setdefault("batchnorm", "shift")
    # ... and, for residual nets, the identity shortcut of weight 1
    kwargs.setdefault("identity_weight", 1.0)
    # ... and, under loihi timing, biases acting before each layer's input arrives
    kwargs.setdefault("resets_at_arrival", False)
    if kwargs.pop("task", "classify") == "detection":
        return _build_detector(name, kwargs)
    for key in ("input_size", "depths"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    neuron = kwargs.get("neuron")
    if isinstance(neuron, dict):
            kwargs["neuron"] = CubaParams(**neuron)
    return build_model(name, **kwargs)


def _build_detector(name: str, kwargs: dict):
    if name not in DETECTORS:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    if isinstance(kwargs.get("neuron"), dict):
        kwargs["neuron"] = CubaParams(**kwargs["neuron"])
    anchors, strides = kwargs.pop("anchors", None), kwargs.pop("strides", None)
    if anchors is not None:
        sizes = tuple(tuple((float(w), float(h)) for w, h in level) for level in anchors)
        kwargs["anchors"] = Anchors(sizes, tuple(strides) if strides else (16, 32))
    kwargs.pop("input_size", None)  # the detector is fully convolutional
    return DETECTORS[name](**kwargs)


def load_run_model(run_dir: str | os.PathLike, which: str = "best", map_location="cpu"):
    """The trained main network (heads stripped) of a run directory, in eval mode.

    Returns ``(model, checkpoint)``.  This is all export/deploy code needs: the checkpoint's
    ``model_spec`` rebuilds the architecture and ``model_stripped`` fills in the weights.
    """
    path = resolve_checkpoint(run_dir, which)
    ckpt = load_checkpoint(path, map_location=map_location)
    return model_from_checkpoint(ckpt, path), ckpt


def model_from_checkpoint(ckpt: dict, path) -> "torch.nn.Module":
    """The main network of a loaded checkpoint (``model_spec`` + ``model_stripped``), in eval
    mode; a missing field, or weights that do not fit the spec, is a ``BadInput`` naming
    ``path``."""
    for key, kind in (("model_spec", dict), ("model_stripped", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise BadInput(f"{path}: field {key!r} is missing or not a {kind.__name__}; is it a "
                           "checkpoint written by `spikeline train`?")
    try:
        model = build_from_spec(ckpt["model_spec"])
    except SpikelineError:
        raise
    except Exception as err:  # an unknown model name, a bad argument
        raise BadInput(f"{path}: field 'model_spec' does not build a network "
                       f"({type(err).__name__}: {err})") from None
    try:
        model.load_state_dict(ckpt["model_stripped"])
    except (RuntimeError, TypeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadInput(f"{path}: the weights in 'model_stripped' do not fit the network its "
                       f"'model_spec' names ({ckpt['model_spec'].get('name')!r}): {first}") \
            from None
    model.eval()
    return model
