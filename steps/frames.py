"""decode_frames: a video -> the frames store of one subject.

The store is `frames.npy`, one uint8 array (N, H, W, 3) RGB that training and pose extraction
open memory-mapped (random access, no per-frame files to encode or decode), plus
`manifest.parquet` (frame, time_s in the clip, src_time_s in the original video).

ffmpeg does all pixel work in one pass: trim (-ss/-t), resample to the working fps, resize
keeping the aspect ratio, then either pad (letterbox: nothing of the person is lost) or crop
(centre crop: fills the frame), and converts to RGB. ffmpeg applies rotation metadata itself
(autorotate), so phone videos come out upright.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .atomic import atomic_output
from .video import FFMPEG, VideoError, probe

NPY_HEADER_LEN = 128  # fixed, so the frame count can be patched in after streaming


def scale_filter(width: int, height: int, resize: str) -> str:
    """The ffmpeg filter that brings any frame to width x height keeping the aspect ratio."""
    if resize == "pad":
        return (f"scale={width}:{height}:force_original_aspect_ratio=decrease:flags=area,"
                f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1")
    if resize == "crop":
        return (f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=area,"
                f"crop={width}:{height},setsar=1")
    raise ValueError(f"resize must be 'pad' or 'crop', not {resize!r}")


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1 .npy header for uint8 `shape`, padded to NPY_HEADER_LEN bytes."""
    d = "{'descr': '|u1', 'fortran_order': False, 'shape': %s, }" % (tuple(shape),)
    body_len = NPY_HEADER_LEN - 10
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + d.ljust(body_len - 1).encode() + b"\n"


def decode_command(video: str, fps: float, width: int, height: int, resize: str,
                   start: float = 0.0, end: float | None = None):
    """The ffmpeg-python stream that writes raw RGB frames to stdout."""
    in_kw = {"ss": start} if start else {}
    if end is not None:
        in_kw["t"] = end - start
    vf = f"fps={fps}," + scale_filter(width, height, resize)
    return (ffmpeg.input(video, **in_kw)
            .output("pipe:", format="rawvideo", pix_fmt="rgb24", vf=vf, an=None)
            .global_args("-loglevel", "error", "-nostdin"))


def decode_frames(video: str, out_dir: str | os.PathLike, fps: float, width: int, height: int,
                  resize: str = "pad", start: float = 0.0, end: float | None = None,
                  subject: str = "", progress: bool = True) -> int:
    """Decode `video` into out_dir/frames.npy + manifest.parquet; returns the frame count."""
    who = f"subject {subject!r}: " if subject else ""
    try:
        info = probe(video)
    except VideoError as e:
        raise VideoError(f"{who}{e}") from None
    if end is not None and end <= start:
        raise VideoError(f"{who}end ({end}) must be after start ({start}) for {video}")
    span = (min(end, info.duration_s) if end else info.duration_s) - start
    expected = max(1, int(round(span * fps))) if span > 0 else None

    out_dir = Path(out_dir)
    with atomic_output(out_dir / "frames.npy") as tmp_npy, \
            atomic_output(out_dir / "manifest.parquet") as tmp_man:
        n, err, rc = _ffmpeg_into_npy(decode_command(video, fps, width, height, resize, start, end),
                                      tmp_npy, (height, width, 3), expected,
                                      f"decode {subject or video}", progress)
        if rc != 0:
            raise VideoError(f"{who}ffmpeg could not decode {video}: {err[-500:]}")
        if n == 0:
            raise VideoError(f"{who}no frames decoded from {video}"
                             f" (start={start}, end={end}, duration={info.duration_s:.2f}s){': ' + err[-300:] if err else ''}")
        t = np.arange(n, dtype=np.float64) / fps
        table = pa.Table.from_pandas(pd.DataFrame({
            "frame": np.arange(n, dtype=np.int32),
            "time_s": t.astype(np.float32),
            "src_time_s": start + t,
        }), preserve_index=False)
        meta = {"subject": subject, "video": str(video), "fps": fps, "width": width,
                "height": height, "resize": resize, "start": start, "end": end,
                "source_fps": info.fps, "source_size": [info.width, info.height],
                "rotation": info.rotation}
        pq.write_table(table.replace_schema_metadata({b"edn": json.dumps(meta).encode()}), tmp_man)
    return n


def _ffmpeg_into_npy(stream, path: Path, frame_shape: tuple[int, int, int], expected: int | None,
                     desc: str, progress: bool) -> tuple[int, str, int]:
    """Run an ffmpeg stream of raw frames with the .npy file at `path` as its stdout.

    ffmpeg writes straight into the file after the header, so no frame passes through Python;
    the progress bar follows the file's size. Returns (frames, ffmpeg's stderr, return code).
    """
    frame_bytes = int(np.prod(frame_shape))
    with open(path, "wb") as f, tempfile.TemporaryFile() as errf, \
            tqdm(total=expected, unit="frame", desc=desc, disable=not progress, file=sys.stderr) as bar:
        f.write(_npy_header((0, *frame_shape)))
        f.flush()

        def frames_written():
            return (os.fstat(f.fileno()).st_size - NPY_HEADER_LEN) // frame_bytes

        proc = subprocess.Popen(stream.compile(cmd=FFMPEG), stdout=f, stderr=errf, stdin=subprocess.DEVNULL)
        try:
            while True:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    bar.update(frames_written() - bar.n)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        n = frames_written()
        bar.update(n - bar.n)
        f.truncate(NPY_HEADER_LEN + n * frame_bytes)  # drop a partly written last frame
        f.seek(0)
        f.write(_npy_header((n, *frame_shape)))
        errf.seek(0)
        return n, errf.read().decode(errors="replace").strip(), proc.returncode


def load_frames(out_dir: str | os.PathLike) -> np.ndarray:
    """The frames store, memory-mapped: uint8 (N, H, W, 3) RGB."""
    return np.load(Path(out_dir) / "frames.npy", mmap_mode="r")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Decode a video into a frames store.")
    ap.add_argument("--video", required=True)
    ap.add_argument("--out", required=True, help="output folder (frames.npy, manifest.parquet)")
    ap.add_argument("--subject", default="")
    ap.add_argument("--fps", type=float, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--resize", choices=["pad", "crop"], default="pad")
    ap.add_argument("--start", type=float, default=0.0)
    ap.add_argument("--end", type=float, default=None)
    a = ap.parse_args(argv)
    try:
        n = decode_frames(a.video, a.out, a.fps, a.width, a.height, a.resize, a.start, a.end, a.subject)
    except VideoError as e:
        sys.exit(f"decode_frames: {e}")
    print(f"decoded {n} frames of {a.video} into {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
