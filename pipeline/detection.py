"""The EMS-YOLO detection head: YOLOv5 decoding and loss on spiking feature maps, NMS, mAP.

EMS-YOLO (Su et al., ICCV 2023) reads a YOLOv3-tiny-style head, two levels (strides 16 and 32)
with three anchors each, off the real-valued outputs of its last blocks.  ``Detect`` is that
head: a 1x1 convolution with bias at every time step, averaged over time, giving per level
``[N, anchors, H, W, 5 + classes]`` raw outputs.  Decoding and loss are YOLOv5's
(https://github.com/ultralytics/yolov5, ``models/yolo.py`` ``Detect.forward`` and
``utils/loss.py`` ``ComputeLoss``), with σ the logistic function::

    xy = (2 σ(t_xy) - 0.5 + cell) * stride         wh = (2 σ(t_wh))^2 * anchor
    score = σ(t_obj) * σ(t_cls)

    loss = N * (λ_box Σ_l (1 - CIoU) + λ_obj Σ_l b_l BCE(t_obj, IoU) + λ_cls Σ_l BCE(t_cls, 1_c))

A target is matched, on each level, to every anchor whose width and height ratios to it are
below ``anchor_t = 4`` and to its own cell plus the two neighbouring cells nearest its centre.
Gains: box 0.05, cls 0.5, obj 1.0 (EMS-YOLO's hyperparameters), scaled as YOLOv5 scales them
(``3 / levels``; cls by ``classes / 80``; obj by ``(image / 640)^2``); level balance 4.0, 1.0.

mAP comes from pycocotools (the reference COCO evaluator, pinned in pyproject), never from a
hand-written AP: ``mean_average_precision`` returns mAP@0.5 and mAP@0.5:0.95.
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

__all__ = ["Anchors", "Detect", "decode", "yolo_loss", "nms", "mean_average_precision",
           "GEN1_ANCHORS", "COCO_ANCHORS"]

# YOLOv5 val.py's post-processing for mAP (https://github.com/ultralytics/yolov5, val.py:
# conf_thres=0.001, iou_thres=0.6, max_det=300): the trained and the deployed detector are
# scored with it
CONF_THRESHOLD, NMS_IOU, MAX_DET = 0.001, 0.6, 300

# (w, h) in input pixels per level, stride 16 then stride 32 (EMS-YOLO's yaml files)
COCO_ANCHORS = (((10, 14), (23, 27), (37, 58)), ((81, 82), (135, 169), (344, 319)))
GEN1_ANCHORS = (((10, 14), (23, 27), (37, 58)), ((81, 82), (135, 169), (216, 269)))


@dataclass(frozen=True)
class Anchors:
    """Anchor sizes ``sizes[level][k] = (w, h)`` in input pixels, and each level's stride."""

    sizes: tuple[tuple[tuple[float, float], ...], ...]
    strides: tuple[int, ...] = (16, 32)

    def __post_init__(self):
        if len(self.sizes) != len(self.strides):
            raise ValueError(f"{len(self.sizes)} anchor levels but {len(self.strides)} strides")
        if any(len(level) != len(self.sizes[0]) for level in self.sizes):
            raise ValueError("every level needs the same number of anchors")
        if any(w <= 0 or h <= 0 for level in self.sizes for w, h in level):
            raise ValueError("anchor sizes must be positive")

    @property
    def per_level(self) -> int:
        return len(self.sizes[0])

    def grid_units(self, level: int) -> torch.Tensor:
        """``[anchors, 2]`` sizes in cells of that level."""
        return torch.tensor(self.sizes[level], dtype=torch.float32) / self.strides[level]

    def scaled(self, factor: float) -> "Anchors":
        """Anchors for images resized by ``factor`` (e.g. Gen1's at 64 px instead of 320)."""
        return Anchors(tuple(tuple((w * factor, h * factor) for w, h in level)
                             for level in self.sizes), self.strides)


