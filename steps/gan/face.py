"""Train the face GAN of Everybody Dance Now (paper, section 3.4; the `train_face` rule).

After the main generator G is trained it is frozen; a face generator G_f sees the face crop of
the label map and the crop of G's output and predicts a residual r; the final face is G's crop
+ r (clamped to [-1, 1]) pasted back into the frame (steps.render.inference.apply_face). G_f is
pix2pixHD's global generator with 6 input channels whose last convolution starts at zero, so an
untrained G_f changes nothing. A multi-scale PatchGAN D_f conditioned on the face label crop
separates (label, real face) from (label, G + r). Losses as for G: LSGAN, feature matching and
VGG; Adam with lr_G / lr_D, constant then linear decay; D's inputs augmented (face.augment).
The boxes are steps.prepare.faceboxes'.

G's output crops are computed once, the way transfer produces them: G run recurrently over the
training frames from frame 0, and separately over the held-out tail from its first frame. They
are cached (with the label and real crops) in the checkpoint folder under a key of
generator.pt's hash, so a resumed run does not redo them. Every `val_every` steps G_f refines
the held-out faces (L1, SSIM, ST-LPIPS in face_loss.csv); the best checkpoint becomes face.pt;
the collapse guard, checkpoints, resume and preemption are steps.gan.loop's `fit`, as for steps.gan.train.
Face checkpoints belong to one generator: when generator.pt changes, the face GAN starts again;
changed face settings stop before training (face.continue goes on on purpose). face.init_from
starts G_f and D_f from another face.pt or face checkpoint.

CLI: `python -m steps.gan.face --frames ... --pose ... --generator ... --out-dir ... --ckpt-dir ...`
writes face.pt, face_loss.csv, face_loss.png and face_samples.png (rows of
label crop | G crop | G + residual | real).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from steps.prepare.framestore import open_frames
from steps import logs
from steps.gan.budget import estimate_cpu, face_step_flops, guard_cpu
from steps.gan.checkpoints import (
    Checkpoints,
    LossLog,
    check_settings,
    check_start,
    data_fingerprint,
    load_start,
    write_final,
)
from steps.gan.loop import Run, Span, Stop, fit
from steps.gan.models import IMG_CH, LABEL_CH, FaceModelConfig, build_face_models, count_params, init_weights
from steps.gan.step import GANSettings, adam, augmenter, gan_update, perceptual_metric, step_generator, vgg_loss
from steps.prepare.faceboxes import FaceBoxes, face_boxes, face_size
from steps.prepare.posetable import PoseArrays
from steps.render.inference import (
    autocast,
    generate_sequence,
    label_renderer,
    load_generator,
    pick_device,
    read_meta,
    resize_frame,
    to_uint8,
    trained_bf16,
)
from steps.sampling import evenly_spaced
from steps.settings import section

log = logging.getLogger("face")


@dataclass
class FaceTrainConfig(GANSettings):
    """The config's face section (defaults: the schema); `enabled` and `resources` belong to the rules."""

    model: dict
    boxes: dict
    steps: int
    batch_size: int

    @classmethod
    def from_dict(cls, d: dict | None = None) -> "FaceTrainConfig":
        return cls.from_section("face", d, drop=("resources", "enabled"))

    def model_config(self) -> FaceModelConfig:
        return FaceModelConfig(**self.model)


