"""python -m steps.synth: render a dancer to a video and its ground-truth pose table."""
from __future__ import annotations

import argparse
from pathlib import Path

from steps.prepare.posetable import write_pose
from steps.synth import PRESETS, make_clip

def main(argv=None) -> None:
    from tqdm import tqdm

    from steps.prepare.video import write_video

    ap = argparse.ArgumentParser(prog="python -m steps.synth", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subject", default=None, help="subject name stored in the truth table (default: video stem)")
    ap.add_argument("--video", required=True, help="output .mp4")
    ap.add_argument("--truth", required=True, help="output ground-truth pose table (.parquet)")
    a = ap.parse_args(argv)
    clip = make_clip(a.preset, a.seconds, a.fps, a.width, a.height, a.seed)
    subject = a.subject or Path(a.video).stem
    frames = tqdm(clip.frames(), total=clip.n, desc=f"synth {subject}", unit="frame")
    write_video(a.video, frames, a.fps)  # atomic
    try:
        write_pose(clip.truth(subject, a.preset), a.truth)  # atomic
    except BaseException:
        Path(a.video).unlink(missing_ok=True)  # never leave a video without its truth
        raise
    print(f"wrote {a.video} and {a.truth}: {clip.n} frames {a.width}x{a.height} @ {a.fps:g} fps")
