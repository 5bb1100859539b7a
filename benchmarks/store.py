"""The frames store (issue 27): raw uint8 against JPEG, side by side in one run, per clip.

For each clip, decoded by decode_frames at the working size (default the `paper` preset's
384x512, 30 fps), and by ffmpeg raw at the same times:

  kB/frame, GB/min    the store on disk (raw: 590 kB a frame at 384x512) and per minute of video
  SSIM vs raw         the store's frames against ffmpeg's raw decode (mean over frames)
  held-out delta      a generator's held-out SSIM scored against the JPEG frames minus against
                      the raw ones (how much the store moves the evaluation's figure), with a
                      cpu-preset generator trained --steps steps on the store
  random frames/s     frames read at random, one process (the loader's work per frame)
  pairs/s             FrameData items (two frames resized plus their label maps) at random
  step needs          frames/s a training step consumes (2 frames per pair, the batch's pairs
                      per measured step time at the cpu preset)

    .venv/bin/python benchmarks/store.py                       # the shared clips, 384x512, 30 fps
    .venv/bin/python benchmarks/store.py --quick               # a rendered clip, tiny, seconds
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import markdown  # noqa: E402

from steps.evaluate.metrics import ssim  # noqa: E402
from steps.prepare.frames import decode_command, decode_frames  # noqa: E402
from steps.prepare.framestore import open_frames  # noqa: E402
from steps.prepare.video import FFMPEG  # noqa: E402

CLIPS = ["model_target.mp4", "dancer_source.mp4", "model_target_small.mp4"]
COLUMNS = ["clip", "frames", "raw kB/frame", "jpeg kB/frame", "jpeg GB/min", "x smaller", "SSIM vs raw",
           "random frames/s", "pairs/s"]


def raw_frames(video: str, fps: float, w: int, h: int) -> np.ndarray:
    out = decode_command(video, fps, w, h, "pad").run(cmd=FFMPEG, capture_stdout=True, quiet=True)[0]
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)


def random_reads(store, k: int = 200) -> float:
    idx = np.random.default_rng(0).integers(0, len(store), k)
    t = time.perf_counter()
    for i in idx:
        store[int(i)]
    return k / (time.perf_counter() - t)


def pair_reads(path, pose_path, h: int, w: int, k: int = 50) -> float:
    from steps.gan.pairs import FrameData
    from steps.prepare.labels import render_label_map
    from steps.prepare.posetable import read_pose

    pose = read_pose(pose_path)
    data = FrameData(path, pose, h, w, lambda p, i, hh, ww: render_label_map(p, i, hh, ww, 4))
    idx = np.random.default_rng(1).integers(0, len(data), k)
    t = time.perf_counter()
    for i in idx:
        data[int(i)]
    return k / (time.perf_counter() - t)


def clip_row(video: Path, work: Path, fps: float, w: int, h: int) -> dict:
    n = decode_frames(str(video), work / video.stem, fps, w, h, progress=False)
    store, raw = open_frames(work / video.stem), raw_frames(str(video), fps, w, h)
    jpeg_bytes = (work / video.stem / "frames.mjpeg").stat().st_size
    picks = range(0, n, max(1, n // 40))
    return {"clip": video.name, "frames": n, "raw kB/frame": raw[0].nbytes / 1e3,
            "jpeg kB/frame": jpeg_bytes / n / 1e3, "jpeg GB/min": jpeg_bytes / n * fps * 60 / 1e9,
            "x smaller": raw.nbytes / jpeg_bytes,
            "SSIM vs raw": float(np.mean([ssim(store[i], raw[i]) for i in picks])),
            "random frames/s": random_reads(store)}


def held_out_delta(video: Path, work: Path, steps: int, quick: bool) -> dict:
    """Train a cpu-preset generator on the JPEG store and score its held-out frames against the
    JPEG and the raw frames; returns both SSIMs and the step time."""
    from quality import prepare_video

    from steps.gan.train import TrainConfig, train
    from steps.render.inference import generate_sequence, label_renderer, load_generator, resize_frame
    from steps.prepare.posetable import read_pose
    from steps.settings import preset, section

    size = (64, 64) if quick else (192, 256)
    frames_path, pose_path = prepare_video(str(video), work / "train", size[0], size[1], 15)
    cpu = preset("cpu")["train"]
    given = {**cpu, "global_steps": steps, "val_every": steps, "checkpoint_every": steps, "workers": 0}
    if quick:
        given["model"] = {"ngf": 8, "n_down": 2, "n_blocks": 1, "ndf": 8, "n_layers_D": 2, "num_D": 1}
    cfg = TrainConfig.from_dict(section("train", given))
    pose = read_pose(pose_path)
    t = time.perf_counter()
    train(cfg, frames_path, pose, work / "model", work / "model/ck", section("labels"), progress=False)
    step_s = (time.perf_counter() - t) / steps
    g, meta = load_generator(work / "model/generator.pt")
    tail = range(meta["held_out_from"], pose.n_frames)
    fake = list(generate_sequence(g, [label_renderer(meta)(pose, i) for i in tail]))
    store, raw = open_frames(frames_path), raw_frames(str(video), 15, size[0], size[1])
    h, w = meta["height"], meta["width"]
    on_jpeg = np.mean([ssim(f, resize_frame(store[i], h, w)) for f, i in zip(fake, tail)])
    on_raw = np.mean([ssim(f, resize_frame(raw[i], h, w)) for f, i in zip(fake, tail)])
    pairs = pair_reads(frames_path, pose_path, h, w)
    return {"ssim_jpeg": float(on_jpeg), "ssim_raw": float(on_raw), "step_s": step_s,
            "batch": cfg.batch_size, "pairs_per_s": pairs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*", help="videos (default: the shared clips)")
    ap.add_argument("--size", default="384x512", help="WxH of the store")
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--steps", type=int, default=300, help="training steps for the held-out delta")
    ap.add_argument("--quick", action="store_true", help="a rendered clip at 64x64, 10 training steps")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    w, h = map(int, a.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="store_bench_"))
    videos = [Path(v) for v in a.videos]
    if a.quick:
        from steps.prepare.video import write_video
        from steps.synth import make_clip

        write_video(work / "synth.mp4", make_clip("target", 4, 10, 64, 64, 0).frames(), 10)
        videos, w, h, a.fps, a.steps = [work / "synth.mp4"], 64, 64, 10, 10
    elif not videos:
        shared = ROOT.parent / "shared/data/clips"
        videos = [shared / c for c in CLIPS if (shared / c).exists()]
        if not videos:
            raise SystemExit(f"no videos given and none in {shared}")
    rows = [{**clip_row(v, work, a.fps, w, h), "pairs/s": "–"} for v in videos]
    print(f"frames store at {w}x{h}, {a.fps:g} fps: raw uint8 against JPEG (quality 95, 4:4:4)\n")
    d = held_out_delta(videos[0], work, a.steps, a.quick)
    rows[0]["pairs/s"] = d["pairs_per_s"]
    print(markdown(rows, COLUMNS))
    need = 2 * d["batch"] / d["step_s"]
    print(f"\nheld-out SSIM of a {a.steps}-step generator on {videos[0].name}: {d['ssim_jpeg']:.4f} against the JPEG "
          f"frames, {d['ssim_raw']:.4f} against the raw ones: delta {d['ssim_jpeg'] - d['ssim_raw']:+.4f}")
    print(f"a training step ({d['step_s']:.3f} s, batch {d['batch']}) consumes {need:.1f} frames/s; one loader process "
          f"reads {rows[0]['random frames/s']:.0f} random frames/s ({rows[0]['random frames/s'] / need:.0f}x) and "
          f"{d['pairs_per_s']:.0f} pairs/s with their label maps")
    return rows, d


if __name__ == "__main__":
    main()
