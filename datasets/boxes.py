"""Bounding boxes of a detection sample, and what resizing frames does to them.

A box is ``(x0, y0, x1, y1)`` in pixels of the frame it belongs to, corners exclusive on the
far side (a box covering pixel columns 3..5 is ``x0 = 3, x1 = 6``), with an integer class.
Gen1 stores boxes as top-left corner plus size (``x, y, w, h``), which is the same thing with
``x1 = x + w``.  Resizing frames from ``(H, W)`` to ``(h, w)`` scales x by ``w / W`` and y by
``h / H``; area resizing (``frames.resize_frames``) moves every count by exactly that map, so
the box keeps covering the same events.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Boxes"]


@dataclass(frozen=True)
class Boxes:
    """``xyxy`` float32 ``[n, 4]`` in pixels of a ``size = (H, W)`` frame; ``labels`` int64
    ``[n]``."""

    xyxy: np.ndarray
    labels: np.ndarray
    size: tuple[int, int]

    def __post_init__(self):
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        size = tuple(int(v) for v in self.size)
        if len(labels) != len(xyxy):
            raise ValueError(f"{len(xyxy)} boxes but {len(labels)} labels")
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (H, W) with H, W >= 1, got {self.size}")
        if not np.all(np.isfinite(xyxy)):
            raise ValueError("box coordinates must be finite")
        if len(xyxy) and (np.any(xyxy[:, 2] < xyxy[:, 0]) or np.any(xyxy[:, 3] < xyxy[:, 1])):
            raise ValueError("boxes must have x1 >= x0 and y1 >= y0")
        if np.any(labels < 0):
            raise ValueError("labels must be >= 0")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "size", size)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_xywh(cls, xywh, labels, size) -> "Boxes":
        """From top-left corner and size (Gen1's ``x, y, w, h``)."""
        xywh = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
        return cls(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1), labels,
                   size)

    def clipped(self) -> "Boxes":
        """Boxes cut to the frame; boxes left with no area are dropped."""
        h, w = self.size
        xyxy = self.xyxy.copy()
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        return Boxes(xyxy[keep], self.labels[keep], self.size)

    def resized(self, size: tuple[int, int]) -> "Boxes":
        """The same boxes on a frame resized to ``size = (h, w)``."""
        h, w = (int(v) for v in size)
        scale = np.array([w / self.size[1], h / self.size[0]] * 2, dtype=np.float32)
        return Boxes(self.xyxy * scale, self.labels, (h, w))

    def yolo(self) -> np.ndarray:
        """``[n, 5]`` float32 rows ``(class, cx, cy, w, h)``, coordinates divided by the frame
        size (YOLOv5's label format)."""
        h, w = self.size
        centre = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        extent = self.xyxy[:, 2:] - self.xyxy[:, :2]
        norm = np.array([w, h], dtype=np.float32)
        return np.concatenate([self.labels[:, None].astype(np.float32), centre / norm,
                               extent / norm], axis=1).astype(np.float32)
