"""extract_pose and merge_pose: keypoints of every frame into the subject's pose table.

`extract` runs a back end over one chunk of frames (chunks are separate Snakemake jobs, so they
run in parallel or on different cluster nodes). By default it reads the chunk from the video at
the video's own resolution (`detect_on: video`): the working frames shrink a landscape dancer to
fit a portrait frame and the detector then loses the face and hands. The keypoints are mapped
into the working frame's pixels, so the table means the same whichever frames were read.
`merge` concatenates the chunks in order into `results/pose/{subject}.parquet`, keeps the main
person and their own hands, and refuses a video in which nobody was found.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from tqdm import tqdm

from steps.prepare.framestore import open_frames
from steps import logs
from steps.prepare.backends import BackendUnavailable, get_backend
from steps.prepare.backends.options import backend_options
from steps.atomic import atomic_output
from steps.prepare.frames import native_frames, read_manifest_meta, working_geometry
from steps.prepare.posetable import PARTS, B, PoseArrays, PoseMeta, PoseWriter
from steps.prepare.video import VideoError


class NoPersonError(ValueError):
    """Nobody was detected in (enough of) a subject's video."""


def chunk_ranges(n_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the chunks covering n_frames frames."""
    return [(s, min(s + chunk_frames, n_frames)) for s in range(0, n_frames, chunk_frames)]


def run_backend(frames, n: int, subject: str = "", backend: str = "mediapipe", options: dict | None = None,
                progress: bool = False, extras: dict | None = None) -> dict[str, np.ndarray]:
    """Run a back end over n RGB frames (any iterable) and return its per-part arrays.

    A back end with more to store than keypoints (densepose: the IUV images and their index)
    hands it over through `chunk_extras()`; it is added to `extras` when a dict is given."""
    it = tqdm(frames, total=n, unit="frame", desc=f"pose {subject}", disable=not progress, file=sys.stderr)
    be = get_backend(backend, options)
    parts = be.extract(it)
    if extras is not None:
        extras.update(getattr(be, "chunk_extras", dict)())
    return parts


def extract_arrays(frames, fps: float, subject: str = "", backend: str = "mediapipe",
                   options: dict | None = None, progress: bool = False,
                   extras: dict | None = None) -> PoseArrays:
    """Run a back end over RGB frames (N, H, W, 3) and return dense pose arrays."""
    n, h, w = len(frames), frames.shape[1], frames.shape[2]
    parts = run_backend(frames, n, subject, backend, options, progress, extras)
    meta = PoseMeta(subject=subject, width=w, height=h, fps=fps, backend=backend)
    return PoseArrays(parts, np.arange(n, dtype=np.float32) / np.float32(fps), meta)


def to_working(parts: dict[str, np.ndarray], read_size: tuple[int, int], store: dict) -> dict[str, np.ndarray]:
    """Keypoints in pixels of the video read at read_size -> pixels of the store's working frames.

    The store's scale and pad/crop (steps.prepare.frames.working_geometry) applied to points. A face or
    hand lying wholly outside a cropped working frame is not in the picture the GAN sees, so it
    becomes missing, as if the detector had only seen the crop."""
    w, h, ox, oy = working_geometry(*store["source_size"], store["width"], store["height"], store["resize"])
    scale = np.array([w / read_size[0], h / read_size[1]], np.float32)
    offset = np.array([ox, oy], np.float32)
    out = {}
    for part, arr in parts.items():
        arr = arr.copy()
        arr[..., :2] = arr[..., :2] * scale + offset
        if part != "body":
            x, y = arr[..., 0], arr[..., 1]
            inside = (x >= 0) & (x <= store["width"]) & (y >= 0) & (y <= store["height"])
            gone = ~inside.any(axis=1) & np.isfinite(x).any(axis=1)
            arr[gone, :, :2] = np.nan
            arr[gone, :, 2] = 0
        out[part] = arr
    return out


def extract_chunk(store: str, start: int, end: int, detect_on: str = "video", max_side: int = 1920,
                  subject: str = "", backend: str = "mediapipe", options: dict | None = None,
                  progress: bool = False, extras: dict | None = None) -> dict[str, np.ndarray]:
    """Keypoints of frames [start, end) of a frames store, in its working frame's pixels.

    detect_on 'video': the back end sees the video's own frames (long side <= max_side), the
    same frames in time as the store; 'frames': it sees the store's working frames."""
    meta = read_manifest_meta(store)
    end = min(end, meta["n_frames"])
    if detect_on == "frames":
        frames = open_frames(store)[start:end]
        parts = run_backend(frames, len(frames), subject, backend, options, progress, extras)
        read_size = (meta["width"], meta["height"])
    elif detect_on == "video":
        read_size, frames = native_frames(meta, start, end, max_side)
        parts = to_working(run_backend(frames, end - start, subject, backend, options, progress, extras),
                           read_size, meta)
    else:
        raise ValueError(f"detect_on must be 'video' or 'frames', not {detect_on!r}")
    if extras is not None:
        extras["read_size"] = np.array(read_size)
    return parts


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


def main_person(body: np.ndarray, max_jump: float = 0.5) -> tuple[np.ndarray, dict]:
    """The frames showing anyone but the person tracked in the most frames (bool per frame), and
    how many identities were seen: from the bodies alone, so a long video's tracking is small."""
    ids = person_identities(body, max_jump)
    counts = np.bincount(ids[ids >= 0]) if (ids >= 0).any() else np.zeros(0, int)
    info = {"identities": int(len(counts)), "frames_per_identity": counts.tolist()}
    others = (ids >= 0) & (ids != int(np.argmax(counts))) if len(counts) > 1 else np.zeros(len(body), bool)
    if len(counts) > 1:
        info["frames_dropped"] = int(others.sum())
    return others, info


def drop_frames(pose: PoseArrays, frames: np.ndarray) -> PoseArrays:
    """Make every point of the frames `frames` (bool per frame) missing, in place."""
    for arr in pose.parts.values():
        arr[frames, :, :2] = np.nan
        arr[frames, :, 2] = 0
    return pose


def keep_main_person(pose: PoseArrays, max_jump: float = 0.5) -> tuple[PoseArrays, dict]:
    """Keep the person tracked in the most frames; frames showing anyone else become missing."""
    others, info = main_person(pose.parts["body"], max_jump)
    return drop_frames(pose, others), info


HAND_WRISTS = {"left_hand": "LWrist", "right_hand": "RWrist"}


def drop_stray_hands(pose: PoseArrays, max_offset: float = 0.5) -> tuple[PoseArrays, dict]:
    """Make missing the hands whose wrist is more than max_offset torso lengths (neck to mid-hip)
    from the body's wrist on the same side: a hand given to the wrong arm, or a hand-like thing
    in the background. A hand in a frame without a body has nothing to belong to and goes too.

    Returns the pose (changed in place) and the number of hands dropped per side."""
    body = pose.parts["body"]
    torso = np.linalg.norm(body[:, B["Neck"], :2] - body[:, B["MidHip"], :2], axis=-1)
    info = {}
    for part, wrist in HAND_WRISTS.items():
        hand = pose.parts[part]
        found = hand[..., 2].max(axis=1) > 0
        dist = np.linalg.norm(hand[:, 0, :2] - body[:, B[wrist], :2], axis=-1)
        with np.errstate(invalid="ignore"):
            stray = found & ~(dist <= max_offset * torso)  # NaN (no body) counts as stray
        hand[stray, :, :2] = np.nan
        hand[stray, :, 2] = 0
        info[part] = int(stray.sum())
    return pose, info


def merge_chunks(chunks: list[str], meta: PoseMeta, min_person_rate: float, video: str,
                 max_hand_offset: float, out) -> dict:
    """The chunks joined into the pose table at `out`, one chunk in memory at a time: the person
    is tracked over the whole video from the bodies alone, then each chunk has the frames of
    anyone else made missing and its stray hands dropped, and is written. Returns the detection
    rates (also in the table's metadata). Nothing is written when there is no person."""
    loaded = sorted((int(np.load(c)["start"]), c) for c in chunks)
    bodies, expected = [], 0
    for start, c in loaded:
        if start != expected:
            raise ValueError(f"pose chunks of {meta.subject!r} do not tile the video: gap at frame {expected}")
        bodies.append(np.load(c)["body"])
        expected += len(bodies[-1])
    body = np.concatenate(bodies)
    others, meta.extra["main_person"] = main_person(body)
    body[others] = [np.nan, np.nan, 0]
    rate = float((body[..., 2].max(axis=1) > 0).mean()) if expected else 0.0
    if rate == 0 or rate < min_person_rate:
        raise NoPersonError(
            f"subject {meta.subject!r}: a person was detected in {rate:.0%} of the {expected} frames of "
            f"{video or 'its video'} (need at least {max(min_person_rate, 1e-9):.0%}); is there a person in it?")
    z0 = np.load(loaded[0][1])
    if "read_size" in z0.files:
        meta.extra["detected_at"] = z0["read_size"].tolist()
    stray, rates = dict.fromkeys(HAND_WRISTS, 0), {}
    with PoseWriter(out, meta) as w:
        for (start, c), b in zip(loaded, bodies):
            z, n = np.load(c), len(b)
            block = PoseArrays({p: z[p] for p in PARTS}, np.arange(start, start + n, dtype=np.float32)
                               / np.float32(meta.fps), meta)
            block, dropped = drop_stray_hands(drop_frames(block, others[start:start + n]), max_hand_offset)
            stray = {k: stray[k] + v for k, v in dropped.items()}
            rates = {k: rates.get(k, 0.0) + v * n / expected for k, v in detection_rates(block).items()}
            w.write(block)
        meta.extra.update(stray_hands_dropped=stray, detection_rates=rates)
    return rates


def main(argv=None):
    import json

    from steps.settings import section

    ap = argparse.ArgumentParser(description="Pose extraction: one chunk, or merge the chunks.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract", help="run the back end over frames [start, end)")
    ex.add_argument("--store", required=True, help="the subject's frames store (folder of frames.mjpeg, manifest.parquet)")
    ex.add_argument("--start", type=int, required=True)
    ex.add_argument("--end", type=int, required=True)
    ex.add_argument("--out", required=True, help="chunk .npz")
    ex.add_argument("--subject", default="")
    mg = sub.add_parser("merge", help="merge chunks into the pose table")
    mg.add_argument("chunks", nargs="+")
    mg.add_argument("--manifest", required=True)
    mg.add_argument("--out", required=True)
    mg.add_argument("--subject", required=True)
    for p in (ex, mg):
        p.add_argument("--settings", default="{}", help="the config's pose section as JSON (schema defaults fill the rest)")
    a = ap.parse_args(argv)
    logs.setup()
    c = section("pose", json.loads(a.settings))

    if a.cmd == "extract":
        # DensePose's IUV images must line up with the working frames, so it always detects on them
        detect_on = "frames" if c["backend"] == "densepose" else c["detect_on"]
        extras: dict = {}
        try:
            parts = extract_chunk(a.store, a.start, a.end, detect_on, c["max_side"], a.subject, c["backend"],
                                  backend_options(c), progress=True, extras=extras)
        except (BackendUnavailable, VideoError) as e:
            sys.exit(f"extract_pose: subject {a.subject!r}: {e}")
        write_chunk(a.out, {**parts, **extras}, a.start)
        return

    import pyarrow.parquet as pq

    vmeta = json.loads(pq.read_schema(a.manifest).metadata[b"edn"])
    meta = PoseMeta(subject=a.subject, width=vmeta["width"], height=vmeta["height"],
                    fps=vmeta["fps"], backend=c["backend"], extra={"video": vmeta["video"]})
    try:
        rates = merge_chunks(a.chunks, meta, c["min_person_rate"], vmeta["video"], c["max_hand_offset"], a.out)
    except (NoPersonError, ValueError) as e:
        sys.exit(f"merge_pose: {e}")
    print(f"{a.out}: detection rates {rates}", file=sys.stderr)


if __name__ == "__main__":
    main()
