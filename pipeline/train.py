"""Training loop: shortcut heads, cosine LR, atomic resumable checkpoints, DDP, bf16 AMP.

``train(config, runtime)`` trains ``models.build_model(config.model)`` wrapped in
``heads.ShortcutHeads(mode=config.heads, lam=config.lam)`` on ``config.dataset``.

Schedules (both per optimizer step, i = 0 .. I-1, I = epochs * steps_per_epoch):

* learning rate: cosine from ``lr`` to 0 over the I steps (``CosineAnnealingLR(T_max=I)``
  stepped after every optimizer step); ``schedule="constant"`` keeps ``lr``.
* lambda: ``progress = i / I`` is handed to ``ShortcutHeads.loss``, which uses
  ``lambda(i) = lam * (1 - i / I)`` in evolutionary mode (paper Eq. 10).

Reproducibility: model init is a function of ``seed``; at the start of every epoch the torch,
numpy and python RNGs are reseeded from ``(seed, epoch, rank)`` and the data order comes from a
``DistributedSampler(seed=seed)`` at ``set_epoch(epoch)`` (also in a single process), so the data
order and augmentation of an epoch are a function of (seed, epoch).  ``last.pt`` is written at
the end of every epoch with model, optimizer, scheduler, schedule position, RNG states and the
full config; ``resume`` continues from it and, on CPU, ends with exactly the weights of the
uninterrupted run.  An interruption mid-epoch resumes from the last completed epoch.

Multi-GPU: launch with ``torchrun --nproc_per_node K -m spikeline train ...``; each process
trains on its ``DistributedSampler`` shard with ``--batch-size`` samples per step (global batch
K x batch size), gradients are averaged by DDP (NCCL on CUDA, gloo on CPU), BatchNorm buffers are
broadcast from rank 0 after each epoch, and rank 0 writes the run directory.  At the end every
rank checks that it holds rank 0's exact weights (``ddp_ranks_identical`` in ``summary.json``).

AMP: bf16 autocast on CUDA only (``amp=True``); the spiking neuron itself always runs its
fixed-point dynamics in float32/int64, and evaluation runs in float32.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from spikeline.atomic import atomic_file
from spikeline.errors import SpikelineError

from .checkpoint import (FORMAT, build_from_spec, load_checkpoint, load_run_model,
                         rng_state, save_checkpoint, set_rng_state)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.1}


@dataclass
class TrainConfig:
    """What defines a run (stored in every checkpoint; ``resume`` reuses it)."""

    dataset: str = "ndigits"
    model: str = "cnn"
    heads: str = "none"
    lam: float = 0.25
    T: int | None = None  # None: the dataset's default_T
    size: list[int] | None = None  # [H, W]; None: the dataset's default_size
    encoding: str = "binary"
    rezero: bool = False
    width: int | None = None  # build_model's channel scale (None: the model's default)
    depths: list[int] | None = None  # ResNets: blocks per stage (None: the model's own)
    connect: str | None = None  # SEW ResNets: ADD, AND or IAND (None: ADD)
    # ideal: no synaptic delay; loihi: one step per synaptic hop (pipeline/timing.py)
    timing: str = "ideal"
    # CUBA-LIF parameters; None: models.DEFAULT_NEURON's
    threshold: float | None = None
    current_decay: float | None = None
    voltage_decay: float | None = None
    tau_grad: float | None = None
    scale_grad: float | None = None
    epochs: int = 10
    batch_size: int = 32  # per process
    optimizer: str = "adam"
    lr: float | None = None  # None: 1e-3 for adam, 0.1 for sgd
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "cosine"
    augment: bool = True
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    amp: bool = True  # bf16 autocast when training on CUDA
    # BatchNorm statistics recomputed with each epoch's final weights over this many training
    # batches before evaluation and checkpointing (0: keep the running averages)
    recalibrate_batches: int = 16

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Runtime:
    """How this invocation runs (not part of the run's identity)."""

    out: str | os.PathLike
    device: str = "auto"  # cpu | cuda | auto
    workers: int = 0
    data_dir: str | None = None
    cache_dir: str | None = None
    resume: bool = False
    stop_after: int | None = None  # stop after this many epochs in this invocation
    progress: bool = True  # tqdm bars and per-epoch lines (rank 0)


@dataclass
class TrainResult:
    heads: nn.Module  # the ShortcutHeads module (``.strip()`` gives the main network)
    history: list[dict]
    best: dict
    run_dir: Path
    finished: bool  # all epochs done (False when stop_after cut the run short)
    ddp_ranks_identical: bool | None = None
    extra: dict = field(default_factory=dict)


# --- helpers ---------------------------------------------------------------------------------

def derive_seed(*parts: int) -> int:
    """A 31-bit seed that is a function of ``parts`` (seed, epoch, rank)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name not in ("cpu", "cuda", "auto"):
        raise SpikelineError(f"--device must be cpu, cuda or auto, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SpikelineError("--device cuda was asked for but torch sees no CUDA device "
                                 "(this torch build: " + torch.__version__ + ")")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def subset(dataset, limit: int | None):
    """The first ``limit`` samples of a fixed random permutation (same for every seed), so a
    small subset still covers all classes."""
    if limit is None or limit <= 0 or limit >= len(dataset):
        return dataset
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    return torch.utils.data.Subset(dataset, sorted(perm[:limit].tolist()))


def _reseed_augmentation(dataset, epoch_seed: int) -> None:
    """Give the dataset under any ``Subset`` wrappers this epoch's augmentation seed (the
    registry's loader only reseeds a dataset it holds directly)."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    if hasattr(dataset, "reseed"):
        dataset.reseed(epoch_seed)


def lambda_at(lam: float, iteration: int, total: int) -> float:
    """The evolutionary schedule ``lambda(i) = lam * (1 - i / I)``."""
    return lam * (1.0 - iteration / max(total, 1))


def _dataset_info(name: str):
    from spikeline.datasets.registry import DATASETS

    if name not in DATASETS:
        raise SpikelineError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_splits(config: TrainConfig, data_dir=None, cache_dir=None):
    """``(train, test)`` datasets of a config (limits applied, ``T``/``size`` resolved)."""
    from spikeline.datasets.registry import load_dataset

    kwargs = dict(data_dir=data_dir, T=config.T,
                  size=None if config.size is None else tuple(config.size),
                  cache_dir=cache_dir, seed=config.seed)
    train_ds = load_dataset(config.dataset, "train", augment=config.augment, **kwargs)
    test_ds = load_dataset(config.dataset, "test", augment=False, **kwargs)
    return subset(train_ds, config.limit_train), subset(test_ds, config.limit_test)


def _resolve(config: TrainConfig) -> TrainConfig:
    """Fill in dataset defaults and check choices; returns a new config."""
    from spikeline.pipeline.heads import HEAD_MODES
    from spikeline.pipeline.models import ENCODINGS, MODELS

    info = _dataset_info(config.dataset)
    c = dataclasses.replace(config)
    if c.model not in MODELS:
        raise SpikelineError(f"unknown model {c.model!r}; known: {', '.join(MODELS)}")
    if c.heads not in HEAD_MODES:
        raise SpikelineError(f"unknown heads mode {c.heads!r}; known: {', '.join(HEAD_MODES)}")
    if c.encoding not in ENCODINGS:
        raise SpikelineError(f"--encoding must be one of {ENCODINGS}, got {c.encoding!r}")
    if c.optimizer not in OPTIMIZERS:
        raise SpikelineError(f"--optimizer must be one of {OPTIMIZERS}, got {c.optimizer!r}")
    if c.schedule not in SCHEDULES:
        raise SpikelineError(f"schedule must be one of {SCHEDULES}, got {c.schedule!r}")
    if c.epochs < 1 or c.batch_size < 1:
        raise SpikelineError("--epochs and --batch-size must be >= 1")
    if c.T is None:
        c.T = int(info.default_T)
    if c.size is None:
        size = info.default_size
        c.size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    elif isinstance(c.size, int):
        c.size = [c.size, c.size]
    else:
        c.size = [int(s) for s in c.size]
    if c.lr is None:
        c.lr = DEFAULT_LR[c.optimizer]
    return c


NEURON_FIELDS = ("threshold", "current_decay", "voltage_decay", "tau_grad", "scale_grad")


def neuron_params(config: TrainConfig, default) -> dict:
    """The run's CubaParams as a dict: the default, with the config's explicit choices."""
    params = dataclasses.asdict(default)
    params.update({k: getattr(config, k) for k in NEURON_FIELDS if getattr(config, k) is not None})
    return params


def model_spec_for(config: TrainConfig, sample: torch.Tensor) -> dict:
    """``build_model`` keyword arguments, from the config and one sample ``[T, C, H, W]``."""
    from spikeline.pipeline.models import DEFAULT_NEURON

    info = _dataset_info(config.dataset)
    spec = {"name": config.model, "in_channels": int(sample.shape[1]),
            "num_classes": int(info.num_classes),
            "input_size": [int(sample.shape[2]), int(sample.shape[3])],
            "encoding": config.encoding, "rezero": bool(config.rezero),
            # stored explicitly so that a later change of the default cannot change the model
            "neuron": neuron_params(config, DEFAULT_NEURON)}
    for key in ("width", "depths", "connect"):
        value = getattr(config, key)
        if value is not None:
            spec[key] = list(value) if key == "depths" else value
    if config.timing != "ideal":  # omitted when ideal, so older specs build unchanged
        spec["timing"] = config.timing
    return spec


def build_heads(config: TrainConfig, spec: dict):
    from spikeline.pipeline.heads import ShortcutHeads

    try:
        model = build_from_spec(spec)
        return ShortcutHeads(model, spec["num_classes"], config.heads, lam=config.lam)
    except (ValueError, KeyError, TypeError) as err:
        raise SpikelineError(f"cannot build model {config.model!r} with heads "
                             f"{config.heads!r}: {err}") from err


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


@torch.no_grad()
def recalibrate_norms(model: nn.Module, loader, device: torch.device, max_batches: int) -> int:
    """Recompute every BiasNorm's running mean and variance as plain averages over up to
    ``max_batches`` training batches, with the weights as they are now ("precise BN").

    The exponential running averages lag behind weights that move fast; through spiking
    thresholds the lag compounds layer by layer (measured: a 20-layer ResNet at 94% train-mode
    vs 47% eval-mode accuracy on the same batch).  Eval mode, and the folded export, then see
    the statistics the final weights produce.  Returns the number of batches used.
    """
    from .blocks import BiasNorm

    norms = [m for m in model.modules() if isinstance(m, BiasNorm)]
    if not norms or max_batches < 1:
        return 0
    sums = {m: [0.0, 0.0] for m in norms}

    def record(module, inputs, _output):
        z = inputs[0]
        dims = [d for d in range(z.dim()) if d != 2]
        n = z.numel() / z.shape[2]
        sums[module][0] = sums[module][0] + z.mean(dims)
        sums[module][1] = sums[module][1] + z.var(dims, unbiased=False) * n / max(n - 1, 1)

    hooks = [m.register_forward_hook(record) for m in norms]
    was_training, used = model.training, 0
    model.train()
    try:
        with torch.no_grad():
            for x, _ in loader:
                if used >= max_batches:
                    break
                model(x.to(device))
                used += 1
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    with torch.no_grad():
        for m, (mean, var) in sums.items():
            m.running_mean.copy_(mean / used)
            m.running_var.copy_(var / used)
    return used


def evaluate_model(model: nn.Module, loader, device: torch.device) -> tuple[int, int]:
    """``(correct, count)`` of ``model`` (eval mode, float32) over ``loader``."""
    was_training = model.training
    model.eval()
    correct = count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        correct += int((logits.argmax(1) == y).sum())
        count += int(y.numel())
    model.train(was_training)
    return correct, count


def _broadcast_buffers(module: nn.Module) -> None:
    for buf in module.buffers():
        dist.broadcast(buf.data, 0)


def _ranks_identical(module: nn.Module, device) -> bool:
    """Every rank compares its state to rank 0's, bit for bit."""
    mismatch = torch.zeros(1, device=device)
    for tensor in module.state_dict().values():
        ref = tensor.detach().clone()
        dist.broadcast(ref, 0)
        if not torch.equal(ref, tensor):
            mismatch += 1
    dist.all_reduce(mismatch)
    return bool(mismatch.item() == 0)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with atomic_file(path) as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records).encode())


