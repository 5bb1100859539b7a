"""The pose table: one long Parquet table per subject, one row per keypoint and frame.

Columns (DESIGN.md): frame:int32, time_s:float32, person:int8, part:category, joint:int16,
name:category, x:float32, y:float32 (pixels of the stored frame), confidence:float32, and after
smoothing filled:bool. Every frame has every joint of every part; a missed detection is a row
with NaN coordinates and confidence 0, never an absent row. That makes the table dense, so it
converts to and from per-part arrays of shape (frames, joints, 3) by a reshape.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from steps.atomic import atomic_output

# OpenPose BODY_25, the order the paper used.
BODY_25 = [
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
    "MidHip", "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar",
    "LEar", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
]
B = {name: i for i, name in enumerate(BODY_25)}

# The 21-point hand order shared by OpenPose and MediaPipe.
HAND_21 = [
    "Wrist", "Thumb1", "Thumb2", "Thumb3", "Thumb4", "Index1", "Index2", "Index3", "Index4",
    "Middle1", "Middle2", "Middle3", "Middle4", "Ring1", "Ring2", "Ring3", "Ring4",
    "Pinky1", "Pinky2", "Pinky3", "Pinky4",
]

# The face keeps the detector's own points (MediaPipe's 468-point mesh).
N_FACE = 468
FACE_NAMES = [f"F{i}" for i in range(N_FACE)]

PARTS = {
    "body": BODY_25,
    "face": FACE_NAMES,
    "left_hand": HAND_21,
    "right_hand": HAND_21,
}
PART_ORDER = list(PARTS)
SKELETON = "body25+mediapipe_face468+hand21"

COLUMNS = ["frame", "time_s", "person", "part", "joint", "name", "x", "y", "confidence"]
META_KEY = b"edn"


class PoseTableError(ValueError):
    """A pose table that breaks the schema; the message names the file."""


@dataclass
class PoseMeta:
    subject: str
    width: int
    height: int
    fps: float
    backend: str
    skeleton: str = SKELETON
    extra: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        d = {k: getattr(self, k) for k in ("subject", "width", "height", "fps", "backend", "skeleton")}
        d.update(self.extra)
        return json.dumps(d).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "PoseMeta":
        d = json.loads(raw)
        core = {k: d.pop(k) for k in ("subject", "width", "height", "fps", "backend", "skeleton")}
        return cls(**core, extra=d)


@dataclass
class PoseArrays:
    """Dense per-part arrays: part -> float32 (frames, joints, 3) holding x, y, confidence."""

    parts: dict[str, np.ndarray]
    time_s: np.ndarray
    meta: PoseMeta
    filled: dict[str, np.ndarray] | None = None  # part -> bool (frames, joints), after smoothing

    @property
    def n_frames(self) -> int:
        return len(self.time_s)

    def xy(self, part: str) -> np.ndarray:
        return self.parts[part][..., :2]

    def copy(self) -> "PoseArrays":
        return PoseArrays(
            {k: v.copy() for k, v in self.parts.items()},
            self.time_s.copy(),
            PoseMeta(**{**self.meta.__dict__, "extra": dict(self.meta.extra)}),
            None if self.filled is None else {k: v.copy() for k, v in self.filled.items()},
        )


def empty_arrays(n_frames: int, meta: PoseMeta, fps: float | None = None) -> PoseArrays:
    """All-missing arrays (NaN coordinates, confidence 0) for n_frames frames."""
    parts = {}
    for part, names in PARTS.items():
        a = np.full((n_frames, len(names), 3), np.nan, np.float32)
        a[..., 2] = 0.0
        parts[part] = a
    t = np.arange(n_frames, dtype=np.float32) / np.float32(fps or meta.fps)
    return PoseArrays(parts, t, meta)


JOINTS = [len(PARTS[p]) for p in PART_ORDER]      # per frame, the parts' joints in table order
ALL_NAMES = list(dict.fromkeys(n for p in PART_ORDER for n in PARTS[p]))


ROW_GROUP_FRAMES = 500  # frames per Parquet row group: reading and writing hold one group's rows at a time


def arrow_table(pa_: PoseArrays, lo: int = 0, hi: int | None = None) -> pa.Table:
    """Frames [lo, hi) of dense arrays -> the long table (frame, part, joint order) as Arrow
    columns, built straight from the arrays: the frame-major concatenation of the parts is already
    the table's row order, and part and name are dictionary codes, so a long video costs its
    numbers, not Python objects."""
    hi = pa_.n_frames if hi is None else hi
    pa_ = PoseArrays({k: v[lo:hi] for k, v in pa_.parts.items()}, pa_.time_s[lo:hi], pa_.meta,
                     None if pa_.filled is None else {k: v[lo:hi] for k, v in pa_.filled.items()})
    n, per_frame = pa_.n_frames, sum(JOINTS)
    allp = np.concatenate([pa_.parts[p] for p in PART_ORDER], axis=1).reshape(-1, 3)
    part_code = np.repeat(np.arange(len(PART_ORDER), dtype=np.int8), JOINTS)
    joint = np.concatenate([np.arange(j, dtype=np.int16) for j in JOINTS])
    name_code = np.array([ALL_NAMES.index(nm) for p in PART_ORDER for nm in PARTS[p]], np.int16)
    cols = {
        "frame": pa.array(np.repeat(np.arange(lo, lo + n, dtype=np.int32), per_frame)),
        "time_s": pa.array(np.repeat(pa_.time_s.astype(np.float32), per_frame)),
        "person": pa.array(np.zeros(n * per_frame, np.int8)),
        "part": pa.DictionaryArray.from_arrays(pa.array(np.tile(part_code, n)), pa.array(PART_ORDER)),
        "joint": pa.array(np.tile(joint, n)),
        "name": pa.DictionaryArray.from_arrays(pa.array(np.tile(name_code, n)), pa.array(ALL_NAMES)),
        "x": pa.array(allp[:, 0].astype(np.float32)),
        "y": pa.array(allp[:, 1].astype(np.float32)),
        "confidence": pa.array(np.nan_to_num(allp[:, 2]).astype(np.float32)),
    }
    if pa_.filled is not None:
        cols["filled"] = pa.array(np.concatenate([pa_.filled[p] for p in PART_ORDER], axis=1).reshape(-1))
    return pa.table(cols)


def arrays_to_table(pa_: PoseArrays) -> pd.DataFrame:
    """Dense arrays -> long table sorted by frame, part, joint (pandas)."""
    return arrow_table(pa_).to_pandas()


def _canonical_block(table: pa.Table, lo: int):
    """(x, y, confidence as (frames, joints of all parts, 3), filled or None, time_s) of a block of
    rows that starts at frame `lo` in this pipeline's own row order; None for any other order."""
    per_frame = sum(JOINTS)
    if table.num_rows % per_frame or any(c not in table.column_names for c in COLUMNS):
        return None
    n = table.num_rows // per_frame
    part = table.column("part").combine_chunks()
    if not isinstance(part, pa.DictionaryArray):
        return None
    lookup = np.array([PART_ORDER.index(d) if d in PART_ORDER else -1 for d in part.dictionary.to_pylist()], np.int8)
    codes = lookup[part.indices.to_numpy(zero_copy_only=False)].reshape(n, per_frame)
    frame = table.column("frame").to_numpy().reshape(n, per_frame)
    joint = table.column("joint").to_numpy().reshape(n, per_frame)
    if not (np.array_equal(frame, np.repeat(np.arange(lo, lo + n)[:, None], per_frame, 1))
            and np.array_equal(joint, np.broadcast_to(np.concatenate([np.arange(j) for j in JOINTS]), frame.shape))
            and np.array_equal(codes, np.broadcast_to(np.repeat(np.arange(len(PART_ORDER)), JOINTS), frame.shape))):
        return None
    xyc = np.stack([table.column(c).to_numpy().astype(np.float32) for c in ("x", "y", "confidence")], -1)
    filled = None
    if "filled" in table.column_names:
        filled = table.column("filled").to_numpy(zero_copy_only=False).astype(bool).reshape(n, per_frame)
    return xyc.reshape(n, per_frame, 3), filled, table.column("time_s").to_numpy()[::per_frame]


