"""Procedurally rendered dancers: the project's own source and target subjects.

A seeded dance drives a 3-D skeleton (metres, floor at y=0); a pinhole camera projects it to
pixels; OpenCV paints a clothed, human-like figure over a room (wall, floor, horizon). The
projected skeleton is written beside the video as ground truth in the pose-table schema
(BODY_25 and both 21-point hands; the face is left missing), so pose extraction and
normalization can be checked against known answers.

Pure core: `dance_params(t)` -> `skeleton_3d` -> `project` -> `render_frame`. I/O (video,
Parquet, CLI) is `python -m steps.synth` (steps/synth/cli.py). Everything is a deterministic function of (preset, seed, t).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steps.prepare.posetable import PoseArrays, PoseMeta, empty_arrays
from steps.synth.dance import PRESETS, Dance, Preset, skeleton_3d
from steps.synth.figure import background, camera, project, render_frame

__all__ = ["PRESETS", "Clip", "make_clip", "truth_arrays"]


def truth_arrays(sks: list[dict], cam: dict, meta: PoseMeta) -> PoseArrays:
    """Projected skeletons as a dense pose table: body and hands confidence 1, face missing."""
    out = empty_arrays(len(sks), meta)
    for i, sk in enumerate(sks):
        out.parts["body"][i, :, :2] = project(cam, sk["body"])[:, :2]
        out.parts["body"][i, :, 2] = 1.0
        for h in ("left_hand", "right_hand"):
            out.parts[h][i, :, :2] = project(cam, sk["hands"][h])[:, :2]
            out.parts[h][i, :, 2] = 1.0
    return out


@dataclass
class Clip:
    """A rendered subject: frames come lazily from `frames()`; `truth` is the pose table."""

    preset: Preset
    dance: Dance
    cam: dict
    width: int
    height: int
    fps: float
    n: int
    skeletons: list

    def frame(self, i: int, bg=None) -> np.ndarray:
        return render_frame(self.preset, self.cam, self.skeletons[i], self.width, self.height, bg)

    def frames(self):
        bg = background(self.preset, self.cam, self.width, self.height)
        for i in range(self.n):
            yield self.frame(i, bg)

    def truth(self, subject: str, preset_name: str) -> PoseArrays:
        meta = PoseMeta(subject, self.width, self.height, float(self.fps), "synth",
                        extra={"preset": preset_name, "seed": self.dance.seed})
        return truth_arrays(self.skeletons, self.cam, meta)


def make_clip(preset: str, seconds: float, fps: float, width: int, height: int, seed: int) -> Clip:
    if preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; choose one of {sorted(PRESETS)}")
    if width % 2 or height % 2:
        raise ValueError(f"frame size {width}x{height} must be even (H.264 yuv420p)")
    p, d = PRESETS[preset], Dance.from_seed(seed)
    n = max(1, int(round(seconds * fps)))
    sks = [skeleton_3d(d, p, i / fps) for i in range(n)]
    return Clip(p, d, camera(p, width, height), width, height, fps, n, sks)
