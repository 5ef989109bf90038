"""What training a detector adds to the training loop: its spec, loss and evaluation.

``train.py`` runs one loop for every task; a task object (``train.ClassifyTask`` or
``DetectionTask`` here) says what the loop trains and how it is scored:

* the model: an EMS-YOLO detector of ``ems.DETECTORS`` wrapped in ``DetectionTrainer``, whose
  ``.model`` is the detector (the checkpoint's ``model_stripped``: the whole detector, there are
  no shortcut heads) and whose ``.loss(x, targets, progress)`` is YOLOv5's loss
  (``detection.yolo_loss``) with the run's gains;
* the spec: ``{"name", "task": "detection", "in_channels", "num_classes", "width",
  "deployable", "encoding", "neuron", "anchors" [[[w, h], ...], ...], "strides",
  "input_size"}`` and ``"timing"`` when it is not ``ideal`` (``--timing loihi``: one step per
  synaptic hop, deployable form only; see ``ems.SpikingDetector``), which ``checkpoint.build_from_spec`` rebuilds (the contract with export);
* the score: mAP@0.5 and mAP@0.5:0.95 from pycocotools (``detection.mean_average_precision``)
  over the whole split, after YOLOv5 val.py's post-processing (confidence floor 0.001, NMS at
  IoU 0.6, 300 boxes per image).  ``best.pt`` is chosen by validation mAP@0.5.

Anchors come from the dataset: ``ems.NDIGITS_ANCHORS`` (made for its 64 px frames) and
EMS-YOLO's ``detection.GEN1_ANCHORS`` (YOLOv5 anchors for its Gen1 inputs at 640 px), both
scaled to the run's frame size per axis.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from spikeline.errors import BadInput

from .detection import GEN1_ANCHORS, Anchors, decode, mean_average_precision, nms, yolo_loss

__all__ = ["CONF_THRESHOLD", "NMS_IOU", "MAX_DET", "DetectionTask", "DetectionTrainer",
           "anchors_for", "check_detection_config", "detection_spec", "evaluate_detector",
           "predict", "score_detections", "targets_to_truths"]

# YOLOv5 val.py's post-processing for mAP (https://github.com/ultralytics/yolov5, val.py:
# conf_thres=0.001, iou_thres=0.6, max_det=300)
CONF_THRESHOLD, NMS_IOU, MAX_DET = 0.001, 0.6, 300


def _anchor_table() -> dict[str, tuple[Anchors, tuple[int, int]]]:
    from .ems import NDIGITS_ANCHORS

    # dataset -> (anchors, the (H, W) frame size they are given for): EMS-YOLO's Gen1 anchors
    # are YOLOv5 anchors, in pixels of the network input, and its Gen1 command trains at
    # --img 640 (https://github.com/BICLab/EMS-YOLO README and g1-resnet/train_g1.py)
    return {"ndigits-detect": (NDIGITS_ANCHORS, (64, 64)),
            "gen1": (Anchors(GEN1_ANCHORS), (640, 640))}


def anchors_for(dataset: str, size) -> Anchors:
    """The dataset's anchors on frames of ``size = (H, W)``."""
    table = _anchor_table()
    if dataset not in table:
        raise BadInput(f"--dataset (dataset): no anchors for {dataset!r}; detection datasets: "
                       f"{', '.join(table)}")
    anchors, (ref_h, ref_w) = table[dataset]
    sx, sy = size[1] / ref_w, size[0] / ref_h
    return Anchors(tuple(tuple((w * sx, h * sy) for w, h in level) for level in anchors.sizes),
                   anchors.strides)


