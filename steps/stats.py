"""subject_stats: where a subject's feet are when far from and close to the camera, and how tall
they look there. This is what global pose normalization needs (paper, section 3.3).

Per frame: toe = the larger ankle y (the lower foot in the image); height = ankle-midpoint y minus
head y, the head being the nose, or the ear midpoint when the nose is missing. Over the video:
`far` and `close` are low and high percentiles of toe (robust versions of the min and max that
the reference implementation takes); the heights there are the medians of the per-frame heights
of frames whose toe lies within `band` (a fraction of the median height) of far or close.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .atomic import atomic_output
from .posetable import B, PoseArrays, read_pose


class StatsError(ValueError):
    """Not enough usable frames to compute a subject's statistics."""


@dataclass
class SubjectStats:
    subject: str
    far: float            # toe y (px) at the far position
    close: float          # toe y (px) at the close position
    height_far: float     # body height (px) there
    height_close: float
    median_toe: float
    median_height: float
    anchor_x: float       # median MidHip x: where the subject stands horizontally
    frames_used: int
    frames_far: int
    frames_close: int
    frames_total: int
    width: int
    height: int


def per_frame(pose: PoseArrays, min_conf: float = 0.3) -> pd.DataFrame:
    """Per-frame toe, head, height and hip x; NaN where the joints needed are not seen."""
    body = pose.parts["body"]

    def y(j):
        return np.where(body[:, B[j], 2] >= min_conf, body[:, B[j], 1], np.nan)

    def x(j):
        return np.where(body[:, B[j], 2] >= min_conf, body[:, B[j], 0], np.nan)

    la, ra = y("LAnkle"), y("RAnkle")
    toe = np.fmax(la, ra)
    toe = np.where(np.isfinite(la) & np.isfinite(ra), toe, np.nan)  # need both feet
    ears = (y("LEar") + y("REar")) / 2
    head = np.where(np.isfinite(y("Nose")), y("Nose"), ears)
    height = (la + ra) / 2 - head
    return pd.DataFrame({
        "frame": np.arange(pose.n_frames, dtype=np.int32),
        "time_s": pose.time_s,
        "toe": toe.astype(np.float32),
        "head": head.astype(np.float32),
        "height": height.astype(np.float32),
        "hip_x": x("MidHip").astype(np.float32),
    })


def compute_stats(table: pd.DataFrame, subject: str, width: int, height: int,
                  far_percentile: float = 5, close_percentile: float = 95,
                  band: float = 0.02) -> SubjectStats:
    ok = table[np.isfinite(table["toe"]) & np.isfinite(table["height"]) & (table["height"] > 0)]
    if len(ok) < 2:
        raise StatsError(f"subject {subject!r}: only {len(ok)} frames show both ankles and the head; "
                         "need at least 2 to find the far and close positions")
    toe, h = ok["toe"].to_numpy(np.float64), ok["height"].to_numpy(np.float64)
    far, close = np.percentile(toe, far_percentile), np.percentile(toe, close_percentile)
    med_h = float(np.median(h))
    tol = max(band * med_h, 1e-6)
    near_far, near_close = np.abs(toe - far) <= tol, np.abs(toe - close) <= tol
    return SubjectStats(
        subject=subject, far=float(far), close=float(close),
        height_far=float(np.median(h[near_far])), height_close=float(np.median(h[near_close])),
        median_toe=float(np.median(toe)), median_height=med_h,
        anchor_x=float(np.nanmedian(table["hip_x"])) if np.isfinite(table["hip_x"]).any() else width / 2,
        frames_used=len(ok), frames_far=int(near_far.sum()), frames_close=int(near_close.sum()),
        frames_total=len(table), width=width, height=height)


def write_json(obj: dict, path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def load_stats(path) -> SubjectStats:
    with open(path) as f:
        return SubjectStats(**json.load(f))


def plot_stats(table: pd.DataFrame, st: SubjectStats, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    a1.plot(table["time_s"], table["toe"], lw=1, label="toe y (larger ankle y)")
    a1.axhline(st.far, color="tab:blue", ls="--", label=f"far {st.far:.1f}px")
    a1.axhline(st.close, color="tab:red", ls="--", label=f"close {st.close:.1f}px")
    a1.invert_yaxis()
    a1.set_ylabel("pixels (down = closer)")
    a1.legend(fontsize=8, loc="best")
    a1.set_title(f"{st.subject}: ankle position and height over time")
    a2.plot(table["time_s"], table["height"], lw=1, color="k", label="height (head to ankles)")
    a2.axhline(st.height_far, color="tab:blue", ls="--", label=f"height at far {st.height_far:.1f}px")
    a2.axhline(st.height_close, color="tab:red", ls="--", label=f"height at close {st.height_close:.1f}px")
    a2.set_xlabel("time (s)")
    a2.set_ylabel("pixels")
    a2.legend(fontsize=8, loc="best")
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Per-subject ankle and height statistics.")
    ap.add_argument("--pose", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--table", required=True, help="per-frame Parquet")
    ap.add_argument("--plot", required=True, help="PNG")
    ap.add_argument("--min-confidence", type=float, default=0.3)
    ap.add_argument("--far-percentile", type=float, default=5)
    ap.add_argument("--close-percentile", type=float, default=95)
    ap.add_argument("--band", type=float, default=0.02)
    a = ap.parse_args(argv)
    pose = read_pose(a.pose)
    table = per_frame(pose, a.min_confidence)
    try:
        st = compute_stats(table, pose.meta.subject, pose.meta.width, pose.meta.height,
                           a.far_percentile, a.close_percentile, a.band)
    except StatsError as e:
        sys.exit(f"subject_stats: {e} (pose table {a.pose})")
    with atomic_output(a.table) as tmp:
        table.to_parquet(tmp, index=False)
    plot_stats(table, st, a.plot)
    write_json(asdict(st), a.json)
    print(json.dumps(asdict(st), indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
