"""Evaluation metrics on known cases: identical images, known noise, shifted keypoints, a shifted
image through the real detector, temporal change, and the Markdown table."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest

from steps.evaluate.pose_distance import part_distance, pose_distances
from steps.evaluate.reconstruction import COLUMNS, to_markdown
from steps.evaluate.metrics import PSNR_CAP_DB, Perceptual, psnr, ssim, temporal_change
from steps.synth import make_clip


@pytest.fixture(scope="module")
def image():
    return make_clip("source", 0.5, 10, 192, 192, seed=0).frame(2)


def test_identical_images_ssim_1_psnr_capped_distance_0(image):
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-9)
    assert psnr(image, image) == PSNR_CAP_DB == 100.0
    p = Perceptual()
    assert p.net is not None, "ST-LPIPS weights missing: the stlpips-pytorch wheel is a requirement"
    d = p([image, image], [image, image])
    np.testing.assert_allclose(d, 0, atol=1e-6)


def test_known_noise_psnr_and_ssim_ordering(image):
    # +10 everywhere without clipping: MSE 100, PSNR = 20 log10(255 / 10) = 28.13 dB
    dark = image.astype(np.float64) * 0.8
    assert psnr(dark, dark + 10) == pytest.approx(28.1308, abs=1e-4)
    # Gaussian noise of sigma 5: MSE ~25, PSNR ~34.15 dB
    rng = np.random.default_rng(0)
    assert psnr(dark, dark + rng.normal(0, 5, dark.shape)) == pytest.approx(34.15, abs=0.05)
    # flat images: SSIM is the luminance term alone, (2 ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 255)^2
    c1 = (0.01 * 255) ** 2
    flat = np.full((32, 32, 3), 100.0)
    assert ssim(flat, flat + 50) == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1), rel=1e-9)
    small = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    large = np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    assert 1 > ssim(image, small) > ssim(image, large) > 0
    assert ssim(image, small) == pytest.approx(ssim(small, image))
    # unrelated noise shares no structure: SSIM ~0 and PSNR far below any real output's;
    # noise against its own negative is anti-correlated: SSIM near -1
    noise = rng.integers(0, 256, image.shape).astype(np.uint8)
    assert abs(ssim(image, noise)) < 0.05 and psnr(image, noise) < 10
    assert ssim(noise, 255 - noise) < -0.9
    p = Perceptual()
    assert p.net is not None, "ST-LPIPS weights missing: the stlpips-pytorch wheel is a requirement"
    ds, dl = p([image, image], [small, large])
    assert 0 < ds < dl


def test_temporal_change():
    still = [np.full((8, 8, 3), 7, np.uint8)] * 5
    assert temporal_change(still) == 0
    flicker = [np.full((8, 8, 3), v, np.uint8) for v in (0, 10, 0, 10)]
    assert temporal_change(flicker) == 10
    assert math.isnan(temporal_change(still[:1]))


def keypoints(n=4, j=5, seed=0):
    rng = np.random.default_rng(seed)
    a = np.zeros((n, j, 3), np.float32)
    a[..., :2] = rng.uniform(10, 100, (n, j, 2))
    a[..., 2] = 1
    return a


def test_part_distance_of_shifted_keypoints_is_the_shift():
    a = keypoints()
    b = a.copy()
    b[..., 0] += 3
    b[..., 1] += 4
    assert part_distance(a, a) == (0.0, 4, 0)
    d, n, missed = part_distance(a, b)
    assert d == pytest.approx(5.0) and (n, missed) == (4, 0)
    # frame 1 not detected again: missed, and left out of the mean; frame 2 lacks one joint
    b[1, :, 2] = 0
    b[2, 0] = np.nan
    b[2, 1:, :2] += 10  # further off, on the remaining joints
    d, n, missed = part_distance(a, b)
    assert (n, missed) == (4, 1)
    assert d == pytest.approx((5 + 5 + math.hypot(13, 14)) / 3, rel=1e-5)
    # a frame the input did not have does not count either way
    a[3, :, 2] = 0
    assert part_distance(a, b)[1:] == (3, 1)


def test_pose_distances_pool_both_hands_and_use_the_face_subset():
    from steps.prepare.labels import FACE_POINTS

    inp = {"body": keypoints(3, 25), "face": keypoints(3, 468, 1), "left_hand": keypoints(3, 21, 2),
           "right_hand": keypoints(3, 21, 3)}
    det = {k: v.copy() for k, v in inp.items()}
    det["left_hand"][..., 0] += 2           # left hands 2 px off, right hands exact: pooled mean 1
    other = np.setdiff1d(np.arange(468), FACE_POINTS)
    det["face"][:, other, 0] += 50          # face points outside the label subset are ignored
    det["right_hand"][0, :, 2] = 0          # one right hand missed
    r = pose_distances(inp, det)
    assert r["pose_body_px"] == 0 and r["pose_face_px"] == 0
    assert r["pose_hands_px"] == pytest.approx(2 * 3 / 5)  # 3 left hands at 2 px, 2 right hands at 0
    assert (r["missed_hands"], r["n_hands"], r["missed_body"], r["n_body"]) == (1, 6, 0, 3)


def test_a_shifted_image_gives_the_shift_as_pose_distance():
    """The real detector on a rendered dancer and on the same frames shifted by (6, 8) px:
    the body distance is ~10 px, and ~0 once the input keypoints are shifted too."""
    from steps.prepare.pose import extract_arrays

    clip = make_clip("source", 0.6, 10, 192, 192, seed=0)
    frames = np.stack(list(clip.frames()))
    m = np.float32([[1, 0, 6], [0, 1, 8]])
    shifted = np.stack([cv2.warpAffine(f, m, (192, 192), borderMode=cv2.BORDER_REPLICATE) for f in frames])
    orig = extract_arrays(frames, 10.0).parts
    moved = extract_arrays(shifted, 10.0).parts
    r = pose_distances(orig, moved)
    assert r["missed_body"] == 0 and r["n_body"] == len(frames)
    assert r["pose_body_px"] == pytest.approx(10.0, abs=2.0)
    expected = {k: v.copy() for k, v in orig.items()}
    for v in expected.values():
        v[..., 0] += 6
        v[..., 1] += 8
    assert pose_distances(expected, moved)["pose_body_px"] < 2.0


def test_markdown_table():
    rows = [{"model": "temporal smoothing", "frames": 10, "ssim": 0.5, "psnr_db": 20.0, "missed_body": 1, "n_body": 10,
             "temporal_change": 3.0, "temporal_real": 1.5},
            {"model": "real frames", "frames": 10, "temporal_change": 1.5, "temporal_real": 1.5}]
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    df["temporal_ratio"] = df["temporal_change"] / df["temporal_real"]
    md = to_markdown(df, "T", {"held_out_from": 90, "frames_total": 100, "evaluated": 10, "width": 64,
                               "generator_step": 40, "generator_last_step": 50, "face_frames": 7,
                               "height": 64, "face_box": 16})
    lines = md.splitlines()
    assert "| temporal smoothing | 10 | 0.500 | 20.00 | – |" in md
    assert any(line.startswith("| real frames | 10 | – |") for line in lines)
    assert "| 2.000 |" in md  # the ratio
    assert "(10 evaluated, 7 with a face)" in md and "generator of step 40 (the best held-out of 50 steps)" in md
