"""decode_frames: a video -> the frames store of one subject.

The store (steps/prepare/framestore.py) is `frames.mjpeg`, every working frame as a JPEG back to
back, that training, pose extraction and evaluation open at random, plus `manifest.parquet`
(frame, time_s in the clip, src_time_s in the original video, and each frame's byte offset and
size in frames.mjpeg).

ffmpeg does all pixel work in one pass: trim (-ss/-t), resample to the working fps, resize
keeping the aspect ratio, then either pad (letterbox: nothing of the person is lost) or crop
(centre crop: fills the frame), and converts to RGB; each frame is encoded as it arrives, so no
more than one frame is ever held. ffmpeg applies rotation metadata itself (autorotate), so phone
videos come out upright. Frame k shows the video at start + k/fps.

`native_frames` reads the same frames (same trim and times) at the video's own resolution, for
the pose detector, and `working_geometry` says where a pixel of such a frame lands in the store.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ffmpeg
import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from steps import logs
from steps.atomic import atomic_output
from steps.prepare.framestore import STORE_NAME, manifest_table, write_jpegs
from steps.prepare.video import FFMPEG, VideoError, fingerprint, probe

log = logging.getLogger(__name__)

# What ffmpeg says (and still exits 0) when the file itself is damaged: a cut download or copy,
# a broken index. Lower case; matched against its error-level output.
DAMAGE_SIGNS = ("partial file", "invalid nal unit size", "error splitting the input into nal units",
                "moov atom not found", "packet corrupt", "corrupt input packet", "truncat",
                "invalid data found when processing input", "decoding error", "error while decoding")


def damage_lines(stderr: str) -> list[str]:
    """ffmpeg's lines that say the input is damaged (not merely unusual)."""
    return [ln for ln in stderr.splitlines() if any(s in ln.lower() for s in DAMAGE_SIGNS)]


def frames_missing(n: int, expected: int) -> bool:
    """Whether `n` decoded frames fall short of the `expected` ones by more than rounding and
    container slack allow (3 frames or 2%, whichever is more)."""
    return expected - n > max(3, 0.02 * expected)


def frames_extra(n: int, expected: int) -> bool:
    """Whether `n` decoded frames exceed the `expected` ones by more than that slack: frames shown
    twice, at the wrong times (a timeline that restarts mid-stream)."""
    return n - expected > max(3, 0.02 * expected)


