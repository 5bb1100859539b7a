"""The frames store of one subject: every working frame as a JPEG, back to back in one file.

`frames.mjpeg` is the JPEGs concatenated (a raw MJPEG stream: `ffplay frames.mjpeg` plays it,
`ffmpeg -i frames.mjpeg -frames:v 1 f.png` pulls a frame out); `manifest.parquet` beside it has
each frame's `offset` and `nbytes`, so any frame opens at random with one read and one decode
(about 1 ms at 384x512), in every DataLoader worker, without a raw copy of the video on disk.
At quality 95 with full-resolution colour (4:4:4) a 384x512 frame is 20 to 65 kB on the shared
clips, 0.05 to 0.12 GB per minute of 30-fps video, against 590 kB raw (docs/performance.md).

A store decoded before this format, `frames.npy` (raw uint8, N x H x W x 3), still opens.
"""
from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

STORE_NAME = "frames.mjpeg"
FORMAT = "jpeg"


def encode(frame: np.ndarray, quality: int) -> bytes:
    """One RGB uint8 frame as a JPEG at `quality`, colour at full resolution (4:4:4): the hands
    and the face are a few pixels wide, and halving the colour there smears them."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                            cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {frame.shape} frame as JPEG")
    return buf.tobytes()


def decode(data, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """A JPEG back to an RGB uint8 frame of `shape`; a frame that does not decode to it is an
    error naming `where` (the store and the frame)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != tuple(shape):
        raise ValueError(f"{where}: not a {shape[1]}x{shape[0]} JPEG frame (the store is damaged: "
                         f"rerun decode_frames for this subject)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_jpegs(frames: Iterable[np.ndarray], f, quality: int, progress=None) -> list[int]:
    """Append each frame to the open file `f` as a JPEG as it comes (one frame held at a time);
    returns their sizes in bytes. `progress`: a tqdm bar to advance per frame."""
    sizes = []
    for frame in frames:
        jpeg = encode(frame, quality)
        f.write(jpeg)
        sizes.append(len(jpeg))
        if progress is not None:
            progress.update(1)
    return sizes


def manifest_table(sizes: list[int], fps: float, start: float, meta: dict, quality: int) -> pa.Table:
    """The store's manifest: frame, time_s in the clip, src_time_s in the video, each JPEG's byte
    offset and size; `meta` (with the store's format) as the schema's `edn` metadata."""
    n = len(sizes)
    t = np.arange(n, dtype=np.float64) / fps
    nbytes = np.asarray(sizes, np.int64)
    table = pa.Table.from_pandas(pd.DataFrame({
        "frame": np.arange(n, dtype=np.int32), "time_s": t.astype(np.float32), "src_time_s": start + t,
        "offset": np.cumsum(nbytes) - nbytes, "nbytes": nbytes.astype(np.int32)}), preserve_index=False)
    meta = {**meta, "store": {"format": FORMAT, "quality": int(quality), "subsampling": "444"}}
    return table.replace_schema_metadata({b"edn": json.dumps(meta).encode()})


def save_frames(frames: Iterable[np.ndarray], out_dir, fps: float, quality: int = 95, subject: str = "") -> Path:
    """A frames store from frames already in hand (rendered dancers, tests, benchmarks): what
    decode_frames writes, without a video behind it. Returns the store's frames file."""
    from steps.atomic import atomic_output

    out_dir = Path(out_dir)
    frames = iter(frames)
    first = next(frames)
    with atomic_output(out_dir / STORE_NAME) as tmp, atomic_output(out_dir / "manifest.parquet") as tmp_man:
        with open(tmp, "wb") as f:
            sizes = write_jpegs([first], f, quality) + write_jpegs(frames, f, quality)
        meta = {"subject": subject, "video": None, "fps": fps, "width": first.shape[1], "height": first.shape[0],
                "start": 0.0, "end": None}
        pq.write_table(manifest_table(sizes, fps, 0.0, meta, quality), tmp_man)
    return out_dir / STORE_NAME


class JpegFrames:
    """A JPEG frames store read like the array it replaces: `len`, `shape` (N, H, W, 3), and
    `store[i]` (one frame), `store[a:b:s]` or `store[[i, j]]` (a stacked uint8 array).

    The file is memory-mapped on first use, in the process that reads it, so the object pickles
    to DataLoader workers as its path and index only."""

    def __init__(self, path, offsets: np.ndarray, nbytes: np.ndarray, height: int, width: int):
        self.path = str(path)
        self.offsets, self.nbytes = np.asarray(offsets, np.int64), np.asarray(nbytes, np.int64)
        self.shape = (len(self.offsets), int(height), int(width), 3)
        self.dtype = np.dtype(np.uint8)
        self._map = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):
        return {**self.__dict__, "_map": None}

    def _bytes(self, i: int):
        if self._map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        o = int(self.offsets[i])
        return self._map[o: o + int(self.nbytes[i])]

    def frame(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame {i} of {self.path}, which has {n}")
        i %= n
        return decode(self._bytes(i), self.shape[1:], f"{self.path}, frame {i}")

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.frame(int(key))
        idx = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, np.int64).reshape(-1)
        out = np.empty((len(idx), *self.shape[1:]), np.uint8)
        for k, i in enumerate(idx):
            out[k] = self.frame(int(i))
        return out

    def __iter__(self):
        return (self.frame(i) for i in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)


def store_path(path) -> Path:
    """The frames file of a store given as its folder or as the file itself."""
    p = Path(path)
    if p.is_dir():
        for name in (STORE_NAME, "frames.npy"):
            if (p / name).exists():
                return p / name
        raise FileNotFoundError(f"{p}: no frames store ({STORE_NAME}) in this folder; run decode_frames")
    return p


def open_frames(path):
    """A subject's frames, opened at random: a JpegFrames for `frames.mjpeg`, a read-only memory
    map for an older raw `frames.npy`. `path` is the frames file or its folder."""
    p = store_path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such frames store; run decode_frames for this subject")
    if p.suffix == ".npy":
        return np.load(p, mmap_mode="r")
    manifest = p.parent / "manifest.parquet"
    if not manifest.exists():
        raise FileNotFoundError(f"{p}: its index {manifest} is missing; rerun decode_frames for this subject")
    meta = json.loads((pq.read_schema(manifest).metadata or {}).get(b"edn", b"{}"))
    store = meta.get("store", {})
    if store.get("format") != FORMAT:
        raise ValueError(f"{manifest}: frames store format {store.get('format')!r}, this version reads "
                         f"{FORMAT!r} (and raw frames.npy); rerun decode_frames for this subject")
    index = pq.read_table(manifest, columns=["offset", "nbytes"])
    offsets, nbytes = index["offset"].to_numpy(), index["nbytes"].to_numpy()
    size = os.path.getsize(p)
    if len(offsets) and int(offsets[-1] + nbytes[-1]) > size:
        raise ValueError(f"{p} is {size} bytes, shorter than its index says ({int(offsets[-1] + nbytes[-1])}): "
                         f"cut short; rerun decode_frames for this subject")
    return JpegFrames(p, offsets, nbytes, meta["height"], meta["width"])
