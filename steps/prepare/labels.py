"""Label maps: the pose of one frame drawn as coloured limbs, joints, hands and a sparse face.

This is the generator's input, as in the paper (an OpenPose-style rendering). Drawing is cheap,
so training and transfer render label maps on the fly at whatever size they need; the rule in
workflow/rules/labels.smk renders a preview video so a person can look at a pose table.
"""
from __future__ import annotations

import argparse
import colorsys
import logging

import cv2
import numpy as np

from steps import logs
from steps.prepare.backends.convert import label_map_with_iuv
from steps.prepare.posetable import B, PoseArrays
from steps.sampling import evenly_spaced

log = logging.getLogger("labels")

# BODY_25 limbs, in OpenPose's order.
BODY_LIMBS = [
    ("Neck", "MidHip"), ("Neck", "RShoulder"), ("Neck", "LShoulder"), ("RShoulder", "RElbow"),
    ("RElbow", "RWrist"), ("LShoulder", "LElbow"), ("LElbow", "LWrist"), ("MidHip", "RHip"),
    ("RHip", "RKnee"), ("RKnee", "RAnkle"), ("MidHip", "LHip"), ("LHip", "LKnee"),
    ("LKnee", "LAnkle"), ("Neck", "Nose"), ("Nose", "REye"), ("REye", "REar"), ("Nose", "LEye"),
    ("LEye", "LEar"), ("LAnkle", "LBigToe"), ("LBigToe", "LSmallToe"), ("LAnkle", "LHeel"),
    ("RAnkle", "RBigToe"), ("RBigToe", "RSmallToe"), ("RAnkle", "RHeel"),
]
BODY_PAIRS = np.array([(B[a], B[b]) for a, b in BODY_LIMBS])

# 21-point hand: four joints per finger from the wrist.
HAND_PAIRS = np.array([(0 if j % 4 == 1 else j - 1, j) for j in range(1, 21)])

# The sparse face drawn from MediaPipe's 468 mesh points: outline, brows, eyes, nose, lips
# (index chains from MediaPipe's FACEMESH_* contour sets).
FACE_CHAINS = [
    [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
     152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109, 10],
    [70, 63, 105, 66, 107], [300, 293, 334, 296, 336],
    [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246, 33],
    [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466, 263],
    [168, 6, 197, 195, 5, 4, 1],
    [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185, 61],
    [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191, 78],
]
FACE_PAIRS = np.array([(c[i], c[i + 1]) for c in FACE_CHAINS for i in range(len(c) - 1)])
FACE_POINTS = sorted({i for c in FACE_CHAINS for i in c})


def _palette(n: int, saturation: float = 1.0, value: float = 1.0, offset: float = 0.0):
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((offset + i / n) % 1.0, saturation, value))
            for i in range(n)]


BODY_COLOURS = _palette(len(BODY_LIMBS))
LEFT_HAND_COLOURS = _palette(20, 0.6, 1.0, 0.0)
RIGHT_HAND_COLOURS = _palette(20, 0.6, 1.0, 0.5)
FACE_COLOUR = (255, 255, 255)


def _draw(canvas, pts, pairs, colours, thickness, min_conf, joints=True):
    """Draw segments whose two ends are both seen; pts is (J, 3) already in canvas pixels."""
    ok = np.isfinite(pts[:, 0]) & np.isfinite(pts[:, 1]) & (pts[:, 2] >= min_conf)
    xy = np.round(np.nan_to_num(pts[:, :2]) * 16).astype(np.int64)  # 4 fractional bits
    for k, (a, b) in enumerate(pairs):
        if ok[a] and ok[b]:
            colour = colours[k % len(colours)] if isinstance(colours, list) else colours
            cv2.line(canvas, tuple(xy[a]), tuple(xy[b]), colour, thickness, cv2.LINE_AA, shift=4)
    if joints:
        r = max(1, thickness)
        used = np.unique(pairs)
        for j in used[ok[used]]:
            cv2.circle(canvas, tuple(xy[j]), r * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)