class Detect(nn.Module):
    """Per level, a 1x1 conv with bias on ``[T, N, C_l, H_l, W_l]`` real-valued maps, averaged
    over T: returns ``[N, anchors, H_l, W_l, 5 + classes]`` raw outputs per level.

    Off-chip: its input is real-valued and it has a bias (EMS-YOLO's Detect is not spiking)."""

    def __init__(self, in_channels: list[int], num_classes: int, anchors: Anchors):
        super().__init__()
        self.num_classes, self.anchors = num_classes, anchors
        self.outputs = 5 + num_classes
        self.convs = nn.ModuleList(nn.Conv2d(c, anchors.per_level * self.outputs, 1)
                                   for c in in_channels)
        self._init_biases()

    def _init_biases(self) -> None:
        """YOLOv5's prior: about 8 objects per 640x640 image, classes equally likely."""
        with torch.no_grad():
            for conv, stride in zip(self.convs, self.anchors.strides):
                b = conv.bias.view(self.anchors.per_level, self.outputs)
                b[:, 4] += math.log(8 / (640 / stride) ** 2)
                b[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for conv, h in zip(self.convs, features):
            steps, n = h.shape[:2]
            # real-valued weights: the sum's order is part of the result, so the off-chip
            # readout (deploy/detector.py) and this one both run it on NCHW-contiguous maps
            # (the spiking layers hand over channels-last ones)
            y = conv(h.flatten(0, 1).contiguous()).unflatten(0, (steps, n)).mean(0)
            a, o = self.anchors.per_level, self.outputs
            out.append(y.view(n, a, o, *y.shape[-2:]).permute(0, 1, 3, 4, 2).contiguous())
        return out


def _grid(h: int, w: int, device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                            indexing="ij")
    return torch.stack([xs, ys], -1).float()  # [H, W, 2] (x, y)


def decode(raw: list[torch.Tensor], anchors: Anchors) -> torch.Tensor:
    """Raw head outputs -> ``[N, boxes, 5 + classes]`` rows ``(cx, cy, w, h, obj, cls...)`` in
    input pixels, probabilities for obj and classes."""
    rows = []
    for level, p in enumerate(raw):
        n, a, h, w, o = p.shape
        s = p.float().sigmoid()
        stride = anchors.strides[level]
        xy = (s[..., :2] * 2 - 0.5 + _grid(h, w, p.device)) * stride
        wh = (s[..., 2:4] * 2) ** 2 * (anchors.grid_units(level).to(p.device) * stride
                                       ).view(1, a, 1, 1, 2)
        rows.append(torch.cat([xy, wh, s[..., 4:]], -1).view(n, -1, o))
    return torch.cat(rows, 1)


def _box_iou_ciou(b1: torch.Tensor, b2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired ``(cx, cy, w, h)`` boxes (YOLOv5's ``bbox_iou(CIoU=True)``)."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = b1.unbind(-1), b2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = ((torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0)
             * (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def _match(targets: torch.Tensor, anchors_grid: torch.Tensor, shape, anchor_t: float):
    """YOLOv5's ``build_targets`` for one level: ``(sample, anchor, gy, gx, box (x, y, w, h)
    relative to the cell, class)`` of every (target, anchor, cell) match."""
    na = len(anchors_grid)
    h, w = shape
    gain = torch.tensor([1, 1, w, h, w, h], dtype=torch.float32, device=targets.device)
    t = targets * gain  # (sample, class, x, y, w, h) in cells
    if not len(t):
        empty = torch.zeros(0, dtype=torch.long, device=targets.device)
        return empty, empty, empty, empty, torch.zeros(0, 4, device=targets.device), empty
    t = t.unsqueeze(0).expand(na, -1, -1)  # [na, nt, 6]
    anchor_index = torch.arange(na, device=targets.device).view(na, 1).expand(-1, t.shape[1])
    ratio = t[..., 4:6] / anchors_grid[:, None]
    keep = torch.max(ratio, 1 / ratio).max(2).values < anchor_t
    t, anchor_index = t[keep], anchor_index[keep]
    g = 0.5  # a target also trains the two neighbouring cells nearest its centre
    gxy = t[:, 2:4]
    gxi = torch.tensor([w, h], device=targets.device) - gxy
    j, k = ((gxy % 1 < g) & (gxy > 1)).T  # left, up
    right, down = ((gxi % 1 < g) & (gxi > 1)).T
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]],
                           device=targets.device).float() * g
    select = torch.stack([torch.ones_like(j), j, k, right, down])
    t = t.repeat(5, 1, 1)[select]
    anchor_index = anchor_index.repeat(5, 1)[select]
    shift = (torch.zeros_like(gxy)[None] + offsets[:, None])[select]
    gij = (t[:, 2:4] - shift).long()
    gij[:, 0].clamp_(0, w - 1)
    gij[:, 1].clamp_(0, h - 1)
    box = torch.cat([t[:, 2:4] - gij, t[:, 4:6]], 1)
    return t[:, 0].long(), anchor_index, gij[:, 1], gij[:, 0], box, t[:, 1].long()


def yolo_loss(raw: list[torch.Tensor], targets: torch.Tensor, anchors: Anchors,
              image_size: int, anchor_t: float = 4.0, gains=(0.05, 1.0, 0.5),
              balance=(4.0, 1.0)) -> tuple[torch.Tensor, dict]:
    """YOLOv5's loss of raw head outputs against ``targets [m, 6]`` rows
    ``(sample, class, cx, cy, w, h)`` relative to the image.  Returns ``(loss, parts)``."""
    levels, nc = len(raw), raw[0].shape[-1] - 5
    box_gain, obj_gain, cls_gain = gains
    box_gain *= 3 / levels
    cls_gain *= nc / 80 * 3 / levels
    obj_gain *= (image_size / 640) ** 2 * 3 / levels
    device = raw[0].device
    lbox = torch.zeros((), device=device)
    lobj, lcls = lbox.clone(), lbox.clone()
    targets = targets.to(device=device, dtype=torch.float32)
    for level, p in enumerate(raw):
        p = p.float()
        anchors_grid = anchors.grid_units(level).to(device)
        b, a, gy, gx, box, cls = _match(targets, anchors_grid, p.shape[2:4], anchor_t)
        tobj = torch.zeros(p.shape[:4], device=device)
        if len(b):
            ps = p[b, a, gy, gx]
            pxy = ps[:, :2].sigmoid() * 2 - 0.5
            pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors_grid[a]
            ciou = _box_iou_ciou(torch.cat([pxy, pwh], 1), box)
            lbox = lbox + (1.0 - ciou).mean()
            tobj[b, a, gy, gx] = ciou.detach().clamp(0).to(tobj.dtype)
            if nc > 1:
                onehot = torch.zeros_like(ps[:, 5:])
                onehot[torch.arange(len(cls)), cls] = 1.0
                lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], onehot)
        lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * balance[level]
    n = raw[0].shape[0]
    parts = {"box": float(lbox.detach() * box_gain), "obj": float(lobj.detach() * obj_gain),
             "cls": float(lcls.detach() * cls_gain)}
    return (lbox * box_gain + lobj * obj_gain + lcls * cls_gain) * n, parts


