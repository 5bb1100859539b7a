"""Temporal smoothing and gap filling of pose tables."""
import numpy as np
import pandas as pd
import pytest

from steps.prepare.posetable import B, PoseMeta, empty_arrays, read_pose, write_pose
from steps.prepare.smooth import fill_gaps, gaussian_smooth, median_smooth, one_euro, smooth_pose


def test_fill_gaps_interpolates_short_interior_gaps_only():
    s = np.array([0, np.nan, np.nan, 3, np.nan, np.nan, np.nan, np.nan, 8, np.nan], float)[:, None]
    out, mask = fill_gaps(s, max_gap=3)
    np.testing.assert_allclose(out[:4, 0], [0, 1, 2, 3])
    assert np.isnan(out[4:8, 0]).all()      # a gap of 4 > max_gap stays missing
    assert np.isnan(out[9, 0])              # a trailing gap is never extrapolated
    assert mask[:, 0].tolist() == [False, True, True] + [False] * 7


def test_median_removes_a_one_frame_spike_and_keeps_nan():
    s = np.full((11, 1), 5.0)
    s[5] = 100
    s[8] = np.nan
    out = median_smooth(s, 3)
    assert out[5, 0] == 5 and np.isnan(out[8, 0])


def test_gaussian_keeps_constants_and_ignores_missing_neighbours():
    s = np.full((20, 2), 7.0)
    s[3] = np.nan
    out = gaussian_smooth(s, 1.5)
    np.testing.assert_allclose(out[np.isfinite(out)], 7.0)
    assert np.isnan(out[3]).all()


def test_one_euro_reduces_jitter_and_follows_a_ramp():
    rng = np.random.default_rng(0)
    t = np.arange(200)
    clean = 0.5 * t
    noisy = (clean + rng.normal(0, 2, 200))[:, None]
    out = one_euro(noisy, fps=30, min_cutoff=1.0, beta=0.05)
    assert np.abs(out[50:, 0] - clean[50:]).mean() < 0.7 * np.abs(noisy[50:, 0] - clean[50:]).mean()


@pytest.mark.parametrize("method", ["median", "gaussian", "one_euro", "none"])
def test_smooth_pose_marks_filled_points_and_keeps_the_schema(method, tmp_path):
    n = 20
    pose = empty_arrays(n, PoseMeta("bob", 100, 100, 10.0, "test"))
    body = pose.parts["body"]
    body[..., 0] = np.linspace(10, 50, n)[:, None]
    body[..., 1] = 60.0
    body[..., 2] = 0.9
    body[5:8, B["LWrist"]] = [np.nan, np.nan, 0]   # a 3-frame gap: filled
    body[:, B["RWrist"], 2] = 0.1                  # never confident: stays missing
    out = smooth_pose(pose, method=method, window=3, max_gap=5, min_confidence=0.3)
    lw = out.parts["body"][:, B["LWrist"]]
    assert np.isfinite(lw[5:8, :2]).all() and (lw[5:8, 2] == pytest.approx(0.9))
    lag = 3.0 if method == "one_euro" else 1e-3  # a causal filter trails a ramp
    np.testing.assert_allclose(lw[5:8, 0], np.linspace(10, 50, n)[5:8], atol=lag)
    assert out.filled["body"][5:8, B["LWrist"]].all() and out.filled["body"].sum() == 3
    assert np.isnan(out.parts["body"][:, B["RWrist"], 0]).all()
    assert (out.parts["body"][:, B["RWrist"], 2] == 0).all()
    path = tmp_path / "s.parquet"
    write_pose(out, path)
    df = pd.read_parquet(path)
    assert df["filled"].dtype == bool and df["filled"].sum() == 3
    back = read_pose(path)
    assert back.filled["body"].sum() == 3 and back.meta.extra["smoothing"]["method"] == method


def test_face_and_hand_gaps_are_filled_like_body_gaps():
    n = 12
    pose = empty_arrays(n, PoseMeta("bob", 100, 100, 10.0, "test"))
    track = np.linspace(10, 60, n)
    for part, conf in (("body", 0.9), ("face", 1.0), ("left_hand", 1.0), ("right_hand", 1.0)):
        arr = pose.parts[part]
        arr[..., 0], arr[..., 1], arr[..., 2] = track[:, None], 30.0, conf
        arr[4:7] = [np.nan, np.nan, 0]  # the same 3-frame gap in every part
    out = smooth_pose(pose, method="none", max_gap=5)
    for part in ("body", "face", "left_hand", "right_hand"):
        arr = out.parts[part]
        np.testing.assert_allclose(arr[4:7, :, 0], np.repeat(track[4:7, None], arr.shape[1], 1), atol=1e-4)
        assert out.filled[part][4:7].all() and out.filled[part].sum() == 3 * arr.shape[1]
        assert (arr[4:7, :, 2] == pose.parts[part][3, 0, 2]).all()


@pytest.mark.parametrize("method", ["median", "gaussian", "one_euro", "none"])
def test_a_long_video_smoothed_block_by_block_from_its_file_equals_the_whole_at_once(method, tmp_path):
    """2,500 frames with gaps across the blocks' edges: smooth_pose's rule (PoseFile read block by
    block with its margin, PoseWriter) writes exactly what one pass over the whole video gives."""
    from test_posetable import random_pose

    from steps.prepare.smooth import BLOCK, _smooth_part, main

    pose = random_pose(2500, seed=7)
    for part, arr in pose.parts.items():
        for t in (BLOCK - 2, 2 * BLOCK + 1, 1500):  # gaps of 3 frames straddling block edges
            arr[t:t + 3] = [np.nan, np.nan, 0]
    write_pose(pose, tmp_path / "in.parquet")
    main(["--pose", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "out.parquet"),
          "--settings", f'{{"method": "{method}"}}'])
    out = read_pose(tmp_path / "out.parquet")
    assert out.meta.extra["smoothing"]["method"] == method
    for part, arr in pose.parts.items():
        want, filled = _smooth_part(arr, slice(None), method, 5, 1.0, 5, 0.3, 15.0, 1.0, 0.05, {})
        np.testing.assert_array_equal(out.parts[part], want)
        np.testing.assert_array_equal(out.filled[part], filled)
        assert filled[BLOCK - 2:BLOCK + 1].any()  # the gap across the first block's edge was filled