def render_label_map(pose: PoseArrays, frame: int, height: int, width: int,
                     thickness_px: int | None = None, face: bool = True, hands: bool = True,
                     min_conf: float = 0.05) -> np.ndarray:
    """The label map of one frame: uint8 (height, width, 3) RGB on black.

    Keypoints are in pixels of pose.meta's frame size and are scaled to (height, width);
    thickness defaults to 2 px at 256 px and scales with the map's size.
    """
    sx, sy = width / pose.meta.width, height / pose.meta.height
    scale = np.array([sx, sy, 1.0], np.float32)
    t = thickness_px or max(1, round(2 * min(height, width) / 256))
    canvas = np.zeros((height, width, 3), np.uint8)
    _draw(canvas, pose.parts["body"][frame] * scale, BODY_PAIRS, BODY_COLOURS, t, min_conf)
    if hands:
        th = max(1, t // 2)
        _draw(canvas, pose.parts["left_hand"][frame] * scale, HAND_PAIRS, LEFT_HAND_COLOURS, th, min_conf, joints=False)
        _draw(canvas, pose.parts["right_hand"][frame] * scale, HAND_PAIRS, RIGHT_HAND_COLOURS, th, min_conf, joints=False)
    if face:
        _draw(canvas, pose.parts["face"][frame] * scale, FACE_PAIRS, FACE_COLOUR, 1, min_conf, joints=False)
    return canvas


def person_mask(pose: PoseArrays, frame: int, height: int, width: int, min_conf: float = 0.05) -> np.ndarray:
    """Where the person may be in a frame, bool (height, width): the hull of its body, hand and
    face keypoints and its skeleton, grown by a twelfth of the frame's height (clothes and hair
    reach past the joints)."""
    sx, sy = width / pose.meta.width, height / pose.meta.height
    pts = np.concatenate([pose.parts[k][frame] for k in ("body", "left_hand", "right_hand", "face")])
    pts = pts[pts[:, 2] > min_conf, :2] * (sx, sy)
    mask = render_label_map(pose, frame, height, width, thickness_px=1, face=False).any(-1).astype(np.uint8)
    if len(pts) >= 3:
        cv2.fillConvexPoly(mask, cv2.convexHull(pts.round().astype(np.int32)), 1)
    r = max(1, height // 12)
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(bool)


def static_background(frames, pose: PoseArrays, n: int, samples: int = 60, what: str = "the target's frames") -> np.ndarray:
    """The target's static background (labels.background), uint8 (H, W, 3) at the frames' size:
    per pixel, the median over up to `samples` frames spread over [0, n) of those where the
    person is not (person_mask). Where the person is in nearly all of them (a target who stays
    in one place), the pixel is inpainted from around it, so no copy of the person is left for
    the generator to paste. Only the training frames [0, n) are read: the held-out tail stays
    unseen. A background that is not static is a warning naming `what`."""
    h, w = frames.shape[1:3]
    idx = evenly_spaced(n, samples)
    stack = np.stack([np.asarray(frames[i]) for i in idx]).astype(np.float32)
    person = np.stack([person_mask(pose, int(i), h, w) for i in idx])
    seen = (~person).sum(0) >= max(2, len(idx) // 10)  # free in enough frames for a median
    stack[person] = np.nan
    free = stack[:, seen]
    bg = np.zeros((h, w, 3), np.float32)
    bg[seen] = np.nanmedian(free, 0)
    share = background_moves(free, bg[seen])
    if share > MOVING_BACKGROUND:
        log.warning("%s: away from the person, %.0f%% of the pixels differ from their median by more than %d "
                    "levels: the background is not static (a moving camera, changing light?), so the median given "
                    "to the generator (labels.background) is not what the frames show; set labels.background: "
                    "false for this target", what, 100 * share, MOVED_BY)
    bg = bg.round().astype(np.uint8)
    if (~seen).any():
        bg = cv2.inpaint(bg, (~seen).astype(np.uint8), max(3, h // 50), cv2.INPAINT_TELEA)
    return bg


MOVED_BY = 30             # levels of 255: more than noise and compression
MOVING_BACKGROUND = 0.25  # share of moved pixels over which the background counts as not static


def background_moves(free: np.ndarray, median: np.ndarray) -> float:
    """The share of the person-free samples free (frames, pixels, 3; NaN where the person is) that
    differ from their pixel's median by more than MOVED_BY in some channel."""
    moved = np.abs(free - median[None]).max(-1) > MOVED_BY  # the person's NaN compares False
    counted = ~np.isnan(free[..., 0])
    return float(moved.sum() / max(1, counted.sum()))


def with_image(render, image: np.ndarray):
    """render(pose, i, height, width) with a fixed image's channels (the background, the reference)
    after its own, resized to the label map's size (INTER_AREA, as the frames are)."""
    sized: dict = {}

    def render_with_image(pose, i, height, width):
        if (height, width) not in sized:
            sized[height, width] = cv2.resize(np.asarray(image), (width, height), interpolation=cv2.INTER_AREA)
        return np.concatenate([render(pose, i, height, width), sized[height, width]], -1)
    return render_with_image


def open_iuv(iuv_path, n_frames: int, what: str) -> np.ndarray:
    """The IUV store (N, H, W, 3) uint8 of results/densepose/{subject}, checked against N frames."""
    iuv = np.load(iuv_path, mmap_mode="r")
    if iuv.ndim != 4 or iuv.shape[-1] != 3 or len(iuv) != n_frames:
        raise ValueError(f"{iuv_path}: IUV store of shape {iuv.shape}, expected ({n_frames}, H, W, 3) "
                         f"to match {what}")
    return iuv


def generator_renderer(thickness: int = 2, face: bool = True, hands: bool = True, iuv=None, background=None,
                       reference=None):
    """render(pose, i, height, width) -> the label map the generator sees for frame i: the
    skeleton (H, W, 3) with lines `thickness` px thick at 256 px (scaled with the size); with
    `iuv` (DensePose IUV images indexed by frame: labels.iuv concat) then I, U, V, as NVIDIA's
    vid2vid pose model feeds its generator; with `reference` (labels.reference: `reference_of`)
    then a frame of the person and its skeleton (6 channels); with `background`
    (labels.background: the target's static_background) then its 3 channels, last."""
    def render(pose, i, height, width):
        t = max(1, round(thickness * min(height, width) / 256))
        lab = render_label_map(pose, i, height, width, thickness_px=t, face=face, hands=hands)
        return lab if iuv is None else label_map_with_iuv(lab, np.asarray(iuv[i]), "concat")
    for image in (reference, background):
        if image is not None:
            render = with_image(render, image)
    return render


def reference_of(frames, pose: PoseArrays, n: int, labels: dict) -> np.ndarray:
    """labels.reference: (H, W, 6) uint8 at the frames' size, a training frame of the person and the
    label map of its pose: the frame among [0, n) whose body is seen with the most confidence
    (the first of equals). Given to the generator beside every pose, it says whose look to draw,
    so one base of many people can draw each of them (as few-shot vid2vid's reference image)."""
    conf = np.nan_to_num(pose.parts["body"][:n, :, 2]).mean(1)
    k = int(np.argmax(conf))
    h, w = frames.shape[1:3]
    t = max(1, round(labels["thickness"] * min(h, w) / 256))
    skeleton = render_label_map(pose, k, h, w, thickness_px=t, face=labels["face"], hands=labels["hands"])
    return np.concatenate([np.asarray(frames[k]), skeleton], -1)


def main(argv=None):
    import json

    from tqdm import tqdm

    from steps.prepare.posetable import PoseFile
    from steps.prepare.video import write_video
    from steps.settings import section

    ap = argparse.ArgumentParser(description="Render a preview video of a pose table's label maps.")
    ap.add_argument("--pose", required=True, help="pose table (Parquet)")
    ap.add_argument("--out", required=True, help="preview mp4")
    ap.add_argument("--settings", default="{}", help="the config's labels section as JSON (schema defaults fill the rest)")
    ap.add_argument("--iuv", default=None, help="DensePose IUV store (iuv.npy, one image per frame) to show under the skeleton")
    a = ap.parse_args(argv)
    logs.setup()
    c = section("labels", json.loads(a.settings))
    pose = PoseFile(a.pose)  # block by block: a long video's poses are not held whole
    h, w, n = pose.meta.height, pose.meta.width, pose.n_frames
    iuv = np.load(a.iuv, mmap_mode="r") if a.iuv else None
    if iuv is not None and len(iuv) != n:
        raise SystemExit(f"{a.iuv} has {len(iuv)} IUV images but {a.pose} has {n} frames")

    def frames():
        for lo, block in pose.blocks():
            for i in range(block.n_frames):
                lab = render_label_map(block, i, h, w, c["thickness"], c["face"], c["hands"])
                # previews show the IUV under the skeleton: the generator's extra channels can't be shown as RGB
                yield lab if iuv is None else label_map_with_iuv(lab, np.asarray(iuv[lo + i]), "overlay")

    write_video(a.out, tqdm(frames(), total=n, desc=f"labels {pose.meta.subject}", unit="frame"), pose.meta.fps)


if __name__ == "__main__":
    main()
