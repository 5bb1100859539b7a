"""Decode speed: our decode_frames (ffmpeg -> raw RGB pipe -> JPEG frames.mjpeg) against a plain
`ffmpeg ... -f null -` decode with the same trim, fps and scale filter, side by side.

    .venv/bin/python benchmarks/decode.py [video ...]

Without arguments it uses the real clips in ../shared/data/clips, or a generated video.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps.prepare.frames import decode_frames, scale_filter  # noqa: E402
from steps.prepare.video import FFMPEG, write_video  # noqa: E402

REPEATS = 3


def null_decode(video: str, fps: float, w: int, h: int, resize: str) -> None:
    vf = f"fps={fps}," + scale_filter(w, h, resize) + ",format=rgb24"
    subprocess.run([FFMPEG, "-loglevel", "error", "-nostdin", "-i", video, "-vf", vf, "-an",
                    "-f", "null", "-"], check=True)


def best_of(fn, repeats=REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(videos: list[str]) -> None:
    clips = Path(ROOT.parent / "shared/data/clips")
    if not videos:
        videos = [str(p) for p in sorted(clips.glob("*.mp4"))] if clips.exists() else []
    tmp = Path(tempfile.mkdtemp())
    if not videos:
        rng = np.random.default_rng(0)
        videos = [str(tmp / "noise.mp4")]
        write_video(videos[0], (rng.integers(0, 255, (720, 1280, 3), np.uint8) for _ in range(150)), 30)
    print(f"{'video':28s} {'size':>9s} {'frames':>6s} {'ffmpeg null f/s':>15s} {'decode_frames f/s':>17s} {'ratio':>6s}")
    ratios = []
    for video in videos:
        for (w, h) in [(256, 256), (512, 512)]:
            fps = 30.0
            n = decode_frames(video, tmp / "f", fps, w, h, "pad", progress=False)
            t_null = best_of(lambda: null_decode(video, fps, w, h, "pad"))
            t_ours = best_of(lambda: decode_frames(video, tmp / "f", fps, w, h, "pad", progress=False))
            ratio = t_null / t_ours
            ratios.append(ratio)
            print(f"{Path(video).name:28s} {w:>4d}x{h:<4d} {n:6d} {n / t_null:15.0f} {n / t_ours:17.0f} {ratio:6.2f}")
    print(f"decode_frames / plain ffmpeg frames/s: min {min(ratios):.2f}, geometric mean "
          f"{float(np.exp(np.mean(np.log(ratios)))):.2f} (target >= 0.80)")


if __name__ == "__main__":
    main(sys.argv[1:])
