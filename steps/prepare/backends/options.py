"""The keyword options each pose back end's constructor takes, from the config's `pose:` section.

extract_pose gets the whole section (`python -m steps.prepare.pose extract --settings JSON`) and hands a
back end exactly its own keys, with the schema's defaults for any key the section leaves out.
"""
from __future__ import annotations

from steps.settings import section


def backend_options(pose: dict, backend: str | None = None) -> dict:
    """Constructor options of `backend` (default: pose['backend']) from the `pose:` config."""
    pose = section("pose", pose)
    backend = backend or pose["backend"]
    if backend == "mediapipe":
        return {k: pose[k] for k in ("min_detection_confidence", "min_tracking_confidence")}
    if backend == "detectron2_keypoints":
        return dict(pose["detectron2"])
    if backend == "densepose":
        opts = dict(pose["densepose"])
        opts["keypoint_options"] = backend_options(pose, opts["keypoints"])
        return opts
    return {}
