"""extract_pose and merge_pose: keypoints of every frame into the subject's pose table.

`extract` runs a back end over one chunk of the frames store (chunks are separate Snakemake jobs,
so they run in parallel or on different cluster nodes); `merge` concatenates the chunks in order
into `results/pose/{subject}.parquet` and refuses a video in which nobody was found.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from tqdm import tqdm

from .backends import BackendUnavailable, get_backend
from .atomic import atomic_output
from .posetable import PARTS, B, PoseArrays, PoseMeta, write_pose


class NoPersonError(ValueError):
    """Nobody was detected in (enough of) a subject's video."""


def chunk_ranges(n_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the chunks covering n_frames frames."""
    return [(s, min(s + chunk_frames, n_frames)) for s in range(0, n_frames, chunk_frames)]


def extract_arrays(frames, fps: float, subject: str = "", backend: str = "mediapipe",
                   options: dict | None = None, progress: bool = False,
                   extras: dict | None = None) -> PoseArrays:
    """Run a back end over RGB frames (N, H, W, 3) and return dense pose arrays.

    A back end with more to store than keypoints (densepose: the IUV images and their index)
    hands it over through `chunk_extras()`; it is added to `extras` when a dict is given."""
    n, h, w = len(frames), frames.shape[1], frames.shape[2]
    it = tqdm(frames, total=n, unit="frame", desc=f"pose {subject}", disable=not progress, file=sys.stderr)
    be = get_backend(backend, options)
    parts = be.extract(it)
    if extras is not None:
        extras.update(getattr(be, "chunk_extras", dict)())
    meta = PoseMeta(subject=subject, width=w, height=h, fps=fps, backend=backend)
    return PoseArrays(parts, np.arange(n, dtype=np.float32) / np.float32(fps), meta)


def write_chunk(path, parts: dict[str, np.ndarray], start: int) -> None:
    with atomic_output(path) as tmp:
        np.savez(tmp, start=start, **parts)


def detection_rates(pose: PoseArrays, min_conf: float = 0.3) -> dict[str, float]:
    """Fraction of frames with a person (any body joint), both ankles, a face and each hand."""
    if pose.n_frames == 0:
        return dict.fromkeys(["person", "ankles", "face", "left_hand", "right_hand"], 0.0)
    body = pose.parts["body"][..., 2]

    def seen(part):
        return float((pose.parts[part][..., 2].max(axis=1) > 0).mean())

    return {
        "person": seen("body"),
        "ankles": float(((body[:, B["LAnkle"]] >= min_conf) & (body[:, B["RAnkle"]] >= min_conf)).mean()),
        "face": seen("face"), "left_hand": seen("left_hand"), "right_hand": seen("right_hand"),
    }


def person_identities(body: np.ndarray, max_jump: float = 0.5) -> np.ndarray:
    """Which person each frame shows: an id per frame, -1 where nobody was detected.

    The detector returns one person per frame but may hand over to someone else (after losing
    track, or at a chunk boundary where detection starts afresh). A frame starts a new track
    when the body centre moved more than `max_jump` body heights since the last detected frame;
    a new track joins the identity whose last position is nearest, within the same distance,
    else it is a new identity.
    """
    seen = body[..., 2] > 0
    ids = np.full(len(body), -1, np.int64)
    last: list[tuple[np.ndarray, float]] = []  # per identity: last centre, last height
    current = -1
    prev = None
    for t in np.flatnonzero(seen.any(axis=1)):
        pts = body[t, seen[t], :2]
        centre = np.median(pts, axis=0)
        height = max(float(np.ptp(pts[:, 1])), 1.0)
        if prev is not None and np.linalg.norm(centre - prev[0]) <= max_jump * max(height, prev[1]):
            ids[t] = current
        else:
            dists = [np.linalg.norm(centre - c) / max(height, h) for c, h in last]
            near = int(np.argmin(dists)) if dists else -1
            current = near if near >= 0 and dists[near] <= max_jump else len(last)
            if current == len(last):
                last.append((centre, height))
            ids[t] = current
        last[current] = (centre, height)
        prev = (centre, height)
    return ids


def keep_main_person(pose: PoseArrays, max_jump: float = 0.5) -> tuple[PoseArrays, dict]:
    """Keep the person tracked in the most frames; frames showing anyone else become missing."""
    ids = person_identities(pose.parts["body"], max_jump)
    counts = np.bincount(ids[ids >= 0]) if (ids >= 0).any() else np.zeros(0, int)
    info = {"identities": int(len(counts)), "frames_per_identity": counts.tolist()}
    if len(counts) <= 1:
        return pose, info
    others = (ids >= 0) & (ids != int(np.argmax(counts)))
    for arr in pose.parts.values():
        arr[others, :, :2] = np.nan
        arr[others, :, 2] = 0
    info["frames_dropped"] = int(others.sum())
    return pose, info


def merge_chunks(chunks: list[str], meta: PoseMeta, min_person_rate: float = 0.0,
                 video: str = "") -> PoseArrays:
    loaded = sorted((np.load(c) for c in chunks), key=lambda z: int(z["start"]))
    expected = 0
    for z in loaded:
        if int(z["start"]) != expected:
            raise ValueError(f"pose chunks of {meta.subject!r} do not tile the video: gap at frame {expected}")
        expected += len(z["body"])
    parts = {p: np.concatenate([z[p] for z in loaded]) for p in PARTS}
    pose = PoseArrays(parts, np.arange(expected, dtype=np.float32) / np.float32(meta.fps), meta)
    pose, meta.extra["main_person"] = keep_main_person(pose)
    rate = detection_rates(pose)["person"]
    if rate == 0 or rate < min_person_rate:
        raise NoPersonError(
            f"subject {meta.subject!r}: a person was detected in {rate:.0%} of the {expected} frames of "
            f"{video or 'its video'} (need at least {max(min_person_rate, 1e-9):.0%}); is there a person in it?")
    return pose


def main(argv=None):
    ap = argparse.ArgumentParser(description="Pose extraction: one chunk, or merge the chunks.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract", help="run the back end over frames [start, end)")
    ex.add_argument("--frames", required=True, help="frames.npy of the subject")
    ex.add_argument("--start", type=int, required=True)
    ex.add_argument("--end", type=int, required=True)
    ex.add_argument("--out", required=True, help="chunk .npz")
    ex.add_argument("--backend", default="mediapipe")
    ex.add_argument("--subject", default="")
    ex.add_argument("--min-detection-confidence", type=float, default=0.5)
    ex.add_argument("--min-tracking-confidence", type=float, default=0.5)
    ex.add_argument("--options", default=None,
                    help="the back end's options as JSON (steps.backends.options.backend_options); "
                         "when given, the two MediaPipe flags above are not used")
    mg = sub.add_parser("merge", help="merge chunks into the pose table")
    mg.add_argument("chunks", nargs="+")
    mg.add_argument("--manifest", required=True)
    mg.add_argument("--out", required=True)
    mg.add_argument("--subject", required=True)
    mg.add_argument("--backend", default="mediapipe")
    mg.add_argument("--min-person-rate", type=float, default=0.05)
    a = ap.parse_args(argv)

    if a.cmd == "extract":
        frames = np.load(a.frames, mmap_mode="r")
        if a.options:
            import json

            opts = json.loads(a.options)
        else:
            opts = {"min_detection_confidence": a.min_detection_confidence,
                    "min_tracking_confidence": a.min_tracking_confidence}
        extras: dict = {}
        try:
            pose = extract_arrays(frames[a.start:a.end], 1.0, a.subject, a.backend, opts, progress=True,
                                  extras=extras)
        except BackendUnavailable as e:
            sys.exit(f"extract_pose: subject {a.subject!r}: {e}")
        write_chunk(a.out, {**pose.parts, **extras}, a.start)
        return

    import json

    import pyarrow.parquet as pq

    vmeta = json.loads(pq.read_schema(a.manifest).metadata[b"edn"])
    meta = PoseMeta(subject=a.subject, width=vmeta["width"], height=vmeta["height"],
                    fps=vmeta["fps"], backend=a.backend, extra={"video": vmeta["video"]})
    try:
        pose = merge_chunks(a.chunks, meta, a.min_person_rate, vmeta["video"])
    except (NoPersonError, ValueError) as e:
        sys.exit(f"merge_pose: {e}")
    meta.extra["detection_rates"] = detection_rates(pose)
    write_pose(pose, a.out)
    print(f"{a.out}: {pose.n_frames} frames, detection rates {meta.extra['detection_rates']}", file=sys.stderr)


if __name__ == "__main__":
    main()
