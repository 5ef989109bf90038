"""Detection: an EMS-YOLO detector (``ems.DETECTORS``) trained with YOLOv5's loss and scored
by mAP (``detect_train.py`` holds the loss module, the spec and the scorer)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spikeline.datasets.detection import (
    DETECTION_DATASETS, load_detection_splits, make_detection_loader,
)
from spikeline.errors import SpikelineError

from ..checkpoint import build_from_spec
from ..detect_train import (
    DetectionTrainer, check_detection_config, detection_spec, evaluate_detector,
)

__all__ = ["DetectionTask"]


@dataclass(frozen=True)
class DetectionTask:
    """Training an EMS-YOLO detector (the interface: ``tasks.base.Task``)."""

    name: str = "detection"
    metric: str = "val_map50"  # best.pt is the epoch with the highest validation mAP@0.5
    sharded_eval: bool = False  # mAP is not a sum over samples: every rank scores the whole split
    plot_series: tuple = (("val_map50", "validation mAP@0.5"),
                          ("val_map50_95", "validation mAP@0.5:0.95"))
    plot_label: str = "mAP"
    plot_scale: float = 1.0

    @property
    def datasets(self) -> dict:
        return DETECTION_DATASETS

    def check(self, config) -> None:
        check_detection_config(config)

    def spec(self, config, sample, num_classes: int) -> dict:
        return detection_spec(config, sample, num_classes)

    def build(self, config, spec: dict) -> DetectionTrainer:
        self.check(config)
        try:
            model = build_from_spec(spec)
        except (ValueError, KeyError, TypeError) as err:
            raise SpikelineError(f"cannot build detector {config.model!r}: {err}") from err
        return DetectionTrainer(model, max(spec["input_size"]),
                                (config.box_gain, config.obj_gain, config.cls_gain))

    def batch_size_of(self, x: torch.Tensor, y) -> int:
        return int(x.shape[0])

    def zero_stats(self) -> torch.Tensor:
        return torch.zeros(4, dtype=torch.float64)

    def batch_stats(self, loss, aux: torch.Tensor, y, n: int) -> torch.Tensor:
        """``[box * n, obj * n, cls * n, n]`` (the loss is their sum, YOLOv5's per batch)."""
        return torch.cat([aux.detach().double().cpu() * n,
                          torch.tensor([n], dtype=torch.float64)])

    def train_metrics(self, stats) -> dict:
        n = max(float(stats[-1]), 1.0)
        box, obj, cls = (float(v) / n for v in stats[:3])
        return {"train_loss": box + obj + cls, "train_box": box, "train_obj": obj,
                "train_cls": cls}

    def postfix(self, stats) -> dict:
        m = self.train_metrics(stats)
        return {"loss": f"{m['train_loss']:.4f}", "cls": f"{m['train_cls']:.4f}"}

    def evaluate(self, model, loader, ranks) -> dict:
        return evaluate_detector(model, loader, ranks.device)

    def epoch_line(self, record: dict) -> str:
        return (f"loss {record['train_loss']:.4f} (box {record['train_box']:.4f} obj "
                f"{record['train_obj']:.4f} cls {record['train_cls']:.4f})  val mAP@0.5 "
                f"{record['val_map50']:.4f} mAP@0.5:0.95 {record['val_map50_95']:.4f}")

    def load_splits(self, config, data_dir=None, cache_dir=None):
        """The dataset's own fixed train, validation and test splits (no augmentation)."""
        return load_detection_splits(config.dataset, T=config.T, size=tuple(config.size),
                                     limit_train=config.limit_train,
                                     limit_test=config.limit_test, data_dir=data_dir,
                                     cache_dir=cache_dir)

    def make_loader(self, dataset, batch_size: int, **kwargs):
        return make_detection_loader(dataset, batch_size, **kwargs)

    def test_scores(self, model, loader, device) -> dict:
        scores = evaluate_detector(model, loader, device)
        return {"task": "detection", "mAP50": scores["map50"], "mAP50_95": scores["map50_95"],
                "num_test": len(loader.dataset)}
