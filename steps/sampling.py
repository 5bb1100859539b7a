"""Evenly spaced picks: the frames of sample grids and stills, the background's sample frames,
the base's validated subjects. One rule, so every stage picks alike."""
from __future__ import annotations

import numpy as np


def evenly_spaced(n: int, k: int | None) -> np.ndarray:
    """Up to k indices of range(n), evenly spaced from the first to the last, ascending and
    distinct (all of them when k is None or >= n; none when n or k is 0)."""
    if n <= 0 or k == 0:
        return np.zeros(0, int)
    k = n if k is None else min(k, n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))
