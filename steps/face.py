"""The face GAN of Everybody Dance Now (paper, section 3.4), and the face boxes it works in.

Face boxes. A fixed-size square per frame, centred on the head: the mean of the body table's
head joints that are seen (Nose, REye, LEye, REar, LEar), or of the face-mesh points where the
body has no head. Frames without a head take the centre interpolated from their neighbours (held
at the ends). Centres are smoothed over time with a centred moving average (`smooth_window`
frames) and the square is moved, never shrunk, to lie inside the frame. The side is 128 px at
the paper's 512-px-high frames and scales with the shorter side of the frame, rounded to a
multiple of 8 (`face_size`): 64 at 256x256, 32 at 128x128.

Face GAN. After the main generator G is trained it is frozen; a face generator G_f sees the
face crop of the label map and the crop of G's output and predicts a residual r; the final face
is G's crop + r (clamped to [-1, 1]) pasted back into the frame. G_f is pix2pixHD's global
generator with 6 input channels (label crop + G crop) whose last convolution starts at zero, so
an untrained G_f changes nothing. A multi-scale PatchGAN D_f conditioned on the face label
crop separates (label, real face) from (label, G + r). Losses as for G: LSGAN, feature matching
(lambda_feat) and the VGG loss (lambda_vgg); Adam with linear decay.

G's output crops are computed once, the way transfer produces them: G run recurrently over the
training frames from frame 0 (each frame conditioned on the previous output), and separately
over the held-out tail from its first frame. They are cached (with the label and real crops) in
the checkpoint folder under a key of generator.pt's hash, so a resumed run does not redo them.

Training reuses steps.train's checkpointing (save/load, keep-last-N, resume), its SIGTERM/SIGUSR1
handler (a checkpoint is saved and the process exits 128+signal), its loss CSV columns and curve
plot, and its per-step seeded sampling (a resumed run equals a straight one on CPU).
Face checkpoints belong to one generator: when generator.pt changes, the face GAN starts again
from scratch (the old face checkpoints are removed, and the log says so).

CLI: `python -m steps.face --frames ... --pose ... --generator ... --out-dir ... --ckpt-dir ...`
writes face.pt, face_loss.csv, face_loss.png and face_samples.png (rows of
label crop | G crop | G + residual | real).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

from .models import IMG_CH, LABEL_CH, GlobalGenerator, MultiscaleDiscriminator, count_params, feature_matching_loss, lsgan_loss
from .normalize import interp_missing
from .posetable import B, PoseArrays
from .train import discriminator_step, settings_from_dict

log = logging.getLogger("face")

HEAD_JOINTS = [B[n] for n in ("Nose", "REye", "LEye", "REar", "LEar")]
PAPER_FACE, PAPER_HEIGHT = 128, 512


# --- face boxes -------------------------------------------------------------------------------

def face_size(height: int, width: int, size: int | None = None, multiple: int = 8) -> int:
    """Side of the face square: `size`, or 128 px per 512 px of the frame's shorter side; a
    multiple of `multiple` (the face generator's downsampling), at most the shorter side."""
    short = min(height, width)
    s = size if size else PAPER_FACE * short / PAPER_HEIGHT
    s = max(multiple, int(round(s / multiple)) * multiple)
    cap = short // multiple * multiple
    if cap < multiple:
        raise ValueError(f"frame {width}x{height} is too small for a face box (multiple of {multiple})")
    return min(s, cap)


def head_centres(pose: PoseArrays, height: int, width: int, min_conf: float = 0.3) -> np.ndarray:
    """(N, 2) head centre per frame in pixels of a (height, width) frame; NaN where no head."""
    sx, sy = width / pose.meta.width, height / pose.meta.height

    def mean_seen(pts):
        ok = np.isfinite(pts[..., 0]) & np.isfinite(pts[..., 1]) & (pts[..., 2] >= min_conf)
        cnt = ok.sum(1)
        xy = np.where(ok[..., None], np.nan_to_num(pts[..., :2]), 0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(cnt[:, None] > 0, xy / np.maximum(cnt, 1)[:, None], np.nan)

    c = mean_seen(pose.parts["body"][:, HEAD_JOINTS])
    if "face" in pose.parts:
        miss = ~np.isfinite(c[:, 0])
        if miss.any():
            c[miss] = mean_seen(pose.parts["face"][miss])
    return (c * np.array([sx, sy])).astype(np.float64)


def _moving_average(v: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(v) < 2:
        return v
    r = min(window // 2, len(v) - 1)
    padded = np.pad(v, r, mode="edge")
    k = np.ones(2 * r + 1) / (2 * r + 1)
    return np.convolve(padded, k, mode="valid")


@dataclass
class FaceBoxes:
    boxes: np.ndarray   # int (N, 4): x0, y0, x1, y1 (x1 - x0 = y1 - y0 = size), inside the frame
    seen: np.ndarray    # bool (N,): a head was detected in this frame (else interpolated or held)
    size: int

    def crop(self, img: np.ndarray, i: int) -> np.ndarray:
        x0, y0, x1, y1 = self.boxes[i]
        return img[y0:y1, x0:x1]


def face_boxes(pose: PoseArrays, height: int, width: int, size: int | None = None,
               smooth_window: int = 5, min_conf: float = 0.3) -> FaceBoxes:
    """The face square of every frame at (height, width); see the module docstring."""
    s = face_size(height, width, size)
    c = head_centres(pose, height, width, min_conf)
    seen = np.isfinite(c).all(1)
    if not seen.any():  # no head anywhere: the top centre of the frame (documented fallback)
        c = np.tile([width / 2, s / 2], (len(c), 1))
    cx = _moving_average(interp_missing(c[:, 0]), smooth_window)
    cy = _moving_average(interp_missing(c[:, 1]), smooth_window)
    x0 = np.clip(np.round(cx - s / 2), 0, width - s).astype(np.int64)
    y0 = np.clip(np.round(cy - s / 2), 0, height - s).astype(np.int64)
    return FaceBoxes(np.stack([x0, y0, x0 + s, y0 + s], 1), seen, s)


# --- the face GAN -----------------------------------------------------------------------------

@dataclass
class FaceModelConfig:
    ngf: int = 64
    n_down: int = 3
    n_blocks: int = 6
    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


class FaceGenerator(nn.Module):
    """G_f: (label crop, G crop) -> residual in [-1, 1]; `refine` adds it and clamps."""

    def __init__(self, cfg: FaceModelConfig):
        super().__init__()
        self.net = GlobalGenerator(LABEL_CH + IMG_CH, IMG_CH, cfg.ngf, cfg.n_down, cfg.n_blocks)
        last = self.net.head[1]
        nn.init.zeros_(last.weight)  # residual 0 at the start: an untrained G_f changes nothing
        nn.init.zeros_(last.bias)
        self.multiple = self.net.multiple

    def forward(self, label, gen):
        return self.net(torch.cat([label, gen], 1))

    def refine(self, label, gen):
        return (gen + self(label, gen)).clamp(-1, 1)


def build_face_models(cfg: FaceModelConfig) -> tuple[FaceGenerator, MultiscaleDiscriminator]:
    return FaceGenerator(cfg), MultiscaleDiscriminator(LABEL_CH + IMG_CH, cfg.ndf, cfg.n_layers_D, cfg.num_D)


def load_face(path, device="cpu") -> tuple[FaceGenerator, dict]:
    """face.pt -> (G_f in eval mode, cfg with "model", "size", "boxes" (smooth_window,
    min_confidence), "height"/"width" (the generator size it was trained at), "step")."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    g = FaceGenerator(FaceModelConfig(**ck["model"]))
    g.load_state_dict(ck["state_dict"])
    g.eval().requires_grad_(False)
    return g.to(device), {k: v for k, v in ck.items() if k != "state_dict"}


@torch.no_grad()
def apply_face(face_g: FaceGenerator, frame: np.ndarray, label: np.ndarray, box) -> np.ndarray:
    """Paste G_f's refined face into a generated frame (uint8 (H, W, 3)); returns a new frame."""
    from .train import to_tensor, to_uint8

    x0, y0, x1, y1 = (int(v) for v in box)
    dev = next(face_g.parameters()).device
    y = to_tensor(label[y0:y1, x0:x1, :LABEL_CH])[None].to(dev)  # the skeleton (no IUV channels)
    g = to_tensor(frame[y0:y1, x0:x1])[None].to(dev)
    out = frame.copy()
    out[y0:y1, x0:x1] = to_uint8(face_g.refine(y, g)[0])
    return out


# --- training ---------------------------------------------------------------------------------

# keys of the config's face section that belong to the rule (resources) or to other stages
RULE_KEYS = {"gpus", "mem_mb", "runtime", "cpus_per_task", "threads", "enabled"}


@dataclass
class FaceTrainConfig:
    device: str = "auto"
    seed: int = 0
    steps: int = 5000
    batch_size: int = 4
    size: int | None = None          # face square side at the generator's size; None: 128 per 512 px
    smooth_window: int = 5           # frames of the moving average over box centres
    min_confidence: float = 0.3
    ngf: int = 64
    n_down: int = 3
    n_blocks: int = 6
    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 2
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    vgg: bool = True
    vgg_weights: str | None = None
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_from: float = 0.5
    val_samples: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    sample_every: int = 500
    bf16: bool = True                # CUDA only

    @classmethod
    def from_dict(cls, d: dict) -> "FaceTrainConfig":
        return settings_from_dict(cls, d, "face", RULE_KEYS)

    def model_config(self) -> FaceModelConfig:
        return FaceModelConfig(self.ngf, self.n_down, self.n_blocks, self.ndf, self.n_layers_D, self.num_D)


def file_sha1(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resize_frame(img: np.ndarray, height: int, width: int) -> np.ndarray:
    if img.shape[:2] == (height, width):
        return np.asarray(img)
    return cv2.resize(np.asarray(img), (width, height), interpolation=cv2.INTER_AREA)


def generator_label_renderer(gcfg: dict, iuv=None):
    """render(pose, i) -> the label map the generator was trained on, at its size. A generator
    trained with labels.iuv concat needs `iuv`: an IUV image per frame of the pose table."""
    from .labels import generator_renderer
    from .train import uses_iuv

    h, w = gcfg["height"], gcfg["width"]
    lab = gcfg.get("labels", {})
    concat = uses_iuv(gcfg)
    if concat and iuv is None:
        raise ValueError(f"{gcfg.get('path', 'the generator')} was trained on label maps with DensePose IUV channels "
                         f"(labels.iuv: concat): it needs the IUV images of the poses it is given")
    r = generator_renderer(lab.get("thickness", 2), lab.get("face", True), lab.get("hands", True),
                           iuv if concat else None)
    return lambda pose, i: r(pose, i, h, w)


def build_face_data(frames, pose: PoseArrays, generator_path, n_train: int, boxes: FaceBoxes,
                    device, bf16: bool = False, iuv=None) -> dict[str, np.ndarray]:
    """Crops of every frame: label (the skeleton's channels), G's output (recurrent over
    [0, n_train) and over the tail [n_train, N) separately) and the real frame; uint8 (N, S, S, 3)
    each. iuv: the target's IUV store, for a generator trained with labels.iuv concat."""
    from .train import generate_sequence, load_generator

    g, gcfg = load_generator(generator_path, device)
    h, w = gcfg["height"], gcfg["width"]
    render = generator_label_renderer(gcfg, iuv)
    n, s = len(frames), boxes.size
    out = {k: np.zeros((n, s, s, 3), np.uint8) for k in ("label", "gen", "real")}
    for lo, hi in ((0, n_train), (n_train, n)):
        if hi <= lo:
            continue
        labels = [render(pose, i) for i in range(lo, hi)]
        for i, (lab, gen) in enumerate(zip(labels, generate_sequence(g, labels, device=device, bf16=bf16)), lo):
            out["label"][i] = boxes.crop(lab[..., :LABEL_CH], i)
            out["gen"][i] = boxes.crop(gen, i)
            out["real"][i] = boxes.crop(resize_frame(frames[i], h, w), i)
    return out


def _crops_to_tensor(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def face_step(g_f, d_f, opt_g, opt_d, vgg, cfg: FaceTrainConfig, y, gen, x, amp) -> dict:
    """One step: G_f (D_f frozen) on LSGAN + feature matching + VGG, then D_f on LSGAN."""
    d_f.requires_grad_(False)
    with amp:
        fake = g_f.refine(y, gen)
        pred_fake = d_f(torch.cat([y, fake], 1))
        with torch.no_grad():
            pred_real = d_f(torch.cat([y, x], 1))
        loss_gan = lsgan_loss(pred_fake, True)
        loss_fm = feature_matching_loss(pred_fake, pred_real) * cfg.lambda_feat if cfg.lambda_feat else torch.zeros((), device=x.device)
        loss_vgg = vgg(fake, x) * cfg.lambda_vgg if vgg is not None else torch.zeros((), device=x.device)
    loss_g = loss_gan + loss_fm + loss_vgg
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    d_f.requires_grad_(True)
    loss_d, loss_real, loss_fake = discriminator_step(d_f, opt_d, torch.cat([y, x], 1), torch.cat([y, fake], 1), amp)
    with torch.no_grad():
        l1 = (fake.float() - x).abs().mean() / 2
    out = {"loss_D": loss_d, "loss_D_real": loss_real, "loss_D_fake": loss_fake, "loss_G": loss_g,
           "loss_G_gan": loss_gan, "loss_G_fm": loss_fm, "loss_G_vgg": loss_vgg, "l1": l1}
    return {k: float(v.detach()) for k, v in out.items()}


@torch.no_grad()
def face_validate(g_f, data: dict, idx: list[int], device) -> tuple[float, np.ndarray]:
    """(mean L1 of G + r to the real face in 0..1 units, grid: label | G | G + r | real per row)."""
    from .train import to_uint8

    was = g_f.training
    g_f.eval()
    rows, errs = [], []
    for i in idx:
        y, gen, x = (_crops_to_tensor(data[k][i:i + 1], device) for k in ("label", "gen", "real"))
        fake = g_f.refine(y, gen)
        errs.append(float((fake - x).abs().mean()) / 2)
        rows.append(np.concatenate([data["label"][i], data["gen"][i], to_uint8(fake[0]), data["real"][i]], 1))
    g_f.train(was)
    return float(np.mean(errs)) if errs else float("nan"), np.concatenate(rows, 0)


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


def train_face(cfg: FaceTrainConfig, frames_path, pose, generator_path, out_dir, ckpt_dir,
               max_steps: int | None = None, progress: bool = True, iuv_path=None) -> dict:
    """Train (or resume) the face GAN; writes out_dir/{face.pt, face_loss.csv, face_loss.png,
    face_samples.png}. Returns {"step", "done", "val_l1", "face_generator"}. iuv_path: the
    target's IUV store, when the generator was trained with labels.iuv concat."""
    from tqdm import tqdm

    from .posetable import read_pose
    from .train import (LOSS_COLUMNS, Phase, Stop, _move_opt, _opt_state_cpu, _truncate_csv, checkpoints,
                        data_fingerprint, learning_rate, load_checkpoint, open_iuv, plot_losses,
                        save_checkpoint, split_frames, write_png)

    out_dir, ckpt_dir = Path(out_dir), Path(ckpt_dir)
    want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(want)
    log.info("CUDA_VISIBLE_DEVICES=%s device=%s torch=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
             device, torch.__version__)
    cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.bf16 else nullcontext()
    if isinstance(pose, (str, os.PathLike)):
        pose = read_pose(pose)
    frames = np.load(frames_path, mmap_mode="r")
    n = len(frames)
    if pose.n_frames != n:
        raise ValueError(f"{frames_path} has {n} frames but the pose table has {pose.n_frames}")
    gck = torch.load(generator_path, map_location="cpu", weights_only=True)
    h, w = gck["height"], gck["width"]
    val_fraction = gck.get("train", {}).get("val_fraction", 0.1)
    del gck
    n_train, n_val = split_frames(n, val_fraction)
    mcfg = cfg.model_config()
    boxes = face_boxes(pose, h, w, cfg.size, cfg.smooth_window, cfg.min_confidence)
    if boxes.size % (2 ** mcfg.n_down):
        raise ValueError(f"face size {boxes.size} must be a multiple of 2^n_down = {2 ** mcfg.n_down}")
    gen_sha = file_sha1(generator_path)
    fingerprint = {**data_fingerprint(frames, pose), "generator_sha1": gen_sha, "size": boxes.size,
                   "smooth_window": cfg.smooth_window, "min_confidence": cfg.min_confidence}
    log.info("%d frames (%d train, %d held out), faces %dx%d in %dx%d frames, head seen in %.0f%% of frames",
             n, n_train, n_val, boxes.size, boxes.size, w, h, 100 * boxes.seen.mean())

    ckpts = checkpoints(ckpt_dir)
    state = load_checkpoint(ckpts[-1]) if ckpts else None
    if state is not None and (state.get("data") != fingerprint or state.get("model") != mcfg.to_dict()):
        log.warning("face checkpoints in %s belong to another generator, data or face model; "
                    "training the face GAN again from scratch", ckpt_dir)
        for c in ckpts:
            c.unlink()
        (ckpt_dir / "face_loss.csv").unlink(missing_ok=True)
        state = None
    step = state["step"] if state else 0
    if state:
        log.info("resuming from %s (step %d of %d)", ckpts[-1], step, cfg.steps)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    live_csv = ckpt_dir / "face_loss.csv"
    _truncate_csv(live_csv, step)

    t0 = time.perf_counter()
    data = _cached_face_data(ckpt_dir, fingerprint, lambda: build_face_data(
        frames, pose, generator_path, n_train, boxes, device, cfg.bf16 and cuda,
        open_iuv(iuv_path, n, frames_path) if iuv_path else None))
    log.info("face crops ready (%.1f s)", time.perf_counter() - t0)

    torch.manual_seed(cfg.seed)
    g_f, d_f = build_face_models(mcfg)
    opt_g = torch.optim.Adam(g_f.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(d_f.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    if state:
        g_f.load_state_dict(state["G"])
        d_f.load_state_dict(state["D"])
        opt_g.load_state_dict(state["optG"])
        opt_d.load_state_dict(state["optD"])
    g_f.to(device)
    d_f.to(device)
    _move_opt(opt_g, device)
    _move_opt(opt_d, device)
    log.info("G_f %.2f M parameters, D_f %.2f M parameters", count_params(g_f) / 1e6, count_params(d_f) / 1e6)
    vgg = None
    if cfg.vgg and cfg.lambda_vgg > 0:
        from .vgg import VGGLoss
        vgg = VGGLoss(cfg.vgg_weights).to(device)

    phase = Phase("face", 0, cfg.steps, boxes.size, boxes.size)
    val_idx = ([int(round(v)) for v in np.linspace(n_train, n - 1, min(cfg.val_samples, n_val))] if n_val
               else [int(round(v)) for v in np.linspace(0, n_train - 1, max(1, cfg.val_samples))])
    val_l1 = float("nan")
    stop_at = cfg.steps if max_steps is None else min(cfg.steps, step + max_steps)

    def snapshot():
        return {"step": step, "model": mcfg.to_dict(), "data": fingerprint, "train": asdict(cfg),
                "G": {k: v.detach().cpu() for k, v in g_f.state_dict().items()},
                "D": {k: v.detach().cpu() for k, v in d_f.state_dict().items()},
                "optG": _opt_state_cpu(opt_g), "optD": _opt_state_cpu(opt_d)}

    Stop.install()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"face {boxes.size}x{boxes.size}", disable=not progress,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    csv_file = open(live_csv, "a", newline="")
    writer = csv.DictWriter(csv_file, LOSS_COLUMNS)
    if live_csv.stat().st_size == 0:
        writer.writeheader()
    t0 = time.perf_counter()
    try:
        while step < stop_at:
            lr = learning_rate(cfg, phase, step)
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = lr
            idx = np.sort(np.random.default_rng([cfg.seed, step]).integers(0, n_train, cfg.batch_size))
            y, gen, x = (_crops_to_tensor(np.asarray(data[k][idx]), device) for k in ("label", "gen", "real"))
            losses = face_step(g_f, d_f, opt_g, opt_d, vgg, cfg, y, gen, x, amp)
            step += 1
            rec = {"step": step, "phase": "face", "lr": lr, **losses, "val_l1": "",
                   "time_s": round(time.perf_counter() - t0, 3)}
            if (cfg.sample_every and step % cfg.sample_every == 0) or step == cfg.steps:
                val_l1, grid = face_validate(g_f, data, val_idx, device)
                rec["val_l1"] = val_l1
                write_png(ckpt_dir / "face_samples.png", grid)
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in rec.items()})
            csv_file.flush()
            bar.update(1)
            bar.set_postfix(D=f"{losses['loss_D']:.3f}", G=f"{losses['loss_G_gan']:.3f}", l1=f"{losses['l1']:.3f}",
                            refresh=False)
            sig = Stop.signum
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == stop_at or sig:
                p = save_checkpoint(ckpt_dir, snapshot(), cfg.keep_checkpoints)
                if sig or step == stop_at:
                    log.info("checkpoint %s", p)
            if sig:
                log.warning("stopped by %s at step %d; rerun to resume", signal.Signals(sig).name, step)
                raise SystemExit(128 + int(sig))
    finally:
        bar.close()
        csv_file.close()
    if step < cfg.steps:
        return {"step": step, "done": False, "val_l1": val_l1, "face_generator": g_f}

    out_dir.mkdir(parents=True, exist_ok=True)
    final = {"model": mcfg.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in g_f.state_dict().items()},
             "size": boxes.size, "height": h, "width": w, "step": step, "generator_sha1": gen_sha,
             "boxes": {"smooth_window": cfg.smooth_window, "min_confidence": cfg.min_confidence}}
    tmp = out_dir / f".face.pt.tmp{os.getpid()}"
    torch.save(final, tmp)
    os.replace(tmp, out_dir / "face.pt")
    shutil.copyfile(live_csv, out_dir / "face_loss.csv")
    plot_losses(out_dir / "face_loss.csv", out_dir / "face_loss.png")
    if not (ckpt_dir / "face_samples.png").exists():
        write_png(ckpt_dir / "face_samples.png", face_validate(g_f, data, val_idx, device)[1])
    shutil.copyfile(ckpt_dir / "face_samples.png", out_dir / "face_samples.png")
    log.info("done: %d steps; wrote %s", step, out_dir / "face.pt")
    return {"step": step, "done": True, "val_l1": val_l1, "face_generator": g_f}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the face GAN of one target (main generator frozen).")
    ap.add_argument("--frames", required=True, help="the target's frames.npy")
    ap.add_argument("--pose", required=True, help="the target's smoothed pose table")
    ap.add_argument("--generator", required=True, help="the target's trained generator.pt")
    ap.add_argument("--out-dir", required=True, help="writes face.pt, face_loss.csv, face_loss.png, face_samples.png")
    ap.add_argument("--ckpt-dir", required=True, help="face checkpoints, cached crops, the live loss CSV")
    ap.add_argument("--face-json", default="{}", help="the config's face section as JSON")
    ap.add_argument("--iuv", default=None, help="the target's DensePose IUV store (iuv.npy), for labels.iuv concat")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = FaceTrainConfig.from_dict(json.loads(a.face_json))
    train_face(cfg, a.frames, a.pose, a.generator, a.out_dir, a.ckpt_dir, max_steps=a.max_steps, iuv_path=a.iuv)


if __name__ == "__main__":
    main()
