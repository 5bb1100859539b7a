"""The transfer scored (steps.evaluate.score, rule score_transfer): the real detector finds the
person in a rendered dancer, at a keypoint distance near its own floor, and nobody in noise frames,
which prints the warning; the rule is planned for every transfer."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, snakemake, write_config
from steps.prepare.framestore import save_frames
from steps.evaluate.score import found_warning, person_found, score_row, score_table
from steps.prepare.posetable import B, write_pose
from steps.synth import make_clip
from steps.prepare.video import write_video

W, H, FPS = 192, 256, 10


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A rendered dancer (its video, frames store and ground-truth pose table) and noise frames
    of the same length and size."""
    d = tmp_path_factory.mktemp("score")
    clip = make_clip("target", 2.0, FPS, W, H, seed=3)
    frames = np.stack(list(clip.frames()))
    write_video(d / "dancer.mp4", frames, FPS)
    save_frames(frames, d, FPS)
    write_pose(clip.truth("tgt", "target"), d / "truth.parquet")
    noise = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)
    write_video(d / "noise.mp4", noise, FPS)
    return d


def score_cli(d, video: str, *extra: str) -> subprocess.CompletedProcess:
    """python -m steps.evaluate.score on `video`, against the dancer's poses and frames."""
    cmd = [sys.executable, "-m", "steps.evaluate.score", "--video", str(d / video), "--pose", str(d / "truth.parquet"),
           "--target-frames", str(d / "frames.mjpeg"), "--target-pose", str(d / "truth.parquet"),
           "--csv", str(d / f"{video}.csv"), "--markdown", str(d / f"{video}.md"), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)


def test_person_found_needs_both_shoulders_and_both_hips():
    body = np.zeros((4, 25, 3), np.float32)
    torso = [B[j] for j in ("RShoulder", "LShoulder", "RHip", "LHip")]
    body[:, torso, 2] = 0.9
    body[1, B["LHip"], 2] = 0.4            # one hip barely seen
    body[2, B["RShoulder"]] = np.nan       # one shoulder missing
    body[3, :, 2] = 0.9                    # everything seen
    assert person_found(body).tolist() == [True, False, False, True]
    assert person_found(body, 0.95).tolist() == [False] * 4


def test_table_and_warning_from_detections():
    """score_row / score_table / found_warning on keypoints alone: 1 of 4 frames found is 25%,
    below a 50% threshold; the real row sets the temporal reference."""
    inp = {"body": np.zeros((4, 25, 3), np.float32), "face": np.zeros((4, 468, 3), np.float32),
           "left_hand": np.zeros((4, 21, 3), np.float32), "right_hand": np.zeros((4, 21, 3), np.float32)}
    inp["body"][..., :2] = 50
    inp["body"][..., 2] = 1
    det = {k: v.copy() for k, v in inp.items()}
    det["body"][1:, :, 2] = 0               # found only in frame 0, exactly in place
    df = score_table(score_row("transfer", det, inp, 6.0), score_row("target real frames", inp, inp, 2.0))
    t, r = df.iloc[0], df.iloc[1]
    assert (t["person_found"], t["found_frames"], t["missed_body"], t["pose_body_px"]) == (0.25, 1, 3, 0.0)
    assert (r["person_found"], t["temporal_ratio"], r["temporal_ratio"]) == (1.0, 3.0, 1.0)
    msg = found_warning(df, 0.5, "x.mp4")
    assert "x.mp4" in msg and "1 of 4 frames" in msg and "min_person_found" in msg
    assert found_warning(df, 0.25, "x.mp4") is None


