"""Pure conversions for the detectron2 back ends (no detectron2 needed, so they are tested here).

- COCO-17 keypoints (keypoint R-CNN's `Instances.pred_keypoints`) -> OpenPose BODY_25.
- Keypoint scores -> confidences in [0, 1].
- The main person among a frame's detections, chosen consistently across frames.
- DensePose chart results (per-box part labels and U, V) -> one IUV image per frame, its index
  row (box, score, pixels per part), and label maps with the IUV channels added.
"""
from __future__ import annotations

import cv2
import numpy as np

from steps.prepare.posetable import B

# COCO person keypoints, in the order keypoint R-CNN predicts them.
COCO_17 = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]
C = {name: i for i, name in enumerate(COCO_17)}

# BODY_25 joint <- one COCO keypoint, or the midpoint of two. COCO has no feet: the toes and
# heels (LBigToe, LSmallToe, LHeel, RBigToe, RSmallToe, RHeel) stay missing.
BODY25_FROM_COCO = {
    "Nose": ("nose",), "Neck": ("left_shoulder", "right_shoulder"),
    "RShoulder": ("right_shoulder",), "RElbow": ("right_elbow",), "RWrist": ("right_wrist",),
    "LShoulder": ("left_shoulder",), "LElbow": ("left_elbow",), "LWrist": ("left_wrist",),
    "MidHip": ("left_hip", "right_hip"), "RHip": ("right_hip",), "RKnee": ("right_knee",),
    "RAnkle": ("right_ankle",), "LHip": ("left_hip",), "LKnee": ("left_knee",),
    "LAnkle": ("left_ankle",), "REye": ("right_eye",), "LEye": ("left_eye",),
    "REar": ("right_ear",), "LEar": ("left_ear",),
}
_SRC = np.array([[C[n[0]], C[n[-1]]] for n in BODY25_FROM_COCO.values()])
_DST = np.array([B[k] for k in BODY25_FROM_COCO])

# detectron2's visualiser hides keypoints scoring below 0.05; with the default scale 0.1 those
# map to confidences below 1/3, i.e. about the pipeline's default min_confidence (0.3).
KEYPOINT_SCORE_SCALE = 0.1


def keypoint_confidence(score: np.ndarray, scale: float = KEYPOINT_SCORE_SCALE) -> np.ndarray:
    """detectron2 keypoint scores -> confidences in [0, 1): s / (s + scale), 0 for s <= 0 or NaN.

    detectron2's `pred_keypoints[..., 2]` is not a probability: it is the heatmap's softmax at its
    maximum, normalised over the 56x56 heatmap but read off the box-sized bicubic upsampling, so
    it is > 0 and unbounded (values of 1-5 are common for clear joints; older releases returned
    raw logits, which can be negative). The map is monotone, saturating and has `scale` at 1/2.
    """
    s = np.nan_to_num(np.asarray(score, np.float32), nan=0.0)
    s = np.maximum(s, 0)
    return (s / (s + np.float32(scale))).astype(np.float32)