def check_detection_config(config) -> None:
    """Refuse, naming the option, what a detection run cannot honour."""
    from spikeline.datasets.detection import DETECTION_DATASETS
    from spikeline.datasets.registry import DATASETS

    from .ems import DETECTORS

    if config.task != "detection":
        if config.dataset in DETECTION_DATASETS:
            raise BadInput(f"--dataset (dataset): {config.dataset!r} is a detection dataset; "
                           "train on it with --task detection")
        if config.model in DETECTORS:
            raise BadInput(f"--model (model): {config.model!r} is a detector; pass --task "
                           "detection (and a detection dataset)")
        return
    if config.dataset not in DETECTION_DATASETS:
        hint = " (a classification dataset)" if config.dataset in DATASETS else ""
        raise BadInput(f"--dataset (dataset): {config.dataset!r}{hint} is not a detection "
                       f"dataset; --task detection takes {', '.join(DETECTION_DATASETS)}")
    if config.model not in DETECTORS:
        raise BadInput(f"--model (model): {config.model!r} is not a detector; --task "
                       f"detection takes {', '.join(DETECTORS)}")
    if config.heads != "none":
        raise BadInput(f"--heads (heads): detectors have no shortcut heads; --task detection "
                       f"needs --heads none, got {config.heads!r}")
    refused = {"rezero": config.rezero, "depths": config.depths is not None,
               "connect": config.connect is not None}
    for name, bad in refused.items():
        if bad:
            flag = "--" + name
            raise BadInput(f"{flag} ({name}): not available with --task detection (the "
                           f"EMS detectors have a fixed layout)")
    if config.batchnorm == "scale" and not config.deployable:
        raise BadInput("--batchnorm (batchnorm): scale-only BatchNorm needs the deployable "
                       "detector (--deployable / deployable = true): the published form's "
                       "tdBN shifts the real values it passes between blocks")
    if config.timing != "ideal" and not config.deployable:
        raise BadInput(f"--timing (timing): {config.timing!r} timing needs the deployable "
                       "detector (--deployable / deployable = true): the published form passes "
                       "membrane potentials between blocks, which no chip's synapses carry")


def detection_spec(config, sample: torch.Tensor, num_classes: int) -> dict:
    """The checkpoint's ``model_spec`` of a detector, from the config and one sample
    ``[T, C, H, W]`` (see the module doc)."""
    from .ems import detector_neuron
    from .models import identity_weight_for
    from .neuron import CubaParams
    from .train import neuron_params

    neuron = neuron_params(config, detector_neuron())  # stored explicitly, as for classifiers

    size = [int(sample.shape[2]), int(sample.shape[3])]
    anchors = anchors_for(config.dataset, size)
    return {"name": config.model, "task": "detection", "in_channels": int(sample.shape[1]),
            "num_classes": int(num_classes), "width": int(config.width or 64),
            "deployable": bool(config.deployable), "encoding": config.encoding,
            "neuron": neuron,
            "anchors": [[[float(w), float(h)] for w, h in level] for level in anchors.sizes],
            "strides": [int(s) for s in anchors.strides], "input_size": size,
            # omitted when ideal, so older specs build unchanged
            **({"timing": config.timing} if config.timing != "ideal" else {}),
            # always stored; absent (older specs): shift
            "batchnorm": config.batchnorm or ("scale" if config.timing == "loihi"
                                              and config.deployable else "shift"),
            # likewise; absent: 1.0
            "identity_weight": identity_weight_for(CubaParams(**neuron))}


class DetectionTrainer(nn.Module):
    """The training module of a detector: ``.model`` is the detector (what is deployed) and
    ``.loss(x, targets, progress) -> (loss, parts [box, obj, cls])`` YOLOv5's loss."""

    def __init__(self, model: nn.Module, image_size: int, gains: tuple[float, float, float]):
        super().__init__()
        self.model = model
        self.image_size, self.gains = int(image_size), tuple(float(g) for g in gains)

    def forward(self, x):
        return self.model(x)

    def loss(self, x: torch.Tensor, targets: torch.Tensor, progress: float = 0.0):
        raw = self.model(x)
        loss, parts = yolo_loss(raw, targets, self.model.head.anchors, self.image_size,
                                gains=self.gains)
        return loss, torch.tensor([parts["box"], parts["obj"], parts["cls"]],
                                  dtype=torch.float64)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, conf: float = CONF_THRESHOLD,
            iou: float = NMS_IOU, max_det: int = MAX_DET) -> list[torch.Tensor]:
    """Per image, ``[k, 6]`` rows ``(x0, y0, x1, y1, score, class)`` in input pixels."""
    return nms(decode(model(x.float()), model.head.anchors), conf, iou, max_det)


