"""Training loop: shortcut heads, cosine LR, atomic resumable checkpoints, DDP, bf16 AMP.

One loop for every task: ``config.task`` picks a task object (``tasks.ClassifyTask``,
``tasks.DetectionTask`` for EMS-YOLO detectors; ``tasks.base.Task`` is the interface) that says what is built (its spec and
training module), how a batch's loss is summed, how a split is scored and which validation
metric chooses ``best.pt`` (``val_acc``; ``val_map50`` for detection).  What follows describes
classification; detection differs only in those points (see ``detect_train``).

``train(config, runtime, data, make_loader)`` trains ``models.build_model(config.model)`` wrapped
in ``heads.ShortcutHeads(mode=config.heads, lam=config.lam)`` on ``data.train``; the caller (the
CLI) composes the datasets (``datasets.registry.load_splits``) and hands them in with the
function that batches them, so this module does not know where data comes from.

Schedules (both per optimizer step, i = 0 .. I-1, I = epochs * steps_per_epoch):

* learning rate: cosine from ``lr`` to 0 over the I steps (``CosineAnnealingLR(T_max=I)``
  stepped after every optimizer step); ``schedule="constant"`` keeps ``lr``.
* lambda: ``progress = i / I`` is handed to ``ShortcutHeads.loss``, which uses
  ``lambda(i) = lam * (1 - i / I)`` in evolutionary mode (paper Eq. 10).

Honest evaluation: after every epoch the network is evaluated on ``data.val`` (carved from the
training split, fixed); ``best.pt`` is the epoch with the best validation accuracy.  The test
split is evaluated once, at the end of the invocation, for ``best.pt``'s weights, and written
to ``summary.json`` (``val_acc``, ``test_acc``).

Reproducibility: model init is a function of ``seed``; at the start of every epoch the torch,
numpy and python RNGs are reseeded from ``(seed, epoch, rank)`` and the data order comes from a
``DistributedSampler(seed=seed)`` at ``set_epoch(epoch)`` (also in a single process), so the data
order and augmentation of an epoch are a function of (seed, epoch).  ``last.pt`` is written at
the end of every epoch with model, optimizer, scheduler, schedule position, RNG states and the
full config; ``resume`` continues from it and, on CPU, ends with exactly the weights of the
uninterrupted run.  ``best.pt`` is a copy of ``last.pt`` made after it (see
``checkpoint.save_epoch``): a kill between the two writes is repaired from ``last.pt``.

Multi-GPU: see ``distributed.py``.  AMP: ``amp="auto"`` autocasts the training forward to bf16
on CUDA, ``"bf16"`` also on CPU, ``"off"`` never; the spiking neuron always runs its fixed-point
dynamics in float32/int64, and evaluation runs in exact float32 (``exact_fp32``: TF32 off).
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from spikeline.atomic import atomic_file
from spikeline.errors import BadInput, SpikelineError

from . import distributed as ddp
from .blocks import recalibrate_norms, set_fold_aware
from .checkpoint import (
    FORMAT,
    build_from_spec,
    load_checkpoint,
    repair_best,
    rng_state,
    save_epoch,
    set_rng_state,
)
from .config import Runtime, TrainConfig, neuron_params  # noqa: F401 (re-exported)
from .plots import plot_curves
from .precision import exact_fp32  # noqa: F401 (re-exported)
from .tasks import ClassifyTask, task_for
from .tasks.classify import build_heads, evaluate_model, model_spec_for  # noqa: F401 (re-exported)

__all__ = [
    "Runtime",
    "TrainConfig",
    "ClassifyTask",
    "TrainResult",
    "build_heads",
    "derive_seed",
    "evaluate_model",
    "exact_fp32",
    "lambda_at",
    "model_spec_for",
    "neuron_params",
    "resolve_device",
    "seed_everything",
    "task_for",
    "train",
]

log = logging.getLogger(__name__)
resolve_device = ddp.resolve_device

# make_loader(dataset, batch_size, shuffle=..., workers=..., seed=...) -> iterable of (x, y)
LoaderFactory = Callable[..., object]


@dataclass
class TrainResult:
    heads: nn.Module  # the ShortcutHeads module (``.strip()`` gives the main network)
    history: list[dict]
    best: dict
    run_dir: Path
    finished: bool  # all epochs done (False when stop_after/max_steps cut the run short)
    ddp_ranks_identical: bool | None = None
    summary: dict = field(default_factory=dict)


# --- helpers ---------------------------------------------------------------------------------

def derive_seed(*parts: int) -> int:
    """A 31-bit seed that is a function of ``parts`` (seed, epoch, rank)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _reseed_augmentation(dataset, epoch_seed: int) -> None:
    """Give the dataset under any ``Subset`` wrappers this epoch's augmentation seed."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    if hasattr(dataset, "reseed"):
        dataset.reseed(epoch_seed)


def lambda_at(lam: float, iteration: int, total: int) -> float:
    """The evolutionary schedule ``lambda(i) = lam * (1 - i / I)``."""
    return lam * (1.0 - iteration / max(total, 1))


def make_optimizer(config: TrainConfig, params):
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def make_scheduler(config: TrainConfig, optimizer, total_iterations: int):
    if config.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_iterations)


class _LossModule(nn.Module):
    """``forward(x, y, progress) -> (loss, main_logits)`` so that DDP sees the heads' loss as
    the module's forward (DDP only synchronises through ``forward``)."""

    def __init__(self, heads: nn.Module):
        super().__init__()
        self.heads = heads

    def forward(self, x, y, progress: float):
        return self.heads.loss(x, y, progress)