def coco17_to_body25(kps: np.ndarray, scale: float | None = KEYPOINT_SCORE_SCALE) -> np.ndarray:
    """(..., 17, 3) COCO x, y, score -> (..., 25, 3) BODY_25 x, y, confidence (float32).

    Scores go through keypoint_confidence (scale=None: taken as confidences already). Neck and
    MidHip are the shoulder and hip midpoints with the smaller confidence of the two; the six
    foot joints, which COCO lacks, are NaN with confidence 0. A keypoint with confidence 0 or a
    non-finite coordinate is missing (NaN, 0), and so is a midpoint with either end missing.
    """
    kps = np.asarray(kps, np.float32)
    if kps.shape[-2:] != (17, 3):
        raise ValueError(f"COCO keypoints must have shape (..., 17, 3), got {kps.shape}")
    conf = kps[..., 2] if scale is None else keypoint_confidence(kps[..., 2], scale)
    conf = np.clip(np.nan_to_num(conf, nan=0.0), 0, 1)
    xy = kps[..., :2]
    ok = np.isfinite(xy).all(-1) & (conf > 0)
    out = np.full(kps.shape[:-2] + (25, 3), np.nan, np.float32)
    out[..., 2] = 0
    a, b = _SRC[:, 0], _SRC[:, 1]
    both = ok[..., a] & ok[..., b]
    mid = (xy[..., a, :] + xy[..., b, :]) / 2
    out[..., _DST, :2] = np.where(both[..., None], mid, np.nan)
    out[..., _DST, 2] = np.where(both, np.minimum(conf[..., a], conf[..., b]), 0)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (K, 4) with b (M, 4), both x0, y0, x1, y1 -> (K, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _most_prominent(boxes: np.ndarray, scores: np.ndarray) -> int:
    """The largest box; equal areas go to the higher score, then the lower index."""
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return int(np.lexsort((-scores, -area))[0])


class MainPersonTracker:
    """Chooses the main person's detection frame by frame (see select_main for the rule)."""

    def __init__(self, min_iou: float = 0.3):
        self.min_iou = min_iou
        self.last: np.ndarray | None = None  # the last main box, kept through empty frames

    def choose(self, boxes: np.ndarray, scores: np.ndarray) -> int:
        """Index of the main person among this frame's detections (-1: none) and remember it."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(boxes) == 0:
            return -1
        k = -1
        if self.last is not None:
            iou = box_iou(self.last[None], boxes)[0]
            best = int(np.lexsort((-scores, -iou))[0])
            if iou[best] >= self.min_iou:
                k = best
        if k < 0:
            k = _most_prominent(boxes, scores)
        self.last = boxes[k]
        return k

    def follow(self, box) -> None:
        """Make `box` the last main box (when the choice was made another way)."""
        self.last = np.asarray(box, np.float64).reshape(4)


def select_main(boxes: list[np.ndarray], scores: list[np.ndarray], min_iou: float = 0.3) -> np.ndarray:
    """Index of the main person's detection in every frame (-1: nobody), chosen consistently.

    The first frame with detections takes the most prominent one (the largest box; ties go to
    the higher score). Each later frame takes the detection overlapping the last main box most
    (IoU, ties to the higher score) when that IoU is at least `min_iou`; the last main box is
    kept through frames without detections, so a short miss does not switch people. When nobody
    overlaps it enough (the person left, or was lost), the most prominent detection is taken
    again. Each extract_pose chunk starts afresh; merge_pose's track splitting then keeps the
    person followed longest, as for MediaPipe.
    """
    tracker = MainPersonTracker(min_iou)
    return np.array([tracker.choose(b, s) for b, s in zip(boxes, scores)], np.int64).reshape(-1)


def match_to_keypoints(boxes: np.ndarray, scores: np.ndarray, body: np.ndarray,
                       min_joints: int = 3, min_conf: float = 0.0) -> int:
    """The detection holding most of the person's seen joints (ties: higher score), or -1.

    Used to pick the DensePose detection of the person the keypoint back end followed; -1 when
    fewer than `min_joints` joints are seen or no box holds that many.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    ok = np.isfinite(body[:, :2]).all(1) & (body[:, 2] > min_conf)
    if len(boxes) == 0 or ok.sum() < min_joints:
        return -1
    x, y = body[ok, 0], body[ok, 1]
    inside = ((x[None] >= boxes[:, 0:1]) & (x[None] <= boxes[:, 2:3])
              & (y[None] >= boxes[:, 1:2]) & (y[None] <= boxes[:, 3:4])).sum(1)
    k = int(np.lexsort((-scores, -inside))[0])
    return k if inside[k] >= min_joints else -1


# ---- DensePose -------------------------------------------------------------------------------

N_PARTS = 24  # DensePose chart parts 1..24; 0 is background
PART_NAMES = [
    "torso_back", "torso_front", "right_hand", "left_hand", "left_foot", "right_foot",
    "upper_leg_right_back", "upper_leg_left_back", "upper_leg_right_front", "upper_leg_left_front",
    "lower_leg_right_back", "lower_leg_left_back", "lower_leg_right_front", "lower_leg_left_front",
    "upper_arm_left_front", "upper_arm_right_front", "upper_arm_left_back", "upper_arm_right_back",
    "lower_arm_left_front", "lower_arm_right_front", "lower_arm_left_back", "lower_arm_right_back",
    "head_right", "head_left",
]
PART_COLUMNS = [f"part_{i:02d}" for i in range(1, N_PARTS + 1)]


def chart_origin(box_xyxy) -> tuple[int, int]:
    """Top-left frame pixel of a chart result, as DensePose computes it: the box's x0 and y0
    truncated to integers (its results are `int(w)` x `int(h)` pixels from there)."""
    return int(box_xyxy[0]), int(box_xyxy[1])


def paste_chart(iuv: np.ndarray, labels: np.ndarray, uv: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Paste one chart result into a frame's IUV image (H, W, 3) uint8, in place; returns it.

    labels (h, w) holds parts 0-24 and uv (2, h, w) U, V in [0, 1], both relative to the box
    whose top-left frame pixel is (x0, y0). The box may leave the frame on any side: only the
    part inside is pasted. Only foreground pixels (label > 0) are written, so several people
    pasted in turn overlap in paste order. Channels: I = part index, U and V scaled to 0-255.
    """
    H, W = iuv.shape[:2]
    labels = np.asarray(labels)
    uv = np.asarray(uv, np.float32)
    h, w = labels.shape
    if uv.shape != (2, h, w):
        raise ValueError(f"uv must have shape (2, {h}, {w}) like labels, got {uv.shape}")
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, W), min(y0 + h, H)
    if fx1 <= fx0 or fy1 <= fy0:
        return iuv
    sl = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    lab = labels[sl]
    fg = lab > 0
    dst = iuv[fy0:fy1, fx0:fx1]
    dst[..., 0][fg] = np.clip(lab[fg], 0, N_PARTS).astype(np.uint8)
    for c in (0, 1):
        dst[..., 1 + c][fg] = np.round(np.clip(uv[c][sl][fg], 0, 1) * 255).astype(np.uint8)
    return iuv


def chart_to_frame_iuv(labels, uv, box_xyxy, height: int, width: int) -> np.ndarray:
    """One detection's chart result -> a new (height, width, 3) uint8 IUV image of the frame."""
    iuv = np.zeros((height, width, 3), np.uint8)
    return paste_chart(iuv, labels, uv, *chart_origin(box_xyxy))


def part_pixel_counts(iuv: np.ndarray) -> np.ndarray:
    """Pixels of each part 1..24 in an IUV image -> int32 (24,)."""
    return np.bincount(iuv[..., 0].reshape(-1), minlength=N_PARTS + 1)[1:N_PARTS + 1].astype(np.int32)


def iuv_index_row(frame: int, iuv: np.ndarray, box_xyxy=None, score: float = np.nan,
                  n_people: int = 0) -> dict:
    """The index row of one frame's IUV image: frame, detected, box, score, people, pixels."""
    box = np.full(4, np.nan) if box_xyxy is None else np.asarray(box_xyxy, np.float64)
    counts = part_pixel_counts(iuv)
    row = {"frame": int(frame), "detected": box_xyxy is not None, "x0": box[0], "y0": box[1],
           "x1": box[2], "y1": box[3], "score": float(score), "n_people": int(n_people),
           "pixels": int(counts.sum())}
    row.update({c: int(n) for c, n in zip(PART_COLUMNS, counts)})
    return row


def iuv_colour(iuv: np.ndarray) -> np.ndarray:
    """An RGB picture of an IUV image: hue from the part, brightness from U and V; black
    background. For previews and the `overlay` label-map mode."""
    i = iuv[..., 0].astype(np.int32)
    hsv = np.zeros(iuv.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (i * 179 // N_PARTS).astype(np.uint8)
    hsv[..., 1] = 255 - iuv[..., 1] // 2
    hsv[..., 2] = 128 + iuv[..., 2] // 2
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    rgb[i == 0] = 0
    return rgb


def label_map_with_iuv(label_map: np.ndarray, iuv: np.ndarray, mode: str = "concat") -> np.ndarray:
    """A label map with DensePose's IUV added, as NVIDIA's vid2vid pose model feeds its generator.

    label_map: (H, W, 3) uint8 RGB (steps.prepare.labels.render_label_map); iuv: (h, w, 3) uint8, resized
    to (H, W) with nearest neighbour if its size differs (part indices and U, V must not blend).
    - "concat": (H, W, 6) uint8: the label map's RGB, then I scaled by 10 (parts 1-24 -> 10-240,
      so every channel spans 0-255), U and V. Training and transfer feed this to the generator.
    - "overlay": (H, W, 3) uint8: the coloured IUV (iuv_colour) with the skeleton drawn on top
      (wherever the label map is not black). For preview videos.
    - "none": the label map unchanged.
    """
    H, W = label_map.shape[:2]
    if iuv.shape[:2] != (H, W):
        iuv = cv2.resize(iuv, (W, H), interpolation=cv2.INTER_NEAREST)
    if mode == "none":
        return label_map
    if mode == "concat":
        i = (iuv[..., :1].astype(np.uint16) * 10).clip(0, 255).astype(np.uint8)
        return np.concatenate([label_map, i, iuv[..., 1:3]], axis=-1)
    if mode == "overlay":
        out = iuv_colour(iuv)
        drawn = label_map.any(-1)
        out[drawn] = label_map[drawn]
        return out
    raise ValueError(f"label-map IUV mode must be none, concat or overlay, got {mode!r}")


def fit_scale_shift(src_xy: np.ndarray, dst_xy: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Least-squares uniform scale s and shift t with dst = s src + t, over the points finite in
    both ((J, 2) each); None with fewer than 2 such points or no spread.

    A normalized pose is the source pose scaled about a point and shifted, frame by frame
    (steps.prepare.normalize), so this recovers the per-frame transform from the two pose tables, and
    warp_iuv applies it to the source's IUV images for transfer label maps."""
    src_xy, dst_xy = np.asarray(src_xy, np.float64), np.asarray(dst_xy, np.float64)
    ok = np.isfinite(src_xy).all(1) & np.isfinite(dst_xy).all(1)
    if ok.sum() < 2:
        return None
    a, b = src_xy[ok], dst_xy[ok]
    ac, bc = a - a.mean(0), b - b.mean(0)
    spread = (ac ** 2).sum()
    if spread <= 1e-12:
        return None
    s = float((ac * bc).sum() / spread)
    return s, b.mean(0) - s * a.mean(0)


def warp_iuv(iuv: np.ndarray, scale: float, shift, height: int | None = None,
             width: int | None = None) -> np.ndarray:
    """An IUV image moved by p' = scale p + shift (pixels), nearest neighbour (part indices and
    U, V never blend), into a (height, width) frame (default: the same size); outside is 0."""
    h = iuv.shape[0] if height is None else height
    w = iuv.shape[1] if width is None else width
    m = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]], np.float64)
    return cv2.warpAffine(np.ascontiguousarray(iuv), m, (w, h), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class IUVOnPoses:
    """The source's IUV images moved onto its normalized poses (what transfer's label maps need
    with labels.iuv concat), made on demand and indexable like the IUV store.

    Item i is iuv[frame_of[i]] moved by the scale and shift that take the source's body joints of
    that frame (src_xy) onto the normalized ones (dst_xy) (fit_scale_shift, warp_iuv), in a
    (height, width) frame (the normalized table's); all zero where no transform can be fitted.
    frame_of: the frame whose pose frame i uses (transfer holds the last detected pose); default i."""

    def __init__(self, iuv, src_xy: np.ndarray, dst_xy: np.ndarray, height: int, width: int, frame_of=None):
        if not (len(iuv) == len(src_xy) == len(dst_xy)):
            raise ValueError(f"{len(iuv)} IUV images for {len(src_xy)} source poses and {len(dst_xy)} normalized poses")
        self.iuv, self.src_xy, self.dst_xy, self.height, self.width = iuv, src_xy, dst_xy, height, width
        self.frame_of = np.arange(len(iuv)) if frame_of is None else np.asarray(frame_of)

    def __len__(self) -> int:
        return len(self.frame_of)

    def __getitem__(self, i: int) -> np.ndarray:
        k = int(self.frame_of[i])
        fit = fit_scale_shift(self.src_xy[k], self.dst_xy[k])
        if fit is None:
            return np.zeros((self.height, self.width, 3), np.uint8)
        return warp_iuv(np.asarray(self.iuv[k]), fit[0], fit[1], self.height, self.width)
