"""Shortcut heads ("Take A Shortcut Back", arXiv 2401.04486) and their training outputs.

A head after each stage l < n: global average pool over space -> fully connected -> classes,
averaged over the stage's own ``T`` steps (``SpikingNet.stage_window``).  With ``b_l`` the logits of head l and ``b_n`` the main network's:

- ``none``          vanilla: ``o = b_n``
- ``shortcut``      Eq. 6:  ``o = sum_l b_l`` (heads and main summed), loss ``CE(o, y)``
- ``evolutionary``  Eq. 10: ``o = b_n + lambda(i) * sum_{l<n} b_l``,
                    ``lambda(i) = lambda (1 - i / I)``, i = iteration, I = total iterations
- ``dsn``           deeply-supervised nets: ``CE(b_n, y) + sum_{l<n} CE(b_l, y)``

Heads exist only in training: ``strip()`` returns the main network, untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import SpikingNet

HEAD_MODES = ("none", "shortcut", "evolutionary", "dsn")


def evolutionary_lambda(lam: float, progress: float) -> float:
    """``lambda(i) = lambda * (1 - i/I)`` with ``progress = i/I`` in [0, 1]."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress i/I must lie in [0, 1], got {progress}")
    return lam * (1.0 - progress)


class ShortcutHeads(nn.Module):
    """Wraps a ``SpikingNet`` with one pooled classifier head per stage but the last."""

    def __init__(self, model: SpikingNet, num_classes: int, mode: str = "evolutionary",
                 lam: float = 0.25):
        super().__init__()
        if mode not in HEAD_MODES:
            raise ValueError(f"heads mode must be one of {HEAD_MODES}, got {mode!r}")
        self.model, self.mode, self.lam = model, mode, lam
        channels = model.stage_channels[:-1] if mode != "none" else []
        self.heads = nn.ModuleList(nn.Linear(c, num_classes) for c in channels)

    @staticmethod
    def _pool(h: torch.Tensor) -> torch.Tensor:
        """``[T, N, C, (H, W)] -> [T, N, C]`` (global average over space)."""
        return h.mean((-2, -1)) if h.dim() == 5 else h

    def outputs(self, x: torch.Tensor):
        """``(head logits list, main logits)``, logits averaged over time."""
        if self.mode == "none":
            return [], self.model(x)
        stages, main = self.model.forward_stages(x)
        # each head averages its own stage's T steps (under loihi timing a stage's output
        # starts later the deeper it is; the steps outside carry no input)
        heads = [head(self._pool(self.model.stage_window(i, h))).mean(0)
                 for i, (head, h) in enumerate(zip(self.heads, stages))]
        return heads, main

    def loss(self, x: torch.Tensor, y: torch.Tensor, progress: float = 0.0):
        """Training loss of the configured mode and the main branch's logits."""
        heads, main = self.outputs(x)
        if self.mode == "dsn":
            return F.cross_entropy(main, y) + sum(F.cross_entropy(h, y) for h in heads), main
        if self.mode == "shortcut":
            return F.cross_entropy(main + sum(heads), y), main
        if self.mode == "evolutionary":
            weight = evolutionary_lambda(self.lam, progress)
            return F.cross_entropy(main + weight * sum(heads), y), main
        return F.cross_entropy(main, y), main

    def strip(self) -> SpikingNet:
        """The main network alone: heads removed, zero inference cost."""
        return self.model
