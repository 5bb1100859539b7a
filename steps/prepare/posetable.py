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


def arrays_to_table(pa_: PoseArrays) -> pd.DataFrame:
    """Dense arrays -> long table sorted by frame, part, joint."""
    n = pa_.n_frames
    blocks = []
    for part in PART_ORDER:
        arr = pa_.parts[part]
        j = arr.shape[1]
        block = {
            "frame": np.repeat(np.arange(n, dtype=np.int32), j),
            "time_s": np.repeat(pa_.time_s.astype(np.float32), j),
            "person": np.zeros(n * j, np.int8),
            "part": np.full(n * j, part, dtype=object),
            "joint": np.tile(np.arange(j, dtype=np.int16), n),
            "name": np.tile(np.array(PARTS[part], dtype=object), n),
            "x": arr[..., 0].reshape(-1).astype(np.float32),
            "y": arr[..., 1].reshape(-1).astype(np.float32),
            "confidence": np.nan_to_num(arr[..., 2].reshape(-1)).astype(np.float32),
        }
        if pa_.filled is not None:
            block["filled"] = pa_.filled[part].reshape(-1)
        blocks.append(pd.DataFrame(block))
    df = pd.concat(blocks, ignore_index=True)
    df["part"] = pd.Categorical(df["part"], categories=PART_ORDER)
    all_names = list(dict.fromkeys(n for p in PART_ORDER for n in PARTS[p]))
    df["name"] = pd.Categorical(df["name"], categories=all_names)
    order = np.lexsort((df["joint"].to_numpy(), df["part"].cat.codes.to_numpy(), df["frame"].to_numpy()))
    return df.iloc[order].reset_index(drop=True)


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


def write_pose(pa_: PoseArrays, path: str | os.PathLike) -> None:
    df = arrays_to_table(pa_)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: pa_.meta.to_json()})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_meta(path: str | os.PathLike) -> PoseMeta:
    md = pq.read_schema(path).metadata or {}
    if META_KEY not in md:
        raise PoseTableError(f"{path}: no pose metadata; not a pose table written by this pipeline")
    return PoseMeta.from_json(md[META_KEY])


def read_pose(path: str | os.PathLike) -> PoseArrays:
    if not Path(path).exists():
        raise FileNotFoundError(f"pose table {path} does not exist")
    meta = read_meta(path)
    return table_to_arrays(pd.read_parquet(path), meta, str(path))
