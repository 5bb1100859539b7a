"""`make gpu-bundle`: what benchmarks/gpu.py needs on a GPU machine that has torch, numpy, pandas,
pyarrow and OpenCV but no Snakemake, MediaPipe, ffmpeg or PyAV (issue 19), in one folder small
enough to travel with the working tree (under 60 MiB):

  target.mp4              the target's frames store (decode_frames) as H.264 yuv444p, crf 12: OpenCV
                          reads it back (a lossless copy would be ~10x the size; see bundle.json's
                          `psnr_db`, the read-back against the store)
  target_pose.parquet     the target's smoothed pose table (smooth_pose)
  transfer_pose.parquet   the source's pose normalized onto the target (normalize_pose), for a transfer
  vgg16_fp16.pth          the perceptual loss's VGG16 weights (steps/gan/vgg.py's ST-LPIPS file), conv
                          weights in fp16 (half the size; steps.gan.vgg reads them back as fp32)
  bundle.json             what is in it, with sizes and frame counts

The frames and poses come from the project's own steps: Snakemake runs the workflow's rules on a
config made here (frames at --fps, --size, pad), in --work. Then `pack` writes the folder.

    python benchmarks/gpu_bundle.py --target ../shared/data/clips/model_target.mp4 \\
        --source ../shared/data/clips/dancer_source.mp4 --out gpu_bundle
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import read_video_cv2  # noqa: E402

VIDEO, POSE, TRANSFER_POSE, VGG, MANIFEST = ("target.mp4", "target_pose.parquet", "transfer_pose.parquet",
                                             "vgg16_fp16.pth", "bundle.json")
MAX_BYTES = 60 * 2**20


def encode_yuv444(frames: np.ndarray, path: Path, fps: float, crf: int = 12) -> None:
    """RGB uint8 (N, H, W, 3) -> H.264 High 4:4:4 (no chroma subsampling: the label-map colours
    and thin limbs keep their edges), with the project's ffmpeg."""
    from steps.atomic import atomic_output
    from steps.prepare.video import FFMPEG

    n, h, w, _ = frames.shape
    with atomic_output(path) as tmp:
        cmd = [FFMPEG, "-loglevel", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", f"{fps}", "-i", "pipe:", "-c:v", "libx264", "-preset", "slow",
               "-crf", str(crf), "-pix_fmt", "yuv444p", "-movflags", "+faststart", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        for f in frames:
            proc.stdin.write(np.ascontiguousarray(f).tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed encoding {path}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def half_vgg(src, dst: Path) -> None:
    """The ST-LPIPS state dict with its large tensors (the conv weights) in fp16; the input
    scaling, blur filters and small heads stay as they are."""
    import torch

    from steps.atomic import atomic_output
    from steps.gan.vgg import read_stlpips_state

    sd = read_stlpips_state(src)
    small = {k: v if not v.is_floating_point() or v.numel() < 4096 else v.half() for k, v in sd.items()}
    with atomic_output(dst) as tmp:
        torch.save(small, tmp)


def pack(frames_npy, pose, transfer_pose, out, fps: float, vgg=None, crf: int = 12, made_from: dict | None = None) -> dict:
    """Write the bundle folder `out` from a frames store, its pose table and a normalized pose
    table; returns the manifest. Checks that OpenCV reads back every frame."""
    from steps.prepare.posetable import read_meta, read_pose
    from steps.gan.vgg import weights_path
    from steps.prepare.framestore import open_frames

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = open_frames(frames_npy)[:]  # the bundle is one short clip: held whole
    n, h, w, _ = frames.shape
    n_pose, meta = read_pose(pose).n_frames, read_meta(pose)
    if n_pose != n or (meta.width, meta.height) != (w, h):
        raise ValueError(f"{pose} has {n_pose} frames of {meta.width}x{meta.height}; the store {frames_npy} "
                         f"{n} of {w}x{h}")
    encode_yuv444(frames, out / VIDEO, fps, crf)
    back = read_video_cv2(out / VIDEO)
    if back.shape != frames.shape:
        raise RuntimeError(f"OpenCV reads {out / VIDEO} as {back.shape}, the store is {frames.shape}")
    shutil.copyfile(pose, out / POSE)
    shutil.copyfile(transfer_pose, out / TRANSFER_POSE)
    half_vgg(vgg or weights_path(), out / VGG)
    files = [VIDEO, POSE, TRANSFER_POSE, VGG]
    manifest = {"frames": n, "width": w, "height": h, "fps": fps, "crf": crf, "psnr_db": round(psnr(back, frames), 2),
                "files": {f: (out / f).stat().st_size for f in files}, "made_from": made_from or {}}
    manifest["bytes"] = sum(manifest["files"].values())
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if manifest["bytes"] > MAX_BYTES:
        raise RuntimeError(f"{out} is {manifest['bytes'] / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB "
                           "a device run can carry")
    return manifest


def prepare(target: str, source: str, work: Path, width: int, height: int, fps: float, cores: int) -> dict:
    """Run the workflow's first half (decode, pose, smooth, stats, normalize) on target and
    source with Snakemake in `work`; returns the paths pack() needs."""
    import yaml

    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg = {"subjects": {"target": {"video": str(Path(target).resolve())},
                        "source": {"video": str(Path(source).resolve())}},
           "transfers": [{"source": "source", "target": "target"}],
           "frames": {"fps": fps, "width": width, "height": height, "resize": "pad"}}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    paths = {"frames": work / "results/frames/target/frames.mjpeg",
             "pose": work / "results/pose_smooth/target.parquet",
             "transfer_pose": work / "results/normalized/source__target.parquet"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--cores", str(cores),
           *[str(p.relative_to(work)) for p in paths.values()]]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run(cmd, check=True, cwd=work, env=env)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    clips = ROOT.parent / "shared" / "data" / "clips"
    ap.add_argument("--target", default=str(clips / "model_target.mp4"))
    ap.add_argument("--source", default=str(clips / "dancer_source.mp4"))
    ap.add_argument("--out", default="gpu_bundle")
    ap.add_argument("--work", default="results/gpu_bundle", help="where Snakemake prepares the data")
    ap.add_argument("--size", default="384x512", help="frames WxH (pad)")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--crf", type=int, default=12)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args(argv)
    for v in (a.target, a.source):
        if not Path(v).exists():
            sys.exit(f"gpu_bundle: {v} does not exist (the real clips are in ../shared/data/clips)")
    w, h = (int(v) for v in a.size.lower().split("x"))
    paths = prepare(a.target, a.source, Path(a.work), w, h, a.fps, a.cores)
    m = pack(paths["frames"], paths["pose"], paths["transfer_pose"], a.out, a.fps, crf=a.crf,
             made_from={"target": a.target, "source": a.source, "size": a.size, "resize": "pad",
                        "by": "snakemake: decode_frames, extract_pose, merge_pose, smooth_pose, subject_stats, "
                              "normalize_pose"})
    print(f"{a.out}: {m['frames']} frames {m['width']}x{m['height']} at {m['fps']:g} fps, read back by OpenCV at "
          f"{m['psnr_db']} dB; {m['bytes'] / 2**20:.1f} MiB: " +
          ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in m["files"].items()))


if __name__ == "__main__":
    main()
