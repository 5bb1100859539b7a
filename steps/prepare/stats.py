"""subject_stats: where a subject's feet are when far from and close to the camera, and how tall
they look there. This is what global pose normalization needs (paper, section 3.3).

Per frame: toe = the larger ankle y (the lower foot in the image); height = ankle-midpoint y minus
head y, the head being the nose, or the ear midpoint when the nose is missing. Over the video:
`far` and `close` are low and high percentiles of toe (robust versions of the min and max that
the reference implementation takes); the heights there are the medians of the per-frame heights
of frames whose toe lies within `band` (a fraction of the median height) of far or close.

Coverage: per part (body, face, each hand) the share of frames in which the detector found it,
and the share usable after smoothing filled short gaps. The face GAN trains only on frames with
a face and the label maps draw only the hands found, so a target's low coverage is warned about.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from steps import logs
from steps.atomic import atomic_output
from steps.prepare.posetable import PART_ORDER, B, PoseArrays, PoseFile
from steps.settings import section

log = logging.getLogger("stats")


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
    coverage: dict = field(default_factory=dict)  # part -> {"detected": share, "usable": share}


def part_seen(pose: PoseArrays, min_conf: float = 0.3, detected_only: bool = False) -> dict[str, np.ndarray]:
    """Per part, a bool per frame: some point of it has confidence >= min_conf (with
    detected_only, not counting the points smoothing filled in)."""
    out = {}
    for part in (p for p in PART_ORDER if p in pose.parts):
        ok = pose.parts[part][..., 2] >= min_conf
        if detected_only and pose.filled is not None:
            ok &= ~pose.filled[part]
        out[part] = ok.any(axis=1)
    return out


def coverage(pose: PoseArrays, min_conf: float = 0.3) -> dict[str, dict[str, float]]:
    """Per part: the share of frames where the detector found it, and where it is usable
    (found, or a short gap filled by smoothing)."""
    return table_coverage(per_frame(pose, min_conf))


def table_coverage(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """coverage() from per_frame's table (its {part}_detected and {part}_usable columns)."""
    if len(table) == 0:
        return {p: {"detected": 0.0, "usable": 0.0} for p in PART_ORDER}
    return {p: {k: float(table[f"{p}_{k}"].mean()) for k in ("detected", "usable")} for p in PART_ORDER}


# What a part missing from a target's frames costs downstream.
COST = {"face": "the face GAN trains on fewer frames (only frames with a face give it a face box)",
        "left_hand": "the left hand drops out of the label maps in the other frames",
        "right_hand": "the right hand drops out of the label maps in the other frames"}


def coverage_warnings(cov: dict, subject: str, min_face: float, min_hands: float) -> list[str]:
    """One warning per part (face, hands) usable in fewer than its minimum share of frames."""
    out = []
    for part, least in (("face", min_face), ("left_hand", min_hands), ("right_hand", min_hands)):
        share = cov[part]["usable"]
        if share < least:
            out.append(f"subject {subject!r}: {part} found in {share:.0%} of frames "
                       f"(detected {cov[part]['detected']:.0%}, warn below {least:.0%}): {COST[part]}")
    return out


def face_frames(pose: PoseArrays, frame_indices, min_conf: float = 0.3) -> int:
    """How many of the frames `frame_indices` show a face (e.g. the held-out frames evaluated)."""
    return int(part_seen(pose, min_conf)["face"][np.asarray(frame_indices, int)].sum())


def per_frame(pose: PoseArrays, min_conf: float = 0.3, start: int = 0) -> pd.DataFrame:
    """Per-frame toe, head, height and hip x; NaN where the joints needed are not seen; and per
    part present, whether it was detected and is usable. `start`: the first frame's number."""
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
        "frame": np.arange(start, start + pose.n_frames, dtype=np.int32),
        "time_s": pose.time_s,
        "toe": toe.astype(np.float32),
        "head": head.astype(np.float32),
        "height": height.astype(np.float32),
        "hip_x": x("MidHip").astype(np.float32),
        **{f"{p}_detected": v for p, v in part_seen(pose, min_conf, detected_only=True).items()},
        **{f"{p}_usable": v for p, v in part_seen(pose, min_conf).items()},
    })


