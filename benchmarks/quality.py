"""Held-out quality of the target half of the pipeline: train one generator and tabulate every
validation (issue 13).

The table has one row per evaluation point of the training's loss.csv: the step, held-out L1,
SSIM and ST-LPIPS (the recurrently generated held-out tail, as transfer makes it), the mean
loss_D over the steps since the previous evaluation, and the collapse guard's events in that
interval. Below it: the step of the final generator (the best held-out checkpoint).

Data, one of:
  --video CLIP.mp4          decode + detect + smooth with the project's steps (needs ffmpeg and
                            the pose back end, e.g. MediaPipe): python -m steps.prepare.frames / steps.prepare.pose
                            / steps.prepare.smooth, as workflow/rules/{frames,pose}.smk call them
  --frames F --pose P       a prepared frames store (frames.mjpeg or frames.npy, or an .mp4 decoded with OpenCV)
                            and the smoothed pose table: needs only torch, numpy, pandas, pyarrow,
                            OpenCV (a GPU machine without Snakemake/MediaPipe/ffmpeg)
  --synth SECONDS           a rendered dancer (steps.synth) with its true poses: for CI

    python benchmarks/quality.py --video CLIP.mp4 --size 384x512 --steps 3000 --out results/quality
    python benchmarks/quality.py --frames frames.npy --pose pose.parquet --size 384x512 --steps 3000 \\
        --set train.lr_D=0.0001 --set train.augment.policy=none
    python benchmarks/quality.py --synth 2 --size 64x64 --steps 20 --set train.vgg=false   # CPU, seconds

--set KEY=VALUE overrides any train.* key by its dotted path (VALUE parsed as YAML); the schema's
defaults (the paper's networks) fill the rest. Writes OUT/quality.csv and OUT/quality.md; the
training's own outputs are in OUT/train and OUT/ckpt.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ["step", "val_l1", "val_ssim", "val_stlpips", "loss_D_mean", "event"]


def parse_size(s: str) -> tuple[int, int]:
    """"WxH" -> (width, height)."""
    w, h = (int(v) for v in s.lower().split("x"))
    return w, h


def apply_set(d: dict, item: str) -> None:
    """--set train.a.b=VALUE (the "train." prefix is optional) into the nested dict d."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
    parts = key.strip().split(".")
    if parts[0] == "train":
        parts = parts[1:]
    if not parts:
        raise SystemExit(f"--set {item!r}: no key")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(value)


def _run(*args: str) -> None:
    cmd = [sys.executable, "-m", *args]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def prepare_video(video: str, out: Path, width: int, height: int, fps: float) -> tuple[Path, Path]:
    """The frames store and smoothed pose table of a video, by the steps' command lines."""
    from steps.prepare.framestore import open_frames, store_path

    frames = json.dumps({"fps": fps, "width": width, "height": height})
    pose = json.dumps({"detect_on": "frames"})
    store = out / "frames"
    _run("steps.prepare.frames", "--video", video, "--out", str(store), "--subject", "target", "--settings", frames)
    n = len(open_frames(store))
    chunk = out / "pose_chunk.npz"
    _run("steps.prepare.pose", "extract", "--store", str(store), "--start", "0", "--end", str(n), "--out", str(chunk),
         "--subject", "target", "--settings", pose)
    _run("steps.prepare.pose", "merge", str(chunk), "--manifest", str(store / "manifest.parquet"), "--out",
         str(out / "pose.parquet"), "--subject", "target", "--settings", pose)
    _run("steps.prepare.smooth", "--pose", str(out / "pose.parquet"), "--out", str(out / "pose_smooth.parquet"))
    return store_path(store), out / "pose_smooth.parquet"


def prepare_synth(seconds: float, out: Path, width: int, height: int, fps: float, seed: int = 0) -> tuple[Path, Path]:
    """A rendered dancer at the training size and its true poses (no detection, no smoothing)."""
    import numpy as np

    from steps.prepare.posetable import write_pose
    from steps.synth import make_clip

    clip = make_clip("target", seconds, fps, width + width % 2, height + height % 2, seed)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "frames.npy", np.stack(list(clip.frames())))
    write_pose(clip.truth("target", "target"), out / "pose.parquet")
    return out / "frames.npy", out / "pose.parquet"


