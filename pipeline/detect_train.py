"""What training a detector adds to the training loop: its spec, loss and evaluation.

``train.py`` runs one loop for every task; a task object (``tasks.ClassifyTask`` or
``tasks.DetectionTask``, which uses what is here) says what the loop trains and how it is
scored:

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


import torch
from torch import nn

from spikeline.datasets.detection import DETECTION_DATASETS
from spikeline.datasets.registry import DATASETS
from spikeline.errors import BadInput

from .config import neuron_params
from .ems import DETECTORS, NDIGITS_ANCHORS, detector_neuron
from .models import DEFAULT_BATCHNORM, relay_weight_for
from .neuron import CubaParams
from .detection import (  # noqa: F401 (the scoring constants, re-exported)
    CONF_THRESHOLD, GEN1_ANCHORS, MAX_DET, NMS_IOU, Anchors, decode, mean_average_precision, nms,
    yolo_loss,
)
from .precision import exact_fp32

__all__ = ["CONF_THRESHOLD", "NMS_IOU", "MAX_DET", "DetectionTrainer",
           "anchors_for", "check_detection_config", "detection_spec", "evaluate_detector",
           "predict", "score_detections", "targets_to_truths"]



def _anchor_table() -> dict[str, tuple[Anchors, tuple[int, int]]]:
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
    """Refuse, naming the option, what a detection run cannot honour (``DetectionTask.check``;
    a classification run's refusals are ``ClassifyTask.check``'s)."""
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
            "batchnorm": config.batchnorm or DEFAULT_BATCHNORM,
            # likewise; absent: False (no reset at arrival, as trained before it existed)
            "resets_at_arrival": True,
            # likewise; absent: 1.0
            "identity_weight": relay_weight_for(CubaParams(**neuron))}


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


def summary_numbers(summary: dict) -> str:
    """The scores line of a detection run's summary."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    return (f"validation mAP@0.5 {fmt(summary.get('val_map50'))} (mAP@0.5:0.95 "
            f"{fmt(summary.get('val_map50_95'))}); test mAP@0.5 "
            f"{fmt(summary.get('test_map50'))} (mAP@0.5:0.95 "
            f"{fmt(summary.get('test_map50_95'))})")
