"""The detection head: decoding, YOLOv5 loss, NMS and pycocotools mAP on hand-made boxes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from spikeline.pipeline.detection import (
    Anchors,
    Detect,
    decode,
    mean_average_precision,
    nms,
    yolo_loss,
)

ANCHORS = Anchors((((8, 8), (12, 16), (16, 12)), ((24, 24), (32, 40), (48, 32))), (16, 32))


def test_map_of_hand_made_boxes_has_the_known_value():
    truth = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 0]))]
    # a hit (0.9), a false positive (0.8), the second hit (0.7): precision 1 up to recall 0.5,
    # then 2/3; COCO's 101-point interpolation gives (51 * 1 + 50 * 2/3) / 101.
    preds = [np.array([[0, 0, 10, 10, 0.9, 0], [50, 50, 60, 60, 0.8, 0],
                       [20, 20, 30, 30, 0.7, 0]])]
    expected = (51 + 50 * 2 / 3) / 101
    result = mean_average_precision(preds, truth, num_classes=1)
    assert result["mAP50"] == pytest.approx(expected, abs=1e-9)
    assert result["mAP50_95"] == pytest.approx(expected, abs=1e-9)  # exact boxes: every IoU
    # a box shifted to IoU 0.6 counts at 0.5 and 0.55 only: 2 of the 10 thresholds
    shifted = [np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 32.5, 30, 0.7, 0]])]
    iou = 100 / 125
    assert iou == pytest.approx(0.8)
    result = mean_average_precision(shifted, truth, num_classes=1)
    assert result["mAP50"] == pytest.approx(1.0)
    # thresholds 0.5..0.8 (7 of 10) see both hits: AP 1; above, one of two: AP 0.5 at
    # recall <= 0.5 -> (51 / 101)
    assert result["mAP50_95"] == pytest.approx((7 * 1 + 3 * 51 / 101) / 10, abs=1e-9)
    assert mean_average_precision([np.zeros((0, 6))], truth, 1) == {"mAP50": 0.0,
                                                                    "mAP50_95": 0.0}


def test_decode_of_zero_outputs_is_the_anchor_at_the_cell_centre():
    raw = [torch.zeros(1, 3, 4, 4, 7), torch.zeros(1, 3, 2, 2, 7)]
    rows = decode(raw, ANCHORS)
    assert rows.shape == (1, 3 * 16 + 3 * 4, 7)
    first = rows[0, 0]  # level 0, anchor 0, cell (0, 0)
    assert first[:4].tolist() == [8.0, 8.0, 8.0, 8.0] and first[4:].tolist() == [0.5] * 3
    last = rows[0, -1]  # level 1, anchor 2, cell (1, 1)
    assert last[:4].tolist() == [48.0, 48.0, 48.0, 32.0]


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    rows = torch.tensor([[[10, 10, 10, 10, 0.9, 1.0, 0.0],
                          [11, 10, 10, 10, 0.8, 1.0, 0.0],   # same class, IoU 0.82: dropped
                          [11, 10, 10, 10, 0.7, 0.0, 1.0],   # other class: kept
                          [40, 40, 10, 10, 0.6, 1.0, 0.0]]])
    kept = nms(rows, conf=0.1, iou=0.5)[0]
    assert kept[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert kept[:, 5].tolist() == [0.0, 1.0, 0.0]
    assert kept[0, :4].tolist() == [5.0, 5.0, 15.0, 15.0]


def test_loss_trains_free_outputs_to_find_the_boxes():
    """Gradient descent on the raw outputs alone, through loss -> decode -> NMS -> mAP: the
    loss must fall and the boxes be found (an inconsistent decode or matching fails this)."""
    torch.manual_seed(0)
    image = 64
    targets = torch.tensor([[0, 0, 0.25, 0.30, 0.20, 0.15],   # 12.8 x 9.6 px, class 0
                            [0, 1, 0.70, 0.65, 0.60, 0.50],   # 38.4 x 32 px, class 1
                            [1, 1, 0.50, 0.50, 0.15, 0.20]])
    raw = [torch.zeros(2, 3, 4, 4, 7, requires_grad=True),
           torch.zeros(2, 3, 2, 2, 7, requires_grad=True)]
    optimizer = torch.optim.Adam(raw, lr=0.05)
    first = None
    for _ in range(300):
        loss, parts = yolo_loss(raw, targets, ANCHORS, image)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < first / 5 and set(parts) == {"box", "obj", "cls"}
    found = nms(decode([r.detach() for r in raw], ANCHORS), conf=0.25, iou=0.5)
    truths = []
    for i in range(2):
        t = targets[targets[:, 0] == i]
        cxcy, wh = t[:, 2:4] * image, t[:, 4:6] * image
        truths.append((torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1).numpy(), t[:, 1].numpy()))
    result = mean_average_precision([f.numpy() for f in found], truths, num_classes=2)
    assert result["mAP50"] == pytest.approx(1.0)


def test_detect_head_averages_over_time():
    head = Detect([8, 16], num_classes=2, anchors=ANCHORS)
    p4, p5 = torch.randn(3, 2, 8, 4, 4), torch.randn(3, 2, 16, 2, 2)
    out = head([p4, p5])
    assert [tuple(o.shape) for o in out] == [(2, 3, 4, 4, 7), (2, 3, 2, 2, 7)]
    once = head([p4.mean(0, keepdim=True), p5.mean(0, keepdim=True)])  # linear: mean commutes
    assert torch.allclose(out[0], once[0], atol=1e-6) and torch.allclose(out[1], once[1],
                                                                         atol=1e-6)