def _eval_subset(dataset, task, ranks: ddp.Ranks):
    """This rank's part of an evaluation split (all of it when the task cannot shard)."""
    if not task.sharded_eval:
        return dataset
    return torch.utils.data.Subset(dataset, list(range(ranks.rank, len(dataset), ranks.world)))


def _write_json(path: Path, data) -> None:
    with atomic_file(path) as fh:
        fh.write((json.dumps(data, indent=2) + "\n").encode())


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with atomic_file(path) as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records).encode())


def _say(msg: str, enabled: bool) -> None:
    if enabled:
        log.info(msg)


# --- the steps ---------------------------------------------------------------------------------

@dataclass
class _State:
    """Everything an epoch reads and advances."""

    config: TrainConfig
    spec: dict
    heads: nn.Module
    loss_module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    total: int  # I, optimizer steps of the whole run
    task: object = field(default_factory=ClassifyTask)
    start_epoch: int = 0
    iteration: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)  # {task.metric: value, "epoch": e}
    world: int = 1


def prepare(config: TrainConfig | None, runtime: Runtime, data, ranks: ddp.Ranks) -> _State:
    """A fresh run's state, or the stored run's (``runtime.resume``) restored from last.pt."""
    run_dir = Path(runtime.out)
    last_path = run_dir / "last.pt"
    ckpt = None
    if runtime.resume:
        ckpt = load_checkpoint(last_path)
        if ckpt.get("partial_epoch"):
            raise BadInput(f"{last_path}: this run was cut by --max-steps mid-epoch (a smoke "
                           "run); it cannot be resumed, train into a new --out")
        stored = TrainConfig.from_dict(ckpt["config"])
        if config is not None and config != stored:
            raise SpikelineError(f"--resume of {run_dir}: the config handed in differs from "
                                 "the run's")
        config = stored
    elif last_path.exists():
        raise SpikelineError(f"{run_dir} already holds a run (last.pt); pass --resume "
                             "to continue it or choose another --out")
    if len(data.train) == 0 or len(data.val) == 0 or len(data.test) == 0:
        raise SpikelineError(f"dataset {config.dataset!r} gave an empty train, validation or "
                             "test split")
    task = task_for(config)
    task.check(config)
    seed_everything(config.seed)
    spec = task.spec(config, data.train[0][0], data.num_classes)
    seed_everything(config.seed)
    heads = task.build(config, spec).to(ranks.device)
    optimizer = make_optimizer(config, heads.parameters())
    per_rank = math.ceil(len(data.train) / ranks.world)
    total = config.epochs * math.ceil(per_rank / config.batch_size)
    state = _State(config, spec, heads, ddp.wrap(_LossModule(heads), ranks), optimizer,
                   make_scheduler(config, optimizer, total), total, task=task,
                   best={task.metric: -1.0, "epoch": 0}, world=ranks.world)
    if ckpt is not None:
        if ckpt["total_iterations"] != total:
            raise SpikelineError(
                f"{last_path}: the run had {ckpt['total_iterations']} iterations in all, "
                f"the data now gives {total}: was --data-dir or the dataset changed?")
        heads.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if state.scheduler is not None:
            state.scheduler.load_state_dict(ckpt["scheduler"])
        state.start_epoch, state.iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        state.history, state.best = list(ckpt["history"]), dict(ckpt["best"])
        set_rng_state(ckpt["rng"])
        if ranks.is_main:
            repair_best(run_dir, ckpt)
        _say(f"resuming {run_dir} at epoch {state.start_epoch + 1}/{config.epochs} "
             f"(iteration {state.iteration}/{total})", runtime.progress and ranks.is_main)
    if ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_jsonl(run_dir / "metrics.jsonl", state.history)  # drops epochs past last.pt
        _write_json(run_dir / "config.json", {"config": config.to_dict(), "model_spec": spec})
    return state


