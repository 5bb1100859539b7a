"""Pose-extraction back ends behind one contract (see base.py); chosen by `pose: backend:`."""
from __future__ import annotations

from .protocol import BackendUnavailable, PoseBackend

BACKENDS = {
    "mediapipe": "steps.prepare.backends.mediapipe:MediaPipeBackend",
    "detectron2_keypoints": "steps.prepare.backends.detectron2:Detectron2KeypointBackend",
    "densepose": "steps.prepare.backends.densepose:DensePoseBackend",
}


def get_backend(name: str, options: dict | None = None) -> PoseBackend:
    """Instantiate back end `name`; BackendUnavailable names a missing package or file."""
    import importlib

    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown pose backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**(options or {}))
