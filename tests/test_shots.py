"""A source joined from clips (a montage): its shots found from the pose table, each normalized on
its own statistics, the pose kept inside the target's frame, the frames where it cannot named."""
import json
import logging
from dataclasses import asdict

import numpy as np
import pytest

from steps import synth
from steps.evaluate.score import outside_frame
from steps.prepare.normalize import keep_inside, main, normalize, normalize_source
from steps.prepare.posetable import B, PoseArrays, PoseMeta, empty_arrays, read_pose, write_pose
from steps.prepare.shots import describe_ranges, detect_shots, runs
from steps.prepare.stats import write_json
from steps.settings import section
from test_normalize import stats_of, walking_subject

W = H = 256


def walker(n, seed):
    """test_normalize's walking figure with a body's torso (its joints sit at random heights):
    the neck at 0.8 of its height, the mid-hip at 0.5."""
    pose = walking_subject(n, seed)
    body = pose.parts["body"]
    toe, h = body[:, B["RAnkle"], 1], body[:, B["RAnkle"], 1] - body[:, B["Nose"], 1]
    body[:, B["Neck"], 1], body[:, B["MidHip"], 1] = toe - 0.8 * h, toe - 0.5 * h
    body[:, B["Neck"], 0] = body[:, B["MidHip"], 0]
    return pose


def rendered(preset, seconds, seed, fps=10):
    return synth.make_clip(preset, seconds, fps, W, H, seed=seed).truth(preset, preset)


def join(*poses: PoseArrays) -> PoseArrays:
    """Clips end to end: one source of several shots."""
    out = empty_arrays(sum(p.n_frames for p in poses), PoseMeta("montage", W, H, poses[0].meta.fps, "synth"))
    for part in out.parts:
        out.parts[part][:] = np.concatenate([p.parts[part] for p in poses])
    return out


def zoom(pose: PoseArrays, k, dx=0.0, dy=0.0) -> PoseArrays:
    out = pose.copy()
    for a in out.parts.values():
        a[..., 0], a[..., 1] = k * a[..., 0] + dx, k * a[..., 1] + dy
    return out


def frames(pose: PoseArrays, a, b) -> PoseArrays:
    return PoseArrays({k: v[a:b] for k, v in pose.parts.items()}, pose.time_s[a:b], pose.meta)


def run(pose, src, tgt, **settings):
    return normalize_source(pose, src, tgt, section("normalize", settings), section("stats", {}))


def test_one_continuous_shot_is_one_shot():
    for pose in (walker(200, 3), rendered("source", 12, 1, fps=30), rendered("target", 12, 2, fps=30)):
        assert detect_shots(pose.parts["body"]) == [(0, pose.n_frames)]


def test_a_cut_a_zoom_and_a_person_lost_and_found_elsewhere_start_shots():
    a, b = rendered("source", 6, 1), rendered("target", 6, 4)
    assert detect_shots(join(a, b).parts["body"]) == [(0, 60), (60, 120)]           # another person
    assert detect_shots(join(a, zoom(a, 1.6, -80, -120)).parts["body"]) == [(0, 60), (60, 120)]  # a zoom
    lost = join(a, zoom(a, 1.0, 90, 0))
    for part in lost.parts.values():
        part[55:65] = np.nan                                                        # nobody for 10 frames
    assert detect_shots(lost.parts["body"]) == [(0, 65), (65, 120)]                 # found elsewhere