def compute_stats(table: pd.DataFrame, subject: str, width: int, height: int,
                  far_percentile: float = 5, close_percentile: float = 95,
                  band: float = 0.02) -> SubjectStats:
    ok = table[np.isfinite(table["toe"]) & np.isfinite(table["height"]) & (table["height"] > 0)]
    if len(ok) < 2:
        raise StatsError(f"subject {subject!r}: only {len(ok)} frames show both ankles and the head; "
                         "need at least 2 to find the far and close positions, which the normalization maps "
                         "between. Film the person head to feet (the whole body in the frame, as the paper's "
                         "targets and sources are), or trim the video to the part that shows the feet "
                         f"(subjects.{subject}.start / end); a lower stats.min_confidence accepts ankles "
                         "the detector is less sure of")
    toe, h = ok["toe"].to_numpy(np.float64), ok["height"].to_numpy(np.float64)
    far, close = np.percentile(toe, far_percentile), np.percentile(toe, close_percentile)
    med_h = float(np.median(h))
    tol = max(band * med_h, 1e-6)
    # within the band, or the nearest frame when none is (few frames, as in a short shot)
    near_far = np.abs(toe - far) <= max(tol, np.abs(toe - far).min())
    near_close = np.abs(toe - close) <= max(tol, np.abs(toe - close).min())
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
    save_figure(fig, path)


def save_figure(fig, path) -> None:
    """Write a matplotlib figure whole or not at all, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def plot_coverage(table: pd.DataFrame, st: SubjectStats, path, columns: int = 1600) -> None:
    """Per part, a strip over time: dark where detected, light where a gap was filled. Drawn as
    an image of at most `columns` time bins (a bin shows the most any of its frames had), so a
    long video costs the same as a short one."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.4))
    t = table["time_s"].to_numpy()
    level = np.stack([np.where(table[f"{p}_detected"], 1.0, np.where(table[f"{p}_usable"], 0.35, 0.0))
                      for p in PART_ORDER]) if len(t) else np.zeros((len(PART_ORDER), 1))
    bins = max(1, -(-level.shape[1] // columns))
    pad = (-level.shape[1]) % bins
    level = np.pad(level, ((0, 0), (0, pad))).reshape(len(PART_ORDER), -1, bins).max(-1)
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    end = (t[-1] + dt) if len(t) else 1.0
    ax.imshow(level, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest",
              extent=(t[0] if len(t) else 0.0, end, len(PART_ORDER) - 0.5, -0.5))
    ax.set_yticks(range(len(PART_ORDER)))
    ax.set_yticklabels([f"{p} {st.coverage[p]['detected']:.0%}" for p in PART_ORDER])
    ax.set_xlabel("time (s)")
    ax.set_title(f"{st.subject}: parts detected over time (light: short gap filled by smoothing)")
    save_figure(fig, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Per-subject ankle and height statistics.")
    ap.add_argument("--pose", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--table", required=True, help="per-frame Parquet")
    ap.add_argument("--plot", required=True, help="PNG")
    ap.add_argument("--coverage-plot", default=None, help="PNG of the parts detected over time")
    ap.add_argument("--settings", default="{}", help="the config's stats section as JSON (schema defaults fill the rest)")
    ap.add_argument("--target", action="store_true",
                    help="the subject is a transfer target: warn when its face or hands are seldom found")
    a = ap.parse_args(argv)
    logs.setup()
    c = section("stats", json.loads(a.settings))
    pose = PoseFile(a.pose)  # block by block: the per-frame table is all that is kept
    table = pd.concat([per_frame(block, c["min_confidence"], lo) for lo, block in pose.blocks()] or
                      [per_frame(pose.read(), c["min_confidence"])], ignore_index=True)
    try:
        st = compute_stats(table, pose.meta.subject, pose.meta.width, pose.meta.height,
                           c["far_percentile"], c["close_percentile"], c["band"])
    except StatsError as e:
        sys.exit(f"subject_stats: {e} (pose table {a.pose})")
    st.coverage = table_coverage(table)
    with atomic_output(a.table) as tmp:
        table.to_parquet(tmp, index=False)
    plot_stats(table, st, a.plot)
    if a.coverage_plot:
        plot_coverage(table, st, a.coverage_plot)
    write_json(asdict(st), a.json)
    print(json.dumps(asdict(st), indent=1), file=sys.stderr)
    if a.target:
        for line in coverage_warnings(st.coverage, st.subject, c["warn_face_below"], c["warn_hands_below"]):
            log.warning("%s", line)


if __name__ == "__main__":
    main()