def slice_frames(pa_: PoseArrays, lo: int, hi: int) -> PoseArrays:
    """Frames [lo, hi) of dense arrays (views, not copies)."""
    return PoseArrays({k: v[lo:hi] for k, v in pa_.parts.items()}, pa_.time_s[lo:hi], pa_.meta,
                      None if pa_.filled is None else {k: v[lo:hi] for k, v in pa_.filled.items()})


def concat_frames(blocks: list[PoseArrays], meta: PoseMeta) -> PoseArrays:
    """Consecutive blocks of frames joined into one (the parts the first block has)."""
    if len(blocks) == 1:
        return blocks[0]
    first = blocks[0]
    parts = {p: np.concatenate([b.parts[p] for b in blocks]) for p in first.parts}
    filled = None if first.filled is None else {p: np.concatenate([b.filled[p] for b in blocks]) for p in first.filled}
    return PoseArrays(parts, np.concatenate([b.time_s for b in blocks]), meta, filled)


def pick_parts(pa_: PoseArrays, parts=None) -> PoseArrays:
    """The same frames with only the parts `parts` (default all)."""
    names = list(parts or pa_.parts)
    return PoseArrays({p: pa_.parts[p] for p in names}, pa_.time_s, pa_.meta,
                      None if pa_.filled is None else {p: pa_.filled[p] for p in names})


