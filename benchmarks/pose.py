"""Pose extraction throughput: frames/s of extract_pose jobs with 1 and with 2 running in
parallel (the chunks Snakemake schedules side by side), measured in one run.

    .venv/bin/python benchmarks/pose.py [video] [--size 256]

Each job is a real `python -m steps.pose extract` process (start-up and model load included).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps.frames import decode_frames  # noqa: E402


def run_jobs(frames: Path, ranges: list[tuple[int, int]], out: Path) -> float:
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "steps.pose", "extract", "--frames", str(frames),
                               "--start", str(a), "--end", str(b), "--out", str(out / f"{a}.npz")],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for a, b in ranges]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("extract_pose job failed")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?", default=str(ROOT.parent / "shared/data/clips/dancer_source.mp4"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=140)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if not Path(a.video).exists():
        from steps.synth import make_clip
        from steps.video import write_video
        clip = make_clip("source", 10, 15, a.size, a.size, 0)
        a.video = str(tmp / "synth.mp4")
        write_video(a.video, clip.frames(), 15)
    n = decode_frames(a.video, tmp / "f", 15, a.size, a.size, progress=False)
    n = min(n, a.frames)
    frames = tmp / "f" / "frames.npy"
    half = n // 2
    t1 = run_jobs(frames, [(0, n)], tmp)
    t2 = run_jobs(frames, [(0, half), (half, n)], tmp)
    print(f"pose extraction on {Path(a.video).name}, {n} frames at {a.size}x{a.size}, MediaPipe holistic:")
    print(f"  1 job : {n / t1:6.1f} frames/s ({t1:.1f} s)")
    print(f"  2 jobs: {n / t2:6.1f} frames/s ({t2:.1f} s)  speed-up x{t1 / t2:.2f}")


if __name__ == "__main__":
    main()