def _use_amp(config: TrainConfig, device: torch.device) -> bool:
    return config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")


def train_epoch(state: _State, epoch: int, data, make_loader: LoaderFactory,
                runtime: Runtime, ranks: ddp.Ranks):
    """One epoch of optimizer steps; returns ``(stats, loader, cut)``: ``stats`` the task's
    running sums (classification ``[loss*n, correct, n]``), ``cut``: --max-steps ended the
    epoch early."""
    c, device = state.config, ranks.device
    if c.fold_finetune_epochs:
        set_fold_aware(state.heads.model, c.folded_epoch(epoch + 1))  # epoch counts from 0
    seed_everything(derive_seed(c.seed, epoch, ranks.rank))
    sampler = DistributedSampler(data.train, num_replicas=ranks.world, rank=ranks.rank,
                                 shuffle=True, seed=c.seed, drop_last=False)
    sampler.set_epoch(epoch)
    _reseed_augmentation(data.train, derive_seed(c.seed, epoch, 2))
    loader = make_loader(torch.utils.data.Subset(data.train, list(sampler)), c.batch_size,
                         shuffle=False, workers=runtime.workers,
                         seed=derive_seed(c.seed, epoch, ranks.rank, 1))
    state.heads.train()
    state.lr_used = state.optimizer.param_groups[0]["lr"]
    use_amp = _use_amp(c, device)
    stats = state.task.zero_stats()  # the task's sums (classification: loss * n, correct, n)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{c.epochs}", leave=False,
               disable=not (runtime.progress and ranks.is_main), dynamic_ncols=True)
    cut = False
    for x, y in bar:
        if runtime.max_steps is not None and state.iteration >= runtime.max_steps:
            cut = True
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, aux = state.loss_module(x, y, state.iteration / state.total)
        if ddp.any_rank(not bool(torch.isfinite(loss.detach()).all()), ranks):
            kept = (f"the last good checkpoint {Path(runtime.out) / 'last.pt'} (epoch "
                    f"{state.history[-1]['epoch']}) is kept" if state.history
                    else "no checkpoint had been written yet")
            raise SpikelineError(
                f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, iteration "
                f"{state.iteration} (lr {state.optimizer.param_groups[0]['lr']:.3g}); stopped "
                f"without saving: {kept}. Try a lower --lr")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.lr_used = state.optimizer.param_groups[0]["lr"]
        state.optimizer.step()
        if state.scheduler is not None:
            state.scheduler.step()
        state.iteration += 1
        batch = state.task.batch_stats(loss, aux, y, state.task.batch_size_of(x, y))
        stats += batch
        bar.set_postfix(**state.task.postfix(stats))
    bar.close()
    if runtime.max_steps is not None and state.iteration >= runtime.max_steps \
            and state.iteration < (epoch + 1) * (state.total // c.epochs):
        cut = True
    return ddp.all_reduce_sum(stats, ranks), loader, cut


def evaluate_epoch(state: _State, loader, val_loader, ranks: ddp.Ranks) -> dict:
    """Recalibrate BatchNorm statistics with the epoch's final weights, then the validation
    scores ``{"val_<name>": value}`` (accuracy summed over ranks; mAP over the whole split)."""
    if recalibrate_norms(state.heads.model, loader, ranks.device,
                         state.config.recalibrate_batches):
        ddp.broadcast_buffers(state.heads, ranks)
    scores = state.task.evaluate(state.heads.model, val_loader, ranks)
    ddp.broadcast_buffers(state.heads, ranks)
    return {f"val_{k}": v for k, v in scores.items()}


def update_best(state: _State, record: dict) -> bool:
    """Is this epoch the best so far on validation?  (Every rank decides alike.)"""
    c = state.config
    # with fold-aware fine-tuning only the folded epochs compete: best.pt is then exactly the
    # network that was validated and will be deployed
    eligible = not c.fold_finetune_epochs or c.folded_epoch(record["epoch"])
    metric = state.task.metric
    is_best = eligible and record[metric] > state.best[metric]
    if is_best:
        state.best = {metric: record[metric], "epoch": record["epoch"]}
    return is_best


def save_epoch_state(state: _State, record: dict, run_dir: Path, partial: bool,
                     is_best: bool) -> None:
    """Append the epoch's metrics, write last.pt and (when best) best.pt, draw the curves."""
    c = state.config
    payload = {
        "format": FORMAT, "config": c.to_dict(), "model_spec": state.spec,
        "epoch": record["epoch"], "iteration": state.iteration,
        "total_iterations": state.total, "model": state.heads.state_dict(),
        "model_stripped": state.heads.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": None if state.scheduler is None else state.scheduler.state_dict(),
        "rng": rng_state(), "history": state.history, "best": state.best,
        "partial_epoch": partial, "world_size": state.world,
    }
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    save_epoch(run_dir, payload, is_best)
    try:
        t = state.task
        plot_curves(state.history, run_dir / "curves.png",
                    title=(f"{c.model} / heads {c.heads} / {c.dataset}" if t.name == "classify"
                           else f"{c.model} / {t.name} / {c.dataset}"),
                    series=t.plot_series, ylabel=t.plot_label, scale=t.plot_scale)
    except Exception as err:  # noqa: BLE001 - a plot must never stop a training run
        log.warning("could not draw curves.png: %s", err)


def test_best(run_dir: Path, state: _State, data, make_loader: LoaderFactory,
              runtime: Runtime, ranks: ddp.Ranks) -> dict:
    """Test scores ``{"test_<name>": value}`` of best.pt's main network: evaluated once, for
    the chosen checkpoint (in its folded form when best.pt comes from a fold-aware epoch)."""
    best = load_checkpoint(run_dir / "best.pt") if ranks.world == 1 or ranks.is_main else None
    model = build_from_spec(state.spec).to(ranks.device)
    c = state.config
    if c.folded_epoch(state.best["epoch"]):
        set_fold_aware(model, True)
    if ranks.world > 1:
        model.load_state_dict(state.heads.model.state_dict())  # replaced by rank 0's below
        if ranks.is_main:
            model.load_state_dict(best["model_stripped"])
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)
    else:
        model.load_state_dict(best["model_stripped"])
    loader = make_loader(_eval_subset(data.test, state.task, ranks), state.config.batch_size,
                         shuffle=False, workers=runtime.workers, seed=state.config.seed)
    scores = state.task.evaluate(model, loader, ranks)
    return {f"test_{k}": v for k, v in scores.items()}


