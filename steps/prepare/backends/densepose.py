"""DensePose as a pose back end (`pose: backend: densepose`) and the IUV store it writes.

DensePose (detectron2's projects/DensePose, installed from source with detectron2, see
docs/detectron2.md) gives every person pixel a body part I (1-24) and chart coordinates U, V.
The back end:

- returns the pose table's keypoints from a keypoint back end it runs on the same frames
  (`keypoints: mediapipe`, the default, which adds face and hands, or `detectron2_keypoints`);
  DensePose's chart models predict no keypoints;
- per frame, takes the DensePose detection holding most of that person's joints (or, with no
  joints, the one select_main's rule follows), pastes its chart result into frame coordinates
  (convert.paste_chart: boxes leaving the frame are clipped) and keeps the frame's IUV image
  (uint8: I = part, U and V scaled to 0-255; 0 everywhere off the person) and an index row
  (frame, detected, box x0 y0 x1 y1, score, n_people, pixels, part_01..part_24 pixel counts,
  dropped);
- hands both to extract_pose as `chunk_extras()`, written into the pose chunk; `merge` below
  joins the chunks into the store `results/densepose/{subject}/iuv.npy` (N, H, W, 3), memory-
  mappable like the frames store, and `index.parquet`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from steps import logs
from steps.atomic import atomic_output
from .protocol import BackendUnavailable
from .convert import (PART_COLUMNS, PART_NAMES, MainPersonTracker, chart_origin,
                      iuv_index_row, match_to_keypoints, paste_chart)
from .detectron2 import build_predictor, run_predictor

DENSEPOSE_INSTALL = ("DensePose is part of detectron2's source tree, not of PyPI: "
                     "pip install --no-build-isolation -e detectron2/projects/DensePose")

INDEX_DTYPES = {"frame": "int32", "detected": "bool", "x0": "float32", "y0": "float32",
                "x1": "float32", "y1": "float32", "score": "float32", "n_people": "int16",
                "pixels": "int32", **{c: "int32" for c in PART_COLUMNS}, "dropped": "bool"}
META_KEY = b"edn"
CHANNELS = "I: DensePose part 0-24 (0 = background); U, V: chart coordinates x 255"


def index_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """The IUV index with its column order and dtypes (also for zero rows)."""
    df = pd.DataFrame(rows)
    if "dropped" not in df:
        df["dropped"] = False
    return df.reindex(columns=list(INDEX_DTYPES)).astype(INDEX_DTYPES)


class DensePoseBackend:
    """DensePose IUV per frame + keypoints from another back end; options: `pose: densepose:`."""

    name = "densepose"

    def __init__(self, config_file: str | None = None, weights: str | None = None, device: str = "auto",
                 score_threshold: float = 0.5, min_iou: float = 0.3, keypoints: str = "mediapipe",
                 keypoint_options: dict | None = None):
        if keypoints == "densepose":
            raise BackendUnavailable("pose.densepose.keypoints must name a keypoint back end "
                                     "(mediapipe or detectron2_keypoints), not densepose")

        def setup(cfg):
            from densepose import add_densepose_config

            add_densepose_config(cfg)

        def check(cfg):
            if not cfg.MODEL.DENSEPOSE_ON:
                return "MODEL.DENSEPOSE_ON is false: not a DensePose config"
            if "Embedding" in cfg.MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME:
                return ("it is a continuous-surface-embedding (CSE) model, which gives no IUV charts; "
                        "use a chart model such as densepose_rcnn_R_50_FPN_s1x.yaml")
            return None

        self.predictor, self.cfg = build_predictor(
            self.name, "pose.densepose", config_file, weights, device, score_threshold,
            extra_imports=[("densepose", DENSEPOSE_INSTALL)], setup=setup, model_zoo=False, check=check)
        from . import get_backend

        self.keypoints = get_backend(keypoints, keypoint_options)
        self.min_iou = min_iou
        self.iuv: np.ndarray | None = None
        self.iuv_index: pd.DataFrame | None = None

    def chart(self, inst1) -> tuple[np.ndarray, np.ndarray]:
        """labels (h, w) and uv (2, h, w) of a one-detection Instances, relative to its box."""
        from densepose.vis.extractor import DensePoseResultExtractor

        results, _ = DensePoseResultExtractor()(inst1)
        return results[0].labels.cpu().numpy(), results[0].uv.cpu().numpy()

    def extract(self, frames: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        frames = [np.asarray(f) for f in frames]
        parts = self.keypoints.extract(frames)
        h, w = frames[0].shape[:2] if frames else (0, 0)
        iuv = np.zeros((len(frames), h, w, 3), np.uint8)
        tracker = MainPersonTracker(self.min_iou)
        rows = []
        for f, rgb in enumerate(frames):
            inst = run_predictor(self.predictor, rgb)
            boxes = inst.pred_boxes.tensor.numpy()
            scores = inst.scores.numpy()
            k = match_to_keypoints(boxes, scores, parts["body"][f])
            if k >= 0:
                tracker.follow(boxes[k])
            else:
                k = tracker.choose(boxes, scores)
            if k < 0:
                rows.append(iuv_index_row(f, iuv[f]))
                continue
            labels, uv = self.chart(inst[int(k)])
            paste_chart(iuv[f], labels, uv, *chart_origin(boxes[k]))
            rows.append(iuv_index_row(f, iuv[f], boxes[k], scores[k], len(boxes)))
        self.iuv, self.iuv_index = iuv, index_frame(rows)
        return parts

    def chunk_extras(self) -> dict[str, np.ndarray]:
        """What extract_pose writes into the pose chunk beside the keypoints (see merge)."""
        if self.iuv is None:
            return {}
        return {"iuv": self.iuv, "iuv_index": self.iuv_index.to_records(index=False)}


# ---- the IUV store ---------------------------------------------------------------------------

def merge_chunks(chunks: list[str], out_dir: str | os.PathLike, meta: dict | None = None,
                 pose_body: np.ndarray | None = None) -> Path:
    """Pose chunks holding `iuv` and `iuv_index` -> out_dir/iuv.npy and out_dir/index.parquet.

    Chunks are ordered by their `start` and must tile the frames; the index's `frame` becomes the
    frame of the video. With `pose_body`, the merged pose table's body (N, 25, 3), frames where a
    chunk saw a person but the table has none (merge_pose judged them someone else) get an empty
    IUV image, `detected` false and `dropped` true, so the store shows the table's person only.
    Each file is written under a temporary name and renamed when whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    loaded = sorted((np.load(c) for c in chunks), key=lambda z: int(z["start"]))
    for c, z in zip(chunks, loaded):
        if "iuv" not in z.files:
            raise ValueError(f"{c} holds no DensePose IUV (was it extracted with pose backend densepose?)")
    expected, shapes = 0, set()
    for z in loaded:
        if int(z["start"]) != expected:
            raise ValueError(f"IUV chunks do not tile the video: gap at frame {expected}")
        expected += len(z["iuv"])
        if len(z["iuv"]):
            shapes.add(z["iuv"].shape[1:])
    if len(shapes) > 1:
        raise ValueError(f"IUV chunks of different frame sizes: {sorted(shapes)}")
    shape = shapes.pop() if shapes else (0, 0, 3)
    rows = []
    with atomic_output(out / "iuv.npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(expected, *shape))
        for z in loaded:
            s, n = int(z["start"]), len(z["iuv"])
            arr[s:s + n] = z["iuv"]
            idx = pd.DataFrame(z["iuv_index"])
            idx["frame"] = idx["frame"] + s
            idx["dropped"] = False
            if pose_body is not None:
                gone = (z["body"][..., 2] > 0).any(1) & ~(pose_body[s:s + n, :, 2] > 0).any(1)
                arr[s:s + n][gone] = 0
                idx.loc[gone, PART_COLUMNS + ["pixels"]] = 0
                idx.loc[gone, ["detected", "dropped"]] = [False, True]
            rows.append(idx)
        arr.flush()
        del arr
    index = index_frame(pd.concat(rows, ignore_index=True) if rows else [])
    md = {"height": int(shape[0]), "width": int(shape[1]), "frames": expected, "channels": CHANNELS,
          "parts": dict(zip(PART_COLUMNS, PART_NAMES)), **(meta or {})}
    table = pa.Table.from_pandas(index, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(md).encode()})
    with atomic_output(out / "index.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return out


def load_iuv(store: str | os.PathLike) -> tuple[np.ndarray, pd.DataFrame]:
    """The IUV images (memory-mapped, (N, H, W, 3) uint8) and the index of a store directory."""
    store = Path(store)
    if not (store / "iuv.npy").exists():
        raise FileNotFoundError(f"no DensePose IUV store at {store} (iuv.npy is missing)")
    return np.load(store / "iuv.npy", mmap_mode="r"), pd.read_parquet(store / "index.parquet")


def main(argv=None):
    ap = argparse.ArgumentParser(description="DensePose IUV store: merge the IUV of the pose chunks.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    mg = sub.add_parser("merge", help="join the pose chunks' IUV images into iuv.npy + index.parquet")
    mg.add_argument("chunks", nargs="+")
    mg.add_argument("--out-dir", required=True)
    mg.add_argument("--subject", default="")
    mg.add_argument("--pose", default=None, help="the merged pose table: keep the IUV of its person only")
    a = ap.parse_args(argv)
    logs.setup()
    body = None
    if a.pose:
        from steps.prepare.posetable import read_pose

        body = read_pose(a.pose).parts["body"]
    try:
        out = merge_chunks(a.chunks, a.out_dir, {"subject": a.subject}, body)
    except ValueError as e:
        sys.exit(f"merge_densepose: subject {a.subject!r}: {e}")
    _, index = load_iuv(out)
    print(f"{out}: {len(index)} frames, a person's IUV in {index['detected'].mean() if len(index) else 0:.0%} of them",
          file=sys.stderr)


if __name__ == "__main__":
    main()
