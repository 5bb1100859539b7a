"""decode_frames: sizes, resampling, trimming, pad/crop, the manifest, and bad input."""
import json
import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from steps.prepare.frames import decode_frames
from steps.prepare.framestore import open_frames, save_frames
from steps.prepare.video import FFMPEG, VideoError, probe, write_video

from conftest import clip, moving_box_frames


def test_decode_resamples_resizes_and_writes_manifest(box_video, tmp_path):
    out = tmp_path / "frames"
    n = decode_frames(str(box_video), out, fps=5, width=64, height=64, resize="pad", subject="box")
    frames = open_frames(out)[:]
    assert n == 15 and frames.shape == (15, 64, 64, 3) and frames.dtype == np.uint8
    man = pd.read_parquet(out / "manifest.parquet")
    assert list(man.columns) == ["frame", "time_s", "src_time_s", "offset", "nbytes"]
    assert man["frame"].tolist() == list(range(15))
    assert man["frame"].dtype == np.int32 and man["time_s"].dtype == np.float32
    np.testing.assert_allclose(man["time_s"], np.arange(15) / 5, atol=1e-6)
    meta = json.loads(pq.read_schema(out / "manifest.parquet").metadata[b"edn"])
    assert meta["subject"] == "box" and meta["width"] == 64 and meta["source_fps"] == pytest.approx(10)
    assert meta["store"] == {"format": "jpeg", "quality": 95, "subsampling": "444"}


def test_pad_letterboxes_and_crop_fills(box_video, tmp_path):
    # 160x120 into 64x64: pad keeps 4:3 (64x48 with 8-pixel black bars), crop fills the frame.
    decode_frames(str(box_video), tmp_path / "pad", 10, 64, 64, "pad")
    decode_frames(str(box_video), tmp_path / "crop", 10, 64, 64, "crop")
    pad, crop = open_frames(tmp_path / "pad")[:], open_frames(tmp_path / "crop")[:]
    assert pad[:, :7].max() <= 16 and pad[:, -7:].max() <= 16  # black bars top and bottom
    assert pad[:, 12:52].mean() > 30                           # picture in between
    assert crop[:, :7].mean() > 30 and crop[:, -7:].mean() > 30  # no bars


def test_box_moves_right_in_decoded_frames(box_video, tmp_path):
    decode_frames(str(box_video), tmp_path / "f", 10, 160, 120, "pad")
    frames = open_frames(tmp_path / "f")[:].astype(int)
    red = (frames[..., 0] > 150) & (frames[..., 2] < 90)
    xs = [np.flatnonzero(r.any(axis=0)).mean() for r in red]
    assert len(frames) == 30 and np.all(np.diff(xs) > 0)


def test_trim_start_end(box_video, tmp_path):
    n = decode_frames(str(box_video), tmp_path / "t", 10, 64, 64, start=1.0, end=2.0)
    assert n == 10
    man = pd.read_parquet(tmp_path / "t" / "manifest.parquet")
    np.testing.assert_allclose(man["src_time_s"].iloc[0], 1.0)


def test_write_video_reads_back(tmp_path):
    path = tmp_path / "v.mp4"
    assert write_video(path, moving_box_frames(12), fps=12) == 12
    info = probe(path)
    assert (info.width, info.height, info.n_frames) == (160, 120, 12)
    assert info.fps == pytest.approx(12)


@pytest.mark.parametrize("kind", ["missing", "not_video", "empty", "audio_only"])
def test_bad_videos_raise_clear_errors_and_leave_nothing(kind, tmp_path):
    path = tmp_path / f"{kind}.mp4"
    if kind == "not_video":
        path.write_text("this is a text file, not a video\n" * 50)
    elif kind == "empty":
        path.touch()
    elif kind == "audio_only":
        subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                        str(path.with_suffix(".m4a"))], check=True)
        path = path.with_suffix(".m4a")
    out = tmp_path / "frames"
    with pytest.raises(VideoError) as e:
        decode_frames(str(path), out, 10, 64, 64, subject="alice")
    msg = str(e.value)
    assert "alice" in msg and str(path) in msg
    expected = {"missing": "does not exist", "not_video": "not a readable video",
                "empty": "empty", "audio_only": "no video stream"}[kind]
    assert expected in msg
    assert not out.exists() or not any(out.iterdir())


