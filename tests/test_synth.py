"""The rendered dancers: deterministic, two different bodies and placements, a valid truth table,
and a figure the real MediaPipe detector reads correctly (the premise of the demo and of every
fresh-clone test that needs a person)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from steps import synth
from steps.prepare.posetable import PARTS, B, read_pose
from steps.synth.cli import main as synth_main

FPS = 15


@pytest.fixture(scope="module")
def clips():
    """8 s of each preset at the demo size; skeletons only (cheap), frames rendered on demand."""
    return {name: synth.make_clip(name, 8, FPS, 256, 256, seed=3) for name in synth.PRESETS}


def body(clip, name):
    return clip.truth(name, name).parts["body"]


def height_px(b):
    return np.linalg.norm(b[:, B["Nose"], :2] - (b[:, B["RAnkle"], :2] + b[:, B["LAnkle"], :2]) / 2, axis=1)


def test_same_seed_same_clip_other_seed_other_dance():
    a = synth.make_clip("source", 1, 10, 160, 160, seed=5)
    b = synth.make_clip("source", 1, 10, 160, 160, seed=5)
    c = synth.make_clip("source", 1, 10, 160, 160, seed=6)
    for i in (0, 7):
        assert np.array_equal(a.frame(i), b.frame(i))
    ta, tb, tc = (x.truth("s", "source") for x in (a, b, c))
    for part in PARTS:
        np.testing.assert_array_equal(ta.parts[part], tb.parts[part])
    assert np.nanmax(np.abs(ta.parts["body"] - tc.parts["body"])) > 2.0


def test_presets_differ_in_proportions_position_and_scale(clips):
    s, t = body(clips["source"], "source"), body(clips["target"], "target")
    hs, ht = height_px(s), height_px(t)
    # scale: the source is near and large, the target far and small
    assert np.median(hs) / np.median(ht) > 1.3
    # position: the target stands off centre and higher in the frame
    xs, xt = np.median(s[:, B["MidHip"], 0]), np.median(t[:, B["MidHip"], 0])
    assert abs(xs - 128) < 15 and xt - 128 > 25
    assert np.median(t[:, B["RAnkle"], 1]) < np.median(s[:, B["RAnkle"], 1]) - 25

    # proportions, scale-free: shoulder width and leg length per body height
    def ratio(b, a, c):
        return np.median(np.linalg.norm(b[:, B[a], :2] - b[:, B[c], :2], axis=1) / height_px(b))
    assert ratio(t, "RShoulder", "LShoulder") / ratio(s, "RShoulder", "LShoulder") > 1.1
    assert ratio(s, "RHip", "RKnee") / ratio(t, "RHip", "RKnee") > 1.04
    assert synth.PRESETS["source"].skin != synth.PRESETS["target"].skin
    assert synth.PRESETS["source"].shirt != synth.PRESETS["target"].shirt


def test_walks_near_and_far_so_stats_have_work(clips):
    """Toe y and height change as the dancer walks forward and back (far/close statistics)."""
    for name, clip in clips.items():
        b = body(clip, name)
        toe = np.maximum(b[:, B["RAnkle"], 1], b[:, B["LAnkle"], 1])
        h = height_px(b)
        assert np.ptp(toe) > 10, name
        assert np.ptp(h) / np.median(h) > 0.12, name
        # and the closer the toe (larger y), the taller the figure: real depth, not a shift
        assert np.corrcoef(toe, h)[0, 1] > 0.5, name


def test_dance_has_bends_waves_steps_and_turns(clips):
    clip = clips["source"]
    b = body(clip, "source")
    h = np.median(height_px(b))
    wrist_up = np.minimum(b[:, B["RWrist"], 1], b[:, B["LWrist"], 1]) < b[:, B["Neck"], 1]
    assert wrist_up.mean() > 0.05 and (~wrist_up).mean() > 0.3          # arm waves
    hip_rel = b[:, B["MidHip"], 1] - np.maximum(b[:, B["RAnkle"], 1], b[:, B["LAnkle"], 1])
    assert np.ptp(hip_rel) > 0.03 * h                                     # knee bends
    lift = np.array([min(sk["body"][B["RAnkle"], 1], 1) for sk in clip.skeletons])
    assert np.ptp(lift) > 0.02                                            # feet step (metres)
    yaw = np.array([np.degrees(np.arctan2(-sk["fwd"][0], -sk["fwd"][2])) for sk in clip.skeletons])
    assert 5 < np.ptp(yaw) < 60                                           # mild turns


def test_figure_is_big_enough_and_inside_the_frame(clips):
    for name, clip in clips.items():
        b = body(clip, name)
        # nose-to-ankle >= 90 px means the whole figure is >= ~105 px tall
        assert height_px(b).min() >= 90, name
        xy = b[:, :, :2]
        assert (xy >= 0).all() and (xy[..., 0] < 256).all() and (xy[..., 1] < 256).all(), name


def test_cli_writes_video_and_truth_atomically(tmp_path):
    from steps.prepare.video import probe

    video, truth = tmp_path / "out" / "dancer.mp4", tmp_path / "out" / "dancer_truth.parquet"
    synth_main(["--preset", "target", "--seconds", "1", "--fps", "10", "--width", "160",
                "--height", "120", "--seed", "2", "--video", str(video), "--truth", str(truth)])
    info = probe(video)
    assert (info.width, info.height) == (160, 120) and abs(info.fps - 10) < 1e-6
    pose = read_pose(truth)
    assert (pose.meta.subject, pose.meta.backend) == ("dancer", "synth")
    assert (pose.meta.width, pose.meta.height, pose.meta.fps) == (160, 120, 10.0)
    assert pose.meta.extra == {"preset": "target", "seed": 2}
    assert pose.n_frames == 10
    np.testing.assert_allclose(pose.time_s, np.arange(10) / 10, atol=1e-6)
    for part in ("body", "left_hand", "right_hand"):
        a = pose.parts[part]
        assert a.shape == (10, len(PARTS[part]), 3) and np.isfinite(a).all()
        assert (a[..., 2] == 1).all()
    assert np.isnan(pose.parts["face"][..., :2]).all() and (pose.parts["face"][..., 2] == 0).all()
    assert sorted(p.name for p in video.parent.iterdir()) == ["dancer.mp4", "dancer_truth.parquet"]


@pytest.mark.parametrize("bad, msg", [(dict(preset="nobody"), "unknown synth preset"),
                                      (dict(width=161), "must be even")])
def test_bad_arguments_say_what_is_wrong(bad, msg):
    kw = dict(preset="source", seconds=1, fps=10, width=160, height=160, seed=0) | bad
    with pytest.raises(ValueError, match=msg):
        synth.make_clip(**kw)


MAIN_JOINTS = ["Nose", "Neck", "RShoulder", "LShoulder", "RElbow", "LElbow", "RWrist", "LWrist",
               "MidHip", "RHip", "LHip", "RKnee", "LKnee", "RAnkle", "LAnkle"]
_PAIRS = [("RShoulder", "LShoulder"), ("RElbow", "LElbow"), ("RWrist", "LWrist"),
          ("RHip", "LHip"), ("RKnee", "LKnee"), ("RAnkle", "LAnkle")]


def score_detection(det, truth, threshold: float = 0.05,
                    min_conf: float = 0.0) -> dict:
    """How well a detector recovered the rendered skeleton.

    Body height is the truth's nose-to-ankle-midpoint distance per frame (the `height` of the
    subject statistics; about 85% of the stature, so the threshold is stricter than "5% of the
    figure"). PCK counts a main joint correct when within threshold x height; an undetected
    joint counts as wrong. A frame is swapped when, for any left/right pair, exchanging the two
    detections fits the truth better than keeping them.
    """
    tb, db = truth.parts["body"], det.parts["body"]
    h = np.linalg.norm(tb[:, B["Nose"], :2] - (tb[:, B["RAnkle"], :2] + tb[:, B["LAnkle"], :2]) / 2, axis=1)
    seen = (db[..., 2] > min_conf) & np.isfinite(db[..., 0])
    idx = [B[n] for n in MAIN_JOINTS]
    err = np.linalg.norm(db[:, idx, :2] - tb[:, idx, :2], axis=-1) / h[:, None]
    err = np.where(seen[:, idx], err, np.inf)
    ok = err < threshold
    swapped = np.zeros(len(h), bool)
    for r, l in _PAIRS:
        dr, dl, tr, tl = db[:, B[r], :2], db[:, B[l], :2], tb[:, B[r], :2], tb[:, B[l], :2]
        keep = np.linalg.norm(dr - tr, axis=1) + np.linalg.norm(dl - tl, axis=1)
        swap = np.linalg.norm(dr - tl, axis=1) + np.linalg.norm(dl - tr, axis=1)
        swapped |= swap < keep
    out = dict(
        frames=int(len(h)),
        detection_rate=float(seen.any(axis=1).mean()),
        pck=float(ok.mean()),
        pck_per_joint={n: float(ok[:, i].mean()) for i, n in enumerate(MAIN_JOINTS)},
        median_error=float(np.median(err[np.isfinite(err)])) if np.isfinite(err).any() else float("nan"),
        swap_rate=float(swapped.mean()),
        body_height_px=(float(h.min()), float(h.max())),
    )
    for hand in ("left_hand", "right_hand"):
        d, t = det.parts[hand], truth.parts[hand]
        found = np.isfinite(d[..., 0]).all(axis=1) & (d[..., 2] > min_conf).all(axis=1)
        e = np.linalg.norm(d[..., :2] - t[..., :2], axis=-1) / h[:, None]
        out[f"{hand}_rate"] = float(found.mean())
        out[f"{hand}_pck"] = float((e[found] < threshold).mean()) if found.any() else 0.0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(synth.PRESETS))
def test_mediapipe_reads_the_rendered_dancer(preset):
    """The real detector, as the pipeline runs it, on 3 s of dance at the demo's 256x256."""
    from steps.prepare.pose import extract_arrays

    clip = synth.make_clip(preset, 3, FPS, 256, 256, seed=3)
    frames = np.stack(list(clip.frames()))
    det = extract_arrays(frames, FPS, subject=preset)
    score = score_detection(det, clip.truth(preset, preset))
    print(f"\n{preset}: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                     for k, v in score.items() if k != "pck_per_joint"}))
    assert score["detection_rate"] == 1.0
    assert score["pck"] >= 0.95, score["pck_per_joint"]
    assert score["swap_rate"] <= 0.01
