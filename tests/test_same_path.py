"""Same path, new video: nothing stale, and every error names its file (issue 29)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import clip, moving_box_frames, snakemake, write_config
from steps.atomic import DamagedFile
from steps.gan.checkpoints import load_start
from steps.prepare.frames import decode_frames, native_frames, read_manifest_meta
from steps.prepare.video import FFMPEG, VideoError, fingerprint, write_video

OLD = (1577836800, 1577836800)  # 2020-01-01: what a copy that keeps timestamps gives


def two_videos(folder: Path) -> tuple[Path, Path]:
    """Two different rendered videos: 30 and 20 frames of a box, moving at different speeds."""
    a, b = folder / "a.mp4", folder / "b.mp4"
    write_video(a, moving_box_frames(30, 64, 64), fps=10)
    write_video(b, [f[:, ::-1].copy() for f in moving_box_frames(20, 64, 64)], fps=10)
    return a, b


def test_the_fingerprint_follows_the_content_not_the_timestamp(tmp_path):
    a, b = two_videos(tmp_path)
    before = fingerprint(a)
    os.utime(a, OLD)
    assert fingerprint(a) == before
    assert fingerprint(b) != before
    big = tmp_path / "big.bin"  # the last megabyte counts too
    big.write_bytes(b"\0" * (3 << 20))
    changed = tmp_path / "changed.bin"
    changed.write_bytes(b"\0" * ((3 << 20) - 1) + b"\1")
    assert fingerprint(big) != fingerprint(changed)


@pytest.mark.slow
def test_a_swapped_video_with_an_older_mtime_is_decoded_again(tmp_path):
    """A real Snakemake run: the other video copied over the first with an old timestamp is
    decoded again (the store then holds the new video's frames and fingerprint)."""
    (tmp_path / "videos").mkdir()
    a, b = two_videos(tmp_path)
    shutil.copy(a, tmp_path / "videos" / "me.mp4")
    write_config(tmp_path, {"preset": "cpu", "subjects": {"me": {"video": "videos/me.mp4"}},
                            "frames": {"fps": 10, "width": 64, "height": 64}})
    target = "results/frames/me/manifest.parquet"
    snakemake(tmp_path, "--cores", "1", target)
    assert read_manifest_meta(tmp_path / "results/frames/me")["n_frames"] == 30
    shutil.copy(b, tmp_path / "videos" / "me.mp4")
    os.utime(tmp_path / "videos" / "me.mp4", OLD)
    r = snakemake(tmp_path, "--cores", "1", target)
    assert "decode_frames" in r.stdout, r.stdout[-3000:]
    meta = read_manifest_meta(tmp_path / "results/frames/me")
    assert meta["n_frames"] == 20 and meta["fingerprint"] == fingerprint(b)
    assert "Nothing to be done" in snakemake(tmp_path, "--cores", "1", target).stdout


def test_pose_on_a_changed_video_is_refused_by_name_before_reading_it(tmp_path):
    a, b = two_videos(tmp_path)
    video = tmp_path / "me.mp4"
    shutil.copy(a, video)
    decode_frames(str(video), tmp_path / "store", 10, 64, 64, subject="me", progress=False)
    meta = read_manifest_meta(tmp_path / "store")
    (w, h), frames = native_frames(meta, 0, 5, 1920)
    assert len(list(frames)) == 5
    shutil.copy(b, video)
    os.utime(video, OLD)
    with pytest.raises(VideoError, match=r"me\.mp4 has changed since decode_frames .*'me'.*rerun decode_frames"):
        native_frames(meta, 0, 5, 1920)


@pytest.mark.parametrize("content", [b"this is not a model\n", "truncated"])
def test_a_file_that_is_not_a_model_as_init_from_is_one_named_error(tmp_path, content):
    path = tmp_path / "model.pt"
    if content == "truncated":
        torch.save({"G": {"w": torch.zeros(1000)}, "D": {}, "model": {}}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(DamagedFile, match=rf"{path} is not a readable file of this project.*train\.init_from"):
        load_start(str(path), "train", tmp_path / "base.pt")


def test_a_full_disk_while_decoding_names_the_output_not_the_video(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tiny tmpfs needs root")
    a = tmp_path / "noise.mp4"  # noise: its JPEGs outgrow the tiny disk within a few frames
    write_video(a, np.random.default_rng(0).integers(0, 256, (20, 128, 128, 3), dtype=np.uint8), fps=10)
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("could not mount a tmpfs here")
    try:
        with pytest.raises(VideoError) as e:
            decode_frames(str(a), disk / "store", 10, 128, 128, subject="me", progress=False)
        msg = str(e.value)
        assert f"{disk / 'store' / 'frames.mjpeg'} is full" in msg and "free some space" in msg
        assert "could not decode" not in msg
        assert not (disk / "store" / "frames.mjpeg").exists()  # nothing half-written under the real name
    finally:
        subprocess.run(["umount", str(disk)])


def test_clips_joined_with_the_concat_demuxer_decode_on_one_timeline(tmp_path):
    """Two real clips joined with `-f concat -c copy`: the store has the joined duration's frames
    (not the extra ones a restarted fps filter gives), and pose on the video's own frames reads
    the same number, up to the last one."""
    parts = [clip("dancer_source.mp4"), clip("model_target.mp4")]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    joined = tmp_path / "joined.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", "-an",
                    str(joined)], check=True)
    from steps.prepare.video import probe

    fps = 15
    n = decode_frames(str(joined), tmp_path / "store", fps, 64, 64, progress=False)
    assert abs(n - probe(joined).duration_s * fps) <= 1, (n, probe(joined).duration_s * fps)
    meta = read_manifest_meta(tmp_path / "store")
    _, frames = native_frames(meta, n - 20, n, 256)
    assert len(list(frames)) == 20


def test_too_many_frames_are_refused_with_the_remedy():
    from steps.prepare.frames import frames_extra

    assert frames_extra(424, 275) and not frames_extra(276, 275) and not frames_extra(270, 275)


def test_a_subject_without_feet_is_told_what_to_do():
    from steps.prepare.stats import StatsError, compute_stats
    import pandas as pd

    table = pd.DataFrame({"frame": np.arange(10), "toe": np.nan, "height": np.nan})
    with pytest.raises(StatsError, match=r"Film the person head to feet.*subjects\.me\.start / end"):
        compute_stats(table, "me", 64, 64, 5, 95, 0.05)