def test_truncated_video_with_index_first_is_refused_and_leaves_no_store(tmp_path):
    # A download or copy cut short. With the index (moov) at the start, ffmpeg decodes the frames
    # that are there, complains on stderr and exits 0; the store must not pass for a whole video.
    src = tmp_path / "full.mp4"
    rng = np.random.default_rng(0)  # noise makes every frame big, so 30% of the bytes is ~30% of the frames
    write_video(src, [rng.integers(0, 255, (120, 160, 3), np.uint8) for _ in range(40)], fps=10)
    data = src.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: the index comes first
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 10])
    out = tmp_path / "f"
    with pytest.raises(VideoError) as e:
        decode_frames(str(cut), out, 10, 64, 64, subject="cut")
    msg = str(e.value)
    assert "'cut'" in msg and str(cut) in msg and "damaged" in msg and "of the 40 expected" in msg
    assert not out.exists()  # no store, not even an empty folder
    assert decode_frames(str(src), out, 10, 64, 64) == 40  # the whole file still decodes


def test_trim_end_past_the_video_warns_with_the_real_end(box_video, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="steps.prepare.frames"):
        n = decode_frames(str(box_video), tmp_path / "t", 10, 64, 64, start=1.0, end=60.0, subject="box")
    assert n == 20  # the 3-s video from 1 s: what is there, not refused
    assert "end (60.0 s) is past the end" in caplog.text and "ends at 3.00 s" in caplog.text
    assert "'box'" in caplog.text and str(box_video) in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="steps.prepare.frames"):
        decode_frames(str(box_video), tmp_path / "u", 10, 64, 64, end=3.0)
    assert caplog.text == ""  # the exact end is no warning
    with pytest.raises(VideoError, match="ends at 3.00 s"):
        decode_frames(str(box_video), tmp_path / "v", 10, 64, 64, start=5.0)


def test_real_clip_decodes_faster_than_realtime_with_rotation_upright(tmp_path):
    path = clip("handheld_dribble.mp4")  # portrait phone video
    n = decode_frames(str(path), tmp_path / "f", 12, 108, 192, "pad")
    frames = open_frames(tmp_path / "f")[:]
    assert n == 40 and frames.shape[1:] == (192, 108, 3)
    assert frames[:, :, :4].mean() > 10  # portrait fills the portrait frame: no side bars


# ---- the JPEG frames store --------------------------------------------------------------------

def test_the_store_is_a_tenth_of_raw_and_reads_back_at_random_within_its_quality(tmp_path):
    """A real clip at 384x512: the store is under a tenth of the raw frames, every frame opens at
    random (int, slice with a step, index list) and is within SSIM 0.99 of ffmpeg's raw decode."""
    from steps.evaluate.metrics import ssim
    from steps.prepare.frames import decode_command

    video = clip("model_target_small.mp4")
    n = decode_frames(str(video), tmp_path / "s", 10, 384, 512, progress=False)
    raw = np.frombuffer(decode_command(str(video), 10, 384, 512, "pad").run(cmd=FFMPEG, capture_stdout=True)[0],
                        np.uint8).reshape(-1, 512, 384, 3)
    store = open_frames(tmp_path / "s")
    assert len(store) == n == len(raw) and store.shape == raw.shape
    assert (tmp_path / "s" / "frames.mjpeg").stat().st_size < raw.nbytes / 10
    picks = np.random.default_rng(0).permutation(n)[:8]
    for i in picks:
        assert ssim(store[int(i)], raw[i]) > 0.99
    np.testing.assert_array_equal(store[picks], np.stack([store[int(i)] for i in picks]))
    np.testing.assert_array_equal(store[1:n:3], np.stack([store[i] for i in range(1, n, 3)]))
    np.testing.assert_array_equal(store[-1], store[n - 1])
    with pytest.raises(IndexError, match=f"frame {n} of .*frames.mjpeg, which has {n}"):
        store[n]


def test_a_store_pickles_to_workers_and_an_old_raw_store_still_opens(tmp_path):
    import pickle

    frames = moving_box_frames(6)
    path = save_frames(frames, tmp_path / "new", fps=10)
    store = open_frames(path)
    store[0]  # mapped in this process; the pickle carries the path and index only
    again = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(again[3], store[3])
    assert np.abs(store[:].astype(int) - frames).mean() < 2
    np.save(tmp_path / "frames.npy", frames)
    old = open_frames(tmp_path)
    np.testing.assert_array_equal(old[2], frames[2])


def test_a_damaged_store_is_refused_by_name(tmp_path):
    path = save_frames(moving_box_frames(6), tmp_path / "s", fps=10)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(ValueError, match=r"frames.mjpeg is \d+ bytes, shorter than its index says.*rerun decode_frames"):
        open_frames(tmp_path / "s")
    path.write_bytes(b"\0" * 200000)
    with pytest.raises(ValueError, match=r"frames.mjpeg, frame 2: not a 160x120 JPEG frame.*rerun decode_frames"):
        open_frames(path)[2]
    (tmp_path / "s" / "manifest.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"its index .*manifest.parquet is missing"):
        open_frames(path)