def scale_filter(width: int, height: int, resize: str) -> str:
    """The ffmpeg filter that brings any frame to width x height keeping the aspect ratio."""
    if resize == "pad":
        return (f"scale={width}:{height}:force_original_aspect_ratio=decrease:flags=area,"
                f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1")
    if resize == "crop":
        return (f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=area,"
                f"crop={width}:{height},setsar=1")
    raise ValueError(f"resize must be 'pad' or 'crop', not {resize!r}")


def working_geometry(src_w: int, src_h: int, width: int, height: int, resize: str) -> tuple[int, int, int, int]:
    """Where `scale_filter` puts a src_w x src_h picture: (scaled w, scaled h, x offset, y offset).

    ffmpeg's arithmetic: force_original_aspect_ratio rounds the other side to the nearest pixel,
    pad and crop centre with integer division (negative offsets for crop); the frames are RGB by
    then, so no chroma rounding of the offsets."""
    tmp_w, tmp_h = round(height * src_w / src_h), round(width * src_h / src_w)
    pick = {"pad": min, "crop": max}.get(resize)
    if pick is None:
        raise ValueError(f"resize must be 'pad' or 'crop', not {resize!r}")
    w, h = pick(tmp_w, width), pick(tmp_h, height)
    off_x = (width - w) // 2 if resize == "pad" else -((w - width) // 2)
    off_y = (height - h) // 2 if resize == "pad" else -((h - height) // 2)
    return w, h, off_x, off_y


def native_size(src_w: int, src_h: int, max_side: int) -> tuple[int, int]:
    """The video's own size, shrunk (never enlarged) so that its long side is at most max_side."""
    s = min(1.0, max_side / max(src_w, src_h))
    return max(1, round(src_w * s)), max(1, round(src_h * s))


def decode_command(video: str, fps: float, width: int, height: int, resize: str,
                   start: float = 0.0, end: float | None = None, first: int = 0,
                   seek: float | None = None, size_filter: str | None = None):
    """The ffmpeg-python stream that writes raw RGB frames `first`, `first` + 1, ... to stdout;
    frame k shows the video at start + k/fps.

    A reader of later frames seeks to `seek` (start <= seek, a little before frame `first`) but
    keeps the video's own timestamps (copyts) and shifts them by `start` as the full decode does,
    so the fps filter, which rounds each frame's time to a tick, rounds every frame alike in both;
    start_time=0 numbers its ticks from `start` (the ticks before the seek repeat the first frame
    and trim drops them before any scaling)."""
    seek = start if seek is None else seek
    in_kw = {"ss": f"{seek:.6f}", "copyts": None, "start_at_zero": None} if seek else {}
    if end is not None:
        in_kw["t"] = f"{end - seek:.6f}"
    shift = f"setpts=PTS-{start:.6f}/TB," if start else ""
    trim = f"trim=start_frame={first}," if first else ""
    vf = shift + f"fps={fps}:start_time=0," + trim + (size_filter or scale_filter(width, height, resize))
    # reinit_filter 0: where a frame parameter changes mid-stream (clips joined with the concat
    # demuxer), ffmpeg would rebuild the graph and the fps filter restart its ticks at time 0
    return (ffmpeg.input(video, reinit_filter=0, **in_kw)
            .output("pipe:", format="rawvideo", pix_fmt="rgb24", vf=vf, an=None, fps_mode="passthrough")
            .global_args("-loglevel", "error", "-nostdin"))


def decode_frames(video: str, out_dir: str | os.PathLike, fps: float, width: int, height: int,
                  resize: str = "pad", start: float = 0.0, end: float | None = None,
                  subject: str = "", progress: bool = True, quality: int = 95) -> int:
    """Decode `video` into out_dir/frames.mjpeg + manifest.parquet (JPEGs at `quality`); returns
    the frame count."""
    who = f"subject {subject!r}: " if subject else ""
    try:
        info = probe(video)
    except VideoError as e:
        raise VideoError(f"{who}{e}") from None
    if end is not None and end <= start:
        raise VideoError(f"{who}end ({end}) must be after start ({start}) for {video}")
    real_end = info.duration_s
    if real_end > 0 and start >= real_end:
        raise VideoError(f"{who}start ({start}) is at or past the end of {video}, which ends at {real_end:.2f} s")
    if end is not None and real_end > 0 and end > real_end + 1 / fps:
        log.warning("%send (%s s) is past the end of %s, which ends at %.2f s: decoding to %.2f s",
                    who, end, video, real_end, real_end)
    span = (min(end, real_end) if end and real_end > 0 else end or real_end) - start
    expected = max(1, int(round(span * fps))) if span > 0 else None

    out_dir = Path(out_dir)
    with atomic_output(out_dir / STORE_NAME) as tmp_store, \
            atomic_output(out_dir / "manifest.parquet") as tmp_man:
        try:
            sizes, err, rc = _ffmpeg_into_store(decode_command(video, fps, width, height, resize, start, end),
                                                tmp_store, (height, width, 3), quality, expected,
                                                f"decode {subject or video}", progress)
        except OSError as e:  # the store's own write: a full disk, a read-only folder
            raise VideoError(decode_failure(who, video, out_dir, str(e))) from None
        n = len(sizes)
        if rc != 0:
            raise VideoError(decode_failure(who, video, out_dir, err))
        if n == 0:
            raise VideoError(f"{who}no frames decoded from {video}"
                             f" (start={start}, end={end}, duration={info.duration_s:.2f}s){': ' + err[-300:] if err else ''}")
        damaged = damage_lines(err)
        if damaged or (expected and frames_missing(n, expected)):
            said = "; ".join(dict.fromkeys(ln.split("] ")[-1] for ln in damaged))[:300]
            raise VideoError(
                f"{who}{video} looks damaged (cut short or corrupt): decoded {n} frames ({n / fps:.2f} s) of the "
                f"{expected} expected from {start:.2f} s to {start + span:.2f} s"
                f"{'; ffmpeg: ' + said if said else ''}. Copy or export the video again; nothing was written")
        if expected and frames_extra(n, expected):
            raise VideoError(
                f"{who}{video} does not play on one timeline: decoding gave {n} frames where its duration "
                f"({span:.2f} s at {fps:g} fps) has {expected}, so frames would be shown at the wrong times (clips "
                f"joined with `ffmpeg -f concat -c copy` whose streams differ do this). Re-encode it into one "
                f"stream, e.g. `ffmpeg -i {video} -c:v libx264 -crf 16 fixed.mp4`; nothing was written")
        meta = {"subject": subject, "video": str(video), "fps": fps, "width": width,
                "height": height, "resize": resize, "start": start, "end": end,
                "source_fps": info.fps, "source_size": [info.width, info.height],
                "rotation": info.rotation, "fingerprint": fingerprint(video)}
        pq.write_table(manifest_table(sizes, fps, start, meta, quality), tmp_man)
    return n


def decode_failure(who: str, video, out_dir: Path, err: str) -> str:
    """The message for a failed decode: a full disk names the output and its free space, never
    the input; anything else quotes ffmpeg's last whole lines."""
    import shutil

    if "no space left on device" in err.lower():
        free = shutil.disk_usage(out_dir).free / 2**20
        return (f"{who}the disk holding {out_dir / STORE_NAME} is full ({free:.0f} MB free) while decoding "
                f"{video}: free some space (or point the workflow at a bigger disk) and rerun decode_frames")
    last = "; ".join(err.strip().splitlines()[-3:])
    return f"{who}ffmpeg could not decode {video}: {last}"


def _ffmpeg_into_store(stream, path: Path, frame_shape: tuple[int, int, int], quality: int,
                       expected: int | None, desc: str, progress: bool) -> tuple[list[int], str, int]:
    """Run an ffmpeg stream of raw frames and append each frame to `path` as a JPEG as it comes.

    ffmpeg decodes the next frames while this process encodes, so the two share the cores; its
    stderr goes to a file (a pipe could fill and stall it). A partly sent last frame is dropped.
    Returns (each frame's JPEG size, ffmpeg's stderr, return code)."""
    frame_bytes = int(np.prod(frame_shape))
    with open(path, "wb") as f, tempfile.TemporaryFile() as errf, \
            tqdm(total=expected, unit="frame", desc=desc, disable=not progress, file=sys.stderr) as bar:
        proc = subprocess.Popen(stream.compile(cmd=FFMPEG), stdout=subprocess.PIPE, stderr=errf,
                                stdin=subprocess.DEVNULL)
        try:
            raw = iter(lambda: proc.stdout.read(frame_bytes), b"")
            frames = (np.frombuffer(b, np.uint8).reshape(frame_shape) for b in raw if len(b) == frame_bytes)
            sizes = write_jpegs(frames, f, quality, bar)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errf.seek(0)
        return sizes, errf.read().decode(errors="replace").strip(), proc.returncode


def read_manifest_meta(store: str | os.PathLike) -> dict:
    """What decode_frames recorded about the store in `store` (video, fps, trim, sizes)."""
    path = Path(store) / "manifest.parquet"
    md = pq.read_schema(path).metadata or {}
    if b"edn" not in md:
        raise VideoError(f"{path}: no decode_frames metadata; not a frames store of this pipeline")
    meta = json.loads(md[b"edn"])
    meta["n_frames"] = pq.read_metadata(path).num_rows
    return meta


def check_unchanged(meta: dict) -> None:
    """A reader of the video itself (pose on the video's own frames) must read the video the store
    was decoded from: another file at the same path is refused by name, before anything is read."""
    video = meta["video"]
    if not os.path.exists(video):
        raise VideoError(f"{video} (the video of the frames store of subject {meta['subject']!r}) no longer exists")
    if fingerprint(video) != meta["fingerprint"]:
        raise VideoError(f"{video} has changed since decode_frames made the frames store of subject "
                         f"{meta['subject']!r}: rerun decode_frames for it (snakemake reruns it by itself, "
                         f"or --forcerun decode_frames); nothing was read or written")


# Frames decoded before a chunk's first one: the fps filter chooses each frame from its
# neighbours, so a reader that seeks must start a little earlier to choose the same ones.
SEEK_MARGIN = 3


def native_frames(meta: dict, first: int, last: int, max_side: int) -> tuple[tuple[int, int], Iterator[np.ndarray]]:
    """Frames [first, last) of a store's video at the video's own size (long side <= max_side),
    upright, at the store's times; returns ((w, h), an iterator of RGB uint8 frames).

    Frames stream from ffmpeg one at a time: a chunk at full HD would not fit in memory."""
    check_unchanged(meta)
    last = min(last, meta["n_frames"])
    w, h = native_size(*meta["source_size"], max_side)
    seek = meta["start"] + max(0, first - SEEK_MARGIN) / meta["fps"]
    stream = decode_command(meta["video"], meta["fps"], w, h, "pad", meta["start"], meta["end"], first, seek,
                            size_filter=f"scale={w}:{h}:flags=area,setsar=1")
    return (w, h), _read_frames(stream, (h, w, 3), max(0, last - first), meta["video"])


def _read_frames(stream, shape: tuple[int, int, int], n: int, video: str) -> Iterator[np.ndarray]:
    size = int(np.prod(shape))
    proc = subprocess.Popen(stream.compile(cmd=FFMPEG), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        for i in range(n):
            buf = proc.stdout.read(size)
            if len(buf) < size:
                err = proc.communicate()[1].decode(errors="replace").strip()
                raise VideoError(f"{video}: ffmpeg gave {i} of the {n} frames asked for"
                                 f"{': ' + err[-300:] if err else ''}")
            yield np.frombuffer(buf, np.uint8).reshape(shape)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def main(argv=None):
    from steps.settings import section

    ap = argparse.ArgumentParser(description="Decode a video into a frames store.")
    ap.add_argument("--video", required=True)
    ap.add_argument("--out", required=True, help="output folder (frames.mjpeg, manifest.parquet)")
    ap.add_argument("--subject", default="")
    ap.add_argument("--start", type=float, default=0.0, help="the subject's trim start (seconds)")
    ap.add_argument("--end", type=float, default=None, help="the subject's trim end (seconds; none: the video's end)")
    ap.add_argument("--settings", default="{}", help="the config's frames section as JSON (schema defaults fill the rest)")
    a = ap.parse_args(argv)
    c = section("frames", json.loads(a.settings))
    logs.setup()
    try:
        n = decode_frames(a.video, a.out, c["fps"], c["width"], c["height"], c["resize"], a.start, a.end, a.subject,
                          quality=c["quality"])
    except VideoError as e:
        sys.exit(f"decode_frames: {e}")
    print(f"decoded {n} frames of {a.video} into {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