def _xyxy(cxcywh: torch.Tensor) -> torch.Tensor:
    xy, wh = cxcywh[..., :2], cxcywh[..., 2:4]
    return torch.cat([xy - wh / 2, xy + wh / 2], -1)


def _iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def nms(decoded: torch.Tensor, conf: float = 0.001, iou: float = 0.6,
        max_det: int = 300) -> list[torch.Tensor]:
    """Per image, greedy non-maximum suppression per class: ``[k, 6]`` rows
    ``(x0, y0, x1, y1, score, class)``, best first (what YOLOv5's val.py scores)."""
    out = []
    for rows in decoded:
        scores, classes = (rows[:, 5:] * rows[:, 4:5]).max(1)
        keep = scores > conf
        boxes, scores, classes = _xyxy(rows[keep, :4]), scores[keep], classes[keep]
        order = scores.argsort(descending=True)
        boxes, scores, classes = boxes[order], scores[order], classes[order]
        chosen = []
        alive = torch.ones(len(scores), dtype=torch.bool)
        overlaps = _iou_matrix(boxes, boxes) if len(boxes) else None
        for i in range(len(scores)):
            if not alive[i]:
                continue
            chosen.append(i)
            if len(chosen) == max_det:
                break
            alive &= ~((overlaps[i] > iou) & (classes == classes[i]))
        idx = torch.tensor(chosen, dtype=torch.long)
        out.append(torch.cat([boxes[idx], scores[idx, None], classes[idx, None].float()], 1)
                   if len(idx) else torch.zeros(0, 6))
    return out


def mean_average_precision(predictions: list[np.ndarray], truths: list[tuple], num_classes: int,
                           ) -> dict:
    """COCO mAP with pycocotools.  ``predictions[i]``: ``[k, 6]`` rows ``(x0, y0, x1, y1,
    score, class)``; ``truths[i]``: ``(xyxy [n, 4], labels [n])`` of image ``i``.  Returns
    ``{"mAP50": ..., "mAP50_95": ...}`` (0 when there is nothing to find)."""
    images, annotations, detections = [], [], []
    for i, (xyxy, labels) in enumerate(truths):
        images.append({"id": i, "width": 1, "height": 1})
        for (x0, y0, x1, y1), c in zip(np.asarray(xyxy, float).reshape(-1, 4), labels):
            annotations.append({"id": len(annotations) + 1, "image_id": i,
                                "category_id": int(c), "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    for i, rows in enumerate(predictions):
        for x0, y0, x1, y1, score, c in np.asarray(rows, float).reshape(-1, 6):
            detections.append({"image_id": i, "category_id": int(c), "score": score,
                               "bbox": [x0, y0, x1 - x0, y1 - y0]})
    if not annotations or not detections:
        return {"mAP50": 0.0, "mAP50_95": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c} for c in range(num_classes)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"mAP50": float(evaluation.stats[1]), "mAP50_95": float(evaluation.stats[0])}