class InMemoryPose:
    """PoseFile's way of reading (read, blocks) over arrays already in memory (views)."""

    def __init__(self, pose: PoseArrays):
        self.pose, self.meta, self.n_frames = pose, pose.meta, pose.n_frames

    def read(self, lo: int = 0, hi: int | None = None, parts=None) -> PoseArrays:
        return pick_parts(slice_frames(self.pose, lo, self.n_frames if hi is None else hi), parts)

    def blocks(self, size: int = ROW_GROUP_FRAMES, parts=None):
        """(start frame, arrays) of consecutive blocks of `size` frames."""
        for lo in range(0, self.n_frames, size):
            yield lo, self.read(lo, lo + size, parts)


class PoseFile:
    """A pose table on disk, read a range of frames at a time: only the Parquet row groups the
    range overlaps are decoded (the last one kept for the next range), and only the parts asked for are kept, so
    a rule that walks a long video block by block holds a block, not the video. A table in
    another row order (not written by write_pose) is read whole once, by the general path."""

    def __init__(self, path: str | os.PathLike):
        if not Path(path).exists():
            raise FileNotFoundError(f"pose table {path} does not exist")
        self.path, self.meta, self.file = str(path), read_meta(path), pq.ParquetFile(path)
        per_frame, md = sum(JOINTS), self.file.metadata
        rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        self.n_frames, self._whole, self._cache = md.num_rows // per_frame, None, {}
        self._starts = np.cumsum([0, *rows]) // per_frame
        self.has_filled = "filled" in self.file.schema_arrow.names
        if md.num_rows % per_frame or any(r % per_frame for r in rows):
            self._load_whole()

    def _load_whole(self) -> None:
        self._whole = table_to_arrays(pd.read_parquet(self.path), self.meta, self.path)
        self.n_frames = self._whole.n_frames

    def _group(self, g: int) -> PoseArrays | None:
        if g not in self._cache:
            block = _canonical_block(self.file.read_row_group(g), int(self._starts[g]))
            if block is None:
                return None
            xyc, fill, t = block
            edges = np.cumsum([0, *JOINTS])
            parts = {p: xyc[:, edges[k]:edges[k + 1]] for k, p in enumerate(PART_ORDER)}
            filled = None if fill is None else {p: fill[:, edges[k]:edges[k + 1]] for k, p in enumerate(PART_ORDER)}
            self._cache[g] = PoseArrays(parts, t.astype(np.float32), self.meta, filled)
        return self._cache[g]

    def read(self, lo: int = 0, hi: int | None = None, parts=None) -> PoseArrays:
        """Frames [lo, hi) with the parts `parts` (default all), as arrays of their own."""
        hi = self.n_frames if hi is None else min(hi, self.n_frames)
        if self._whole is not None or lo >= hi:
            whole = self._whole if self._whole is not None else empty_arrays(0, self.meta)
            return pick_parts(slice_frames(whole, lo, hi), parts).copy()
        self._cache = {g: v for g, v in self._cache.items() if self._starts[g + 1] > lo}  # walks go forward
        names, n = list(parts or PART_ORDER), hi - lo
        out = PoseArrays({p: np.empty((n, len(PARTS[p]), 3), np.float32) for p in names}, np.empty(n, np.float32),
                         self.meta, {p: np.empty((n, len(PARTS[p])), bool) for p in names} if self.has_filled else None)
        for g in range(max(0, int(np.searchsorted(self._starts, lo, "right")) - 1), len(self._starts) - 1):
            a, b = int(self._starts[g]), int(self._starts[g + 1])
            if a >= hi:
                break
            block = self._group(g)
            if block is None:
                self._load_whole()
                return self.read(lo, hi, parts)
            src, dst = slice(max(lo, a) - a, min(hi, b) - a), slice(max(lo, a) - lo, min(hi, b) - lo)
            out.time_s[dst] = block.time_s[src]
            for p in names:
                out.parts[p][dst] = block.parts[p][src]
                if out.filled is not None:
                    out.filled[p][dst] = block.filled[p][src]
            self._cache = {k: v for k, v in self._cache.items() if k >= g}
        return out

    blocks = InMemoryPose.blocks


