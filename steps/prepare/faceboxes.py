"""Face boxes: a fixed-size square per frame, centred on the head (paper, section 3.4).

The centre is the mean of the body table's head joints that are seen (Nose, REye, LEye, REar,
LEar), or of the face-mesh points where the body has no head. Frames without a head take the
centre interpolated from their neighbours (held at the ends). Centres are smoothed over time
with a centred moving average (`smooth_window` frames) and the square is moved, never shrunk,
to lie inside the frame. The side is 128 px at the paper's 512-px-high frames and scales with
the shorter side of the frame, rounded to a multiple of 8 (`face_size`): 64 at 256x256.

The face GAN trains in these boxes; transfer and evaluate apply it in them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steps.prepare.normalize import interp_missing
from steps.prepare.posetable import B, PoseArrays

HEAD_JOINTS = [B[n] for n in ("Nose", "REye", "LEye", "REar", "LEar")]
PAPER_FACE, PAPER_HEIGHT = 128, 512


def face_size(height: int, width: int, size: int | None = None, multiple: int = 8) -> int:
    """Side of the face square: `size`, or 128 px per 512 px of the frame's shorter side; a
    multiple of `multiple` (the face generator's downsampling), at most the shorter side."""
    short = min(height, width)
    s = size if size else PAPER_FACE * short / PAPER_HEIGHT
    s = max(multiple, int(round(s / multiple)) * multiple)
    cap = short // multiple * multiple
    if cap < multiple:
        raise ValueError(f"frame {width}x{height} is too small for a face box (multiple of {multiple})")
    return min(s, cap)


def head_centres(pose: PoseArrays, height: int, width: int, min_conf: float = 0.3) -> np.ndarray:
    """(N, 2) head centre per frame in pixels of a (height, width) frame; NaN where no head."""
    sx, sy = width / pose.meta.width, height / pose.meta.height

    def mean_seen(pts):
        ok = np.isfinite(pts[..., 0]) & np.isfinite(pts[..., 1]) & (pts[..., 2] >= min_conf)
        cnt = ok.sum(1)
        xy = np.where(ok[..., None], np.nan_to_num(pts[..., :2]), 0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(cnt[:, None] > 0, xy / np.maximum(cnt, 1)[:, None], np.nan)

    c = mean_seen(pose.parts["body"][:, HEAD_JOINTS])
    if "face" in pose.parts:
        miss = ~np.isfinite(c[:, 0])
        if miss.any():
            c[miss] = mean_seen(pose.parts["face"][miss])
    return (c * np.array([sx, sy])).astype(np.float64)


def _moving_average(v: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(v) < 2:
        return v
    r = min(window // 2, len(v) - 1)
    padded = np.pad(v, r, mode="edge")
    k = np.ones(2 * r + 1) / (2 * r + 1)
    return np.convolve(padded, k, mode="valid")


@dataclass
class FaceBoxes:
    boxes: np.ndarray   # int (N, 4): x0, y0, x1, y1 (x1 - x0 = y1 - y0 = size), inside the frame
    seen: np.ndarray    # bool (N,): a head was detected in this frame (else interpolated or held)
    size: int

    def crop(self, img: np.ndarray, i: int) -> np.ndarray:
        x0, y0, x1, y1 = self.boxes[i]
        return img[y0:y1, x0:x1]


def face_boxes(pose: PoseArrays, height: int, width: int, size: int | None = None,
               smooth_window: int = 5, min_conf: float = 0.3) -> FaceBoxes:
    """The face square of every frame at (height, width); see the module docstring."""
    s = face_size(height, width, size)
    c = head_centres(pose, height, width, min_conf)
    seen = np.isfinite(c).all(1)
    if not seen.any():  # no head anywhere: the top centre of the frame (documented fallback)
        c = np.tile([width / 2, s / 2], (len(c), 1))
    cx = _moving_average(interp_missing(c[:, 0]), smooth_window)
    cy = _moving_average(interp_missing(c[:, 1]), smooth_window)
    x0 = np.clip(np.round(cx - s / 2), 0, width - s).astype(np.int64)
    y0 = np.clip(np.round(cy - s / 2), 0, height - s).astype(np.int64)
    return FaceBoxes(np.stack([x0, y0, x0 + s, y0 + s], 1), seen, s)