def targets_to_truths(targets: torch.Tensor, batch: int, size) -> list[tuple]:
    """``detection_collate``'s ``[m, 6]`` targets -> per image ``(xyxy [n, 4], labels [n])`` in
    pixels of a ``size = (H, W)`` frame."""
    h, w = size
    scale = torch.tensor([w, h], dtype=torch.float32)
    truths = []
    for i in range(batch):
        mine = targets[targets[:, 0] == i].float().cpu()
        cxcy, wh = mine[:, 2:4] * scale, mine[:, 4:6] * scale
        truths.append((torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1).numpy(),
                       mine[:, 1].long().numpy()))
    return truths


@torch.no_grad()
def score_detections(detect, loader, num_classes: int) -> dict:
    """``{"mAP50", "mAP50_95", "count"}`` (pycocotools) of ``detect(x [N, T, C, H, W]) -> [k, 6]
    rows per image`` over ``loader``'s ``(x, targets)`` batches, in exact float32: one scorer
    for the trained network (``evaluate_detector``) and the deployed one (``spikeline
    export``)."""
    from .train import exact_fp32

    predictions, truths = [], []
    with exact_fp32():
        for x, targets in loader:
            predictions.extend(f.cpu().numpy() for f in detect(x))
            truths.extend(targets_to_truths(targets, len(x), x.shape[-2:]))
    scores = mean_average_precision(predictions, truths, num_classes)
    scores["count"] = len(truths)
    return scores


def evaluate_detector(model: nn.Module, loader, device: torch.device) -> dict:
    """``{"map50", "map50_95"}`` of ``model`` (eval mode, exact float32) over ``loader``'s
    ``(x, targets)`` batches."""
    was_training = model.training
    model.eval()
    try:
        result = score_detections(lambda x: predict(model, x.to(device)), loader,
                                  model.head.num_classes)
    finally:
        model.train(was_training)
    return {"map50": result["mAP50"], "map50_95": result["mAP50_95"]}


@dataclasses.dataclass(frozen=True)
class DetectionTask:
    """Training an EMS-YOLO detector (see ``train.ClassifyTask`` for the interface)."""

    name: str = "detection"
    metric: str = "val_map50"  # best.pt is the epoch with the highest validation mAP@0.5
    sharded_eval: bool = False  # mAP is not a sum over samples: every rank scores the whole split
    plot_series: tuple = (("val_map50", "validation mAP@0.5"),
                          ("val_map50_95", "validation mAP@0.5:0.95"))
    plot_label: str = "mAP"
    plot_scale: float = 1.0

    def check(self, config) -> None:
        check_detection_config(config)

    def spec(self, config, sample, num_classes: int) -> dict:
        return detection_spec(config, sample, num_classes)

    def build(self, config, spec: dict) -> DetectionTrainer:
        from spikeline.errors import SpikelineError

        from .checkpoint import build_from_spec

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


def summary_numbers(summary: dict) -> str:
    """The scores line of a detection run's summary."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    return (f"validation mAP@0.5 {fmt(summary.get('val_map50'))} (mAP@0.5:0.95 "
            f"{fmt(summary.get('val_map50_95'))}); test mAP@0.5 "
            f"{fmt(summary.get('test_map50'))} (mAP@0.5:0.95 "
            f"{fmt(summary.get('test_map50_95'))})")
