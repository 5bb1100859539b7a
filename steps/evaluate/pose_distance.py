"""The paper's pose distance: keypoints detected again on generated frames against the poses
the frames were generated from, per part (body, face, hands), in pixels of the frames."""
from __future__ import annotations

import numpy as np

from steps.prepare.posetable import PoseArrays


def part_distance(inp: np.ndarray, det: np.ndarray, min_conf: float = 0.3) -> tuple[float, int, int]:
    """Input and re-detected keypoints (N, J, 3) of one part -> (mean distance, instances present
    in the input, instances missed). An instance (frame) counts when the input has any joint
    seen; it is detected when the re-detection has any; the distance of a detected instance is
    the mean L2 over the joints seen in both (instances sharing no joint do not count)."""
    def seen(a):
        return np.isfinite(a[..., 0]) & np.isfinite(a[..., 1]) & (a[..., 2] >= min_conf)

    si, sd = seen(inp), seen(det)
    present = si.any(1)
    detected = present & sd.any(1)
    both = si & sd & detected[:, None]
    d = np.linalg.norm(np.nan_to_num(inp[..., :2]) - np.nan_to_num(det[..., :2]), axis=-1)
    cnt = both.sum(1)
    use = cnt > 0
    per = (d * both).sum(1)[use] / cnt[use]
    return (float(per.mean()) if use.any() else float("nan")), int(present.sum()), int((present & ~detected).sum())


def scale_pose_parts(pose: PoseArrays, frames: slice | np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    s = np.array([width / pose.meta.width, height / pose.meta.height, 1.0], np.float32)
    return {p: a[frames] * s for p, a in pose.parts.items()}


def pose_distances(inp: dict[str, np.ndarray], det: dict[str, np.ndarray], min_conf: float = 0.3) -> dict:
    """The paper's pose distance for body, face (FACE_POINTS) and hands (both hands pooled)."""
    from steps.prepare.labels import FACE_POINTS

    out = {}
    groups = {"body": [("body", None)], "face": [("face", FACE_POINTS)],
              "hands": [("left_hand", None), ("right_hand", None)]}
    for name, parts in groups.items():
        tot_d, tot_n, present, missed = 0.0, 0, 0, 0
        for part, joints in parts:
            a, b = inp[part], det[part]
            if joints is not None:
                a, b = a[:, joints], b[:, joints]
            dist, n_present, n_missed = part_distance(a, b, min_conf)
            n_used = n_present - n_missed
            if np.isfinite(dist):
                tot_d += dist * n_used
                tot_n += n_used
            present += n_present
            missed += n_missed
        out[f"pose_{name}_px"] = tot_d / tot_n if tot_n else float("nan")
        out[f"missed_{name}"] = missed
        out[f"n_{name}"] = present
    return out
