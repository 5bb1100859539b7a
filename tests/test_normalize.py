"""Subject statistics and global pose normalization, with hypothesis properties."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from steps.prepare.normalize import normalize
from steps.prepare.posetable import B, PoseMeta, empty_arrays
from steps.prepare.stats import StatsError, compute_stats, per_frame


def walking_subject(n=40, seed=0, width=256, height=256, name="t"):
    """A figure walking towards and away from the camera: feet lower and body taller when close."""
    rng = np.random.default_rng(seed)
    pose = empty_arrays(n, PoseMeta(name, width, height, 15.0, "test"))
    body = pose.parts["body"]
    depth = 0.5 + 0.5 * np.sin(np.linspace(0, 3 * np.pi, n))          # 0 far .. 1 close
    toe = 150 + 60 * depth + rng.normal(0, 1, n)
    h = 80 + 60 * depth
    cx = 120 + rng.normal(0, 3, n)
    rel = rng.uniform(0.05, 0.95, (25,))                               # height fraction per joint
    body[..., 1] = toe[:, None] - rel[None] * h[:, None]
    body[..., 0] = cx[:, None] + rng.normal(0, 10, (n, 25))
    body[..., 2] = 1.0
    lift = np.abs(rng.normal(0, 2, n))
    body[:, B["LAnkle"], 1] = toe - lift
    body[:, B["RAnkle"], 1] = toe
    body[:, B["Nose"], 1] = toe - h
    body[:, B["MidHip"], 0] = cx
    for part in ("left_hand", "right_hand", "face"):
        pose.parts[part][..., 0] = cx[:, None] + rng.normal(0, 5, pose.parts[part].shape[:2])
        pose.parts[part][..., 1] = (toe - 0.7 * h)[:, None] + rng.normal(0, 5, pose.parts[part].shape[:2])
        pose.parts[part][..., 2] = 1.0
    return pose


def stats_of(pose):
    return compute_stats(per_frame(pose), pose.meta.subject, pose.meta.width, pose.meta.height)


def xy(pose):
    return np.concatenate([a[..., :2].reshape(len(a), -1) for a in pose.parts.values()], axis=1)


def test_stats_find_far_and_close_and_heights():
    s = stats_of(walking_subject(200))
    assert s.far == pytest.approx(150, abs=4) and s.close == pytest.approx(210, abs=4)
    assert s.height_far == pytest.approx(80, abs=5) and s.height_close == pytest.approx(140, abs=5)
    assert s.frames_used == 200 and s.frames_far > 0 and s.frames_close > 0


def test_stats_need_visible_feet():
    pose = walking_subject(10)
    pose.parts["body"][:, B["LAnkle"], 2] = 0
    with pytest.raises(StatsError, match="'t'"):
        stats_of(pose)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), window=st.sampled_from([1, 3, 5]),
       horizontal=st.sampled_from(["anchor", "keep"]))
def test_subject_normalized_to_itself_is_identity(seed, window, horizontal):
    pose = walking_subject(30, seed)
    s = stats_of(pose)
    out = normalize(pose, s, s, smooth_window=window, horizontal=horizontal)
    np.testing.assert_allclose(xy(out), xy(pose), atol=1.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.floats(0.4, 1.6), dx=st.floats(-60, 60), dy=st.floats(-60, 40))
def test_scaled_and_shifted_copy_maps_onto_the_target(seed, k, dx, dy):
    target = walking_subject(30, seed)
    source = target.copy()
    source.meta.subject = "s"
    for arr in source.parts.values():
        arr[..., 0] = k * arr[..., 0] + dx
        arr[..., 1] = k * arr[..., 1] + dy
    out = normalize(source, stats_of(source), stats_of(target), smooth_window=1)
    np.testing.assert_allclose(xy(out), xy(target), atol=1.0)
    assert out.meta.subject == "s__t" and out.meta.extra["target"] == "t"


def test_frames_without_feet_take_their_neighbours_transform():
    target = walking_subject(30, 1)
    source = target.copy()
    for arr in source.parts.values():
        arr[..., :2] *= 0.5
    source.parts["body"][10:13, B["LAnkle"], 2] = 0  # feet unseen for three frames
    out = normalize(source, stats_of(source), stats_of(target), smooth_window=1)
    err = np.abs(xy(out) - xy(target))
    assert np.isfinite(xy(out)).all()
    assert err[10:13].max() < 10 and err[:10].max() < 1


def test_rendered_source_normalized_to_target_matches_its_ankle_line_and_heights():
    """The demo's two rendered dancers, from their ground-truth poses: after normalization the
    source's far and close ankle lines and the body heights there are the target's (within a
    few pixels), although before it they differ by tens of pixels."""
    from steps import synth

    truth = {name: synth.make_clip(name, 12, 15, 256, 256, seed=seed).truth(name, name)
             for name, seed in (("source", 1), ("target", 2))}
    src, tgt = stats_of(truth["source"]), stats_of(truth["target"])
    keys = ("far", "close", "height_far", "height_close")
    before = {k: abs(getattr(src, k) - getattr(tgt, k)) for k in keys}
    assert max(before.values()) > 20, before  # normalization has real work to do
    out = stats_of(normalize(truth["source"], src, tgt, smooth_window=5))
    after = {k: abs(getattr(out, k) - getattr(tgt, k)) for k in keys}
    assert max(after.values()) <= 3.0, (after, before)
    assert abs(out.anchor_x - tgt.anchor_x) <= 3.0
