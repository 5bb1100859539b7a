"""The one contract every pose back end meets.

`extract(frames)` takes RGB uint8 frames (an iterable of H x W x 3 arrays, in video order, so
trackers may use temporal context) and returns, per frame list, dense keypoint arrays:
part -> float32 (N, J, 3) of x, y in pixels of the given frames and a confidence in [0, 1].
Parts and joint orders are those of steps.prepare.posetable.PARTS (BODY_25, MediaPipe's 468 face points,
21-point hands). A part a back end cannot see is NaN with confidence 0, never absent.
"""
from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np


class BackendUnavailable(RuntimeError):
    """The back end's package, config or weights are missing; the message says which."""


class PoseBackend(Protocol):
    name: str

    def extract(self, frames: Iterable[np.ndarray]) -> dict[str, np.ndarray]: ...