def test_rendered_source_with_a_cut_is_normalized_per_shot():
    """Two rendered dancers at different sizes joined into one source (a cut at frame 80):
    per shot, each dancer's far and close ankle lines and heights land on the target's; the
    one global mapping fitted to both misses them by more than ten pixels."""
    cut = join(rendered("source", 8, 1), zoom(rendered("target", 8, 4), 1.3, -40, -60))
    tgt = stats_of(rendered("target", 12, 2))
    src = stats_of(cut)
    keys = ("far", "close", "height_far", "height_close")

    def misses(out):
        return [max(abs(getattr(stats_of(frames(out, a, b)), k) - getattr(tgt, k)) for k in keys)
                for a, b in ((0, 80), (80, 160))]

    per_shot, report = run(cut, src, tgt, smooth_window=5)
    assert [(s["start"], s["end"], s["mapping"]) for s in report["shots"]] == [(0, 80, "far_close"), (80, 160, "far_close")]
    assert max(misses(per_shot)) < 1.5, misses(per_shot)
    glob, _ = run(cut, src, tgt, smooth_window=5, shots="none", keep_inside=False)
    assert max(misses(glob)) > 10, misses(glob)
    assert per_shot.meta.extra["shots"] == report["shots"]


def test_a_single_shot_is_normalized_as_the_global_mapping_is():
    target = walker(60, 1)
    for k, dx, horizontal in ((0.6, 20.0, "anchor"), (1.3, -30.0, "keep")):
        source = zoom(target, k, dx, 10.0)
        src, tgt = stats_of(source), stats_of(target)
        out, report = run(source, src, tgt, smooth_window=5, horizontal=horizontal)
        assert len(report["shots"]) == 1 and report["inside"]["frames_moved"] == 0
        glob = normalize(source, src, tgt, 5, horizontal)
        for part in out.parts:
            np.testing.assert_array_equal(out.parts[part], glob.parts[part])


def test_a_short_or_still_shot_takes_its_median_scale_and_foot():
    """A shot of 8 frames (fewer than shot_min_fit_frames) maps as one similarity: its median
    height onto the target's, its median foot onto the target's median foot."""
    tgt = stats_of(rendered("target", 12, 2))
    short = zoom(rendered("source", 0.8, 3), 0.5, 60, 40)
    source = join(rendered("source", 6, 1), short)
    out, report = run(source, stats_of(source), tgt, keep_inside=False)
    assert [s["mapping"] for s in report["shots"]] == ["far_close", "median"]
    got = stats_of(frames(out, 60, 68))
    assert got.median_toe == pytest.approx(tgt.median_toe, abs=1.0)
    assert got.median_height == pytest.approx(tgt.median_height, abs=1.0)


def test_a_shot_whose_few_upright_frames_belie_its_torso_is_sized_by_the_torso():
    """A cartwheel: a shot of 30 frames (after a cut, another framing) in which only 3 frames show
    the feet below the head, and those at a tenth of the body's height (the body turning over).
    Its median height would blow it up tenfold; the torso sizes it instead ("body"), so its torso
    lands near the target's."""
    from steps.prepare.shots import body_track

    tgt = stats_of(rendered("target", 12, 2))
    turning = zoom(rendered("source", 3, 3), 0.7, 60, 40)
    body = turning.parts["body"]
    body[:, [B["LAnkle"], B["RAnkle"]], 2] = 0                       # the feet mostly unseen ...
    for t in (5, 15, 25):                                            # ... but in three frames, just below the head
        body[t, [B["LAnkle"], B["RAnkle"]], 2] = 1
        body[t, [B["LAnkle"], B["RAnkle"]], 1] = body[t, B["Nose"], 1] + 0.1 * (body[t, B["MidHip"], 1] - body[t, B["Nose"], 1]) * 2
    source = join(rendered("source", 6, 1), turning)
    out, report = run(source, stats_of(source), tgt, keep_inside=False)
    shot = report["shots"][-1]
    assert shot["mapping"] == "body" and shot["height_from_feet"] > 0, shot
    torso = np.nanmedian(body_track(frames(out, 60, 90).parts["body"])["torso"])
    target_torso = np.nanmedian(body_track(rendered("target", 12, 2).parts["body"])["torso"])
    assert 0.8 < torso / target_torso < 1.25, (torso, target_torso)


