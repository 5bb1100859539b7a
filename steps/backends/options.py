"""The keyword options each pose back end's constructor takes, from the config's `pose:` section.

extract_pose passes them as one JSON argument (`python -m steps.pose extract --options JSON`),
so a back end gets exactly its own keys whatever else the config holds.
"""
from __future__ import annotations

DETECTRON2_DEFAULTS = {"config_file": None, "weights": None, "device": "auto", "score_threshold": 0.5,
                       "min_iou": 0.3, "keypoint_score_scale": 0.1}
DENSEPOSE_DEFAULTS = {"config_file": None, "weights": None, "device": "auto", "score_threshold": 0.5,
                      "min_iou": 0.3, "keypoints": "mediapipe"}


def backend_options(pose: dict, backend: str | None = None) -> dict:
    """Constructor options of `backend` (default: pose['backend']) from the `pose:` config."""
    backend = backend or pose.get("backend", "mediapipe")
    if backend == "mediapipe":
        return {"min_detection_confidence": pose.get("min_detection_confidence", 0.5),
                "min_tracking_confidence": pose.get("min_tracking_confidence", 0.5)}
    if backend == "detectron2_keypoints":
        return {**DETECTRON2_DEFAULTS, **(pose.get("detectron2") or {})}
    if backend == "densepose":
        opts = {**DENSEPOSE_DEFAULTS, **(pose.get("densepose") or {})}
        opts["keypoint_options"] = backend_options(pose, opts["keypoints"])
        return opts
    return {}
