"""detectron2's keypoint R-CNN as a pose back end (`pose: backend: detectron2_keypoints`).

detectron2 is not on PyPI and its weights cannot be fetched by this pipeline: the user installs
it from source and names a config file and a weights file (docs/detectron2.md). The import and
the model construction happen in the constructor; anything missing raises BackendUnavailable
naming the package or file and pointing at docs/detectron2.md.

What it gives: BODY_25 from COCO-17 (steps.prepare.backends.convert.coco17_to_body25: Neck and MidHip are
midpoints, the six foot joints are missing), confidences from keypoint_confidence; face and hands
are missing (NaN, confidence 0). Per frame the main person is chosen by select_main (largest box
first, then the detection overlapping the previous main box most).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from steps.prepare.posetable import N_FACE
from .protocol import BackendUnavailable
from .convert import KEYPOINT_SCORE_SCALE, coco17_to_body25, select_main

DOCS = "docs/detectron2.md"
INSTALL = ("detectron2 is not on PyPI: install it from its source "
           "(git clone https://github.com/facebookresearch/detectron2; pip install --no-build-isolation -e detectron2)")


def unavailable(backend: str, problems: list[str]) -> BackendUnavailable:
    return BackendUnavailable(
        f"pose backend {backend!r} is unavailable: " + "; ".join(problems)
        + f". See {DOCS} for installing detectron2 and DensePose from source and for the config "
        "and weights files to use.")


def import_problem(module: str, how: str) -> str | None:
    """None if `module` imports, else a sentence naming it and how to install it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        return f"the package {module} is not installed ({e}); {how}"
    return None


def is_url(path: str) -> bool:
    return "://" in str(path)


def resolve_config(config_file: str | None, key: str, model_zoo: bool) -> tuple[str | None, str | None]:
    """(path, problem): an existing file, or (with detectron2 importable) a model-zoo name such
    as COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml."""
    if not config_file:
        return None, f"{key}.config_file is not set"
    if Path(config_file).is_file():
        return str(config_file), None
    if model_zoo:
        try:
            from detectron2 import model_zoo as zoo

            return zoo.get_config_file(str(config_file)), None
        except (ImportError, RuntimeError):
            pass
    return None, f"config file {config_file} ({key}.config_file) does not exist"


def weights_problem(weights: str | None, key: str) -> str | None:
    if not weights:
        return f"{key}.weights is not set"
    if not is_url(weights) and not Path(weights).is_file():
        return f"weights file {weights} ({key}.weights) does not exist"
    return None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {device!r} was asked for, but this torch has no CUDA device; "
                                 "use device: cpu or auto")
    return device


def build_predictor(backend: str, key: str, config_file, weights, device: str, score_threshold: float,
                    extra_imports: list[tuple[str, str]] = (), setup: Callable | None = None,
                    model_zoo: bool = True, check: Callable | None = None):
    """detectron2's DefaultPredictor for a config file and weights, or BackendUnavailable listing
    every missing package and file at once."""
    problems = [p for p in [import_problem("detectron2", INSTALL)] if p]
    problems += [p for p in (import_problem(m, how) for m, how in extra_imports) if p]
    cfg_path, p = resolve_config(config_file, key, model_zoo and not problems)
    problems += [p] if p else []
    p = weights_problem(weights, key)
    problems += [p] if p else []
    if problems:
        raise unavailable(backend, problems)

    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    cfg = get_cfg()
    if setup is not None:
        setup(cfg)
    cfg.merge_from_file(cfg_path)
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.MODEL.DEVICE = resolve_device(device)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_threshold)
    if check is not None:
        problem = check(cfg)
        if problem:
            raise unavailable(backend, [f"config file {config_file}: {problem}"])
    cfg.freeze()
    return DefaultPredictor(cfg), cfg


def run_predictor(predictor, rgb: np.ndarray):
    """Instances (on the CPU) of the person class for one RGB frame.

    DefaultPredictor takes BGR (the OpenCV order) and flips it itself when the config's
    INPUT.FORMAT is RGB, so the frame is handed over as BGR."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    inst = predictor(bgr)["instances"].to("cpu")
    if inst.has("pred_classes"):
        inst = inst[inst.pred_classes == 0]
    return inst


def missing_parts(n: int) -> dict[str, np.ndarray]:
    def blank(j):
        a = np.full((n, j, 3), np.nan, np.float32)
        a[..., 2] = 0
        return a

    return {"body": blank(25), "face": blank(N_FACE), "left_hand": blank(21), "right_hand": blank(21)}


class Detectron2KeypointBackend:
    """Keypoint R-CNN (COCO-17) -> BODY_25; options are the keys of `pose: detectron2:`."""

    name = "detectron2_keypoints"

    def __init__(self, config_file: str | None = None, weights: str | None = None, device: str = "auto",
                 score_threshold: float = 0.5, min_iou: float = 0.3,
                 keypoint_score_scale: float = KEYPOINT_SCORE_SCALE):
        def check(cfg):
            if not cfg.MODEL.KEYPOINT_ON:
                return ("MODEL.KEYPOINT_ON is false, so it predicts no keypoints; use a COCO-Keypoints "
                        "config such as keypoint_rcnn_R_50_FPN_3x.yaml")
            if cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS != 17:
                return f"it predicts {cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS} keypoints, not COCO's 17"
            return None

        self.predictor, self.cfg = build_predictor(
            self.name, "pose.detectron2", config_file, weights, device, score_threshold, check=check)
        self.min_iou = min_iou
        self.scale = keypoint_score_scale

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """boxes (K, 4) x0 y0 x1 y1, scores (K,), COCO keypoints (K, 17, 3) of one frame."""
        inst = run_predictor(self.predictor, rgb)
        return (inst.pred_boxes.tensor.numpy().astype(np.float32), inst.scores.numpy().astype(np.float32),
                inst.pred_keypoints.numpy().astype(np.float32))

    def extract(self, frames: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        dets = [self.detect(f) for f in frames]
        return keypoints_to_parts([d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets],
                                  self.min_iou, self.scale)


def keypoints_to_parts(boxes: list[np.ndarray], scores: list[np.ndarray], kps: list[np.ndarray],
                       min_iou: float = 0.3, scale: float = KEYPOINT_SCORE_SCALE) -> dict[str, np.ndarray]:
    """Per-frame detections (boxes, scores, COCO keypoints) -> the back-end contract's parts:
    the main person's BODY_25 per frame (missing where nobody was found); face and hands missing."""
    parts = missing_parts(len(boxes))
    main = select_main(boxes, scores, min_iou)
    for f, k in enumerate(main):
        if k >= 0:
            parts["body"][f] = coco17_to_body25(kps[f][k], scale)
    return parts

