"""evaluate: reconstruct the target's held-out frames from their own poses (the paper's table).

The held-out validation tail is the last `train.val_fraction` of the target's frames, which
train_generator never trains on (the split is read from generator.pt). Each model regenerates
those frames from the target's own smoothed poses, the way transfer runs: label maps at the
generator's size, the generator run recurrently from the tail's first frame, then (for the face
row) the face GAN's residual in the face box, each under bf16 autocast on CUDA when it was trained
with it. Real frames are resized to the generator's size.

Rows (one per model; the ablation rows exist when configured):
- `no temporal smoothing`: a generator trained with `train.temporal: false` (evaluate.ablation);
- `temporal smoothing`: the target's generator without the face GAN;
- `temporal smoothing + face GAN`: the same with face.pt (face.enabled);
- `real frames`: the real held-out frames; only the pose columns (the detector's own error on
  the frames the input poses came from: a floor for the others) and temporal change.

Columns (means over the held-out frames):
- `ssim`: structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
  K2 0.03, data range 255) per RGB channel, averaged; 1 for identical images.
- `psnr_db`: 10 log10(255^2 / MSE) per frame, capped at 100 dB (identical images would be
  infinite; the cap keeps means finite and is reached only by exact copies).
- `stlpips_vgg`: the shift-tolerant LPIPS distance, VGG variant (steps.gan.vgg.STLPIPS, the weights of
  the stlpips-pytorch wheel). It is a learned perceptual distance like the paper's LPIPS but
  *not* the paper's LPIPS network, so its numbers are not comparable with the paper's. 0 for
  identical images. NaN when the weights are not installed.
- `face_ssim`, `face_psnr_db`, `face_stlpips_vgg`: the same on the face box crops.
- `pose_body_px`, `pose_face_px`, `pose_hands_px`: the paper's pose distance. Keypoints are
  detected again (steps.prepare.pose.extract_arrays, the pipeline's detector) on the generated frames and
  compared with the input keypoints (the poses the frames were generated from), in pixels of the
  evaluated frame size. For each part instance (a frame's body, face, left hand or right hand)
  present in the input and detected again, the distance is the mean L2 over the joints seen in
  both (confidence >= min_confidence; the face uses the label maps' face points,
  steps.prepare.labels.FACE_POINTS); the column is the mean over those instances.
- `missed_body`, `missed_face`, `missed_hands`: instances present in the input but not detected
  on the generated frames; `n_body`, `n_face`, `n_hands`: instances present in the input.
- `temporal_change`: mean absolute difference between consecutive frames (0..255) of this row's
  frames; `temporal_real`: the same for the real frames; `temporal_ratio` = their ratio (1 is
  as stable as reality; above 1 flickers more).

Outputs: the CSV, a Markdown rendering, and a PNG grid (label | each model | real).

"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from steps.prepare.framestore import open_frames
from steps import logs
from steps.evaluate.metrics import Perceptual, psnr, ssim, temporal_change
from steps.evaluate.pose_distance import pose_distances, scale_pose_parts
from steps.evaluate.tables import markdown_rows
from steps.gan.models import LABEL_CH
from steps.prepare.faceboxes import face_boxes
from steps.prepare.posetable import PoseArrays, read_pose
from steps.prepare.stats import face_frames
from steps.render.inference import (
    FaceRefiner,
    generate_sequence,
    label_renderer,
    load_face,
    load_generator,
    pick_device,
    read_meta,
    resize_frame,
    trained_bf16,
)
from steps.sampling import evenly_spaced

log = logging.getLogger("evaluate")

ROW_NAMES = {"no_temporal": "no temporal smoothing", "temporal": "temporal smoothing",
             "temporal_face": "temporal smoothing + face GAN", "real": "real frames"}


# --- evaluation -------------------------------------------------------------------------------

def reconstruct(generator_path, pose: PoseArrays, frames_idx: np.ndarray, face_path=None, boxes=None,
                device="cpu", iuv=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Generate frames `frames_idx` (consecutive) from their poses, recurrently from the first
    (iuv: the target's IUV store, for a generator trained with labels.iuv concat), in the
    precision each model was trained in, as transfer does."""
    g, meta = load_generator(generator_path, device)
    render = label_renderer(meta, iuv)
    labels = [render(pose, int(i)) for i in frames_idx]
    face = None
    if face_path:
        face_g, fmeta = load_face(face_path, device)
        face = FaceRefiner(face_g, boxes.boxes[frames_idx], trained_bf16(fmeta))
    return list(generate_sequence(g, labels, device=device, bf16=trained_bf16(meta), face=face)), labels


