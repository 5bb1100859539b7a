"""transfer: the target performing the source's dance (the `transfer` rule).

normalized source poses -> label maps (at the generator's training size) -> the generator run
recurrently (each frame conditioned on the previous output) -> the face GAN's residual in the
face box -> `results/transfer/{source}__{target}.mp4`: H.264 yuv420p at the source's frame rate
(the pipeline's `frames.fps`), with the source's audio when its video has a track (the stretch
that decode_frames kept, from the manifest's start).

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
(`source_iuv`) follow its normalized poses frame by frame (steps.backends.convert.IUVOnPoses,
from the source's pose table before normalization, `source_pose`); a held frame holds its IUV too.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from .atomic import atomic_output
from .models import LABEL_CH
from .posetable import PoseArrays, read_pose

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
    label = label.copy()
    if held:
        t = max(2, h // 64)
        cv2.rectangle(label, (0, 0), (label.shape[1] - 1, h - 1), HELD_COLOUR, t)
        cv2.putText(label, "pose held", (2 * t, h - 3 * t), cv2.FONT_HERSHEY_SIMPLEX, max(0.3, h / 512),
                    HELD_COLOUR, max(1, h // 256), cv2.LINE_AA)
    panels = ([fit_height(source, h)] if source is not None else []) + [label, result]
    return np.concatenate(panels, 1)


def trimmed_audio(video: str, start: float, duration: float, tmpdir: str) -> str | None:
    """The audio of video[start, start + duration] as an AAC file, or None when it has no audio."""
    from .video import FFMPEG, probe

    if not probe(video).has_audio:
        return None
    out = os.path.join(tmpdir, "audio.m4a")
    cmd = [FFMPEG, "-y", "-loglevel", "error", "-ss", f"{start:.6f}", "-t", f"{duration:.6f}", "-i", str(video),
           "-vn", "-acodec", "aac", out]
    subprocess.run(cmd, check=True)
    return out


class _BackgroundWriter:
    """write_video in a thread, fed frame by frame (so two videos are written in one pass).
    abort() makes the writer fail, so its temporary file is removed and no partial video remains."""

    _ABORT = object()

    def __init__(self, path, fps):
        from .video import write_video

        self.q: queue.Queue = queue.Queue(maxsize=16)
        self.error: BaseException | None = None

        def frames():
            while (f := self.q.get()) is not None:
                if f is self._ABORT:
                    raise RuntimeError(f"{path}: aborted")
                yield f

        def run():
            try:
                write_video(path, frames(), fps)
            except BaseException as e:  # re-raised in the main thread
                self.error = e
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _put(self, item) -> None:
        """Put unless the writer has stopped (then the item is not needed)."""
        while self.thread.is_alive():
            try:
                self.q.put(item, timeout=0.5)
                return
            except queue.Full:
                pass

    def put(self, frame):
        if self.error:
            raise self.error
        self._put(frame)
        if self.error:
            raise self.error

    def close(self):
        self._put(None)
        self.thread.join()
        if self.error:
            raise self.error

    def abort(self):
        self._put(self._ABORT)
        self.thread.join()


def transfer(pose_path, generator_path, out_video, sbs_video, stills_dir, frames_csv, face_path=None,
             source_frames=None, audio_video=None, audio_start: float = 0.0, min_joints: int = 8,
             min_conf: float = 0.3, n_stills: int = 4, device: str = "auto", progress: bool = True,
             source_iuv=None, source_pose=None) -> dict:
    from tqdm import tqdm

    from .faceboxes import face_boxes
    from .generator import apply_face, generate_sequence, label_renderer, load_face, load_generator, pick_device, uses_iuv
    from .labels import open_iuv
    from .video import write_video

    dev = pick_device(device)
    normalized = read_pose(pose_path)
    fps = float(normalized.meta.fps)
    n = normalized.n_frames
    pose, held, pose_from = hold_missing(normalized, min_joints, min_conf)
    log.info("%s: %d frames at %g fps; %d without a detected pose hold the last detected one",
             pose_path, n, fps, int(held.sum()))
    g, gcfg = load_generator(generator_path, dev)
    h, w = gcfg["height"], gcfg["width"]
    iuv = None
    if uses_iuv(gcfg):
        from .backends.convert import IUVOnPoses

        if source_iuv is None or source_pose is None:
            raise ValueError(f"{generator_path} was trained on label maps with DensePose IUV channels "
                             f"(labels.iuv: concat): transfer needs the source's IUV images (--source-iuv) and its "
                             f"pose table before normalization (--source-pose), which the IUV follows")
        src_pose = read_pose(source_pose)
        if src_pose.n_frames != n:
            raise ValueError(f"{source_pose} has {src_pose.n_frames} frames, the normalized poses {pose_path} {n}")
        iuv = IUVOnPoses(open_iuv(source_iuv, n, pose_path), src_pose.xy("body"), normalized.xy("body"),
                         normalized.meta.height, normalized.meta.width, frame_of=pose_from)
    elif source_iuv is not None:
        log.info("%s was trained without IUV channels: %s is not used", generator_path, source_iuv)
    render = label_renderer(gcfg, iuv)
    face_g = boxes = None
    if face_path:
        face_g, fcfg = load_face(face_path, dev)
        b = fcfg["boxes"]
        boxes = face_boxes(pose, h, w, fcfg["size"], b["smooth_window"], b["min_confidence"])
    src = np.load(source_frames, mmap_mode="r") if source_frames else None
    if src is not None and len(src) != n:
        raise ValueError(f"{source_frames} has {len(src)} frames, the pose table {pose_path} has {n}")
    stills = set(np.linspace(0, n - 1, min(n_stills, n)).round().astype(int).tolist()) if n_stills else set()
    stills_dir = Path(stills_dir)
    stills_dir.mkdir(parents=True, exist_ok=True)

    labels = [None] * 1  # the label of the frame being generated, shared with the generator's input iterator

    def label_iter():
        for i in range(n):
            labels[0] = render(pose, i)
            yield labels[0]

    with tempfile.TemporaryDirectory() as tmp:
        audio = trimmed_audio(audio_video, audio_start, n / fps, tmp) if audio_video else None
        sbs = _BackgroundWriter(sbs_video, fps)
        try:
            def results():
                gen = generate_sequence(g, label_iter(), device=dev)
                for i, frame in enumerate(tqdm(gen, total=n, desc="transfer", disable=not progress,
                                               mininterval=1.0 if sys.stderr.isatty() else 30.0)):
                    if face_g is not None:
                        frame = apply_face(face_g, frame, labels[0], boxes.boxes[i])
                    panel = side_by_side(None if src is None else src[i], labels[0][..., :LABEL_CH], frame, bool(held[i]))
                    sbs.put(panel)
                    if i in stills:
                        cv2.imwrite(str(stills_dir / f"still_{i:05d}.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
                    yield frame
            written = write_video(out_video, results(), fps, audio_from=audio)
        except BaseException:
            sbs.abort()
            raise
        sbs.close()
    table = pd.DataFrame({"frame": np.arange(n), "time_s": np.arange(n) / fps, "held": held, "pose_from": pose_from,
                          "face_seen": boxes.seen if boxes is not None else np.zeros(n, bool)})
    with atomic_output(frames_csv) as tmp:
        table.to_csv(tmp, index=False)
    info = {"frames": written, "fps": fps, "width": w, "height": h, "held": int(held.sum()),
            "audio": audio is not None, "face": face_g is not None}
    log.info("wrote %s and %s: %s", out_video, sbs_video, info)
    return info


def main(argv=None):
    from .settings import section

    ap = argparse.ArgumentParser(description="Transfer the source's dance onto the target (generator + face GAN).")
    ap.add_argument("--pose", required=True, help="normalized source poses (results/normalized/{source}__{target}.parquet)")
    ap.add_argument("--generator", required=True, help="the target's generator.pt")
    ap.add_argument("--face", default=None, help="the target's face.pt (optional)")
    ap.add_argument("--source-frames", default=None, help="the source's frames.npy (left panel of the side-by-side)")
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    audio_video, start = None, 0.0
    if a.source_manifest:
        import pyarrow.parquet as pq

        meta = json.loads(pq.read_schema(a.source_manifest).metadata[b"edn"])
        audio_video, start = meta.get("video"), float(meta.get("start") or 0.0)
        if audio_video and not Path(audio_video).exists():
            log.warning("source video %s not found: the transfer has no audio", audio_video)
            audio_video = None
    try:
        transfer(a.pose, a.generator, a.out, a.side_by_side, a.stills, a.frames_csv, a.face, a.source_frames,
                 audio_video, start, o["min_joints"], o["min_confidence"], o["stills"], o["device"],
                 source_iuv=a.source_iuv, source_pose=a.source_pose)
    except ValueError as e:
        sys.exit(f"transfer: {e}")


if __name__ == "__main__":
    main()