# --- the loop ----------------------------------------------------------------------------------

def _epoch_record(state: _State, epoch: int, stats, val: dict, seconds: float) -> dict:
    c = state.config
    return {
        "epoch": epoch + 1, "iteration": state.iteration,
        **state.task.train_metrics(stats), **val,
        "lr": float(state.lr_used),
        # lambda(i) of the epoch's last step; it weighs the heads in evolutionary mode
        "lambda": (lambda_at(c.lam, state.iteration - 1, state.total)
                   if c.heads == "evolutionary" else None),
        "seconds": round(seconds, 3),
    }


def _should_stop(state: _State, epoch: int, runtime: Runtime) -> bool:
    return (runtime.stop_after is not None and epoch - state.start_epoch >= runtime.stop_after) \
        or (runtime.max_steps is not None and state.iteration >= runtime.max_steps)


def finish(state: _State, finished: bool, run_dir: Path, data, make_loader: LoaderFactory,
           runtime: Runtime, ranks: ddp.Ranks) -> dict:
    """Test best.pt once and write summary.json; returns the summary."""
    identical = ddp.ranks_identical(state.heads, ranks)
    # no best.pt yet when a run stopped before its fold-aware epochs
    chosen = bool(state.best["epoch"])
    best_record = next((r for r in state.history if r["epoch"] == state.best["epoch"]), {})
    val = {k: (v if chosen else None) for k, v in best_record.items() if k.startswith("val_")}
    val[state.task.metric] = state.best[state.task.metric] if chosen else None
    test = test_best(run_dir, state, data, make_loader, runtime, ranks) if chosen else None
    test = test or {"test_" + k[4:]: None for k in val}
    summary = {
        "finished": finished, "epochs_done": len(state.history),
        "iteration": state.iteration, "total_iterations": state.total, "best": state.best,
        "task": state.task.name, **val, **test,
        "test_checkpoint": "best.pt", "num_val": len(data.val), "num_test": len(data.test),
        "world_size": ranks.world, "ddp_ranks_identical": identical,
    }
    if ranks.is_main:
        _write_json(run_dir / "summary.json", summary)
    return summary


