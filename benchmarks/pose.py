"""Pose extraction, measured side by side in one run.

    .venv/bin/python benchmarks/pose.py [video] [--size 256]
        frames/s of extract_pose jobs with 1 and with 2 running in parallel (the chunks Snakemake
        schedules side by side); each job is a real `python -m steps.prepare.pose extract` process
        (start-up and model load included), detecting on the working frames.
    .venv/bin/python benchmarks/pose.py --rates [--size 384x512] [--step 3] [--max-frames 60]
        per real clip: person, face and hand detection rates and frames/s, detecting on the
        working frames (before) and on the video's own frames (after, pose.detect_on: video),
        on every `step`-th frame, at most max-frames frames per clip.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps.prepare.frames import decode_frames, read_manifest_meta  # noqa: E402
from steps.prepare.pose import detection_rates, drop_stray_hands, extract_chunk  # noqa: E402
from steps.prepare.posetable import PoseArrays, PoseMeta  # noqa: E402
from steps.prepare.video import probe  # noqa: E402

CLIPS = ROOT.parent / "shared/data/clips"
RATE_CLIPS = ["two_people.mp4", "handheld_dribble.mp4", "dancer_source.mp4", "model_target.mp4",
              "model_target_small.mp4"]


def run_jobs(frames: Path, ranges: list[tuple[int, int]], out: Path) -> float:
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "steps.prepare.pose", "extract", "--store", str(frames.parent),
                               "--settings", '{"detect_on": "frames"}',
                               "--start", str(a), "--end", str(b), "--out", str(out / f"{a}.npz")],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for a, b in ranges]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("extract_pose job failed")
    return time.perf_counter() - t


def rates_row(store: Path, detect_on: str) -> tuple[dict, float, dict]:
    """Detection rates (after merge_pose's stray-hand check), frames/s (model load included) and
    the hands that check dropped, of one path."""
    meta = read_manifest_meta(store)
    t = time.perf_counter()
    parts = extract_chunk(str(store), 0, meta["n_frames"], detect_on)
    fps = meta["n_frames"] / (time.perf_counter() - t)
    pose = PoseArrays(parts, np.arange(meta["n_frames"], dtype=np.float32),
                      PoseMeta("b", meta["width"], meta["height"], 1.0, "mediapipe"))
    _, stray = drop_stray_hands(pose)
    return detection_rates(pose), fps, stray


def rates(size: str, step: int, max_frames: int) -> None:
    w, h = map(int, size.split("x"))
    print(f"| clip (size) | working {w}x{h}: face / left / right | video's own frames: face / left / right "
          f"| frames/s working / video | hands dropped as stray (video) |")
    print("|---|---|---|---|---|")
    for name in RATE_CLIPS:
        video = CLIPS / name
        if not video.exists():
            print(f"| {name} | absent | | | |")
            continue
        info = probe(video)
        store = Path(tempfile.mkdtemp()) / name
        fps = info.fps / step
        decode_frames(str(video), store, fps, w, h, "pad", end=min(info.duration_s, max_frames / fps),
                      progress=False)
        (r0, f0, _), (r1, f1, stray) = rates_row(store, "frames"), rates_row(store, "video")
        n = read_manifest_meta(store)["n_frames"]

        def fmt(r):
            return f"{r['face']:.2f} / {r['left_hand']:.2f} / {r['right_hand']:.2f}"

        print(f"| {name} ({info.width}x{info.height}, {n} frames) | {fmt(r0)} | {fmt(r1)} | {f0:.1f} / {f1:.1f} "
              f"| {stray['left_hand']} + {stray['right_hand']} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?", default=str(CLIPS / "dancer_source.mp4"))
    ap.add_argument("--size", default=None, help="working frame size: 256 (jobs) or WxH (--rates, 384x512)")
    ap.add_argument("--frames", type=int, default=140)
    ap.add_argument("--rates", action="store_true", help="detection rates on the real clips, before and after")
    ap.add_argument("--step", type=int, default=3, help="--rates: every step-th frame of the video")
    ap.add_argument("--max-frames", type=int, default=60, help="--rates: at most this many frames per clip")
    a = ap.parse_args()
    if a.rates:
        return rates(a.size or "384x512", a.step, a.max_frames)
    a.size = int(a.size or 256)
    tmp = Path(tempfile.mkdtemp())
    if not Path(a.video).exists():
        from steps.synth import make_clip
        from steps.prepare.video import write_video
        clip = make_clip("source", 10, 15, a.size, a.size, 0)
        a.video = str(tmp / "synth.mp4")
        write_video(a.video, clip.frames(), 15)
    n = decode_frames(a.video, tmp / "f", 15, a.size, a.size, progress=False)
    n = min(n, a.frames)
    frames = tmp / "f" / "frames.mjpeg"
    half = n // 2
    t1 = run_jobs(frames, [(0, n)], tmp)
    t2 = run_jobs(frames, [(0, half), (half, n)], tmp)
    print(f"pose extraction on {Path(a.video).name}, {n} frames at {a.size}x{a.size}, MediaPipe holistic:")
    print(f"  1 job : {n / t1:6.1f} frames/s ({t1:.1f} s)")
    print(f"  2 jobs: {n / t2:6.1f} frames/s ({t2:.1f} s)  speed-up x{t1 / t2:.2f}")


if __name__ == "__main__":
    main()
