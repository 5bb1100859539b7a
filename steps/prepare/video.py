"""Video in and out through the ffmpeg binary that imageio-ffmpeg ships (no system package).

Reading probes the container with PyAV (imageio-ffmpeg ships no ffprobe) and decodes with
ffmpeg piping raw RGB frames; writing pipes raw RGB frames into ffmpeg's H.264 encoder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import ffmpeg
import imageio_ffmpeg
import numpy as np

from steps.atomic import atomic_output

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


class VideoError(ValueError):
    """A video that cannot be used; the message names the file."""


@dataclass
class VideoInfo:
    path: str
    width: int          # as displayed, after rotation
    height: int
    fps: float          # average frame rate
    duration_s: float
    n_frames: int       # as the container reports it (may be an estimate)
    rotation: int       # degrees the player rotates the stored frames
    has_audio: bool


FINGERPRINT_BYTES = 1 << 20


def fingerprint(path: str | os.PathLike) -> str:
    """A video's identity that does not depend on its timestamp: its size and a hash of its first
    and last megabyte (cheap on a 2 GB file; a re-encode, a trim or another video all change it)."""
    import hashlib

    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            h.update(f.read(FINGERPRINT_BYTES))
    return f"{size}:{h.hexdigest()[:20]}"


def probe(path: str | os.PathLike) -> VideoInfo:
    """Stream metadata, with clear errors for a missing file or one that holds no video."""
    import av

    path = str(path)
    if not Path(path).exists():
        raise VideoError(f"video {path} does not exist")
    if Path(path).stat().st_size == 0:
        raise VideoError(f"video {path} is empty (0 bytes)")
    try:
        with av.open(path) as c:
            vs = [s for s in c.streams if s.type == "video"]
            if not vs:
                raise VideoError(f"{path} has no video stream (audio only or not a video)")
            s = vs[0]
            fps = float(s.average_rate or s.guessed_rate or 0) or 25.0
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            elif c.duration is not None:
                duration = c.duration / 1e6
            else:
                duration = 0.0
            rotation = _rotation(c, s)
            w, h = s.codec_context.width, s.codec_context.height
            if rotation % 180:
                w, h = h, w
            return VideoInfo(path, w, h, fps, duration, int(s.frames or round(duration * fps)),
                             rotation, any(x.type == "audio" for x in c.streams))
    except VideoError:
        raise
    except Exception as e:  # av raises many types (InvalidDataError, ...): name the file
        raise VideoError(f"{path} is not a readable video: {e}") from e


def read_video(path: str | os.PathLike, limit: int | None = None) -> Iterator[np.ndarray]:
    """The frames of a video as stored (RGB uint8, no rotation applied), one at a time; at most
    `limit`. For the pipeline's own outputs (transfer videos), which carry no rotation."""
    import av

    probe(path)  # a missing, empty or unreadable file: an error that names it
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if limit is not None and i >= limit:
                return
            yield frame.to_ndarray(format="rgb24")


def _rotation(container, stream) -> int:
    """Rotation from the display matrix side data (new FFmpeg) or the legacy 'rotate' tag."""
    tag = stream.metadata.get("rotate")
    if tag is not None:
        return int(tag) % 360
    try:
        frame = next(container.decode(stream))
        rot = getattr(frame, "rotation", 0) or 0
        container.seek(0)
        return int(-rot) % 360
    except Exception:
        return 0


def _chain(first, rest):
    yield first
    yield from rest


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float,
                audio_from: str | None = None, crf: int = 18) -> int:
    """Encode RGB uint8 frames to H.264 yuv420p mp4 (browser-playable); returns the count.

    With `audio_from`, the first audio track of that file is copied in (AAC), cut to the video.
    Writes to a temporary file and renames, so a failure leaves nothing half-written.
    """
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise VideoError(f"{path}: no frames to write")
    h, w = first.shape[:2]
    if h % 2 or w % 2:
        raise VideoError(f"{path}: frame size {w}x{h} must be even for yuv420p")
    video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=fps)
    streams = [video]
    out_kw = dict(vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset="veryfast",
                  movflags="+faststart", r=fps)
    if audio_from:
        streams.append(ffmpeg.input(str(audio_from)).audio)
        out_kw.update(acodec="aac", shortest=None)
    n = 0
    with atomic_output(path) as tmp:
        proc = (ffmpeg.output(*streams, str(tmp), **out_kw)
                .overwrite_output().global_args("-loglevel", "error")
                .run_async(cmd=FFMPEG, pipe_stdin=True, pipe_stderr=False))
        try:
            for frame in _chain(first, it):
                if frame.shape[:2] != (h, w):
                    raise VideoError(f"{path}: frame {n} is {frame.shape[1]}x{frame.shape[0]}, expected {w}x{h}")
                proc.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
                n += 1
            proc.stdin.close()
            if proc.wait() != 0:
                raise VideoError(f"ffmpeg failed writing {path} (exit {proc.returncode}; its message is above)")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return n
