"""transfer: the target performing the source's dance (the `transfer` rule).

normalized source poses -> label maps (at the generator's training size) -> the generator run
recurrently (each frame conditioned on the previous output) -> the face GAN's residual in the
face box -> `results/transfer/{source}__{target}.mp4`: H.264 yuv420p at the source's frame rate
(the pipeline's `frames.fps`), with the source's audio when its video has a track (the stretch
that decode_frames kept, from the manifest's start). Each model runs in the precision it was
trained in (bf16 autocast on CUDA when its train.bf16 says so).

Streaming: two threads render label maps ahead of the generator; the generator and the face GAN
run on the device (steps.render.inference.generate_sequence) with frames downloaded a few frames behind;
one thread encodes the transfer video and one composes, saves and encodes the side-by-side. An
error in any of them stops the others and leaves no video behind.

Beside it: a side-by-side video (source frame | label map | result) for people to compare, a
folder of PNG stills of the side-by-side, and a per-frame CSV.

Frames where the source pose was not detected. Smoothing already fills gaps of up to
`smooth.max_gap` frames. A frame still counts as undetected when fewer than `min_joints` body
joints have confidence >= `min_confidence`; such a frame *holds the last detected pose* (frames
before the first detection take the first detected pose), so the target freezes instead of
vanishing or the generator being fed an empty label map. It is visible: the side-by-side draws a
red border and "pose held" on the label panel, and the per-frame CSV has `held = true` and
`pose_from` (the frame whose pose was used). A source with no detected frame at all is an error
that names the file.

With labels.iuv concat the generator also sees DensePose's I, U, V: the source's IUV images
(`source_iuv`) follow its normalized poses frame by frame (steps.prepare.backends.convert.IUVOnPoses,
from the source's pose table before normalization, `source_pose`); a held frame holds its IUV too.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import pandas as pd
import torch

from steps.prepare.framestore import open_frames
from steps import logs
from steps.atomic import atomic_output
from steps.gan.models import LABEL_CH
from steps.prepare.posetable import PoseArrays, read_pose
from steps.render.streaming import Sink, ordered_map
from steps.sampling import evenly_spaced

log = logging.getLogger("transfer")

HELD_COLOUR = (230, 40, 40)


def hold_missing(pose: PoseArrays, min_joints: int = 8, min_conf: float = 0.3) -> tuple[PoseArrays, np.ndarray, np.ndarray]:
    """(pose with undetected frames replaced by the last detected one, held (N,) bool,
    pose_from (N,) int: the frame whose pose each frame uses)."""
    body = pose.parts["body"]
    seen = (np.isfinite(body[..., 0]) & (body[..., 2] >= min_conf)).sum(1) >= min_joints
    n = pose.n_frames
    if not seen.any():
        raise ValueError(f"no frame of {pose.meta.subject!r} has {min_joints} body joints with confidence "
                         f">= {min_conf}: nothing to transfer")
    idx = np.where(seen, np.arange(n), -1)
    pose_from = np.maximum.accumulate(idx)
    pose_from[pose_from < 0] = int(np.flatnonzero(seen)[0])  # before the first detection
    out = pose.copy()
    for arr in out.parts.values():
        arr[:] = arr[pose_from]
    if out.filled is not None:
        for arr in out.filled.values():
            arr[:] = arr[pose_from]
    return out, ~seen, pose_from


def _even(x: int) -> int:
    return max(2, int(x) // 2 * 2)


def fit_height(img: np.ndarray, height: int) -> np.ndarray:
    """Resize to `height`, keeping the aspect ratio, to an even width."""
    h, w = img.shape[:2]
    width = _even(round(w * height / h))
    if (h, w) == (height, width):
        return np.asarray(img)
    return cv2.resize(np.asarray(img), (width, height), interpolation=cv2.INTER_AREA)


def side_by_side(source: np.ndarray | None, label: np.ndarray, result: np.ndarray, held: bool) -> np.ndarray:
    """source | label | result at the result's height; a held pose is marked on the label panel."""
    h = result.shape[0]
    label = label[..., :LABEL_CH].copy()  # the skeleton (not IUV or background channels)
    if held:
        t = max(2, h // 64)
        cv2.rectangle(label, (0, 0), (label.shape[1] - 1, h - 1), HELD_COLOUR, t)
        cv2.putText(label, "pose held", (2 * t, h - 3 * t), cv2.FONT_HERSHEY_SIMPLEX, max(0.3, h / 512),
                    HELD_COLOUR, max(1, h // 256), cv2.LINE_AA)
    panels = ([fit_height(source, h)] if source is not None else []) + [label, result]
    return np.concatenate(panels, 1)


def trimmed_audio(video: str, start: float, duration: float, tmpdir: str) -> str | None:
    """The audio of video[start, start + duration] as an AAC file, or None when it has no audio."""
    from steps.prepare.video import FFMPEG, probe

    if not probe(video).has_audio:
        return None
    out = os.path.join(tmpdir, "audio.m4a")
    cmd = [FFMPEG, "-y", "-loglevel", "error", "-ss", f"{start:.6f}", "-t", f"{duration:.6f}", "-i", str(video),
           "-vn", "-acodec", "aac", out]
    subprocess.run(cmd, check=True)
    return out


def panels(items: Iterable, src, held: np.ndarray, stills: set, stills_dir: Path) -> Iterator[np.ndarray]:
    """The side-by-side panel of each (frame index, label map, result); those of the `stills`
    frames also as PNGs."""
    for i, label, frame in items:
        panel = side_by_side(None if src is None else src[i], label, frame, bool(held[i]))
        if i in stills:
            cv2.imwrite(str(stills_dir / f"still_{i:05d}.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        yield panel


def source_iuv_on_poses(gcfg: dict, normalized: PoseArrays, pose_from: np.ndarray, pose_path, source_iuv,
                        source_pose):
    """The IUV image of each transfer frame for a generator trained with labels.iuv concat: the
    source's IUV (source_iuv) following its poses (source_pose) to the normalized ones; None for
    other generators."""
    from steps.prepare.labels import open_iuv
    from steps.render.inference import uses_iuv

    name, n = gcfg["path"], normalized.n_frames
    if not uses_iuv(gcfg):
        if source_iuv is not None:
            log.info("%s was trained without IUV channels: %s is not used", name, source_iuv)
        return None
    from steps.prepare.backends.convert import IUVOnPoses

    if source_iuv is None or source_pose is None:
        raise ValueError(f"{name} was trained on label maps with DensePose IUV channels "
                         f"(labels.iuv: concat): transfer needs the source's IUV images (--source-iuv) and its "
                         f"pose table before normalization (--source-pose), which the IUV follows")
    src_pose = read_pose(source_pose)
    if src_pose.n_frames != n:
        raise ValueError(f"{source_pose} has {src_pose.n_frames} frames, the normalized poses {pose_path} {n}")
    return IUVOnPoses(open_iuv(source_iuv, n, pose_path), src_pose.xy("body"), normalized.xy("body"),
                      normalized.meta.height, normalized.meta.width, frame_of=pose_from)


def open_face(face_path, pose, h: int, w: int, dev):
    """(the face GAN as a FaceRefiner, its face boxes on `pose`), or (None, None) without face.pt."""
    from steps.prepare.faceboxes import face_boxes
    from steps.render.inference import FaceRefiner, load_face, trained_bf16

    if not face_path:
        return None, None
    face_g, fcfg = load_face(face_path, dev)
    b = fcfg["boxes"]
    boxes = face_boxes(pose, h, w, fcfg["size"], b["smooth_window"], b["min_confidence"])
    return FaceRefiner(face_g, boxes.boxes, trained_bf16(fcfg)), boxes


def stream(g, gcfg: dict, dev, labels, n: int, fps: float, face, panels_of, out_video, sbs_video, audio,
           progress: bool) -> int:
    """Generate the frames from the label maps `labels` and encode them, the transfer video and the
    side-by-side (panels_of(items) composes it) each in a thread of its own behind the generator.
    Returns the frames written."""
    from tqdm import tqdm

    from steps.prepare.video import write_video
    from steps.render.inference import generate_sequence, trained_bf16

    fed: deque = deque()  # label maps handed to the generator whose frame has not come out yet

    def feed():
        for lab in labels:
            fed.append(lab)
            yield lab

    video = Sink(lambda frames: write_video(out_video, frames, fps, audio_from=audio), "encode transfer")
    sbs = Sink(lambda items: write_video(sbs_video, panels_of(items), fps), "encode side-by-side")
    try:
        frames = generate_sequence(g, feed(), dev, bf16=trained_bf16(gcfg), face=face)
        for i, frame in enumerate(tqdm(frames, total=n, desc="transfer", disable=not progress,
                                       mininterval=1.0 if sys.stderr.isatty() else 30.0)):
            video.put(frame)
            sbs.put((i, fed.popleft(), frame))
        written = video.close()
        sbs.close()
        return written
    except BaseException:
        video.abort()
        sbs.abort()
        raise


def transfer(pose_path, generator_path, out_video, sbs_video, stills_dir, frames_csv, face_path=None,
             source_frames=None, audio_video=None, audio_start: float = 0.0, min_joints: int = 8,
             min_conf: float = 0.3, n_stills: int = 4, device: str = "auto", progress: bool = True,
             source_iuv=None, source_pose=None) -> dict:
    from steps.render.inference import label_renderer, load_generator, pick_device

    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size throughout: time cuDNN's convolutions once
    normalized = read_pose(pose_path)
    fps = float(normalized.meta.fps)
    n = normalized.n_frames
    pose, held, pose_from = hold_missing(normalized, min_joints, min_conf)
    log.info("%s: %d frames at %g fps; %d without a detected pose hold the last detected one",
             pose_path, n, fps, int(held.sum()))
    g, gcfg = load_generator(generator_path, dev)
    h, w = gcfg["height"], gcfg["width"]
    render = label_renderer(gcfg, source_iuv_on_poses(gcfg, normalized, pose_from, pose_path, source_iuv, source_pose))
    face, boxes = open_face(face_path, pose, h, w, dev)
    src = open_frames(source_frames) if source_frames else None
    if src is not None and len(src) != n:
        raise ValueError(f"{source_frames} has {len(src)} frames, the pose table {pose_path} has {n}")
    stills = set(evenly_spaced(n, n_stills).tolist())
    stills_dir = Path(stills_dir)
    stills_dir.mkdir(parents=True, exist_ok=True)

    # two threads render the label maps ahead of the generator
    labels = ordered_map(lambda i: render(pose, i), range(n))
    with tempfile.TemporaryDirectory() as tmp:
        audio = trimmed_audio(audio_video, audio_start, n / fps, tmp) if audio_video else None
        try:
            written = stream(g, gcfg, dev, labels, n, fps, face,
                             lambda items: panels(items, src, held, stills, stills_dir), out_video, sbs_video, audio,
                             progress)
        finally:
            labels.close()
    table = pd.DataFrame({"frame": np.arange(n), "time_s": np.arange(n) / fps, "held": held, "pose_from": pose_from,
                          "face_seen": boxes.seen if boxes is not None else np.zeros(n, bool)})
    with atomic_output(frames_csv) as tmp:
        table.to_csv(tmp, index=False)
    info = {"frames": written, "fps": fps, "width": w, "height": h, "held": int(held.sum()),
            "audio": audio is not None, "face": face is not None}
    log.info("wrote %s and %s: %s", out_video, sbs_video, info)
    return info


def main(argv=None):
    from steps.settings import section

    ap = argparse.ArgumentParser(description="Transfer the source's dance onto the target (generator + face GAN).")
    ap.add_argument("--pose", required=True, help="normalized source poses (results/normalized/{source}__{target}.parquet)")
    ap.add_argument("--generator", required=True, help="the target's generator.pt")
    ap.add_argument("--face", default=None, help="the target's face.pt (optional)")
    ap.add_argument("--source-frames", default=None, help="the source's frames store (frames.mjpeg) (left panel of the side-by-side)")
    ap.add_argument("--source-manifest", default=None, help="the source's manifest.parquet (audio: video and start)")
    ap.add_argument("--out", required=True, help="transfer video (.mp4)")
    ap.add_argument("--side-by-side", required=True, help="source | label | result video (.mp4)")
    ap.add_argument("--stills", required=True, help="folder for PNG stills")
    ap.add_argument("--frames-csv", required=True, help="per-frame CSV: held, pose_from, face_seen")
    ap.add_argument("--source-iuv", default=None, help="the source's DensePose IUV store (labels.iuv concat)")
    ap.add_argument("--source-pose", default=None, help="the source's smoothed pose table (with --source-iuv)")
    ap.add_argument("--settings", default="{}", help="the config's transfer section as JSON (schema defaults fill the rest)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    o = section("transfer", {k: v for k, v in json.loads(a.settings).items() if k != "resources"})
    logs.setup()
    if a.threads:
        torch.set_num_threads(a.threads)
    audio_video, start = None, 0.0
    if a.source_manifest:
        from steps.prepare.frames import check_unchanged, read_manifest_meta
        from steps.prepare.video import VideoError

        meta = read_manifest_meta(Path(a.source_manifest).parent)
        audio_video, start = meta["video"], float(meta["start"] or 0.0)
        try:
            check_unchanged(meta)  # the audio must be the frames' own
        except VideoError as e:
            log.warning("%s: the transfer has no audio", e)
            audio_video = None
    try:
        transfer(a.pose, a.generator, a.out, a.side_by_side, a.stills, a.frames_csv, a.face, a.source_frames,
                 audio_video, start, o["min_joints"], o["min_confidence"], o["stills"], o["device"],
                 source_iuv=a.source_iuv, source_pose=a.source_pose)
    except ValueError as e:
        sys.exit(f"transfer: {e}")


if __name__ == "__main__":
    main()
