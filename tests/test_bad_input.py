"""Awkward input a user's videos bring: rotation metadata, variable frame rate, a person who
leaves the frame, two people in frame. Each must give frames and tables, never a crash."""
import subprocess

import numpy as np
import pytest

from steps.prepare.frames import decode_frames
from steps.prepare.framestore import open_frames
from steps.prepare.normalize import normalize
from steps.prepare.pose import detection_rates, extract_arrays, keep_main_person, person_identities
from steps.prepare.posetable import B
from steps.prepare.smooth import smooth_pose
from steps.prepare.stats import compute_stats, per_frame
from steps.prepare.video import FFMPEG, probe, write_video

from conftest import clip


def test_phone_rotation_metadata_gives_upright_frames(tmp_path):
    stored = np.zeros((96, 160, 3), np.uint8)
    stored[:20, :30] = 255  # a white block in the stored frame's top-left corner
    write_video(tmp_path / "raw.mp4", [stored] * 10, 10)
    phone = tmp_path / "phone.mp4"
    # what a phone held upright writes: landscape pixels plus a display matrix turning them 90°
    subprocess.run([FFMPEG, "-loglevel", "error", "-display_rotation", "90", "-i", str(tmp_path / "raw.mp4"),
                    "-c", "copy", str(phone)], check=True)
    info = probe(phone)
    assert (info.width, info.height, info.rotation) == (96, 160, 270)  # displayed portrait
    decode_frames(str(phone), tmp_path / "f", 10, 96, 160, progress=False)
    frame = open_frames(tmp_path / "f")[:][0].astype(int)
    # a player turns the picture 90° anticlockwise: the block ends up bottom-left
    assert np.abs(frame - np.rot90(stored, 1)).mean() < 1


def test_variable_frame_rate_is_resampled_by_timestamps(tmp_path):
    # 10 frames at 10 fps then 20 frames at 20 fps; frame i has grey level 8 i
    frames = [np.full((64, 64, 3), 8 * i, np.uint8) for i in range(30)]
    write_video(tmp_path / "cfr.mp4", frames, 20, crf=0)
    vfr = tmp_path / "vfr.mp4"
    subprocess.run([FFMPEG, "-loglevel", "error", "-i", str(tmp_path / "cfr.mp4"), "-vf",
                    "setpts='if(lt(N,10),N*0.1,1.0+(N-10)*0.05)/TB'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-crf", "0", "-pix_fmt", "yuv420p", str(vfr)], check=True)
    n = decode_frames(str(vfr), tmp_path / "f", 10, 64, 64, progress=False)
    grey = open_frames(tmp_path / "f")[:][..., 0].mean(axis=(1, 2))
    source_index = np.round(grey / 8).astype(int)
    # output frame k shows what was on screen at k/10 s: frame k before 1 s, then 10 + 2(k-10)
    expected = [k if k < 10 else 10 + 2 * (k - 10) for k in range(n)]
    assert n == 20
    assert np.abs(source_index - expected).max() <= 1


@pytest.mark.slow
def test_person_leaving_the_frame_gives_marked_gaps_not_a_crash(tmp_path):
    from steps.synth import make_clip

    c = make_clip("source", 4, 10, 192, 192, seed=3)
    frames = np.stack(list(c.frames()))
    frames[15:19] = frames[0, :8, :8].mean(axis=(0, 1)).astype(np.uint8)  # 4 empty frames
    frames[25:35] = 128                                                   # 10 empty frames
    pose = extract_arrays(frames, 10, "walker")
    seen = pose.parts["body"][..., 2].max(axis=1) > 0
    assert not seen[16:19].any() and not seen[26:35].any() and seen[:15].all()
    assert detection_rates(pose)["person"] == pytest.approx(seen.mean())
    smooth = smooth_pose(pose, max_gap=5)
    body = smooth.parts["body"]
    assert smooth.filled["body"][15:19].any()               # the short absence is filled, marked
    assert np.isnan(body[27:33, B["Neck"], 0]).all()        # the long one stays missing
    st = compute_stats(per_frame(smooth), "walker", 192, 192)
    out = normalize(smooth, st, st)
    assert np.isnan(out.parts["body"][27:33, :, 0]).all()
    assert np.isfinite(out.parts["body"][:15, B["Neck"], :2]).all()


def test_person_identities_split_a_handover_and_rejoin_a_return():
    body = np.full((9, 25, 3), np.nan, np.float32)
    body[..., 2] = 0
    xs = [50, 52, 54, 200, 202, np.nan, 56, 58, 60]  # person A, B takes over, gap, A again
    for t, x in enumerate(xs):
        if np.isfinite(x):
            body[t, :, 0] = x + np.linspace(-5, 5, 25)
            body[t, :, 1] = np.linspace(10, 90, 25)
            body[t, :, 2] = 1
    assert person_identities(body).tolist() == [0, 0, 0, 1, 1, -1, 0, 0, 0]


@pytest.mark.slow
def test_two_people_one_subject_is_followed_consistently(tmp_path):
    w, h = 640, 360
    decode_frames(str(clip("two_people.mp4")), tmp_path, 10, w, h, end=8.0, progress=False)
    raw = extract_arrays(open_frames(tmp_path)[:], 10, "two")
    assert detection_rates(raw)["person"] > 0.9
    # MediaPipe hands over from one person to the other: merge_pose keeps the one it followed
    # longest and marks the frames showing the other as missing
    assert person_identities(raw.parts["body"]).max() >= 1
    pose, info = keep_main_person(raw.copy())
    assert info["identities"] >= 2 and info["frames_dropped"] > 0
    assert 0.5 < detection_rates(pose)["person"] < detection_rates(raw)["person"]
    neck = pose.parts["body"][:, B["Neck"]]
    ok = np.isfinite(neck[:, 0])
    # the tracked person never jumps to the other one: no frame-to-frame leap of the neck
    # larger than a tenth of the frame width between consecutive detected frames
    jumps = np.abs(np.diff(neck[ok, 0]))
    assert jumps.max() < w / 10, jumps.max()
