"""Exact float32: the arithmetic under which training code, CUDA and the fixed-point export
agree bit for bit."""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["exact_fp32"]


@contextmanager
def exact_fp32():
    """Float32 without TF32 and without autocast: with 8-bit weights on the 2/64 grid and
    binary spikes every product and partial sum is exactly representable, so CPU, CUDA and the
    fixed-point export see the same synaptic input bit for bit."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