def image_metrics(gen: list[np.ndarray], real: list[np.ndarray], boxes, idx, perceptual: Perceptual) -> dict:
    fg = [boxes.crop(f, int(i)) for f, i in zip(gen, idx)]
    fr = [boxes.crop(f, int(i)) for f, i in zip(real, idx)]
    return {
        "ssim": float(np.mean([ssim(a, b) for a, b in zip(gen, real)])),
        "psnr_db": float(np.mean([psnr(a, b) for a, b in zip(gen, real)])),
        "stlpips_vgg": float(np.mean(perceptual(gen, real))),
        "face_ssim": float(np.mean([ssim(a, b) for a, b in zip(fg, fr)])),
        "face_psnr_db": float(np.mean([psnr(a, b) for a, b in zip(fg, fr)])),
        "face_stlpips_vgg": float(np.mean(perceptual(fg, fr))),
    }


COLUMNS = ["model", "frames", "ssim", "psnr_db", "stlpips_vgg", "face_ssim", "face_psnr_db", "face_stlpips_vgg",
           "pose_body_px", "pose_face_px", "pose_hands_px", "missed_body", "missed_face", "missed_hands",
           "n_body", "n_face", "n_hands", "temporal_change", "temporal_real", "temporal_ratio"]


def model_rows(models: list, pose, idx, boxes, dev, iuv, real: list, inp: dict, perceptual, detected, min_conf: float):
    """(the table: a row per model and the real frames' row, each model's generated frames, the
    label maps). detected(images) -> keypoints, or None for no pose columns."""
    rows, outputs, labels = [], {}, None
    t_real = temporal_change(real)
    for key, gpath, fpath in models:
        gen, labs = reconstruct(gpath, pose, idx, fpath, boxes, dev, iuv)
        labels = labels if labels is not None else labs
        outputs[key] = gen
        row = {"model": ROW_NAMES[key], "frames": len(idx), **image_metrics(gen, real, boxes, idx, perceptual)}
        if detected:
            row.update(pose_distances(inp, detected(gen), min_conf))
        row.update(temporal_change=temporal_change(gen), temporal_real=t_real)
        rows.append(row)
        log.info("%s: %s", ROW_NAMES[key], {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    real_row = {"model": ROW_NAMES["real"], "frames": len(idx), "temporal_change": t_real, "temporal_real": t_real}
    if detected:
        real_row.update(pose_distances(inp, detected(real), min_conf))
    df = pd.DataFrame([*rows, real_row]).reindex(columns=COLUMNS)
    df["temporal_ratio"] = df["temporal_change"] / df["temporal_real"]
    return df, outputs, labels


def evaluate(frames_path, pose_path, generator_path, face_path=None, no_temporal_path=None, detect: bool = True,
             max_frames: int | None = None, n_samples: int = 4, min_conf: float = 0.3, device: str = "auto",
             backend: str = "mediapipe", boxes: dict | None = None, iuv_path=None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The table (one row per model), a sample grid, and facts about the run. boxes: the face box
    settings (the config's face.boxes) when there is no face.pt, whose own settings win. iuv_path:
    the target's IUV store, for generators trained with labels.iuv concat."""
    from steps.prepare.labels import open_iuv
    from steps.prepare.pose import extract_arrays
    from steps.settings import section

    dev = pick_device(device)
    frames = open_frames(frames_path)
    pose = read_pose(pose_path)
    meta = read_meta(generator_path)
    h, w, n_train = meta["height"], meta["width"], meta["held_out_from"]
    n = len(frames)
    iuv = open_iuv(iuv_path, n, frames_path) if iuv_path else None
    if n_train >= n:
        raise ValueError(f"{generator_path} was trained on all {n} frames: there are no held-out frames to evaluate on")
    idx = np.arange(n_train, n)[: max_frames or None]
    log.info("%d frames; evaluating the held-out tail %d..%d (%d frames) at %dx%d with %s (step %d%s)", n, idx[0],
             idx[-1], len(idx), w, h, generator_path, meta["step"],
             f", the best held-out of {meta['last_step']}" if "last_step" in meta else "")
    b = read_meta(face_path)["boxes"] if face_path else section("face", {"boxes": boxes or {}})["boxes"]
    boxes = face_boxes(pose, h, w, b["size"], b["smooth_window"], b["min_confidence"])
    real = [resize_frame(frames[i], h, w) for i in idx]
    inp = scale_pose_parts(pose, idx, h, w)
    perceptual = Perceptual(dev)
    fps = float(pose.meta.fps)

    models = [("no_temporal", no_temporal_path, None)] if no_temporal_path else []
    models.append(("temporal", generator_path, None))
    if face_path:
        models.append(("temporal_face", generator_path, face_path))
    detected = (lambda images: extract_arrays(np.stack(images), fps, backend=backend).parts) if detect else None
    df, outputs, labels = model_rows(models, pose, idx, boxes, dev, iuv, real, inp, perceptual, detected, min_conf)
    picks = evenly_spaced(len(idx), n_samples)
    grid = np.concatenate([np.concatenate([labels[k][..., :LABEL_CH]] + [outputs[m][k] for m, _, _ in models] + [real[k]], 1)
                           for k in picks], 0)
    facts = {"frames_total": n, "held_out_from": int(n_train), "evaluated": len(idx), "width": w, "height": h,
             "face_frames": face_frames(pose, idx, b["min_confidence"]),
             "generator_step": int(meta["step"]), "generator_last_step": int(meta.get("last_step", meta["step"])),
             "face_box": boxes.size, "grid_columns": ["label"] + [ROW_NAMES[m] for m, _, _ in models] + ["real"]}
    return df, grid, facts


def to_markdown(df: pd.DataFrame, title: str, facts: dict) -> str:
    """The table as Markdown (no tabulate dependency), with what the columns mean."""
    cols = [c for c in COLUMNS if c != "temporal_real"]
    lines = [f"# {title}", "",
             f"Held-out frames {facts['held_out_from']}..{facts['frames_total'] - 1} "
             f"({facts['evaluated']} evaluated, {facts['face_frames']} with a face) at {facts['width']}x{facts['height']}; "
             f"face box {facts['face_box']} px; "
             f"generator of step {facts['generator_step']} (the best held-out of {facts['generator_last_step']} steps).", "",
             *markdown_rows(df, cols)]
    lines += ["", "ssim, psnr_db (capped at 100 dB): higher is better. stlpips_vgg: shift-tolerant LPIPS (VGG), "
              "lower is better; not the paper's LPIPS network. pose_*_px: mean L2 distance in pixels between the "
              "input keypoints and those detected again on the output, lower is better; missed_*: instances "
              "not detected again (out of n_*). temporal_ratio: mean change between consecutive frames over the "
              "same for the real frames (1 = as stable as the real video). The real-frames row is the detector's "
              "own floor.", ""]
    return "\n".join(lines)


def main(argv=None):
    from steps.atomic import atomic_output, write_png
    from steps.settings import section

    ap = argparse.ArgumentParser(description="Evaluate a target's models on its held-out frames (the paper's table).")
    ap.add_argument("--frames", required=True, help="the target's frames store (frames.mjpeg)")
    ap.add_argument("--pose", required=True, help="the target's smoothed pose table")
    ap.add_argument("--generator", required=True)
    ap.add_argument("--face", default=None, help="face.pt: adds the 'temporal smoothing + face GAN' row")
    ap.add_argument("--no-temporal", default=None, help="generator.pt trained without temporal smoothing (ablation row)")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--grid", required=True, help="PNG: label | each model | real, for a few held-out frames")
    ap.add_argument("--iuv", default=None, help="the target's DensePose IUV store (labels.iuv concat)")
    ap.add_argument("--settings", default="{}", help="the config's evaluate section as JSON (schema defaults fill the rest)")
    ap.add_argument("--boxes", default="{}", help="the config's face.boxes as JSON (face boxes without face.pt)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--title", default=None)
    a = ap.parse_args(argv)
    o = section("evaluate", {k: v for k, v in json.loads(a.settings).items() if k != "resources"})
    logs.setup()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        df, grid, facts = evaluate(a.frames, a.pose, a.generator, a.face, a.no_temporal, o["detect"], o["max_frames"],
                                   o["samples"], o["min_confidence"], o["device"], boxes=json.loads(a.boxes),
                                   iuv_path=a.iuv)
    except ValueError as e:
        sys.exit(f"evaluate: {e}")
    with atomic_output(a.csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    title = a.title or f"Reconstruction of {Path(a.frames).parent.name}'s held-out frames"
    with atomic_output(a.markdown) as tmp:
        Path(tmp).write_text(to_markdown(df, title, facts))
    write_png(a.grid, grid)
    print(to_markdown(df, title, facts))
    print(json.dumps(facts), file=sys.stderr)


if __name__ == "__main__":
    main()