def table_to_arrays(df: pd.DataFrame, meta: PoseMeta, source: str = "<table>") -> PoseArrays:
    """Long table -> dense arrays; raises PoseTableError naming `source` if it is not dense."""
    validate_table(df, source)
    frames = np.sort(df["frame"].unique())
    n = len(frames)
    parts, filled = {}, {}
    time_s = None
    for part in PART_ORDER:
        sub = df[df["part"] == part].sort_values(["frame", "joint"])
        j = len(PARTS[part])
        if len(sub) != n * j:
            raise PoseTableError(f"{source}: part {part!r} has {len(sub)} rows, expected {n}x{j}")
        parts[part] = np.stack(
            [sub["x"].to_numpy(np.float32), sub["y"].to_numpy(np.float32),
             sub["confidence"].to_numpy(np.float32)], axis=-1).reshape(n, j, 3)
        if "filled" in sub:
            filled[part] = sub["filled"].to_numpy(bool).reshape(n, j)
        if time_s is None:
            time_s = sub["time_s"].to_numpy(np.float32).reshape(n, j)[:, 0]
    return PoseArrays(parts, time_s, meta, filled or None)


def validate_table(df: pd.DataFrame, source: str = "<table>") -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PoseTableError(f"{source}: missing columns {missing}")
    frames = df["frame"].unique()
    if len(frames) and (frames.min() != 0 or frames.max() != len(frames) - 1):
        raise PoseTableError(f"{source}: frames are not 0..N-1 without gaps")


class PoseWriter:
    """Writes a pose table block by block (row groups of ROW_GROUP_FRAMES frames), whole or not at
    all: `with PoseWriter(path, meta) as w: w.write(block)`. `w.meta` may still change (what a
    rule learns on the way) until the end, where it is stored in the file's footer."""

    def __init__(self, path: str | os.PathLike, meta: PoseMeta):
        self.path, self.meta, self.frames, self._buffer, self._writer = path, meta, 0, [], None

    def __enter__(self) -> "PoseWriter":
        self._atomic = atomic_output(self.path)
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, block: PoseArrays) -> None:
        self._buffer.append(block)
        while sum(b.n_frames for b in self._buffer) >= ROW_GROUP_FRAMES:
            whole = concat_frames(self._buffer, self.meta)
            self._flush(slice_frames(whole, 0, ROW_GROUP_FRAMES))
            self._buffer = [slice_frames(whole, ROW_GROUP_FRAMES, whole.n_frames)]

    def _flush(self, block: PoseArrays) -> None:
        table = arrow_table(block)
        table = table.set_column(0, "frame", pa.array(table.column("frame").to_numpy() + np.int32(self.frames)))
        if self._writer is None:  # the first block says the columns (filled or not)
            schema = table.schema.with_metadata({META_KEY: self.meta.to_json()})
            self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        self._writer.write_table(table.cast(self._writer.schema))
        self.frames += block.n_frames

    def _finish(self) -> None:
        rest = concat_frames(self._buffer, self.meta) if self._buffer else empty_arrays(0, self.meta)
        if rest.n_frames or self._writer is None:
            self._flush(rest)
        self._writer.add_key_value_metadata({META_KEY: self.meta.to_json()})
        self._writer.close()

    def __exit__(self, kind, value, tb) -> bool:
        try:
            if kind is None:
                self._finish()
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)  # deletes the temporary file
            raise
        finally:
            if self._writer is not None:
                self._writer.close()
        return self._atomic.__exit__(kind, value, tb)


def write_pose(pa_: PoseArrays, path: str | os.PathLike) -> None:
    with PoseWriter(path, pa_.meta) as w:
        w.write(pa_)


def read_meta(path: str | os.PathLike) -> PoseMeta:
    md = pq.read_metadata(path).metadata or {}  # the footer's: PoseWriter stores what it learnt last
    if META_KEY not in md:
        raise PoseTableError(f"{path}: no pose metadata; not a pose table written by this pipeline")
    return PoseMeta.from_json(md[META_KEY])


def read_pose(path: str | os.PathLike, parts=None) -> PoseArrays:
    """The whole table as dense arrays (only `parts`, default all)."""
    return PoseFile(path).read(parts=parts)