def train(config: TrainConfig | None, runtime: Runtime, data, make_loader: LoaderFactory,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train (or, with ``runtime.resume``, continue) a run in ``runtime.out``.

    ``data``: ``.train``, ``.val``, ``.test`` (torch datasets of ``(frames [T, C, H, W],
    label)``, or ``(frames, targets [n, 5])`` for detection) and ``.num_classes``; ``make_loader(dataset, batch_size, shuffle=, workers=,
    seed=)`` batches them.  On resume ``config`` is None or the stored one.
    ``on_epoch(record)``: called on the main process after each epoch's checkpoint with its
    metrics record (what ``metrics.jsonl`` gets).
    """
    run_dir = Path(runtime.out)
    with ddp.session(runtime.device) as ranks:
        state = prepare(config, runtime, data, ranks)
        c = state.config
        val_loader = make_loader(_eval_subset(data.val, state.task, ranks), c.batch_size,
                                 shuffle=False,
                                 workers=runtime.workers, seed=c.seed)
        finished = True
        for epoch in range(state.start_epoch, c.epochs):
            if _should_stop(state, epoch, runtime):
                finished = False
                break
            t0 = time.perf_counter()
            stats, loader, cut = train_epoch(state, epoch, data, make_loader, runtime, ranks)
            val = evaluate_epoch(state, loader, val_loader, ranks)
            record = _epoch_record(state, epoch, stats, val, time.perf_counter() - t0)
            state.history.append(record)
            is_best = update_best(state, record)
            if ranks.is_main:
                save_epoch_state(state, record, run_dir, partial=cut, is_best=is_best)
                _say(f"epoch {epoch + 1}/{c.epochs}  {state.task.epoch_line(record)}  "
                     f"lr {record['lr']:.3g}  {record['seconds']:.1f}s", runtime.progress)
                if on_epoch is not None:
                    on_epoch(dict(record))
            ddp.barrier(ranks)
            if cut:
                finished = False
                break
        summary = finish(state, finished, run_dir, data, make_loader, runtime, ranks)
        # DDP's reducer holds the process group: free it while every rank is still in the
        # group, else its teardown can wait forever on a rank that already left (seen: the
        # 2-process gloo test hung in ~ProcessGroupGloo on a fresh clone)
        state.loss_module = None
        ddp.barrier(ranks)
        return TrainResult(heads=state.heads, history=state.history, best=state.best,
                           run_dir=run_dir, finished=finished,
                           ddp_ranks_identical=summary["ddp_ranks_identical"], summary=summary)
