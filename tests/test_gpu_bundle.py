"""The GPU run of issue 19, rehearsed on the CPU: a bundle packed from generated data, read back
as the GPU machine reads it (OpenCV, no ffmpeg/PyAV/Snakemake/MediaPipe), and benchmarks/gpu.py
--quick on it end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, clip

sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_bundle import MAX_BYTES, pack, read_video_cv2  # noqa: E402

# what the GPU machine lacks: importing any of these there fails, so it fails here too
ABSENT_ON_GPU = ("snakemake", "mediapipe", "ffmpeg", "imageio_ffmpeg", "av")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """A rendered target (2 s at 15 fps, 48x64) with its true poses, and a rendered source's true
    poses as the pose to transfer, packed as make gpu-bundle packs the real clip."""
    from steps.prepare.posetable import write_pose
    from steps.synth import make_clip

    tmp = tmp_path_factory.mktemp("gpu_bundle")
    tgt = make_clip("target", 2.0, 15, 48, 64, seed=2)
    np.save(tmp / "frames.npy", np.stack(list(tgt.frames())))
    write_pose(tgt.truth("target", "target"), tmp / "pose.parquet")
    write_pose(make_clip("source", 1.0, 15, 48, 64, seed=1).truth("source", "source"), tmp / "source.parquet")
    pack(tmp / "frames.npy", tmp / "pose.parquet", tmp / "source.parquet", tmp / "bundle", fps=15)
    return tmp / "bundle"


def test_bundle_reads_back_with_opencv_and_loads_its_fp16_vgg(tiny_bundle):
    import torch

    from steps.gan.vgg import load_vgg16, weights_path

    m = json.loads((tiny_bundle / "bundle.json").read_text())
    assert (m["frames"], m["width"], m["height"]) == (30, 48, 64)
    store = np.load(tiny_bundle.parent / "frames.npy")
    back = read_video_cv2(tiny_bundle / "target.mp4")
    assert back.shape == store.shape and m["psnr_db"] > 38  # near-lossless, every frame
    assert np.abs(back.astype(int) - store).mean() < 2
    # the fp16 file is half the original and gives the same features
    assert (tiny_bundle / "vgg16_fp16.pth").stat().st_size < 0.55 * weights_path().stat().st_size
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    ref, half = load_vgg16()(x), load_vgg16(tiny_bundle / "vgg16_fp16.pth")(x)
    for a, b in zip(ref, half):
        assert torch.allclose(a, b, rtol=0.02, atol=0.02 * float(a.abs().max()))
    assert m["bytes"] < MAX_BYTES


def test_quick_run_writes_every_table_without_the_cpu_tools(tiny_bundle, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    for name in ABSENT_ON_GPU:
        (blocker / f"{name}.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)]), "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--bundle", str(tiny_bundle),
                        "--out", str(out), "--quick"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    took = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert took < 120, f"--quick took {took:.0f} s"
    md = (out / "gpu.md").read_text()
    assert "FAILED" not in md and "stopped at its share" not in md, md
    for f in ("gpu.md", "gpu.log", "quality.csv", "train.csv", "quality_curve.png", "heldout_samples.png",
              "transfer_still.png"):
        assert (out / f).stat().st_size > 0, f
    q = pd.read_csv(out / "quality.csv")
    assert q["step"].tolist() == [5, 10] and q["val_ssim"].between(-1, 1).all()
    t = pd.read_csv(out / "train.csv")
    assert t["batch"].tolist() == [1, 2] and (t["s/step"] > 0).all()  # batch 1 and the largest (capped at 2)
    # no ffmpeg: the transfer table stops at the generator rows and says why
    assert "| generator + face |" in md and "end to end" not in md.split("## (c)")[1].split("- no ffmpeg")[0]
    assert "no ffmpeg here" in md
    assert "transfer_still.png: the trained generator on the normalized source" in md


@pytest.mark.slow
def test_real_clip_bundle_fits_the_device_run(tmp_path):
    """make gpu-bundle on the real clips: the workflow's first half, then pack (a minute or two)."""
    target, source = clip("model_target.mp4"), clip("dancer_source.mp4")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bundle.py"), "--target", str(target),
                        "--source", str(source), "--out", str(tmp_path / "bundle"), "--work", str(tmp_path / "work"),
                        "--cores", "2"], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert (m["width"], m["height"], m["fps"]) == (384, 512, 30.0)
    assert m["frames"] >= 340 and m["psnr_db"] > 40 and m["bytes"] < MAX_BYTES
    from steps.prepare.posetable import read_pose

    assert read_pose(tmp_path / "bundle" / "transfer_pose.parquet").meta.width == 384
