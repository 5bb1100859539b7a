"""Face boxes and the face GAN (CPU, tiny): boxes inside the frame and on the head, the residual
generator starting as the identity, learning, resume (bitwise), SIGTERM, a new generator."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from steps.gan.face import FaceTrainConfig, train_face
from steps.prepare.faceboxes import face_boxes, face_size, head_centres
from steps.render.inference import apply_face
from steps.gan.models import FaceGenerator, FaceModelConfig
from steps.prepare.posetable import B, PoseMeta, empty_arrays, write_pose
from steps.synth import make_clip
from steps.gan.train import TrainConfig, train

H = W = 128


def test_face_size_is_128_at_the_papers_scale_and_scales_with_resolution():
    assert face_size(512, 1024) == 128
    assert face_size(1024, 2048) == 256
    assert face_size(256, 256) == 64
    assert face_size(96, 96) == 24
    assert face_size(256, 256, size=40) == 40
    assert face_size(64, 64, size=200) == 64  # never larger than the frame
    with pytest.raises(ValueError):
        face_size(6, 6)


def head_pose(xy: np.ndarray, height: int, width: int):
    """A pose whose head joints sit around xy (N, 2); NaN rows are frames without a head."""
    meta = PoseMeta("t", width, height, 10.0, "test")
    pose = empty_arrays(len(xy), meta)
    for name, (dx, dy) in {"Nose": (0, 0), "REye": (-2, -2), "LEye": (2, -2), "REar": (-4, 0), "LEar": (4, 0)}.items():
        j = B[name]
        pose.parts["body"][:, j, 0] = xy[:, 0] + dx
        pose.parts["body"][:, j, 1] = xy[:, 1] + dy
        pose.parts["body"][:, j, 2] = np.where(np.isfinite(xy[:, 0]), 1.0, 0.0)
    return pose


@settings(max_examples=60, deadline=None)
@given(st.integers(16, 300), st.integers(16, 300),
       st.lists(st.one_of(st.none(), st.tuples(st.floats(-500, 800), st.floats(-500, 800))), min_size=1, max_size=30),
       st.integers(1, 9))
def test_boxes_always_lie_inside_the_frame(height, width, heads, window):
    xy = np.array([h if h is not None else (np.nan, np.nan) for h in heads], float)
    boxes = face_boxes(head_pose(xy, height, width), height, width, smooth_window=window)
    b = boxes.boxes
    s = boxes.size
    assert s == face_size(height, width)
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= width).all() and (b[:, 3] <= height).all()
    assert ((b[:, 2] - b[:, 0]) == s).all() and ((b[:, 3] - b[:, 1]) == s).all()
    assert (boxes.seen == np.isfinite(xy[:, 0])).all()


def test_missing_heads_are_interpolated_between_their_neighbours():
    xy = np.stack([np.linspace(40, 80, 11), np.full(11, 30.0)], 1)
    xy[4:7] = np.nan
    boxes = face_boxes(head_pose(xy, H, W), H, W, smooth_window=1)
    cx = (boxes.boxes[:, 0] + boxes.boxes[:, 2]) / 2
    np.testing.assert_allclose(cx, np.linspace(40, 80, 11), atol=1)
    assert not boxes.seen[4:7].any() and boxes.seen[[0, 3, 7, 10]].all()


@pytest.fixture(scope="module")
def dancer(tmp_path_factory):
    """A rendered dancer (steps.synth, target preset) with its ground-truth poses, and a main
    generator trained a few steps on it."""
    d = tmp_path_factory.mktemp("face")
    clip = make_clip("target", 3.0, 10, W, H, seed=3)
    frames = np.stack(list(clip.frames()))
    np.save(d / "frames.npy", frames)
    pose = clip.truth("tgt", "target")
    write_pose(pose, d / "pose.parquet")
    cfg = TrainConfig.from_dict(dict(model=dict(ngf=8, n_down=2, n_blocks=2, ndf=8, n_layers_D=2, num_D=1), vgg=False,
                                     workers=0, global_steps=8, val_fraction=0.2, val_samples=2, val_every=0, min_train_frames=2, min_val_frames=1,
                                     checkpoint_every=0, channels_last=False, device="cpu"))
    train(cfg, d / "frames.npy", pose, d / "g", d / "g/checkpoints", progress=False)
    return d, frames, pose


@pytest.mark.slow
def test_boxes_follow_the_head_of_a_rendered_dancer(dancer):
    _, frames, pose = dancer
    boxes = face_boxes(pose, H, W)
    centres = head_centres(pose, H, W)
    nose = pose.parts["body"][:, B["Nose"], :2]
    assert boxes.seen.all()
    assert boxes.size == 32
    b = boxes.boxes
    inside = (nose[:, 0] >= b[:, 0]) & (nose[:, 0] < b[:, 2]) & (nose[:, 1] >= b[:, 1]) & (nose[:, 1] < b[:, 3])
    assert inside.all()
    # centred on the head, up to the smoothing's lag and rounding
    box_c = (b[:, :2] + b[:, 2:]) / 2
    assert np.abs(box_c - centres).max() < 4
    # the head moves over the clip and the boxes move with it
    assert np.ptp(centres[:, 0]) > 5 and np.corrcoef(box_c[:, 0], centres[:, 0])[0, 1] > 0.95


@pytest.mark.slow
def test_untrained_face_generator_changes_nothing(dancer):
    _, frames, pose = dancer
    torch.manual_seed(0)
    g = FaceGenerator(FaceModelConfig(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1)).eval()
    boxes = face_boxes(pose, H, W)
    label = np.zeros_like(frames[0])
    out = apply_face(g, frames[0], label, boxes.boxes[0])
    np.testing.assert_array_equal(out, frames[0])


TINY = dict(batch_size=2, model=dict(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1), vgg=False, lr_G=1e-3,
            lr_D=1e-3, val_every=0, checkpoint_every=0, val_samples=2, device="cpu")


def crop_l1(face_ckpt_dir, g_f=None) -> tuple[float, float]:
    """(L1 of G's crops to the real ones, L1 of G + residual) over the cached training crops."""
    data = {k: np.load(face_ckpt_dir / "face_data" / f"{k}.npy") for k in ("label", "gen", "real")}

    def t(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1

    y, gen, x = t(data["label"]), t(data["gen"]), t(data["real"])
    with torch.no_grad():
        refined = g_f.eval().refine(y, gen)
    return float((gen - x).abs().mean() / 2), float((refined - x).abs().mean() / 2)


@pytest.mark.slow
def test_face_gan_learns_a_residual(dancer, tmp_path):
    d, _, pose = dancer
    r = train_face(FaceTrainConfig.from_dict({**TINY, "steps": 40}), d / "frames.npy", pose, d / "g/generator.pt", tmp_path,
                   tmp_path / "ck", progress=False)
    before, after = crop_l1(tmp_path / "ck", r["face_generator"])
    assert after < 0.75 * before, (before, after)  # measured: 0.302 -> 0.213
    for name in ("face.pt", "face_loss.csv", "face_loss.png", "face_samples.png"):
        assert (tmp_path / name).stat().st_size > 0
    ck = torch.load(tmp_path / "face.pt", weights_only=True)
    assert ck["size"] == 32 and ck["step"] == 40 and ck["height"] == H
    assert ck["train"]["bf16"] == FaceTrainConfig.from_dict(TINY).bf16  # inference runs in the precision trained in


@pytest.mark.slow
def test_a_new_generator_restarts_the_face_gan(dancer, tmp_path, caplog):
    d, _, pose = dancer
    cfg = FaceTrainConfig.from_dict({**TINY, "steps": 4})
    train_face(cfg, d / "frames.npy", pose, d / "g/generator.pt", tmp_path, tmp_path / "ck", max_steps=2, progress=False)
    other = tmp_path / "other.pt"
    ck = torch.load(d / "g/generator.pt", weights_only=True)
    ck["step"] += 1  # any change of the file
    torch.save(ck, other)
    r = train_face(cfg, d / "frames.npy", pose, other, tmp_path, tmp_path / "ck", progress=False)
    assert r["done"] and "from scratch" in caplog.text
    rows = (tmp_path / "ck/face_loss.csv").read_text().splitlines()
    assert [int(x.split(",")[0]) for x in rows[1:]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_sigterm_saves_a_face_checkpoint_that_resumes(dancer, tmp_path):
    import json

    d, _, _ = dancer
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    face = {**TINY, "steps": 100000}
    cmd = [sys.executable, "-m", "steps.gan.face", "--threads", "1", "--frames", str(d / "frames.npy"),
           "--pose", str(d / "pose.parquet"), "--generator", str(d / "g/generator.pt"), "--out-dir", str(tmp_path),
           "--ckpt-dir", str(tmp_path / "ck")]
    p = subprocess.Popen(cmd + ["--settings", json.dumps(face)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    live = tmp_path / "ck/face_loss.csv"
    t0 = time.time()
    while time.time() - t0 < 120 and (not live.exists() or len(live.read_text().splitlines()) < 4):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, out[-2000:]
    ckpts = sorted((tmp_path / "ck").glob("step_*.pt"))
    assert len(ckpts) == 1 and "stopped by SIGTERM" in out
    step = torch.load(ckpts[0], weights_only=True)["step"]
    assert step >= 3
    face["steps"] = step + 2
    r = subprocess.run(cmd + ["--settings", json.dumps(face)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming from {ckpts[0]}" in r.stderr and (tmp_path / "face.pt").exists()


@pytest.mark.slow
def test_changed_face_settings_stop_a_budget_raise_continues_and_init_from_starts(dancer, tmp_path):
    from steps.atomic import DamagedFile
    from steps.render.inference import load_face, read_meta

    d, _, pose = dancer
    args = (d / "frames.npy", pose, d / "g/generator.pt", tmp_path, tmp_path / "ck")
    train_face(FaceTrainConfig.from_dict({**TINY, "steps": 2}), *args, progress=False)
    with pytest.raises(ValueError, match=r"face.lr_G: 0.001 -> 0.002") as e:
        train_face(FaceTrainConfig.from_dict({**TINY, "steps": 4, "lr_G": 2e-3}), *args, progress=False)
    assert "face.continue: true" in str(e.value)
    assert train_face(FaceTrainConfig.from_dict({**TINY, "steps": 3}), *args, progress=False)["step"] == 3
    r = train_face(FaceTrainConfig.from_dict({**TINY, "steps": 4, "lr_G": 2e-3, "continue": True}), *args,
                   progress=False)
    assert r["done"] and r["step"] == 4
    # another face GAN starts from this one's G_f and D_f, and says so
    start = FaceTrainConfig.from_dict({**TINY, "steps": 2, "init_from": str(tmp_path / "face.pt")})
    train_face(start, d / "frames.npy", pose, d / "g/generator.pt", tmp_path / "b", tmp_path / "b/ck", progress=False)
    assert read_meta(tmp_path / "b/face.pt")["init_from"]["path"] == str(tmp_path / "face.pt")
    # a truncated face.pt is named with the rule that writes it again
    b = (tmp_path / "face.pt").read_bytes()
    (tmp_path / "face.pt").write_bytes(b[: len(b) // 3])
    with pytest.raises(DamagedFile, match="rerun train_face"):
        load_face(tmp_path / "face.pt")
