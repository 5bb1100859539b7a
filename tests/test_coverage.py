"""Coverage: how often the detector found each part, the warning for a target, and the count of
held-out frames with a face for the evaluation table."""
import json

import numpy as np
import pandas as pd

from steps.prepare.pose import extract_arrays
from steps.prepare.posetable import PoseMeta, empty_arrays, write_pose
from steps.prepare.smooth import smooth_pose
from steps.prepare.stats import coverage, face_frames, per_frame
from steps.prepare.stats import main as stats_main
from steps.synth import make_clip


def test_coverage_of_a_dancer_whose_hands_leave_the_frame():
    clip = make_clip("source", 3, 10, 256, 256, seed=2)
    x0, x1 = 72, 200  # a narrow window: the swinging arms carry the hands out of it
    frames = np.ascontiguousarray(np.stack(list(clip.frames()))[:, :, x0:x1])
    truth = clip.truth("s", "source")
    pose = smooth_pose(extract_arrays(frames, 10, "s"), max_gap=5)
    cov = coverage(pose)
    assert cov["body"]["detected"] == 1.0
    table = per_frame(pose)
    for hand in ("left_hand", "right_hand"):
        x = truth.parts[hand][..., 0]
        inside = (x >= x0) & (x <= x1)
        whole, partly = inside.all(axis=1), inside.any(axis=1)
        found = table[f"{hand}_detected"].to_numpy()
        assert 0 < whole.mean() and partly.mean() < 1  # the hand does leave the frame
        assert not found[~partly].any()                # never found where it is wholly outside
        assert found[whole].mean() >= 0.8               # found where it is wholly inside
        assert cov[hand]["detected"] == found.mean()
        assert whole.mean() - 0.1 <= cov[hand]["detected"] <= partly.mean()
        assert cov[hand]["usable"] >= cov[hand]["detected"]


def test_usable_counts_gaps_filled_by_smoothing_detected_does_not():
    pose = empty_arrays(10, PoseMeta("s", 100, 100, 10.0, "t"))
    face = pose.parts["face"]
    face[:, :, :2], face[:, :, 2] = 50.0, 1.0
    face[4:6] = [np.nan, np.nan, 0]  # a 2-frame gap: filled
    cov = coverage(smooth_pose(pose, max_gap=3))
    assert cov["face"] == {"detected": 0.8, "usable": 1.0}
    assert cov["body"] == {"detected": 0.0, "usable": 0.0}


def test_a_targets_missing_face_is_warned_about_naming_subject_and_part(tmp_path, caplog):
    clip = make_clip("target", 1, 10, 128, 128, seed=0)
    pose = smooth_pose(clip.truth("tgt", "target"))  # the rendered truth: body and hands, no face
    write_pose(pose, tmp_path / "p.parquet")
    out = {k: str(tmp_path / f"{k}") for k in ("json", "table", "plot", "coverage")}
    args = ["--pose", str(tmp_path / "p.parquet"), "--json", out["json"], "--table", out["table"] + ".parquet",
            "--plot", out["plot"] + ".png", "--coverage-plot", out["coverage"] + ".png"]
    with caplog.at_level("WARNING", logger="stats"):
        stats_main(args + ["--target", "--settings", '{"warn_face_below": 0.5, "warn_hands_below": 0.5}'])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "'tgt'" in warnings[0] and "face found in 0%" in warnings[0] and "face GAN" in warnings[0]
    cov = json.loads((tmp_path / "json").read_text())["coverage"]
    assert cov["face"]["detected"] == 0 and cov["body"]["detected"] == cov["left_hand"]["detected"] == 1
    frames = pd.read_parquet(out["table"] + ".parquet")
    assert not frames["face_usable"].any() and frames["right_hand_detected"].all()
    assert (tmp_path / "coverage.png").stat().st_size > 0
    # no thresholds (a source subject): no warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="stats"):
        stats_main(args)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_face_frames_counts_the_given_frames_that_show_a_face():
    pose = empty_arrays(20, PoseMeta("s", 100, 100, 10.0, "t"))
    pose.parts["face"][:10, :, :2], pose.parts["face"][:10, :, 2] = 40.0, 1.0
    assert face_frames(pose, np.arange(5, 15)) == 5
    assert face_frames(pose, [15, 16]) == 0