def _write_json(path: Path, data: dict) -> None:
    with atomic_file(path) as fh:
        fh.write((json.dumps(data, indent=2) + "\n").encode())


def _print(msg: str, enabled: bool) -> None:
    if enabled:
        print(msg, flush=True)


# --- the loop ----------------------------------------------------------------------------------

def train(config: TrainConfig | None, runtime: Runtime, overrides: dict | None = None,
          ) -> TrainResult:
    """Train (or, with ``runtime.resume``, continue) a run in ``runtime.out``.

    On resume the stored config is used; ``config``/``overrides`` (explicitly chosen options)
    must then agree with it, else a ``SpikelineError`` names the differences.
    """
    from spikeline.datasets.registry import make_loader

    run_dir = Path(runtime.out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(runtime.device, local_rank)
    own_group = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        own_group = True
    is_main = rank == 0
    try:
        # ---- config: fresh or from the checkpoint -----------------------------------------
        ckpt = None
        last_path = run_dir / "last.pt"
        if runtime.resume:
            ckpt = load_checkpoint(last_path)
            stored = TrainConfig.from_dict(ckpt["config"])
            wanted = dict(overrides or {})
            if config is not None:
                wanted.update(config.to_dict())
            diffs = [f"{k}: run has {getattr(stored, k)!r}, asked {v!r}"
                     for k, v in wanted.items()
                     if hasattr(stored, k) and v is not None and v != getattr(stored, k)
                     and not (k == "size" and list(np.broadcast_to(v, 2)) == stored.size)]
            if diffs:
                raise SpikelineError(f"--resume of {run_dir} with options that differ from the "
                                     "run's config (" + "; ".join(diffs) + "); drop them or "
                                     "train into a new --out")
            config = stored
        else:
            if last_path.exists():
                raise SpikelineError(f"{run_dir} already holds a run (last.pt); pass --resume "
                                     "to continue it or choose another --out")
            config = _resolve(config or TrainConfig())
        use_amp = bool(config.amp) and device.type == "cuda"

        # ---- data, model, optimizer ----------------------------------------------------------
        seed_everything(config.seed)
        train_ds, test_ds = load_splits(config, runtime.data_dir, runtime.cache_dir)
        if len(train_ds) == 0 or len(test_ds) == 0:
            raise SpikelineError(f"dataset {config.dataset!r} gave an empty train or test split")
        spec = model_spec_for(config, train_ds[0][0])
        seed_everything(config.seed)
        heads = build_heads(config, spec).to(device)
        optimizer = make_optimizer(config, heads.parameters())
        per_rank = math.ceil(len(train_ds) / world)
        steps_per_epoch = math.ceil(per_rank / config.batch_size)
        total = config.epochs * steps_per_epoch
        scheduler = make_scheduler(config, optimizer, total)

        start_epoch, iteration = 0, 0
        history: list[dict] = []
        best = {"test_acc": -1.0, "epoch": 0}
        if ckpt is not None:
            if ckpt["total_iterations"] != total:
                raise SpikelineError(
                    f"{last_path}: the run had {ckpt['total_iterations']} iterations in all, "
                    f"the data now gives {total}: was --data-dir or the dataset changed?")
            heads.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            start_epoch, iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
            history = list(ckpt["history"])
            best = dict(ckpt["best"])
            set_rng_state(ckpt["rng"])
            del ckpt
            _print(f"resuming {run_dir} at epoch {start_epoch + 1}/{config.epochs} "
                   f"(iteration {iteration}/{total})", runtime.progress and is_main)
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_jsonl(run_dir / "metrics.jsonl", history)  # drops epochs past last.pt
            _write_json(run_dir / "config.json", {"config": config.to_dict(),
                                                  "model_spec": spec})

        loss_module = _LossModule(heads)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            loss_module = DistributedDataParallel(
                loss_module, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False)
        test_loader = make_loader(
            torch.utils.data.Subset(test_ds, list(range(rank, len(test_ds), world))),
            config.batch_size, shuffle=False, workers=runtime.workers, seed=config.seed)

        from tqdm.auto import tqdm

        from torch.utils.data.distributed import DistributedSampler

        finished = True
        for epoch in range(start_epoch, config.epochs):
            if runtime.stop_after is not None and epoch - start_epoch >= runtime.stop_after:
                finished = False
                break
            t0 = time.perf_counter()
            seed_everything(derive_seed(config.seed, epoch, rank))
            sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                         seed=config.seed, drop_last=False)
            sampler.set_epoch(epoch)
            _reseed_augmentation(train_ds, derive_seed(config.seed, epoch, 2))
            loader = make_loader(torch.utils.data.Subset(train_ds, list(sampler)),
                                 config.batch_size, shuffle=False, workers=runtime.workers,
                                 seed=derive_seed(config.seed, epoch, rank, 1))
            heads.train()
            stats = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
            lr_used = optimizer.param_groups[0]["lr"]
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       disable=not (runtime.progress and is_main), dynamic_ncols=True)
            for x, y in bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                progress = iteration / total
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss, logits = loss_module(x, y, progress)
                bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0],
                                   device=device)
                if world > 1:
                    dist.all_reduce(bad)
                if bad.item():
                    kept = (f"the last good checkpoint {last_path} (epoch "
                            f"{history[-1]['epoch']}) is kept" if history
                            else "no checkpoint had been written yet")
                    raise SpikelineError(
                        f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, "
                        f"iteration {iteration} (lr {optimizer.param_groups[0]['lr']:.3g}); "
                        f"stopped without saving: {kept}. Try a lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr_used = optimizer.param_groups[0]["lr"]
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                iteration += 1
                n = y.numel()
                correct = int((logits.detach().argmax(1) == y).sum())
                stats += torch.tensor([loss.item() * n, correct, n], dtype=torch.float64)
                bar.set_postfix(loss=f"{stats[0] / stats[2]:.3f}",
                                acc=f"{stats[1] / stats[2]:.3f}",
                                lam=f"{lambda_at(config.lam, iteration - 1, total):.3f}")
            bar.close()
            if recalibrate_norms(heads.model, loader, device, config.recalibrate_batches):
                if world > 1:
                    _broadcast_buffers(heads)
            evaluation = torch.tensor(evaluate_model(heads.model, test_loader, device),
                                      dtype=torch.float64)
            if world > 1:
                stats, evaluation = stats.to(device), evaluation.to(device)
                dist.all_reduce(stats)
                dist.all_reduce(evaluation)
                stats, evaluation = stats.cpu(), evaluation.cpu()
                _broadcast_buffers(heads)
            record = {
                "epoch": epoch + 1,
                "iteration": iteration,
                "train_loss": float(stats[0] / stats[2]),
                "train_acc": float(stats[1] / stats[2]),
                "test_acc": float(evaluation[0] / evaluation[1]),
                "lr": float(lr_used),
                # lambda(i) of the epoch's last step; it weighs the heads in evolutionary mode
                "lambda": (lambda_at(config.lam, iteration - 1, total)
                           if config.heads == "evolutionary" else None),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            history.append(record)
            is_best = record["test_acc"] > best["test_acc"]
            if is_best:
                best = {"test_acc": record["test_acc"], "epoch": record["epoch"]}
            if is_main:
                payload = {
                    "format": FORMAT,
                    "config": config.to_dict(),
                    "model_spec": spec,
                    "epoch": epoch + 1,
                    "iteration": iteration,
                    "total_iterations": total,
                    "model": heads.state_dict(),
                    "model_stripped": heads.model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "rng": rng_state(),
                    "history": history,
                    "best": best,
                    "world_size": world,
                }
                with open(run_dir / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                save_checkpoint(last_path, payload)
                if is_best:
                    save_checkpoint(run_dir / "best.pt", payload)
                try:
                    from .plots import plot_curves

                    plot_curves(history, run_dir / "curves.png",
                                title=f"{config.model} / heads {config.heads} / {config.dataset}")
                except Exception as err:  # a plot must never stop a training run
                    _print(f"warning: could not draw curves.png: {err}", True)
                lam_txt = "" if record["lambda"] is None else f"  lambda {record['lambda']:.3f}"
                _print(f"epoch {epoch + 1}/{config.epochs}  loss {record['train_loss']:.4f}  "
                       f"train {100 * record['train_acc']:.1f}%  "
                       f"test {100 * record['test_acc']:.1f}%  lr {record['lr']:.3g}{lam_txt}  "
                       f"{record['seconds']:.1f}s", runtime.progress)
            if world > 1:
                dist.barrier()

        identical = _ranks_identical(heads, device) if world > 1 else None
        if is_main:
            _write_json(run_dir / "summary.json", {
                "finished": finished, "epochs_done": len(history), "iteration": iteration,
                "total_iterations": total, "best": best,
                "final_test_acc": history[-1]["test_acc"] if history else None,
                "world_size": world, "ddp_ranks_identical": identical})
        return TrainResult(heads=heads, history=history, best=best, run_dir=run_dir,
                           finished=finished, ddp_ranks_identical=identical)
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def evaluate_run(run_dir, which: str = "best", device: str = "auto", data_dir=None,
                 cache_dir=None, batch_size: int | None = None, limit_test: int | None = None,
                 workers: int = 0) -> dict:
    """Test accuracy of a run's stripped main network (what export deploys)."""
    from spikeline.datasets.registry import make_loader

    dev = resolve_device(device)
    model, ckpt = load_run_model(run_dir, which)
    config = TrainConfig.from_dict(ckpt["config"])
    if limit_test is not None:
        config.limit_test = limit_test if limit_test > 0 else None
    _, test_ds = load_splits(config, data_dir, cache_dir)
    loader = make_loader(test_ds, batch_size or config.batch_size, shuffle=False,
                         workers=workers, seed=config.seed)
    model.to(dev)
    correct, count = evaluate_model(model, loader, dev)
    return {"run_dir": str(run_dir), "checkpoint": which, "epoch": int(ckpt["epoch"]),
            "dataset": config.dataset, "model": config.model, "heads": config.heads,
            "test_acc": correct / max(count, 1), "correct": correct, "num_test": count}
