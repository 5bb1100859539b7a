"""The transfer scored (the score_transfer rule). The product is the transfer video, which has no
real frames to compare with, so the score asks whether the target person is there and doing the
dance. Rows: `transfer` (the video, against the normalized input
poses it was generated from) and `target real frames` (the target's own frames at the same size,
against their pose table: the detector's floor). Columns:
- `person_found`: the share of frames in which the detector finds the person: both shoulders and
  both hips with confidence (MediaPipe's visibility) above `evaluate.found_confidence`. A torso,
  not a stray limb found in a blur; `found_frames` counts them. A "white ghost" scores ~0.
- `pose_*_px`, `missed_*`, `n_*`: the pose distance above, output against the normalized input.
- `temporal_change`, `temporal_real` (the target's real frames), `temporal_ratio`: as above.
- `pose_outside` (the transfer row): the share of frames whose input pose has a confident body
  joint outside the frame: there the generator is asked for a person it cannot draw whole.
Per minute of the video, the transfer's person_found, pose_body_px and pose_outside (a long
transfer that drifts shows it there). Fewer than `evaluate.min_person_found` of the frames with a
person found is a warning.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from steps.prepare.framestore import open_frames
from steps import logs
from steps.evaluate.metrics import temporal_change
from steps.evaluate.pose_distance import pose_distances, scale_pose_parts
from steps.evaluate.tables import markdown_rows
from steps.prepare.posetable import read_pose

log = logging.getLogger("evaluate")


TORSO = ("RShoulder", "LShoulder", "RHip", "LHip")
SCORE_COLUMNS = ["row", "frames", "person_found", "found_frames", "pose_body_px", "pose_face_px", "pose_hands_px",
                 "missed_body", "missed_face", "missed_hands", "n_body", "n_face", "n_hands", "temporal_change",
                 "temporal_real", "temporal_ratio", "pose_outside"]


def person_found(body: np.ndarray, min_conf: float = 0.5) -> np.ndarray:
    """BODY_25 keypoints (N, 25, 3) -> (N,) bool: both shoulders and both hips seen with confidence
    above min_conf (MediaPipe's visibility). A torso, which a ghost's blur does not give."""
    from steps.prepare.posetable import B

    conf = np.nan_to_num(body[:, [B[j] for j in TORSO], 2])
    return (conf > min_conf).all(1)


def outside_frame(body: np.ndarray, height: int, width: int, min_conf: float = 0.3) -> np.ndarray:
    """BODY_25 keypoints (N, 25, 3) in the frame's pixels -> (N,) bool: a joint seen with
    confidence at least min_conf lies outside the frame."""
    seen = np.nan_to_num(body[..., 2]) >= min_conf
    x, y = body[..., 0], body[..., 1]
    out = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    return (seen & np.nan_to_num(out, nan=False).astype(bool)).any(1)


def per_minute(det: dict, inp: dict, fps: float, height: int, width: int, min_conf: float, found_conf: float) -> list[dict]:
    """The transfer's figures minute by minute: {minute, frames, person_found, pose_body_px, pose_outside}."""
    n, step = len(det["body"]), max(1, int(round(60 * fps)))
    found, outside = person_found(det["body"], found_conf), outside_frame(inp["body"], height, width, min_conf)
    rows = []
    for k, lo in enumerate(range(0, n, step)):
        sl = slice(lo, min(n, lo + step))
        d = pose_distances({p: a[sl] for p, a in inp.items()}, {p: a[sl] for p, a in det.items()}, min_conf)
        rows.append({"minute": k + 1, "frames": sl.stop - sl.start, "person_found": float(found[sl].mean()),
                     "pose_body_px": d["pose_body_px"], "pose_outside": float(outside[sl].mean())})
    return rows


def score_row(name: str, det: dict[str, np.ndarray], inp: dict[str, np.ndarray], change: float,
              min_conf: float = 0.3, found_conf: float = 0.5) -> dict:
    """One row of the transfer score: re-detected keypoints `det` of some frames against the
    keypoints `inp` they should show (same frames, same pixels), and the frames' temporal change."""
    found = person_found(det["body"], found_conf)
    return {"row": name, "frames": len(found), "person_found": float(found.mean()) if len(found) else float("nan"),
            "found_frames": int(found.sum()), **pose_distances(inp, det, min_conf), "temporal_change": change}


def score_table(transfer_row: dict, real_row: dict) -> pd.DataFrame:
    df = pd.DataFrame([transfer_row, real_row]).reindex(columns=SCORE_COLUMNS)
    df["temporal_real"] = real_row["temporal_change"]
    df["temporal_ratio"] = df["temporal_change"] / df["temporal_real"]
    return df


def found_warning(df: pd.DataFrame, min_share: float, video) -> str | None:
    """The warning for a transfer in which the person is found in fewer than min_share of the frames."""
    t = df.iloc[0]
    if not t["person_found"] < min_share:
        return None
    return (f"{video}: the person is found in {int(t['found_frames'])} of {int(t['frames'])} frames "
            f"({t['person_found']:.0%}, fewer than evaluate.min_person_found {min_share:.0%}): the target is "
            f"not recognisable in the transfer (a ghost?); train longer or check the target's poses")


def score_transfer(video, pose_path, target_frames, target_pose, max_frames: int | None = None, min_conf: float = 0.3,
                   found_conf: float = 0.5, backend: str = "mediapipe", stride: int = 1) -> tuple[pd.DataFrame, dict]:
    """The score of a transfer video generated from the normalized poses `pose_path`, beside the
    detector's floor: as many of the target's real frames (`target_frames`, from the start),
    resized to the transfer's size, against their pose table `target_pose`. The detector sees
    every `stride`-th frame of each (the share of frames and distances are means, which a regular
    sample keeps); temporal change and pose_outside see every frame. Frames stream: a long video
    is never held in memory (each is decoded twice: detection, then temporal change)."""
    from steps.render.inference import resize_frame
    from steps.prepare.video import probe, read_video

    pose, tpose = read_pose(pose_path), read_pose(target_pose)
    info = probe(video)
    if info.n_frames != pose.n_frames:
        raise ValueError(f"{video} has {info.n_frames} frames, its normalized poses {pose_path} {pose.n_frames}: "
                         f"not the transfer of these poses")
    real = open_frames(target_frames)
    if len(real) != tpose.n_frames:
        raise ValueError(f"{target_frames} has {len(real)} frames, the target's pose table {target_pose} {tpose.n_frames}")
    h, w = info.height, info.width
    n = min(pose.n_frames, max_frames or pose.n_frames)
    m = min(n, len(real))
    log.info("scoring every %s of %d frames of %s (%dx%d) and the detector's floor on %d real frames of %s",
             "frame" if stride == 1 else f"{stride}th frame", n, video, w, h, m, target_frames)
    sources = (("transfer", lambda: read_video(video, n), pose, n),
               ("target real frames", lambda: (resize_frame(real[i], h, w) for i in range(m)), tpose, m))
    rows, minutes = [], []
    for name, frames, p, count in sources:
        det, inp = detect_every(frames(), count, stride, backend), scale_pose_parts(p, slice(0, count, stride), h, w)
        rows.append(score_row(name, det, inp, temporal_change(frames()), min_conf, found_conf))
        if name == "transfer":
            every = scale_pose_parts(p, slice(0, count), h, w)["body"]
            rows[-1]["pose_outside"] = float(outside_frame(every, h, w, min_conf).mean())
            minutes = per_minute(det, inp, pose.meta.fps / stride, h, w, min_conf, found_conf)
        log.info("%s: %s", name, {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()})
    facts = {"video": str(video), "frames_total": pose.n_frames, "scored": n, "real_scored": m, "width": w, "height": h,
             "found_confidence": found_conf, "per_minute": minutes, "stride": stride}
    return score_table(*rows), facts


def detect_every(frames, n: int, stride: int, backend: str) -> dict[str, np.ndarray]:
    """Keypoints of every `stride`-th of the n `frames` (an iterator), by the pose back end."""
    from itertools import islice

    from steps.prepare.pose import run_backend

    return run_backend(islice(frames, 0, None, stride), len(range(0, n, stride)), backend=backend)


def score_markdown(df: pd.DataFrame, title: str, facts: dict) -> str:
    cols = [c for c in SCORE_COLUMNS if c != "temporal_real"]
    return "\n".join([
        f"# {title}", "",
        f"{facts['scored']} of the {facts['frames_total']} frames of {facts['video']} at {facts['width']}x{facts['height']}"
        f"{'' if facts.get('stride', 1) == 1 else ', the detector on every %dth' % facts['stride']}; "
        f"the detector's floor on the first {facts['real_scored']} real frames of the target at the same size.", "",
        *markdown_rows(df, cols), "",
        f"person_found: share of frames in which the detector finds both shoulders and both hips (confidence > "
        f"{facts['found_confidence']:g}); a transfer without a recognisable person scores near 0. pose_*_px: mean L2 "
        "distance in pixels between the normalized input keypoints and those detected on the output, lower is better; "
        "missed_*: instances not detected (out of n_*). The target-real-frames row is the detector's own floor (its "
        "frames against their pose table). temporal_ratio: mean change between consecutive frames over the same for "
        "the target's real frames (1 = as stable as the real video). pose_outside: share of frames whose input pose "
        "has a body joint outside the frame.", "",
        "Minute by minute (the transfer):", "",
        *markdown_rows(pd.DataFrame(facts["per_minute"]), ["minute", "frames", "person_found", "pose_body_px",
                                                            "pose_outside"]), ""])


def main(argv=None) -> None:
    from steps.atomic import atomic_output
    from steps.settings import section

    ap = argparse.ArgumentParser(prog="python -m steps.evaluate.score",
                                 description="Score a transfer video: is the target person there, in the input pose?")
    ap.add_argument("--video", required=True, help="the transfer video (results/transfer/{source}__{target}.mp4)")
    ap.add_argument("--pose", required=True, help="the normalized poses it was generated from")
    ap.add_argument("--target-frames", required=True, help="the target's frames store (frames.mjpeg) (the detector's floor)")
    ap.add_argument("--target-pose", required=True, help="the target's smoothed pose table")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--settings", default="{}", help="the config's evaluate section as JSON (schema defaults fill the rest)")
    ap.add_argument("--title", default=None)
    a = ap.parse_args(argv)
    o = section("evaluate", {k: v for k, v in json.loads(a.settings).items() if k != "resources"})
    logs.setup()
    try:
        df, facts = score_transfer(a.video, a.pose, a.target_frames, a.target_pose, o["score_max_frames"],
                                   o["min_confidence"], o["found_confidence"], stride=o["score_stride"])
    except ValueError as e:
        sys.exit(f"score_transfer: {e}")
    md = score_markdown(df, a.title or f"Transfer {Path(a.video).stem}", facts)
    with atomic_output(a.csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_output(a.markdown) as tmp:
        Path(tmp).write_text(md)
    print(md)
    warning = found_warning(df, o["min_person_found"], a.video)
    if warning:
        log.warning(warning)


if __name__ == "__main__":
    main()
