"""Sizes of 2-D maps through convolutions and pools: one copy of the formula.

``out = floor((n + 2 p - d (k - 1) - 1) / s) + 1`` per axis (``torch.nn.Conv2d``'s, which
lava-dl, NIR's ``Conv2d`` and netx's ``conv`` layers share).  ``pair`` turns an int or a 1- or
2-element sequence or array into ``(h, w)``.  Training (``models.py``), export (``to_nir``,
``to_netx``, ``to_lava``, ``from_netx``) and the energy counter all size maps here.
"""
from __future__ import annotations

import numpy as np

__all__ = ["conv_output_size", "pair"]


def pair(value) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``, ``np.array([3]) -> (3, 3)``; any other number of
    values raises ``ValueError``."""
    values = np.asarray(value).reshape(-1)
    if values.size not in (1, 2):
        raise ValueError(f"expected one or two integers, got {value!r}")
    return int(values[0]), int(values[-1])


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1) -> tuple[int, int]:
    """``(H_out, W_out)`` of a convolution or pool with these parameters on ``size = (H, W)``
    (each parameter an int or a pair; padding on both sides)."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                 zip(pair(size), pair(kernel), pair(stride), pair(padding), pair(dilation)))
