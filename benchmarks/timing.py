"""The one timing rule of the benchmarks: best wall-clock time of ``repeat`` runs."""
from __future__ import annotations

import time


def best_of(fn, repeat: int):
    """``(best seconds, last result)`` of calling ``fn()`` ``repeat`` times."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out
