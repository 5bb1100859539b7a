"""Pose detection on the video as it was filmed: the same frames in time as the store, keypoints
mapped into the working frame exactly as ffmpeg scales and pads or crops the picture."""
import subprocess

import numpy as np
import pytest

from steps.prepare.frames import decode_frames, native_frames, read_manifest_meta
from steps.prepare.framestore import open_frames
from steps.prepare.pose import drop_stray_hands, extract_chunk, to_working
from steps.prepare.posetable import B, PoseMeta, empty_arrays
from steps.prepare.video import FFMPEG, write_video


def index_frames(n: int, w: int = 64, h: int = 32) -> list[np.ndarray]:
    """Frame i shows i in binary as 8 black or white stripes (survives H.264 exactly)."""
    def stripes(i):
        return np.repeat(((i >> np.arange(8)) & 1).astype(np.uint8) * 255, w // 8)[None, :, None]

    return [np.broadcast_to(stripes(i), (h, w, 3)).copy() for i in range(n)]


def frame_index(frames: np.ndarray) -> np.ndarray:
    cols = frames[..., 0].max(axis=1)  # max: the store letterboxes the stripes
    w = frames.shape[2]
    bits = np.stack([cols[:, int((b + 0.5) * w / 8)] > 128 for b in range(8)], axis=1)
    return (bits * (1 << np.arange(8))).sum(axis=1)


@pytest.mark.parametrize("src_fps,fps,start,end", [(30, 15, 0, None), (30000 / 1001, 15, 0.5, None),
                                                   (12, 15, 0, None), (25, 10, 1.3, 5.3)])
def test_native_frames_are_the_stores_frames_in_time(src_fps, fps, start, end, tmp_path):
    # chunks read by seeking show the same source frames as the store's one pass, even where
    # the fps filter's choice is a tie (30 -> 15) or a frame repeats (12 -> 15)
    write_video(tmp_path / "v.mp4", index_frames(120), src_fps, crf=0)
    n = decode_frames(str(tmp_path / "v.mp4"), tmp_path / "s", fps, 64, 64, "pad", start, end, progress=False)
    meta = read_manifest_meta(tmp_path / "s")
    chunks = []
    for a in range(0, n, 7):
        size, frames = native_frames(meta, a, a + 7, 1920)
        chunks.append(np.stack(list(frames)))
    assert size == (64, 32)
    native = np.concatenate(chunks)
    assert len(native) == n
    np.testing.assert_array_equal(frame_index(native), frame_index(open_frames(tmp_path / "s")[:]))


def blob(w: int, h: int, x: float, y: float, sigma: float = 4.0) -> np.ndarray:
    """A bright Gaussian spot centred at (x, y) in pixel-edge coordinates (0 = left edge)."""
    xx, yy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    g = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.repeat(g[..., None], 3, axis=2).astype(np.uint8)


def centroid(img: np.ndarray) -> np.ndarray:
    v = img[..., 0].astype(float)
    v = np.where(v > 0.2 * v.max(), v, 0)
    yy, xx = np.indices(v.shape) + 0.5
    return np.array([(v * xx).sum(), (v * yy).sum()]) / v.sum()


def spot_parts(xy: np.ndarray) -> dict:
    """Per-part arrays holding one point per frame (the spot) as the body's nose."""
    parts = {p: a for p, a in empty_arrays(len(xy), PoseMeta("s", 1, 1, 1.0, "t")).parts.items()}
    parts["body"][:, B["Nose"], :2] = xy
    parts["body"][:, B["Nose"], 2] = 1
    return parts


@pytest.mark.parametrize("resize", ["pad", "crop"])
@pytest.mark.parametrize("src,work", [((320, 180), (96, 128)), ((180, 320), (128, 96))])
def test_points_map_into_the_working_frame_as_ffmpeg_maps_pixels(resize, src, work, tmp_path):
    (sw, sh), (ww, wh) = src, work
    spots = [(sw * 0.5, sh * 0.5), (sw * 0.45, sh * 0.4), (sw * 0.58, sh * 0.62)]  # inside the crops too
    write_video(tmp_path / "v.mp4", [blob(sw, sh, x, y) for x, y in spots], 10, crf=0)
    decode_frames(str(tmp_path / "v.mp4"), tmp_path / "s", 10, ww, wh, resize, progress=False)
    meta = read_manifest_meta(tmp_path / "s")
    # read at a capped size (max_side below the video's) to exercise that scale too
    size, frames = native_frames(meta, 0, 3, 240)
    assert max(size) == 240
    seen = np.array([centroid(f) for f in frames])
    mapped = to_working(spot_parts(seen), size, meta)["body"][:, B["Nose"], :2]
    in_store = np.array([centroid(f) for f in open_frames(tmp_path / "s")[:]])
    np.testing.assert_allclose(mapped, in_store, atol=0.35)


def test_rotated_phone_video_is_read_upright_and_maps_into_the_store(tmp_path):
    stored = [blob(320, 180, x, y) for x, y in [(60, 40), (250, 120)]]
    write_video(tmp_path / "raw.mp4", stored, 10, crf=0)
    phone = tmp_path / "phone.mp4"
    subprocess.run([FFMPEG, "-loglevel", "error", "-display_rotation", "90", "-i", str(tmp_path / "raw.mp4"),
                    "-c", "copy", str(phone)], check=True)
    decode_frames(str(phone), tmp_path / "s", 10, 96, 128, "pad", progress=False)
    meta = read_manifest_meta(tmp_path / "s")
    size, frames = native_frames(meta, 0, 2, 1920)
    frames = list(frames)
    assert size == (180, 320)
    for f, s in zip(frames, stored):  # upright: the player's 90° anticlockwise turn
        assert np.abs(f.astype(int) - np.rot90(s, 1)).mean() < 1
    mapped = to_working(spot_parts(np.array([centroid(f) for f in frames])), size, meta)["body"][:, B["Nose"], :2]
    in_store = np.array([centroid(f) for f in open_frames(tmp_path / "s")[:]])
    np.testing.assert_allclose(mapped, in_store, atol=0.35)


def test_a_hand_outside_a_cropped_frame_is_missing():
    meta = {"source_size": [400, 200], "width": 100, "height": 100, "resize": "crop"}
    parts = spot_parts(np.array([[200.0, 100.0], [10.0, 100.0]]))
    parts["left_hand"][:, :, :2] = [[[200, 100]], [[10, 100]]]  # centre; far left, cut off by the crop
    parts["left_hand"][:, :, 2] = 1
    out = to_working(parts, (400, 200), meta)
    np.testing.assert_allclose(out["body"][:, B["Nose"], :2], [[50, 50], [-45, 50]])  # body kept as is
    assert (out["left_hand"][0, :, 2] == 1).all() and np.isfinite(out["left_hand"][0]).all()
    assert (out["left_hand"][1, :, 2] == 0).all() and np.isnan(out["left_hand"][1, :, :2]).all()


@pytest.mark.parametrize("resize,work", [("pad", (192, 192)), ("crop", (192, 144))])
def test_detection_on_the_video_agrees_with_the_working_frames(resize, work, tmp_path):
    from steps.synth import make_clip

    # a landscape dancer at 512x288, working frames about half that size
    clip = make_clip("source", 1.0, 10, 512, 288, seed=1)
    write_video(tmp_path / "d.mp4", clip.frames(), 10)
    n = decode_frames(str(tmp_path / "d.mp4"), tmp_path / "s", 10, *work, resize, progress=False)
    extras = {}
    native = extract_chunk(str(tmp_path / "s"), 0, n, "video", extras=extras)
    working = extract_chunk(str(tmp_path / "s"), 0, n, "frames")
    assert extras["read_size"].tolist() == [512, 288]
    assert native["body"].shape == working["body"].shape == (n, 25, 3)
    body = np.linalg.norm(native["body"][..., :2] - working["body"][..., :2], axis=-1)
    assert np.median(body) < 1.5 and np.percentile(body, 90) < 2.5, (np.median(body), np.percentile(body, 90))
    for hand in ("left_hand", "right_hand"):
        d = np.linalg.norm(native[hand][..., :2] - working[hand][..., :2], axis=-1)
        d = d[np.isfinite(d)]
        assert len(d) and np.median(d) < 2.0, (hand, np.median(d))
    # the bigger picture gives the detector the face the small one loses (or at least as often)
    assert (native["face"][..., 2].max(1) > 0).mean() >= (working["face"][..., 2].max(1) > 0).mean()


def test_hands_far_from_their_wrist_or_without_a_body_are_dropped():
    pose = empty_arrays(4, PoseMeta("s", 100, 100, 10.0, "t"))
    body, left = pose.parts["body"], pose.parts["left_hand"]
    body[:3, :, 2] = 1
    body[:3, B["Neck"], :2] = [50, 20]
    body[:3, B["MidHip"], :2] = [50, 60]        # torso 40 px: max offset 0.5 -> 20 px
    body[:3, B["LWrist"], :2] = [70, 50]
    left[:, :, 2] = 1
    left[:, :, :2] = [[[72, 51]], [[85, 50]], [[30, 50]], [[70, 50]]]  # near, 15 px, other arm, no body
    pose.parts["right_hand"][:] = left           # no RWrist seen anywhere: all four go
    pose, info = drop_stray_hands(pose, 0.5)
    assert info == {"left_hand": 2, "right_hand": 4}
    assert (left[:2, :, 2] == 1).all() and np.isfinite(left[:2, :, :2]).all()
    assert (left[2:, :, 2] == 0).all() and np.isnan(left[2:, :, :2]).all()