def test_keep_inside_shifts_and_shrinks_a_pose_into_the_frame():
    pose = walker(30, 2)
    body = pose.parts["body"]
    for part in pose.parts.values():
        part[..., 0] += 150                                   # off the right edge
    body[20:, :, 1] = 128 + 2.5 * (body[20:, :, 1] - 128)     # and taller than the frame
    out, moved, outside = keep_inside(pose, min_scale=0.3)
    pts = np.concatenate(list(out.parts.values()), axis=1)
    assert moved.all() and not outside.any()
    assert np.nanmin(pts[..., :2]) >= -1e-3 and np.nanmax(pts[..., 0]) <= W - 1 + 1e-3
    assert np.nanmax(pts[..., 1]) <= H - 1 + 1e-3
    assert not outside_frame(out.parts["body"], H, W).any()
    # the first frames only shift: same shape, no shrink
    np.testing.assert_allclose(np.ptp(out.parts["body"][:20, :, 0], 1), np.ptp(body[:20, :, 0], 1), atol=1e-3)


def test_frames_that_cannot_be_kept_inside_are_named_in_a_warning(caplog):
    target = walker(40, 4)
    source = target.copy()
    arms = source.parts["left_hand"]
    arms[12:15, :, 0] = np.linspace(-600, 900, arms.shape[1])   # a hand spread over 6 frame widths
    src = tgt = stats_of(target)
    with caplog.at_level(logging.WARNING, logger="normalize"):
        out, report = run(source, src, tgt, smooth_window=1)
    assert report["inside"]["outside"] == [(12, 15)] and report["inside"]["frames_outside"] == 3
    assert "frames 12-14 (0.8-0.9 s)" in caplog.text and "normalize.inside_min_scale" in caplog.text
    assert not outside_frame(out.parts["body"][:12], H, W).any()


def test_cli_writes_the_shots_json(tmp_path):
    cut = join(rendered("source", 6, 1), zoom(rendered("target", 6, 4), 1.4, -50, -70))
    target = rendered("target", 12, 2)
    write_pose(cut, tmp_path / "s.parquet")
    write_json(asdict(stats_of(cut)), tmp_path / "s.json")
    write_json(asdict(stats_of(target)), tmp_path / "t.json")
    main(["--pose", str(tmp_path / "s.parquet"), "--source-stats", str(tmp_path / "s.json"),
          "--target-stats", str(tmp_path / "t.json"), "--out", str(tmp_path / "o.parquet"),
          "--shots", str(tmp_path / "o.shots.json"), "--settings", json.dumps({"smooth_window": 3})])
    shots = json.loads((tmp_path / "o.shots.json").read_text())
    assert [(s["start"], s["end"]) for s in shots["shots"]] == [(0, 60), (60, 120)]
    assert shots["inside"]["frames_outside"] == 0
    out = read_pose(tmp_path / "o.parquet")
    assert [s["start"] for s in out.meta.extra["shots"]] == [0, 60]
    assert not outside_frame(out.parts["body"], H, W).any()


def test_runs_and_their_description():
    mask = np.zeros(20, bool)
    mask[[2, 3, 4, 9, 19]] = True
    assert runs(mask) == [(2, 5), (9, 10), (19, 20)]
    assert describe_ranges(runs(mask)) == "2-4, 9, 19"
    assert describe_ranges(runs(mask), fps=10, most=1) == "2-4 (0.2-0.4 s) and 2 more ranges"


