"""normalize_pose: map the source's poses into the target's frame (paper, section 3.3).

For each source frame with toe y (the larger ankle y):
    p     = (toe - far_s) / (close_s - far_s)           how close to the camera the source is
    scale = scale_far + p (scale_close - scale_far)     scale_far = height_far_t / height_far_s, ...
    toe'  = far_t + p (close_t - far_t)                 where the target's foot would be there
Every point is scaled about the source's foot and the foot is moved to toe':
    y' = toe' + scale (y - toe)
Horizontally (documented choice, the paper is silent): points are scaled about the source's
anchor (its median MidHip x); `anchor` puts that anchor at the target's anchor, `keep` keeps it
where it was (in proportion to the frame width). p is not clipped: outside the far..close range
the line extrapolates, which keeps the mapping exact for a source that is a scaled copy of the
target. Frames without both ankles take scale and toe' from the nearest frames that had them.
Scale and vertical offset can be median-smoothed over time to remove jitter.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from steps import logs
from steps.prepare.posetable import PoseArrays, read_pose, write_pose
from steps.settings import section
from steps.prepare.smooth import median_smooth
from steps.prepare.stats import SubjectStats, load_stats, per_frame


def interp_missing(v: np.ndarray) -> np.ndarray:
    """Fill NaN entries from the nearest valid neighbours (linear inside, held at the ends)."""
    ok = np.isfinite(v)
    if ok.all() or not ok.any():
        return v
    idx = np.arange(len(v))
    return np.interp(idx, idx[ok], v[ok])


def normalization_params(toe: np.ndarray, src: SubjectStats, tgt: SubjectStats,
                         smooth_window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (scale, target toe y) for source toe positions `toe` (NaN = unknown)."""
    span = src.close - src.far
    p = (toe - src.far) / span if abs(span) > 1e-6 else np.where(np.isfinite(toe), 0.5, np.nan)
    scale_far = tgt.height_far / src.height_far
    scale_close = tgt.height_close / src.height_close
    scale = scale_far + p * (scale_close - scale_far)
    offset = tgt.far + p * (tgt.close - tgt.far) - toe  # toe' - toe
    if not np.isfinite(p).any():  # no frame with both ankles: fall back on the medians
        scale = np.full_like(toe, tgt.median_height / src.median_height)
        return scale, np.full_like(toe, np.nan)
    scale, offset = interp_missing(scale), interp_missing(offset)
    if smooth_window > 1:
        scale = median_smooth(scale[:, None], smooth_window)[:, 0]
        offset = median_smooth(offset[:, None], smooth_window)[:, 0]
    return scale, offset


def normalize(source: PoseArrays, src: SubjectStats, tgt: SubjectStats, smooth_window: int = 1,
              horizontal: str = "anchor", min_conf: float = 0.3) -> PoseArrays:
    frame = per_frame(source, min_conf)
    toe = frame["toe"].to_numpy(np.float64)
    scale, offset = normalization_params(toe, src, tgt, smooth_window)
    # the foot each frame is scaled about; where unseen, the track of the known feet
    foot = interp_missing(toe) if np.isfinite(toe).any() else np.full_like(toe, src.median_toe)
    if not np.isfinite(offset).any():
        offset = tgt.median_toe - foot
    new_foot = foot + offset
    if horizontal == "anchor":
        ax_s, ax_t = src.anchor_x, tgt.anchor_x
    elif horizontal == "keep":
        ax_s, ax_t = src.anchor_x, src.anchor_x / src.width * tgt.width
    else:
        raise ValueError(f"horizontal must be 'anchor' or 'keep', not {horizontal!r}")
    out = source.copy()
    s = scale[:, None]
    for part, arr in out.parts.items():
        arr[..., 0] = ax_t + s * (arr[..., 0] - ax_s)
        arr[..., 1] = new_foot[:, None] + s * (arr[..., 1] - foot[:, None])
    out.meta.subject = f"{src.subject}__{tgt.subject}"
    out.meta.width, out.meta.height = tgt.width, tgt.height
    out.meta.extra.update(source=src.subject, target=tgt.subject, horizontal=horizontal,
                          smooth_window=smooth_window,
                          scale_range=[float(np.min(scale)), float(np.max(scale))])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Normalize a source's poses into a target's frame.")
    ap.add_argument("--pose", required=True, help="source pose table (smoothed)")
    ap.add_argument("--source-stats", required=True)
    ap.add_argument("--target-stats", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--settings", default="{}", help="the config's normalize section as JSON (schema defaults fill the rest)")
    ap.add_argument("--stats-settings", default="{}",
                    help="the config's stats section as JSON: the toe is found as subject_stats found it (min_confidence)")
    a = ap.parse_args(argv)
    logs.setup()
    c = section("normalize", json.loads(a.settings))
    min_conf = section("stats", json.loads(a.stats_settings))["min_confidence"]
    out = normalize(read_pose(a.pose), load_stats(a.source_stats), load_stats(a.target_stats),
                    c["smooth_window"], c["horizontal"], min_conf)
    write_pose(out, a.out)
    print(f"{a.out}: scale range {out.meta.extra['scale_range']}", file=sys.stderr)


if __name__ == "__main__":
    main()
