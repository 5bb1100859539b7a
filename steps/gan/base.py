"""Train a base generator on the frames of several subjects (the `train_base` rule).

One generator and its discriminator, trained as a target's are (steps.gan.train: the same networks,
losses, learning rates, fit loop, checkpoints and resume), on the frames of every subject in
base.subjects: every draw of a step's pairs picks a subject first, evenly, then a pair within it;
each subject's held-out tail (train.val_fraction) is kept out of training, and base.val_subjects
of them (base.val_max_frames frames each) are validated on, the metrics being their mean. A
subject with too little usable video is skipped with a warning naming it. The result, results/models/_base/generator.pt,
holds G and D; a target with `train.init_from: base` starts from both and fine-tunes
(train.finetune) instead of training from nothing.

    python -m steps.gan.base --frames a/frames.mjpeg b/frames.mjpeg --pose a.parquet b.parquet \
        --out-dir results/models/_base --ckpt-dir results/models/_base/checkpoints \
        --settings '<train section JSON>' --base-settings '<base section JSON>'
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from steps import logs
from steps.gan.budget import guard_cpu
from steps.settings import section
from steps.gan.train import TrainConfig, cpu_hours, train_subjects

log = logging.getLogger("base")


def base_config(train: dict | None, base: dict | None) -> TrainConfig:
    """The train section with the base's step budget; a base starts from nothing."""
    b = section("base", base)
    return TrainConfig.from_dict({**(train or {}), "global_steps": b["global_steps"], "local_steps": b["local_steps"],
                                  "val_max_frames": b["val_max_frames"], "init_from": None})


def train_base(cfg: TrainConfig, frames: list, poses: list, out_dir, ckpt_dir, labels: dict | None = None,
               **kw) -> dict:
    """Train (or resume) the base on the subjects (frames[i], poses[i]); see steps.gan.train.train_subjects."""
    if len(frames) != len(poses) or not frames:
        raise ValueError(f"the base needs the frames and the poses of the same subjects, at least one "
                         f"(got {len(frames)} frames stores and {len(poses)} pose tables; set base.subjects)")
    if (labels or {}).get("iuv") == "concat":
        raise ValueError("labels.iuv concat: a base of several subjects is not supported with IUV label channels")
    return train_subjects(cfg, [(f, p, None) for f, p in zip(frames, poses)], out_dir, ckpt_dir, labels, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train a base generator on the frames of several subjects.")
    ap.add_argument("--frames", nargs="+", required=True, help="each subject's frames store (frames.mjpeg)")
    ap.add_argument("--pose", nargs="+", required=True, help="each subject's smoothed pose table, in the same order")
    ap.add_argument("--out-dir", required=True, help="writes generator.pt (G and D), loss.csv, loss.png, samples.png")
    ap.add_argument("--ckpt-dir", required=True, help="checkpoints; a rerun resumes from them")
    ap.add_argument("--settings", default="{}", help="the config's train section as JSON")
    ap.add_argument("--base-settings", default="{}", help="the config's base section as JSON")
    ap.add_argument("--labels", default="{}", help="the config's labels section as JSON")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    logs.setup()
    if a.threads:
        torch.set_num_threads(a.threads)
    given = json.loads(a.settings)
    cfg = base_config(given, json.loads(a.base_settings))
    # the first subject's size stands for all: the base trains at one size
    limit, labels = section("train", given)["cpu_hours_limit"], section("labels", json.loads(a.labels))
    guard_cpu(cfg.device, lambda: cpu_hours(cfg, a.frames[0], False, labels["background"], limit, labels["reference"]), "train_base")
    r = train_base(cfg, a.frames, a.pose, a.out_dir, a.ckpt_dir, labels, max_steps=a.max_steps,
                   val_subjects=section("base", json.loads(a.base_settings))["val_subjects"])
    if r["signal"]:  # preempted: a checkpoint is saved; a nonzero status tells the scheduler to rerun
        sys.exit(128 + r["signal"])


if __name__ == "__main__":
    main()
