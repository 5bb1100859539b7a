"""Opening what a generator trains on: each subject's frames, poses, IUV and split, checked
against each other, and where training starts (a checkpoint to resume, or init_from weights)."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from steps.prepare.framestore import open_frames
from steps.gan.checkpoints import Checkpoints, check_settings, check_start, data_fingerprint, load_start
from steps.gan.pairs import TooLittleVideo, split_frames, temporal_pairs
from steps.sampling import evenly_spaced

if TYPE_CHECKING:
    from steps.gan.train import TrainConfig

log = logging.getLogger("train")


def default_renderer(labels: dict, iuv=None, background=None, reference=None) -> Callable:
    from steps.prepare.labels import generator_renderer

    return generator_renderer(labels["thickness"], labels["face"], labels["hands"], iuv, background, reference)


def open_data(cfg: TrainConfig, labels: dict, frames_path, pose, iuv_path):
    """(frames, pose, iuv) checked against each other."""
    from steps.prepare.labels import open_iuv
    from steps.prepare.posetable import read_pose

    if isinstance(pose, (str, os.PathLike)):
        pose = read_pose(pose)
    frames = open_frames(frames_path)
    if pose.n_frames != len(frames):
        raise ValueError(f"{frames_path} has {len(frames)} frames but the pose table has {pose.n_frames}")
    iuv = None
    if labels["iuv"] == "concat":
        if iuv_path is None:
            raise ValueError(f"labels.iuv concat: the generator's label maps include DensePose's IUV channels, so "
                             f"training on {frames_path} needs the target's IUV store (results/densepose/<target>/iuv.npy, --iuv)")
        iuv = open_iuv(iuv_path, len(frames), frames_path)
    return frames, pose, iuv


@dataclass
class Subject:
    """One person's training data, checked: frames, poses, the renderer, the split."""

    frames_path: str
    pose: object
    render: Callable
    n_train: int
    tail: range
    background: np.ndarray | None  # labels.background: the static background of its training frames
    reference: np.ndarray | None  # labels.reference: (H, W, 6) a training frame of the person and its skeleton
    pairs: np.ndarray  # (P, 2) its temporal training pairs (steps.gan.pairs.temporal_pairs)


@dataclass
class Target:
    """What one generator is trained on: one subject (a target) or several (the base)."""

    subjects: list[Subject]
    iuv: bool
    fingerprint: dict
    size: tuple[int, int]  # the frames' (height, width)
    validated: list[int]  # the subjects whose held-out tails are validated on

    @property
    def frames_path(self) -> str:
        return ", ".join(s.frames_path for s in self.subjects)

    @property
    def background(self) -> bool:
        """Whether its label maps end with a background (labels.background, a renderer of its own off)."""
        return self.subjects[0].background is not None

    @property
    def reference(self) -> bool:
        """Whether its label maps carry a reference frame of the person (labels.reference)."""
        return self.subjects[0].reference is not None

    def stored(self, what: str) -> torch.Tensor | None:
        """The background or reference the model file keeps for transfer: a target's (a base of
        several people has none of its own)."""
        a = getattr(self.subjects[0], what)
        return torch.from_numpy(np.ascontiguousarray(a)) if a is not None and len(self.subjects) == 1 else None


def open_subject(cfg: TrainConfig, labels: dict, frames_path, pose, iuv_path, render: Callable | None):
    """(Subject, its data fingerprint, frame size, whether it has IUV), checked."""
    from steps.prepare.labels import reference_of, static_background

    frames, pose, iuv = open_data(cfg, labels, frames_path, pose, iuv_path)
    n = len(frames)
    n_train, _ = split_frames(n, cfg, frames_path)
    pairs = temporal_pairs(frames, n_train)
    if len(pairs) < n_train - 1:
        log.info("%s: %d of its %d training frames repeat the one before (a video filmed below frames.fps): "
                 "%d temporal pairs of distinct frames", frames_path, n_train - 1 - len(pairs), n_train, len(pairs))
    if len(pairs) < 1:
        raise TooLittleVideo(f"{frames_path}: its {n_train} training frames are all one picture; no temporal pair to "
                             "train on")
    bg = static_background(frames, pose, n_train, what=str(frames_path)) if labels["background"] else None
    ref = reference_of(frames, pose, n_train, labels) if labels["reference"] else None
    subject = Subject(str(frames_path), pose, render or default_renderer(labels, iuv, bg, ref), n_train,
                      range(n_train, min(n, n_train + (cfg.val_max_frames or n))), bg, ref, pairs)
    return subject, data_fingerprint(frames, pose, iuv), frames.shape[1:3], iuv is not None


def open_target(cfg: TrainConfig, labels: dict, data: list[tuple], render: Callable | None,
                val_subjects: int | None = None) -> Target:
    """data: (frames_path, pose or its path, iuv_path or None) of each subject. render: the whole
    label map's renderer instead of the labels section's (tests; labels.background is off). Of
    several subjects (the base), one with too little usable video is skipped with a warning
    naming it; `val_subjects` of them, evenly spaced, are validated on."""
    subjects, fingerprints, sizes, iuvs = [], [], set(), set()
    for frames_path, pose, iuv_path in data:
        try:
            subject, fp, size, iuv = open_subject(cfg, labels, frames_path, pose, iuv_path, render)
        except TooLittleVideo as e:
            if len(data) == 1:
                raise
            log.warning("skipped from the base: %s", e)
            continue
        subjects.append(subject)
        fingerprints.append(fp)
        sizes.add(size)
        iuvs.add(iuv)
    if not subjects:
        raise ValueError(f"none of the {len(data)} subjects has enough usable video to train on (warnings above)")
    if len(sizes) > 1:
        raise ValueError(f"the frames of {', '.join(str(d[0]) for d in data)} have different sizes {sorted(sizes)}; "
                         "decode them at one size (frames.width/height)")
    fingerprint = fingerprints[0] if len(data) == 1 else {"subjects": fingerprints}
    return Target(subjects, iuvs.pop(), fingerprint, sizes.pop(), evenly_spaced(len(subjects), val_subjects).tolist())


def starting_point(cfg: TrainConfig, labels: dict, ckpts: Checkpoints, target: Target, kind: str,
                   base_path) -> tuple[dict | None, dict | None]:
    """(the checkpoint to resume, the init_from weights to start from): at most one is given. A
    checkpoint of other data or other settings is refused before any training."""
    state = ckpts.latest()
    if state is not None:
        if state.get("data") != target.fingerprint:
            raise ValueError(f"the checkpoints in {ckpts.folder} were trained on other frames, poses or IUV images "
                             f"than {target.frames_path}; delete that folder to train from scratch on the new data")
        check_settings({"train": state.get("train"), "labels": state.get("labels")},
                       {"train": cfg.to_dict(), "labels": labels}, ckpts.folder, "train", cfg.continue_)
        return state, None
    if not cfg.init_from:
        return None, None
    start = load_start(cfg.init_from, "train", base_path)
    check_start(start, asdict(cfg.model_config(kind, target.iuv, target.background, target.reference)), labels, "train")
    log.info("starting from %s (step %s): G and D loaded", start["from"]["path"], start["from"]["step"])
    return None, start