def frames_store(path: str, out: Path) -> Path:
    """frames.npy as it is, or a video decoded with OpenCV into OUT/frames.npy (RGB uint8)."""
    import numpy as np

    p = Path(path)
    if p.suffix == ".npy":
        return p
    frames = read_video_cv2(p)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "frames.npy", frames)
    return out / "frames.npy"


def read_video_cv2(path):
    """Every frame of a video decoded by OpenCV (no ffmpeg binary or PyAV), RGB uint8 (N, H, W, 3)."""
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise SystemExit(f"OpenCV could not read any frame of {path}")
    return np.stack(frames)


def held_out_table(loss_csv) -> list[dict]:
    """One row per validation in loss.csv: its metrics, mean loss_D and the events since the last one."""
    import pandas as pd

    df = pd.read_csv(loss_csv)
    rows, prev = [], -1
    for _, r in df[df["val_l1"].notna()].iterrows():
        step = int(r["step"])
        span = df[(df["step"] > prev) & (df["step"] <= step)]
        events = [str(e) for e in span["event"].dropna()] if "event" in span else []
        rows.append({"step": step, "val_l1": float(r["val_l1"]), "val_ssim": float(r["val_ssim"]),
                     "val_stlpips": float(r["val_stlpips"]), "loss_D_mean": float(span["loss_D"].mean()),
                     "event": "; ".join(events)})
        prev = step
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="the target's video: decoded, pose-detected and smoothed here")
    src.add_argument("--frames", help="a prepared frames store (frames.mjpeg or frames.npy) or a video OpenCV can read")
    src.add_argument("--synth", type=float, metavar="SECONDS", help="render a dancer of this length (CI)")
    ap.add_argument("--pose", help="the smoothed pose table (Parquet), with --frames")
    ap.add_argument("--size", default="384x512", help="training size WxH")
    ap.add_argument("--steps", type=int, default=3000, help="global training steps")
    ap.add_argument("--val-every", type=int, default=None, help="evaluation interval (default steps/10; --set wins)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="train.KEY=VALUE")
    ap.add_argument("--vgg-weights", default=None, help="ST-LPIPS/VGG weights file (default: stlpips-pytorch's)")
    ap.add_argument("--fps", type=float, default=None, help="decode/render fps (default: the frames section's)")
    ap.add_argument("--out", default="results/benchmarks/quality", help="output folder")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    if a.frames and not a.pose:
        ap.error("--frames needs --pose")
    from steps import logs

    logs.setup()

    import torch

    from steps.settings import section
    from steps.gan.train import TrainConfig, train

    if a.threads:
        torch.set_num_threads(a.threads)
    width, height = parse_size(a.size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fps = a.fps or section("frames")["fps"]
    if a.video:
        frames, pose = prepare_video(a.video, out / "data", width, height, fps)
    elif a.synth:
        frames, pose = prepare_synth(a.synth, out / "data", width, height, fps)
    else:
        frames, pose = frames_store(a.frames, out / "data"), Path(a.pose)

    given = {"width": width, "height": height, "global_steps": a.steps,
             "val_every": a.val_every or max(1, a.steps // 10)}
    if a.vgg_weights:
        given["vgg_weights"] = a.vgg_weights
    for s in a.sets:
        apply_set(given, s)
    cfg = TrainConfig.from_dict(given)
    for d in (out / "train", out / "ckpt"):  # a benchmark starts from scratch, never resumes
        if d.exists():
            import shutil
            shutil.rmtree(d)
    result = train(cfg, frames, pose, out / "train", out / "ckpt", progress=False)

    rows = held_out_table(out / "ckpt" / "loss.csv")
    import pandas as pd

    pd.DataFrame(rows, columns=COLUMNS).to_csv(out / "quality.csv", index=False)
    final = f"final generator: step {result['best_step']} (best held-out by {cfg.select_by}) of {result['step']}"
    if result["stopped"]:
        final += f"; stopped early: {result['stopped']}"
    table = markdown(rows, COLUMNS)
    (out / "quality.md").write_text(f"{table}\n\n{final}\n")
    print(f"held-out quality: {frames} at {width}x{height}, {cfg.global_steps} steps, device {cfg.device}; "
          f"overrides {a.sets or 'none'}")
    print(table)
    print(final)
    if any(not math.isfinite(r["val_l1"]) for r in rows):
        sys.exit("non-finite held-out L1")


if __name__ == "__main__":
    main()