def test_rendered_dancer_scores_high_without_a_warning(files):
    r = score_cli(files, "dancer.mp4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert " evaluate WARNING " not in r.stderr
    df = pd.read_csv(files / "dancer.mp4.csv").set_index("row")
    t, floor = df.loc["transfer"], df.loc["target real frames"]
    assert t["frames"] == floor["frames"] == FPS  # evaluate.score_stride 2: the detector sees every other frame
    assert t["person_found"] >= 0.9 and floor["person_found"] >= 0.9
    # the keypoints land where the input put them: a few pixels, near the detector's own floor
    assert t["pose_body_px"] < 0.03 * H and t["pose_body_px"] < floor["pose_body_px"] + 3
    assert t["missed_body"] == 0 and t["n_body"] == FPS
    assert 0.7 < t["temporal_ratio"] < 1.4          # the same frames, through H.264
    assert re.search(r"^\| transfer \| 10 \| (1\.000|0\.9\d\d) \|", (files / "dancer.mp4.md").read_text(), re.M)
    # every frame scored: the same figures within the detector's frame-to-frame spread
    r = score_cli(files, "dancer.mp4", "--settings", '{"score_stride": 1}')
    every = pd.read_csv(files / "dancer.mp4.csv").set_index("row").loc["transfer"]
    assert every["frames"] == 2 * FPS and abs(every["pose_body_px"] - t["pose_body_px"]) < 1.5
    assert every["temporal_change"] == pytest.approx(t["temporal_change"])  # every frame in both


def test_noise_frames_person_not_found_and_the_warning_printed(files):
    r = score_cli(files, "noise.mp4", "--settings", '{"min_person_found": 0.6}')
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(files / "noise.mp4.csv").set_index("row")
    assert df.loc["transfer", "person_found"] <= 0.1
    assert df.loc["target real frames", "person_found"] >= 0.9
    assert df.loc["transfer", "temporal_ratio"] > 5    # noise changes every pixel every frame
    warning = [line for line in r.stderr.splitlines() if " evaluate WARNING " in line]
    assert len(warning) == 1 and "noise.mp4" in warning[0] and "fewer than evaluate.min_person_found 60%" in warning[0]


def test_a_video_that_is_not_the_transfer_of_these_poses_is_named(files, tmp_path):
    short = tmp_path / "short.mp4"
    write_video(short, np.zeros((5, H, W, 3), np.uint8), FPS)
    r = score_cli(files, "dancer.mp4", "--video", str(short))
    assert r.returncode != 0
    assert re.search(r"short\.mp4 has 5 frames, its normalized poses .*truth\.parquet 20", r.stderr)
    assert not (files / "short.mp4.csv").exists()


def test_the_rule_scores_every_transfer_in_the_dag(tmp_path):
    """A dry run of a config built here: score_transfer planned once per transfer, in `all`."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp4").write_bytes(b"")   # a dry run only needs the files to exist
    write_config(tmp_path, {"subjects": {"a": {"video": "a.mp4"}, "b": {"video": "b.mp4"}},
                            "transfers": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}],
                            "evaluate": {"min_person_found": 0.7}})
    r = snakemake(tmp_path, "-n")
    assert re.search(r"^score_transfer\s+2$", r.stdout, re.M), r.stdout[-3000:]
    for pair in ("a__b", "b__a"):
        assert f"results/eval/{pair}_transfer.csv" in r.stdout
    assert '"min_person_found": 0.7' in snakemake(tmp_path, "-n", "-p", "results/eval/a__b_transfer.csv").stdout


@pytest.mark.slow
def test_the_rule_on_a_ghost_warns_in_its_log_and_on_the_terminal(files, tmp_path):
    """score_transfer run by Snakemake on existing inputs (noise as the transfer): the job
    succeeds, writes its table, and its WARNING is in the log and in Snakemake's own output."""
    import shutil

    # each file newer than the ones it is made from, so nothing upstream is out of date
    for age, (src, dst) in enumerate((("frames.mjpeg", "results/frames/b/frames.mjpeg"),
                                      ("manifest.parquet", "results/frames/b/manifest.parquet"),
                                      ("truth.parquet", "results/pose_smooth/b.parquet"),
                                      ("truth.parquet", "results/normalized/a__b.parquet"),
                                      ("noise.mp4", "results/transfer/a__b.mp4"))):
        (tmp_path / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files / src, tmp_path / dst)
        os.utime(tmp_path / dst, (1000 + age, 1000 + age))
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp4").write_bytes(b"")   # older than the results: nothing upstream reruns
        os.utime(tmp_path / f"{name}.mp4", (1, 1))
    write_config(tmp_path, {"subjects": {"a": {"video": "a.mp4"}, "b": {"video": "b.mp4"}},
                            "transfers": [{"source": "a", "target": "b"}]})
    r = snakemake(tmp_path, "--cores", "1", "results/eval/a__b_transfer.csv")
    assert re.search(r"^score_transfer\s+1$", r.stdout, re.M) and not re.search(r"^transfer\s+1$", r.stdout, re.M)
    df = pd.read_csv(tmp_path / "results/eval/a__b_transfer.csv").set_index("row")
    assert df.loc["transfer", "person_found"] <= 0.1
    line = "evaluate WARNING results/transfer/a__b.mp4: the person is found in"
    assert line in (tmp_path / "logs/score_transfer/a__b.log").read_text()
    assert line in r.stdout


def test_a_pose_outside_the_frame_and_the_figures_per_minute():
    from steps.evaluate.score import outside_frame, per_minute

    body = np.full((4, 25, 3), 10.0, np.float32)
    body[1, 3, 0] = -5.0    # a joint left of the frame
    body[2, 4, 1] = 120.0   # below it (height 100)
    body[3, 5, :] = (500.0, 500.0, 0.1)  # outside, but not seen: does not count
    np.testing.assert_array_equal(outside_frame(body, 100, 100), [False, True, True, False])
    # 150 frames at 1 fps: three minutes of 60, 60 and 30 frames; the person lost in the last
    n = 150
    det_body = np.zeros((n, 25, 3), np.float32)
    det_body[..., :2], det_body[..., 2] = 10.0, 1.0
    det_body[120:, :, 2] = 0.0
    inp_body = det_body.copy()
    inp_body[..., 2] = 1.0
    inp_body[:60, :, 0] += 2.0  # the first minute 2 px off
    empty = {p: np.full((n, k, 3), np.nan, np.float32) for p, k in (("face", 468), ("left_hand", 21), ("right_hand", 21))}
    rows = per_minute({"body": det_body, **empty}, {"body": inp_body, **empty}, 1.0, 100, 100, 0.3, 0.5)
    assert [r["frames"] for r in rows] == [60, 60, 30]
    assert [r["person_found"] for r in rows] == [1.0, 1.0, 0.0]
    assert rows[0]["pose_body_px"] == pytest.approx(2.0) and rows[1]["pose_body_px"] == pytest.approx(0.0)
    assert all(r["pose_outside"] == 0.0 for r in rows)
