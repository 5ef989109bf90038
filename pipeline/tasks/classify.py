"""Classification with shortcut heads: a ``models.build_model`` network wrapped in
``heads.ShortcutHeads``, scored by accuracy, trained on the classification datasets."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from spikeline.datasets.detection import DETECTION_DATASETS
from spikeline.datasets.registry import DATASETS, load_splits, make_loader
from spikeline.errors import BadInput, SpikelineError

from .. import distributed as ddp
from ..checkpoint import build_from_spec
from ..config import TrainConfig, neuron_params
from ..ems import DETECTORS
from ..heads import HEAD_MODES, ShortcutHeads
from ..models import DEFAULT_BATCHNORM, DEFAULT_NEURON, MODELS, relay_weight_for
from ..neuron import CubaParams
from ..precision import exact_fp32

__all__ = ["ClassifyTask", "build_heads", "evaluate_model", "model_spec_for"]


def model_spec_for(config: TrainConfig, sample: torch.Tensor, num_classes: int) -> dict:
    """``build_model`` keyword arguments, from the config and one sample ``[T, C, H, W]``."""
    spec = {"name": config.model, "in_channels": int(sample.shape[1]),
            "num_classes": int(num_classes),
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
    # always stored (specs without it predate scale-only BatchNorm: build_from_spec reads
    # them as "shift")
    spec["batchnorm"] = config.batchnorm or DEFAULT_BATCHNORM
    # likewise (absent: False, loihi-timed biases acting before their layer's input arrived)
    spec["resets_at_arrival"] = True
    # likewise (absent: 1.0, the identity shortcut before it was weighted)
    spec["identity_weight"] = relay_weight_for(CubaParams(**spec["neuron"]))
    return spec


def build_heads(config: TrainConfig, spec: dict):
    if config.model not in MODELS:
        raise BadInput(f"--model (model): unknown model {config.model!r}; known: "
                       f"{', '.join(MODELS)}")
    if config.heads not in HEAD_MODES:
        raise BadInput(f"--heads (heads): expected one of {', '.join(HEAD_MODES)}, got "
                       f"{config.heads!r}")
    try:
        model = build_from_spec(spec)
        return ShortcutHeads(model, spec["num_classes"], config.heads, lam=config.lam)
    except (ValueError, KeyError, TypeError) as err:
        raise SpikelineError(f"cannot build model {config.model!r} with heads "
                             f"{config.heads!r}: {err}") from err


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, device: torch.device) -> tuple[int, int]:
    """``(correct, count)`` of ``model`` (eval mode, exact float32, no autograd) over
    ``loader``."""
    was_training = model.training
    model.eval()
    correct = count = 0
    try:
        with exact_fp32():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                correct += int((model(x.float()).argmax(1) == y).sum())
                count += int(y.numel())
    finally:
        model.train(was_training)
    return correct, count


@dataclass(frozen=True)
class ClassifyTask:
    """Training a classifier with shortcut heads (the interface: ``tasks.base.Task``)."""

    name: str = "classify"
    metric: str = "val_acc"
    sharded_eval: bool = True
    plot_series: tuple = (("train_acc", "train"), ("val_acc", "validation"))
    plot_label: str = "accuracy (%)"
    plot_scale: float = 100.0

    @property
    def datasets(self) -> dict:
        return DATASETS

    def check(self, config: TrainConfig) -> None:
        """A detection dataset or a detector is refused, naming the option."""
        if config.dataset in DETECTION_DATASETS:
            raise BadInput(f"--dataset (dataset): {config.dataset!r} is a detection dataset; "
                           "train on it with --task detection")
        if config.model in DETECTORS:
            raise BadInput(f"--model (model): {config.model!r} is a detector; pass --task "
                           "detection (and a detection dataset)")

    def spec(self, config: TrainConfig, sample: torch.Tensor, num_classes: int) -> dict:
        return model_spec_for(config, sample, num_classes)

    def build(self, config: TrainConfig, spec: dict) -> nn.Module:
        self.check(config)
        return build_heads(config, spec)

    def batch_size_of(self, x: torch.Tensor, y: torch.Tensor) -> int:
        return int(y.numel())

    def zero_stats(self) -> torch.Tensor:
        return torch.zeros(3, dtype=torch.float64)

    def batch_stats(self, loss, logits, y, n: int) -> torch.Tensor:
        """``[loss * n, correct, n]``."""
        correct = int((logits.detach().argmax(1) == y).sum())
        return torch.tensor([loss.item() * n, correct, n], dtype=torch.float64)

    def train_metrics(self, stats) -> dict:
        return {"train_loss": float(stats[0] / max(stats[2], 1)),
                "train_acc": float(stats[1] / max(stats[2], 1))}

    def postfix(self, stats) -> dict:
        return {"loss": f"{stats[0] / stats[2]:.3f}", "acc": f"{stats[1] / stats[2]:.3f}"}

    def evaluate(self, model: nn.Module, loader, ranks: ddp.Ranks) -> dict:
        counts = torch.tensor(evaluate_model(model, loader, ranks.device), dtype=torch.float64)
        counts = ddp.all_reduce_sum(counts, ranks)
        return {"acc": float(counts[0] / max(counts[1], 1))}

    def epoch_line(self, record: dict) -> str:
        return (f"loss {record['train_loss']:.4f}  train {100 * record['train_acc']:.1f}%  "
                f"val {100 * record['val_acc']:.1f}%")

    def load_splits(self, config: TrainConfig, data_dir=None, cache_dir=None):
        """Train (augmented), a validation split carved from it (fixed) and test."""
        return load_splits(config.dataset, T=config.T, size=tuple(config.size),
                           augment=config.augment, val_fraction=config.val_fraction,
                           limit_train=config.limit_train, limit_test=config.limit_test,
                           data_dir=data_dir, cache_dir=cache_dir, seed=config.seed)

    def make_loader(self, dataset, batch_size: int, **kwargs):
        return make_loader(dataset, batch_size, **kwargs)

    def test_scores(self, model: nn.Module, loader, device) -> dict:
        correct, count = evaluate_model(model, loader, device)
        return {"test_acc": correct / max(count, 1), "correct": correct, "num_test": count}