def test_a_montage_of_many_shots_stays_inside_the_frame_per_shot():
    """Eight rendered shots, two dancers at sizes 0.4x to 2x and anywhere in the frame, with
    what the frame cuts off unseen (the zooms lose their feet or head), joined into one
    source: every cut is found, and per shot the normalized pose is inside the target's frame
    in >= 95% of the frames (the issue's goal) before keep_inside, where one global mapping
    puts it outside in most of them."""
    rng = np.random.default_rng(3)
    shots, cuts = [], [0]
    for i in range(8):
        k = rng.uniform(0.4, 2.0)
        shot = zoom(rendered(["source", "target"][i % 2], rng.uniform(2, 6), 10 + i),
                    k, rng.uniform(-60, 60) + (1 - k) * 128, rng.uniform(-90, 90) + (1 - k) * 128)
        for a in shot.parts.values():
            cut_off = (a[..., 0] < 0) | (a[..., 0] >= W) | (a[..., 1] < 0) | (a[..., 1] >= H)
            a[..., 2] = np.where(cut_off, 0.0, a[..., 2])
        shots.append(shot)
        cuts.append(cuts[-1] + shot.n_frames)
    montage = join(*shots)
    src, tgt = stats_of(montage), stats_of(rendered("target", 12, 2))
    inside = {}
    for label, shots_key in (("global", "none"), ("per shot", "auto")):
        out, report = run(montage, src, tgt, shots=shots_key, keep_inside=False)
        seen = (out.parts["body"][..., 2] >= 0.3).any(1)
        inside[label] = 1 - outside_frame(out.parts["body"], H, W)[seen].mean()
    assert [s["start"] for s in report["shots"]] == cuts[:-1]
    assert inside["per shot"] >= 0.95 and inside["global"] < 0.8, inside


def test_the_picture_confirms_a_cut_and_rejects_a_dancer_who_only_bends():
    """Two rendered clips (different dancers, rooms) joined: the cut at frame 20 changes the
    picture (> 0.9) and is kept; a pose jump inside the first clip's frames (its pose zoomed from
    frame 10 on, the picture unchanged, < 0.01) is dropped and reported."""
    from steps.prepare.shots import confirm_cuts, picture_change

    a, b = synth.make_clip("source", 2, 10, W, H, seed=1), synth.make_clip("target", 2, 10, W, H, seed=4)
    frames = np.stack([*a.frames(), *b.frames()])
    assert picture_change(frames, 20) > 0.9 and max(picture_change(frames, t) for t in range(1, 20)) < 0.05
    shots, dropped = confirm_cuts([(0, 10), (10, 20), (20, 40)], frames, window=3, min_change=0.1)
    assert shots == [(0, 20), (20, 40)]
    assert [d["frame"] for d in dropped] == [10] and dropped[0]["picture_change"] < 0.05
    assert confirm_cuts([(0, 40)], frames) == ([(0, 40)], [])


def test_normalize_pose_with_the_frames_keeps_one_mapping_through_a_pose_jump(tmp_path):
    """normalize_pose --frames on one rendered clip whose pose jumps (zoomed 1.6x from frame 30 on,
    as a dancer crouching towards the camera can): the pose alone cuts it in two shots, the
    picture says one; the shots JSON names the dropped cut."""
    from steps.prepare.framestore import save_frames

    clip = synth.make_clip("source", 6, 10, W, H, seed=1)
    pose = clip.truth("source", "source")
    jumped = join(frames(pose, 0, 30), zoom(frames(pose, 30, 60), 1.6, -80, -120))
    save_frames(clip.frames(), tmp_path / "store", 10)
    write_pose(jumped, tmp_path / "p.parquet")
    tgt = stats_of(rendered("target", 12, 2))
    write_json(asdict(stats_of(jumped)), tmp_path / "s.json")
    write_json(asdict(tgt), tmp_path / "t.json")
    common = ["--pose", str(tmp_path / "p.parquet"), "--source-stats", str(tmp_path / "s.json"),
              "--target-stats", str(tmp_path / "t.json"), "--out", str(tmp_path / "n.parquet")]
    main(common + ["--shots", str(tmp_path / "alone.json")])
    main(common + ["--shots", str(tmp_path / "seen.json"), "--frames", str(tmp_path / "store" / "frames.mjpeg")])
    alone, seen = (json.loads((tmp_path / f).read_text()) for f in ("alone.json", "seen.json"))
    assert [(s["start"], s["end"]) for s in alone["shots"]] == [(0, 30), (30, 60)]
    assert [(s["start"], s["end"]) for s in seen["shots"]] == [(0, 60)]
    assert [d["frame"] for d in seen["cuts_not_in_the_picture"]] == [30]