def file_sha1(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_face_data(frames, pose: PoseArrays, generator_path, n_train: int, boxes: FaceBoxes,
                    device, iuv=None) -> dict[str, np.ndarray]:
    """Crops of every frame: label (the skeleton's channels), G's output (recurrent over
    [0, n_train) and over the tail [n_train, N) separately, in G's trained precision, as transfer
    runs it) and the real frame; uint8 (N, S, S, 3) each. iuv: the target's IUV store, for a
    generator trained with labels.iuv concat."""
    g, meta = load_generator(generator_path, device)
    h, w = meta["height"], meta["width"]
    render = label_renderer(meta, iuv)
    n, s = len(frames), boxes.size
    out = {k: np.zeros((n, s, s, 3), np.uint8) for k in ("label", "gen", "real")}
    for lo, hi in ((0, n_train), (n_train, n)):
        labels = [render(pose, i) for i in range(lo, hi)]
        for i, (lab, gen) in enumerate(zip(labels, generate_sequence(g, labels, device=device, bf16=trained_bf16(meta))), lo):
            out["label"][i] = boxes.crop(lab[..., :LABEL_CH], i)
            out["gen"][i] = boxes.crop(gen, i)
            out["real"][i] = boxes.crop(resize_frame(frames[i], h, w), i)
    return out


def _crops_to_tensor(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def face_step(run: Run, vgg, cfg: FaceTrainConfig, y, gen, x, amp, aug=None, rng=None) -> dict:
    """One step (steps.gan.step.gan_update): G_f refines the generator's face crop under autocast,
    D_f sees it with its label crop; + VGG. Returns 0-d tensors (no host sync)."""
    with amp:
        fake = run.g.refine(y, gen)
    loss_vgg = torch.zeros((), device=x.device)
    if vgg is not None:
        with amp:
            loss_vgg = vgg(fake, x) * cfg.lambda_vgg
    losses = gan_update(run, run.d, torch.cat([y, x], 1), torch.cat([y, fake.float()], 1), {"loss_G_vgg": loss_vgg},
                        cfg, aug, rng)
    return {**losses, "l1": (fake.float() - x).abs().mean().detach() / 2}


@torch.no_grad()
def face_validate(g_f, data: dict, idx: list[int], device, perceptual=None, n_grid: int = 4) -> tuple[dict, np.ndarray]:
    """G_f on the crops `idx` (the held-out faces): ({l1, ssim, stlpips} of G + r against the real
    face, grid: label | G | G + r | real per row)."""
    from steps.evaluate.metrics import held_out_metrics

    was = g_f.training
    g_f.eval()
    fake = []
    for lo in range(0, len(idx), 16):
        b = idx[lo:lo + 16]
        y, gen = (_crops_to_tensor(data[k][b], device) for k in ("label", "gen"))
        fake += [to_uint8(f) for f in g_f.refine(y, gen)]
    g_f.train(was)
    real = [np.asarray(data["real"][i]) for i in idx]
    picks = evenly_spaced(len(idx), n_grid)
    grid = np.concatenate([np.concatenate([data["label"][idx[k]], data["gen"][idx[k]], fake[k], real[k]], 1)
                           for k in picks], 0)
    return held_out_metrics(fake, real, perceptual), grid


def _cached_face_data(ckpt_dir: Path, key: dict, make) -> dict[str, np.ndarray]:
    cache = ckpt_dir / "face_data"
    key_file = cache / "key.json"
    if key_file.exists() and json.loads(key_file.read_text()) == key:
        return {k: np.load(cache / f"{k}.npy", mmap_mode="r") for k in ("label", "gen", "real")}
    shutil.rmtree(cache, ignore_errors=True)
    data = make()
    cache.mkdir(parents=True, exist_ok=True)
    for k, v in data.items():
        np.save(cache / f"{k}.npy", v)
    key_file.write_text(json.dumps(key))
    return data


def face_setup(cfg: FaceTrainConfig, frames_path, pose, generator_path, ckpts: Checkpoints, device, iuv_path=None):
    """(data crops, boxes, fingerprint, n_train, meta of G, resume state or None)."""
    from steps.prepare.labels import open_iuv
    from steps.prepare.posetable import read_pose

    if isinstance(pose, (str, Path)):
        pose = read_pose(pose)
    frames = open_frames(frames_path)
    n = len(frames)
    if pose.n_frames != n:
        raise ValueError(f"{frames_path} has {n} frames but the pose table has {pose.n_frames}")
    meta = read_meta(generator_path)
    n_train = meta["held_out_from"]
    b = cfg.boxes
    boxes = face_boxes(pose, meta["height"], meta["width"], b["size"], b["smooth_window"], b["min_confidence"])
    if boxes.size % (2 ** cfg.model["n_down"]):
        raise ValueError(f"face size {boxes.size} must be a multiple of 2^n_down = {2 ** cfg.model['n_down']}")
    fingerprint = {**data_fingerprint(frames, pose), "generator_sha1": file_sha1(generator_path), "size": boxes.size,
                   **b}
    log.info("%d frames (%d train, %d held out), faces %dx%d in %dx%d frames, head seen in %.0f%% of frames",
             n, n_train, n - n_train, boxes.size, boxes.size, meta["width"], meta["height"], 100 * boxes.seen.mean())
    state = ckpts.latest()
    if state is not None and state.get("data") != fingerprint:
        log.warning("face checkpoints in %s belong to another generator or other data; "
                    "training the face GAN again from scratch", ckpts.folder)
        ckpts.clear()
        (ckpts.folder / "face_loss.csv").unlink(missing_ok=True)
        state = None
    if state is not None:
        check_settings({"face": state.get("train")}, {"face": asdict(cfg)}, ckpts.folder, "face", cfg.continue_)
    t0 = time.perf_counter()
    data = _cached_face_data(ckpts.folder, fingerprint, lambda: build_face_data(
        frames, pose, generator_path, n_train, boxes, device, open_iuv(iuv_path, n, frames_path) if iuv_path else None))
    log.info("face crops ready (%.1f s)", time.perf_counter() - t0)
    return data, boxes, fingerprint, n_train, meta, state


def build_face_run(cfg: FaceTrainConfig, state: dict | None, fixed: dict, ckpts: Checkpoints, device) -> Run:
    """G_f, D_f and their optimizers: resumed from `state`, started from face.init_from, or fresh
    (the residual head at zero, so an untrained G_f changes nothing)."""
    torch.manual_seed(cfg.seed)
    g_f, d_f = build_face_models(cfg.model_config())
    init_weights(g_f, cfg.init_std)
    init_weights(d_f, cfg.init_std)
    g_f.zero_head()
    start = load_start(cfg.init_from, "face", None) if cfg.init_from and state is None else None
    if start is not None:
        check_start(start, cfg.model, None, "face")
        g_f.load_state_dict(start["G"])
        if start["D"] is not None:
            d_f.load_state_dict(start["D"])
        log.info("starting from %s (step %s)", start["from"]["path"], start["from"]["step"])
    g_f.to(device)
    d_f.to(device)
    fixed["init_from"] = state.get("init_from") if state else start and start["from"]
    run = Run(g_f, d_f, adam(g_f.parameters(), cfg.lr_G, cfg, device), adam(d_f.parameters(), cfg.lr_D, cfg, device),
              cfg, ckpts, LossLog(ckpts.folder / "face_loss.csv", state["step"] if state else 0), fixed)
    if state:
        run.restore(state, device)
        log.info("resuming from %s (step %d of %d)", ckpts.loaded_from, run.step, cfg.steps)
    log.info("G_f %.2f M parameters, D_f %.2f M parameters", count_params(g_f) / 1e6, count_params(d_f) / 1e6)
    return run


def train_face(cfg: FaceTrainConfig, frames_path, pose, generator_path, out_dir, ckpt_dir,
               max_steps: int | None = None, progress: bool = True, iuv_path=None) -> dict:
    """Train (or resume) the face GAN; writes out_dir/{face.pt, face_loss.csv, face_loss.png,
    face_samples.png}. Returns {"step", "done", "ended", "signal", "metrics", "best_step",
    "stopped", "face_generator"} (see steps.gan.train.train). iuv_path: the target's IUV store, when
    the generator was trained with labels.iuv concat."""
    out_dir, ckpts = Path(out_dir), Checkpoints(ckpt_dir, cfg.keep_checkpoints)
    ckpts.folder.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    log.info("CUDA_VISIBLE_DEVICES=%s device=%s torch=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
             device, torch.__version__)
    data, boxes, fingerprint, n_train, meta, state = face_setup(cfg, frames_path, pose, generator_path, ckpts,
                                                                device, iuv_path)
    val_idx = list(range(n_train, len(data["real"]))) or list(range(n_train))
    fixed = {"model": cfg.model, "data": fingerprint, "train": asdict(cfg), "size": boxes.size, "boxes": cfg.boxes,
             "height": meta["height"], "width": meta["width"], "generator_sha1": fingerprint["generator_sha1"]}
    run = build_face_run(cfg, state, fixed, ckpts, device)
    amp, vgg, perceptual = autocast(device, cfg.bf16), vgg_loss(cfg, device), perceptual_metric(cfg, device)
    aug = augmenter(cfg, list(range(LABEL_CH, LABEL_CH + IMG_CH)))

    def batches(start: int, stop: int):
        for k in range(start, stop):
            idx = np.sort(np.random.default_rng([cfg.seed, k]).integers(0, n_train, cfg.batch_size))
            yield [_crops_to_tensor(np.asarray(data[name][idx]), device) for name in ("label", "gen", "real")]

    def step(batch, k: int) -> dict:
        return face_step(run, vgg, cfg, *batch, amp, aug, step_generator(cfg.seed, k, device) if aug else None)

    stop_at = cfg.steps if max_steps is None else min(cfg.steps, run.step + max_steps)
    span = Span("face", 0, cfg.steps, stop_at, cfg.lr_G, cfg.lr_D, samples="face_samples.png", progress=progress)
    try:
        with Stop.catching():
            ended = fit(run, span, batches, step,
                        lambda: face_validate(run.g, data, val_idx, device, perceptual, cfg.val_samples))
    finally:
        run.loss_log.close()
    done = ended.why == "guard" or run.step >= cfg.steps
    if done:
        write_final(ckpts, out_dir / "face.pt",
                    ("model", "size", "boxes", "height", "width", "generator_sha1", "train", "init_from"),
                    "face_loss.csv", "face_samples.png", ended.message)
    return {"step": run.step, "done": done, "ended": ended.why, "signal": ended.signum, "metrics": ended.metrics,
            "best_step": run.guard.best_step, "stopped": ended.message, "val_l1": ended.metrics.get("l1", float("nan")),
            "face_generator": run.g}


def cpu_hours(cfg: FaceTrainConfig, generator_path, limit_h: float | None) -> str:
    """The estimated time of this face training on this CPU (a log line); TooSlowForCPU over limit_h."""
    meta = read_meta(generator_path)
    box = face_size(meta["height"], meta["width"], cfg.boxes["size"])
    flops = face_step_flops(cfg.model_config(), box, cfg.batch_size, cfg.vgg and cfg.lambda_vgg > 0) * cfg.steps
    return estimate_cpu(flops, limit_h, "this face training", "face.cpu_hours_limit")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the face GAN of one target (main generator frozen).")
    ap.add_argument("--frames", required=True, help="the target's frames store (frames.mjpeg)")
    ap.add_argument("--pose", required=True, help="the target's smoothed pose table")
    ap.add_argument("--generator", required=True, help="the target's trained generator.pt")
    ap.add_argument("--out-dir", required=True, help="writes face.pt, face_loss.csv, face_loss.png, face_samples.png")
    ap.add_argument("--ckpt-dir", required=True, help="face checkpoints, best.pt, cached crops, the live loss CSV")
    ap.add_argument("--settings", default="{}", help="the config's face section as JSON (schema defaults fill the rest)")
    ap.add_argument("--iuv", default=None, help="the target's DensePose IUV store (iuv.npy), for labels.iuv concat")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    logs.setup()
    if a.threads:
        torch.set_num_threads(a.threads)
    given = json.loads(a.settings)
    cfg = FaceTrainConfig.from_dict(given)
    limit = section("face", given)["cpu_hours_limit"]
    guard_cpu(cfg.device, lambda: cpu_hours(cfg, a.generator, limit), "train_face")
    r = train_face(cfg, a.frames, a.pose, a.generator, a.out_dir, a.ckpt_dir, max_steps=a.max_steps, iuv_path=a.iuv)
    if r["signal"]:  # preempted: a checkpoint is saved; a nonzero status tells the scheduler to rerun
        sys.exit(128 + r["signal"])


if __name__ == "__main__":
    main()
