"""Train the pose-to-video generator of one target person (the `train_generator` rule).

One loop for everything: CPU or CUDA, one process or DDP under torchrun, the global phase and
the local-enhancer phase. The data are the target's frames store and smoothed pose table; label
maps are rendered on the fly (steps.labels). The last `val_fraction` of the frames is a held-out
validation tail that is never trained on.

A training step takes a temporal pair (t, t+1): G makes frame t from (label t, zeros) and frame
t+1 from (label t+1, its own frame t); the multi-scale discriminator sees both frames with both
labels. Losses: LSGAN + feature matching (lambda_feat) + VGG (lambda_vgg), Adam with linear decay.

Robustness: checkpoints (state dicts, loaded with weights_only=True) every `checkpoint_every`
steps and at the end; the run resumes from the newest one; SIGTERM/SIGUSR1 (SLURM preemption)
saves one and exits with 128+signal. Sampling of training pairs is a pure function of (seed,
step), so a resumed run is identical to a straight one on CPU.

Public for later stages: `load_generator(path, device) -> (model, cfg)` and
`generate_sequence(model, label_maps, ...)` (recurrent inference, each frame conditioned on the
previous output).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .models import (IMG_CH, IUV_CH, LABEL_CH, ModelConfig, PairGenerator, build_discriminator, build_generator,
                     count_params, d_input, feature_matching_loss, lsgan_loss)

log = logging.getLogger("train")

# keys of the config's train section that belong to the rule (resources), not to the loop
RULE_KEYS = {"gpus", "mem_mb", "runtime", "cpus_per_task", "threads"}


def settings_from_dict(cls, d: dict, section: str, rule_keys=RULE_KEYS):
    """A settings dataclass from the config's `section`; `rule_keys` belong to the rule."""
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names - set(rule_keys)
    if unknown:
        raise ValueError(f"unknown {section} settings: {sorted(unknown)}")
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainConfig:
    device: str = "auto"            # auto | cpu | cuda
    seed: int = 0
    width: int | None = None        # training size of the last phase; None: the frames store's
    height: int | None = None
    global_steps: int = 20000       # steps of the global generator (at half size when local_steps > 0)
    local_steps: int = 0            # steps of the local enhancer at full size (0: no enhancer phase)
    batch_size: int = 1             # temporal pairs per step and process
    temporal: bool = True
    ngf: int = 64
    n_down: int = 4
    n_blocks: int = 9
    n_blocks_local: int = 3
    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 2
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    lambda_l1: float = 0.0          # pix2pix's L1 to the real frame (not in pix2pixHD); speeds up short runs
    vgg: bool = True
    vgg_weights: str | None = None
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_from: float = 0.5         # fraction of each phase after which lr falls linearly to 0
    val_fraction: float = 0.1
    val_samples: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    sample_every: int = 500
    workers: int = 4
    bf16: bool = True               # CUDA only
    channels_last: bool = True
    compile: bool = False
    label_thickness: int = 2        # labels.thickness: px at 256 px, scaled with the size
    label_face: bool = True
    label_hands: bool = True
    label_iuv: str = "none"         # labels.iuv: concat adds DensePose's I, U, V to the label maps

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return settings_from_dict(cls, d, "train")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def iuv_concat(self) -> bool:
        return self.label_iuv == "concat"

    def model_config(self, kind: str) -> ModelConfig:
        return ModelConfig(kind=kind, temporal=self.temporal, ngf=self.ngf, n_down=self.n_down,
                           n_blocks=self.n_blocks, n_blocks_local=self.n_blocks_local, ndf=self.ndf,
                           n_layers_D=self.n_layers_D, num_D=self.num_D,
                           label_ch=LABEL_CH + (IUV_CH if self.iuv_concat else 0))


@dataclass
class Phase:
    kind: str       # global | local
    start: int      # first global step of the phase
    end: int        # one past its last
    height: int
    width: int


def plan_phases(cfg: TrainConfig, height: int, width: int) -> list[Phase]:
    """global at full size, or global at half size then the local enhancer at full size."""
    if cfg.local_steps > 0:
        m = 2 ** (cfg.n_down + 1)
        plan = [Phase("global", 0, cfg.global_steps, height // 2, width // 2),
                Phase("local", cfg.global_steps, cfg.global_steps + cfg.local_steps, height, width)]
    else:
        m = 2**cfg.n_down
        plan = [Phase("global", 0, cfg.global_steps, height, width)]
    if height % m or width % m:
        raise ValueError(f"training size {width}x{height} must be a multiple of {m} "
                         f"(2^n_down{' * 2 for the local enhancer' if cfg.local_steps else ''}); "
                         "set train.width/height or frames.width/height accordingly")
    return plan


def learning_rate(cfg: TrainConfig, phase: Phase, step: int) -> float:
    """Constant, then linear decay to 0 over the last (1 - decay_from) of the phase."""
    n = phase.end - phase.start
    k = step - phase.start
    start = cfg.decay_from * n
    if k < start or n <= start:
        return cfg.lr
    return cfg.lr * max(0.0, (n - k) / (n - start))


# --- data -------------------------------------------------------------------------------------

def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [-1, 1]."""
    img = np.ascontiguousarray(img)
    if not img.flags.writeable:  # a memory-mapped store: torch warns about read-only arrays
        img = img.copy()
    return torch.from_numpy(img).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    return ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def open_iuv(iuv_path, n_frames: int, what: str) -> np.ndarray:
    """The IUV store (N, H, W, 3) uint8 of results/densepose/{subject}, checked against N frames."""
    iuv = np.load(iuv_path, mmap_mode="r")
    if iuv.ndim != 4 or iuv.shape[-1] != 3 or len(iuv) != n_frames:
        raise ValueError(f"{iuv_path}: IUV store of shape {iuv.shape}, expected ({n_frames}, H, W, 3) "
                         f"to match {what}")
    return iuv


def default_renderer(cfg: TrainConfig, iuv=None) -> Callable:
    from .labels import generator_renderer

    return generator_renderer(cfg.label_thickness, cfg.label_face, cfg.label_hands, iuv)


class FrameData(Dataset):
    """Frame i of the target at (height, width): (label map (C, H, W), real frame (3, H, W)) in [-1, 1].
    Items of the dataset are temporal pairs (i, i+1): (y_t, y_t1, x_t, x_t1)."""

    def __init__(self, frames_path, pose, height: int, width: int, render: Callable):
        self.frames_path, self.pose, self.height, self.width, self.render = str(frames_path), pose, height, width, render
        self._frames = None

    @property
    def frames(self):
        if self._frames is None:  # opened lazily, so each DataLoader worker maps it itself
            self._frames = np.load(self.frames_path, mmap_mode="r")
        return self._frames

    def __getstate__(self):
        return {**self.__dict__, "_frames": None}

    def __len__(self):
        return len(self.frames) - 1

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = np.array(self.frames[i])
        if img.shape[:2] != (self.height, self.width):
            img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
        label = self.render(self.pose, i, self.height, self.width)
        return to_tensor(label), to_tensor(img)

    def __getitem__(self, i: int):
        y_t, x_t = self.sample(i)
        y_t1, x_t1 = self.sample(i + 1)
        return y_t, y_t1, x_t, x_t1


def split_frames(n: int, val_fraction: float) -> tuple[int, int]:
    """(n_train, n_val): the validation tail is the last ceil(n * val_fraction) frames."""
    n_val = math.ceil(n * val_fraction) if val_fraction > 0 else 0
    n_train = n - n_val
    if n_train < 2:
        raise ValueError(f"only {n} frames: {n_val} held out for validation leaves fewer than 2 to train on")
    return n_train, n_val


class StepSampler(Sampler):
    """Indices of training pairs for steps [start, stop): batch*world draws per step from an RNG
    seeded by (seed, step); this rank takes its slice. Pure function of the step: resumable."""

    def __init__(self, n_pairs, batch, seed, start, stop, rank=0, world=1):
        self.n_pairs, self.batch, self.seed, self.start, self.stop, self.rank, self.world = (
            n_pairs, batch, seed, start, stop, rank, world)

    def __len__(self):
        return (self.stop - self.start) * self.batch

    def __iter__(self):
        for s in range(self.start, self.stop):
            idx = np.random.default_rng([self.seed, s]).integers(0, self.n_pairs, self.batch * self.world)
            yield from idx[self.rank * self.batch:(self.rank + 1) * self.batch].tolist()


def _worker_init(_):
    # preemption signals are for the main process, which saves a checkpoint; workers carry on
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    torch.set_num_threads(1)


# --- checkpoints ------------------------------------------------------------------------------

def checkpoints(ckpt_dir) -> list[Path]:
    return sorted(Path(ckpt_dir).glob("step_*.pt"))


def save_checkpoint(ckpt_dir, state: dict, keep: int) -> Path:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{state['step']:08d}.pt"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def data_fingerprint(frames: np.ndarray, pose, iuv: np.ndarray | None = None) -> dict:
    """What the checkpoints were trained on: frame count and size, hashes of a few frames, of
    the body keypoints and (labels.iuv concat) of a few IUV images. A checkpoint of other data is
    never resumed silently."""
    import hashlib

    n = len(frames)
    picks = np.asarray(frames[:: max(1, n // 8)])
    body = np.nan_to_num(pose.parts["body"]).astype(np.float32)
    out = {"n": int(n), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
           "frames_sha1": hashlib.sha1(picks.tobytes()).hexdigest(),
           "pose_sha1": hashlib.sha1(body.tobytes()).hexdigest()}
    if iuv is not None:
        out["iuv_sha1"] = hashlib.sha1(np.asarray(iuv[:: max(1, n // 8)]).tobytes()).hexdigest()
    return out


def unwrap(m: nn.Module) -> nn.Module:
    m = getattr(m, "module", m)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile wrapper


# --- the generator for later stages -----------------------------------------------------------

def load_generator(path, device="cpu") -> tuple[nn.Module, dict]:
    """generator.pt -> (model in eval mode on device, cfg). cfg holds "model" (ModelConfig as a
    dict), "height"/"width" (the size label maps must have), "labels" (thickness, face, hands, iuv)
    and "step". The model has `.temporal` set; feed it to generate_sequence."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    mcfg = ModelConfig(**ck["model"])
    g = build_generator(mcfg)
    g.load_state_dict(ck["state_dict"])
    g.temporal = mcfg.temporal
    g.eval().requires_grad_(False)
    cfg = {k: v for k, v in ck.items() if k != "state_dict"} | {"path": str(path)}
    return g.to(device), cfg


def uses_iuv(gcfg: dict) -> bool:
    """Whether a generator (load_generator's cfg) was trained with labels.iuv concat: its input
    channels decide."""
    return gcfg["model"].get("label_ch", LABEL_CH) > LABEL_CH


@torch.no_grad()
def generate_sequence(model: nn.Module, label_maps: Iterable[np.ndarray], device=None,
                      temporal: bool | None = None, bf16: bool = False) -> Iterator[np.ndarray]:
    """Recurrent inference: label maps uint8 (H, W, C) in, frames uint8 (H, W, 3) out. With the
    temporal model each frame is conditioned on the previous output (zeros before the first).
    H and W must be the model's training size (load_generator's cfg height/width)."""
    device = torch.device(device) if device else next(model.parameters()).device
    temporal = getattr(model, "temporal", True) if temporal is None else temporal
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 and device.type == "cuda" else nullcontext()
    prev = None
    for lab in label_maps:
        y = to_tensor(lab)[None].to(device)
        m = getattr(model, "multiple", 1)
        if y.shape[2] % m or y.shape[3] % m:
            raise ValueError(f"label map {y.shape[3]}x{y.shape[2]} is not a multiple of {m}")
        if temporal:
            y = torch.cat([y, prev if prev is not None else torch.zeros_like(y[:, :IMG_CH])], 1)
        with amp:
            out = model(y).float()
        prev = out
        yield to_uint8(out[0])


# --- plots and samples ------------------------------------------------------------------------

LOSS_COLUMNS = ["step", "phase", "lr", "loss_D", "loss_D_real", "loss_D_fake", "loss_G", "loss_G_gan",
                "loss_G_fm", "loss_G_vgg", "loss_G_l1", "l1", "val_l1", "time_s"]


def plot_losses(csv_path, png_path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    groups = [("discriminator", ["loss_D", "loss_D_real", "loss_D_fake"]),
              ("generator (adversarial)", ["loss_G_gan"]),
              ("generator (matching)", ["loss_G_fm", "loss_G_vgg", "loss_G_l1", "loss_G"]),
              ("reconstruction L1 (0..1 units)", ["l1", "val_l1"])]
    for ax, (title, cols) in zip(axes.flat, groups):
        for c in cols:
            s = df[["step", c]].dropna()
            if len(s):
                style = "o-" if c == "val_l1" else "-"
                ax.plot(s["step"], s[c], style, label=c, lw=1, ms=3)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


class ValFrames(list):
    """Chosen validation frame indices, spread over the held-out tail; remembers where it starts."""

    def __init__(self, n_frames: int, n_val: int, k: int):
        start = n_frames - n_val
        picks = np.linspace(start, n_frames - 1, max(1, min(k, n_val))) if n_val else []
        super().__init__(sorted({int(round(v)) for v in picks}))
        self.start_of_tail = start


@torch.no_grad()
def validate(g: nn.Module, data: FrameData, val_frames: ValFrames, temporal: bool, device, amp) -> tuple[float, np.ndarray]:
    """Generate the chosen validation frames; with the temporal model each one is conditioned on
    the generated frame before it (itself from zeros) when that frame is in the tail too.
    Returns (mean L1 in 0..1 units, grid uint8 with one row per frame: label | generated | real)."""
    was_training = g.training
    g.eval()
    rows, errs = [], []
    for v in val_frames:
        y, x = (t[None].to(device) for t in data.sample(v))
        with amp:
            if temporal:
                prev = torch.zeros_like(x)
                if v - 1 >= val_frames.start_of_tail:
                    yp = data.sample(v - 1)[0][None].to(device)
                    prev = g(torch.cat([yp, prev], 1)).float()
                out = g(torch.cat([y, prev], 1)).float()
            else:
                out = g(y).float()
        errs.append((out - x).abs().mean().item() / 2)
        rows.append(np.concatenate([to_uint8(y[0, :LABEL_CH]), to_uint8(out[0]), to_uint8(x[0])], 1))
    g.train(was_training)
    return float(np.mean(errs)), np.concatenate(rows, 0)


def write_png(path, rgb: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


# --- the loop ---------------------------------------------------------------------------------

class Stop:
    """Remembers a preemption signal; the loop saves a checkpoint and exits at the next step."""

    signum = 0

    @classmethod
    def install(cls):
        for s in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(s, cls.handler)

    @classmethod
    def handler(cls, signum, _frame):
        cls.signum = signum
        log.warning("received %s: saving a checkpoint at the end of this step", signal.Signals(signum).name)


def setup_distributed(cfg: TrainConfig):
    """(rank, world, device). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is cuda but torch sees no CUDA device")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def train(cfg: TrainConfig, frames_path, pose, out_dir, ckpt_dir, render: Callable | None = None,
          max_steps: int | None = None, progress: bool = True, iuv_path=None) -> dict:
    """Train (or resume) and write out_dir/{generator.pt, loss.csv, loss.png, samples.png}.

    pose: PoseArrays or a path to the pose table. iuv_path: the target's DensePose IUV store,
    needed with labels.iuv concat (cfg.label_iuv). max_steps: stop after this many steps in this
    call, save a checkpoint and return without the final outputs (tests, time-boxed runs).
    Returns {"step", "done", "val_l1", "generator", "discriminator"} (the models in memory)."""
    from tqdm import tqdm

    from .posetable import read_pose

    rank, world, device = setup_distributed(cfg)
    is_main = rank == 0
    out_dir, ckpt_dir = Path(out_dir), Path(ckpt_dir)
    if is_main:
        log.info("CUDA_VISIBLE_DEVICES=%s device=%s world_size=%d torch=%s%s",
                 os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), device, world, torch.__version__,
                 f" gpu={torch.cuda.get_device_name(device)}" if device.type == "cuda" else
                 f" cpu_threads={torch.get_num_threads()}")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    if isinstance(pose, (str, os.PathLike)):
        pose = read_pose(pose)
    frames = np.load(frames_path, mmap_mode="r")
    n, fh, fw = frames.shape[:3]
    if pose.n_frames != n:
        raise ValueError(f"{frames_path} has {n} frames but the pose table has {pose.n_frames}")
    iuv = None
    if cfg.iuv_concat:
        if iuv_path is None:
            raise ValueError(f"labels.iuv concat: the generator's label maps include DensePose's IUV channels, so "
                             f"training on {frames_path} needs the target's IUV store (results/densepose/<target>/iuv.npy, --iuv)")
        iuv = open_iuv(iuv_path, n, frames_path)
    render = render or default_renderer(cfg, iuv)
    height, width = cfg.height or fh, cfg.width or fw
    phases = plan_phases(cfg, height, width)
    total = phases[-1].end
    n_train, n_val = split_frames(n, cfg.val_fraction)
    if is_main:
        log.info("%d frames of %dx%d: %d for training, the last %d held out; phases %s",
                 n, fw, fh, n_train, n_val, [(p.kind, p.end - p.start, f"{p.width}x{p.height}") for p in phases])

    cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.bf16 else nullcontext()
    mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
    vgg = None
    if cfg.vgg and cfg.lambda_vgg > 0:
        from .vgg import VGGLoss
        vgg = VGGLoss(cfg.vgg_weights).to(device, memory_format=mem)

    ckpts = checkpoints(ckpt_dir)
    state = load_checkpoint(ckpts[-1]) if ckpts else None
    step = state["step"] if state else 0
    fingerprint = data_fingerprint(frames, pose, iuv)
    if state and state.get("data") != fingerprint:
        raise ValueError(f"{ckpts[-1]} was trained on other frames, poses or IUV images than {frames_path}; "
                         f"delete {ckpt_dir} to train from scratch on the new data")
    if state and is_main:
        log.info("resuming from %s (step %d of %d)", ckpts[-1], step, total)
    live_csv = ckpt_dir / "loss.csv"
    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _truncate_csv(live_csv, step)

    Stop.install()
    val_l1 = float("nan")
    g = d = None
    steps_this_call = 0
    for pi, ph in enumerate(phases):
        if step >= ph.end:
            continue
        # -- models of this phase (fresh, resumed, or the enhancer around the global phase's G)
        mcfg = cfg.model_config(ph.kind)
        torch.manual_seed(cfg.seed + pi)
        g, d = build_generator(mcfg), build_discriminator(mcfg)
        opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        if state is not None:
            if ModelConfig(**state["model"]).to_dict() == mcfg.to_dict():  # fills keys older checkpoints lack
                g.load_state_dict(state["G"])
                opt_g.load_state_dict(state["optG"])
            elif state["model"]["kind"] == "global" and ph.kind == "local":
                g.load_global(state["G"])
            else:
                raise ValueError(f"checkpoint in {ckpt_dir} was trained with {state['model']}, the config now asks for "
                                 f"{mcfg.to_dict()}; delete {ckpt_dir} to start again")
            d.load_state_dict(state["D"])
            opt_d.load_state_dict(state["optD"])
        g.temporal = mcfg.temporal
        g.to(device, memory_format=mem)
        d.to(device, memory_format=mem)
        _move_opt(opt_g, device)
        _move_opt(opt_d, device)
        if is_main:
            log.info("phase %s: G %.2f M parameters, D %.2f M parameters, %dx%d, steps %d..%d",
                     ph.kind, count_params(g) / 1e6, count_params(d) / 1e6, ph.width, ph.height, step, ph.end)
        if cfg.compile:
            g.compile(dynamic=False)  # static shapes: sizes are fixed per phase
            d.compile(dynamic=False)
        pair = PairGenerator(g, mcfg.temporal)
        pair_run, d_run = pair, d
        if world > 1:
            ids = [device.index] if cuda else None
            pair_run = nn.parallel.DistributedDataParallel(pair, device_ids=ids)
            d_run = nn.parallel.DistributedDataParallel(d, device_ids=ids)

        data = FrameData(frames_path, pose, ph.height, ph.width, render)
        stop_at = ph.end if max_steps is None else min(ph.end, step + max_steps - steps_this_call)
        sampler = StepSampler(n_train - 1, cfg.batch_size, cfg.seed, step, stop_at, rank, world)
        loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                            pin_memory=cuda, worker_init_fn=_worker_init if cfg.workers else None,
                            persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
        val_frames = ValFrames(n, n_val, cfg.val_samples)

        def snapshot():
            return {"step": step, "phase": pi, "model": mcfg.to_dict(), "train": cfg.to_dict(), "data": fingerprint,
                    "G": {k: v.detach().cpu() for k, v in g.state_dict().items()},
                    "D": {k: v.detach().cpu() for k, v in d.state_dict().items()},
                    "optG": _opt_state_cpu(opt_g), "optD": _opt_state_cpu(opt_d)}

        bar = tqdm(total=ph.end - ph.start, initial=step - ph.start, desc=f"{ph.kind} {ph.width}x{ph.height}",
                   disable=not (is_main and progress), mininterval=1.0 if sys.stderr.isatty() else 30.0,
                   dynamic_ncols=True)
        csv_file = open(live_csv, "a", newline="") if is_main else None
        writer = csv.DictWriter(csv_file, LOSS_COLUMNS) if is_main else None
        if is_main and live_csv.stat().st_size == 0:
            writer.writeheader()
        t0 = time.perf_counter()
        try:
            for y_t, y_t1, x_t, x_t1 in loader:
                lr = learning_rate(cfg, ph, step)
                for opt in (opt_g, opt_d):
                    for group in opt.param_groups:
                        group["lr"] = lr
                y_t, y_t1, x_t, x_t1 = (t.to(device, non_blocking=True).contiguous(memory_format=mem)
                                        for t in (y_t, y_t1, x_t, x_t1))
                losses = train_step(pair_run, g, d, d_run, opt_g, opt_d, vgg, cfg, y_t, y_t1, x_t, x_t1, amp)
                step += 1
                steps_this_call += 1
                vec = torch.tensor([*losses.values(), float(Stop.signum)], dtype=torch.float64)
                if world > 1:
                    dist.all_reduce(vec)
                    vec[:-1] /= world
                stop_sig = int(vec[-1].item() > 0) and (Stop.signum or signal.SIGTERM)
                row = dict(zip(losses, vec[:-1].tolist()))
                if is_main:
                    rec = {"step": step, "phase": ph.kind, "lr": lr, **row, "val_l1": "",
                           "time_s": round(time.perf_counter() - t0, 3)}
                    if (cfg.sample_every and step % cfg.sample_every == 0) or step == ph.end:
                        if val_frames:
                            val_l1, grid = validate(g, data, val_frames, mcfg.temporal, device, amp)
                            rec["val_l1"] = val_l1
                            write_png(ckpt_dir / "samples" / f"step_{step:08d}.png", grid)
                            write_png(ckpt_dir / "samples.png", grid)
                    writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in rec.items()})
                    csv_file.flush()
                    bar.update(1)
                    bar.set_postfix(D=f"{row['loss_D']:.3f}", G=f"{row['loss_G_gan']:.3f}",
                                    fm=f"{row['loss_G_fm']:.3f}", vgg=f"{row['loss_G_vgg']:.3f}",
                                    l1=f"{row['l1']:.3f}", refresh=False)
                save_now = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == stop_at or stop_sig
                if save_now and is_main:
                    p = save_checkpoint(ckpt_dir, snapshot(), cfg.keep_checkpoints)
                    if is_main and (stop_sig or step == stop_at):
                        log.info("checkpoint %s", p)
                if stop_sig:
                    bar.close()
                    if world > 1:
                        dist.barrier()
                    log.warning("stopped by %s at step %d; rerun to resume", signal.Signals(stop_sig).name, step)
                    raise SystemExit(128 + int(stop_sig))
        finally:
            bar.close()
            if csv_file:
                csv_file.close()
        state = snapshot()
        if max_steps is not None and steps_this_call >= max_steps and step < total:
            return {"step": step, "done": False, "val_l1": val_l1, "generator": unwrap(g), "discriminator": unwrap(d)}

    # -- the end: final weights, the loss CSV and curves, the validation grid
    if g is None:  # already finished before this call: rebuild the final generator from the checkpoint
        mcfg = ModelConfig(**state["model"])
        g = build_generator(mcfg)
        g.load_state_dict(state["G"])
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        final = {"model": state["model"], "state_dict": {k: v.detach().cpu() for k, v in unwrap(g).state_dict().items()},
                 "height": height, "width": width, "step": step,
                 "labels": {"thickness": cfg.label_thickness, "face": cfg.label_face, "hands": cfg.label_hands,
                            "iuv": "concat" if cfg.iuv_concat else "none"},
                 "train": cfg.to_dict()}
        tmp = out_dir / f".generator.pt.tmp{os.getpid()}"
        torch.save(final, tmp)
        os.replace(tmp, out_dir / "generator.pt")
        shutil.copyfile(live_csv, out_dir / "loss.csv")
        plot_losses(out_dir / "loss.csv", out_dir / "loss.png")
        if (ckpt_dir / "samples.png").exists():
            shutil.copyfile(ckpt_dir / "samples.png", out_dir / "samples.png")
        else:  # no held-out frames: show training frames so the output still exists
            data = FrameData(frames_path, pose, height, width, render)
            dev = next(unwrap(g).parameters()).device
            _, grid = validate(unwrap(g), data, ValFrames(n, min(n, cfg.val_samples), cfg.val_samples),
                               state["model"]["temporal"], dev, nullcontext())
            write_png(out_dir / "samples.png", grid)
        log.info("done: %d steps; wrote %s", step, out_dir / "generator.pt")
    if world > 1:
        dist.barrier()
    return {"step": step, "done": True, "val_l1": val_l1, "generator": unwrap(g), "discriminator": d and unwrap(d)}


def train_step(pair_run, g, d, d_run, opt_g, opt_d, vgg, cfg: TrainConfig, y_t, y_t1, x_t, x_t1, amp) -> dict:
    """One temporal-pair step: the generator update (D frozen), then the discriminator update."""
    temporal = cfg.temporal
    # generator: adversarial + feature matching + VGG
    d.requires_grad_(False)
    with amp:
        fake_t, fake_t1 = pair_run(y_t, y_t1)
        fake_in = d_input(y_t, y_t1, fake_t, fake_t1, temporal)
        real_in = d_input(y_t, y_t1, x_t, x_t1, temporal)
        pred_fake = d(fake_in)
        with torch.no_grad():
            pred_real = d(real_in)
        loss_gan = lsgan_loss(pred_fake, True)
        loss_fm = feature_matching_loss(pred_fake, pred_real) * cfg.lambda_feat if cfg.lambda_feat else torch.zeros(())
        if vgg is not None:
            loss_vgg = vgg(torch.cat([fake_t, fake_t1]), torch.cat([x_t, x_t1])) * cfg.lambda_vgg
        else:
            loss_vgg = torch.zeros((), device=x_t.device)
        if cfg.lambda_l1:
            loss_l1 = 0.5 * ((fake_t - x_t).abs().mean() + (fake_t1 - x_t1).abs().mean()) * cfg.lambda_l1
        else:
            loss_l1 = torch.zeros((), device=x_t.device)
    loss_g = loss_gan + loss_fm + loss_vgg + loss_l1
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    d.requires_grad_(True)
    loss_d, loss_real, loss_fake = discriminator_step(d_run, opt_d, real_in, fake_in, amp)
    with torch.no_grad():
        l1 = 0.5 * ((fake_t.float() - x_t).abs().mean() + (fake_t1.float() - x_t1).abs().mean()) / 2
    out = {"loss_D": loss_d, "loss_D_real": loss_real, "loss_D_fake": loss_fake, "loss_G": loss_g,
           "loss_G_gan": loss_gan, "loss_G_fm": loss_fm, "loss_G_vgg": loss_vgg, "loss_G_l1": loss_l1,
           "l1": l1}
    return {k: float(v.detach()) for k, v in out.items()}


def discriminator_step(d, opt_d, real_in, fake_in, amp) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSGAN step of D on (condition, image) stacks; real and fake in one forward (instance
    norm keeps the samples apart). Returns (loss_D, loss_D_real, loss_D_fake)."""
    b = real_in.shape[0]
    with amp:
        preds = d(torch.cat([real_in, fake_in.detach().to(real_in.dtype)], 0))
        loss_real = lsgan_loss([[f[:b] for f in p] for p in preds], True)
        loss_fake = lsgan_loss([[f[b:] for f in p] for p in preds], False)
    loss_d = 0.5 * (loss_real + loss_fake)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return loss_d, loss_real, loss_fake


def _move_opt(opt, device):
    for st in opt.state.values():
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(device)


def _opt_state_cpu(opt) -> dict:
    sd = opt.state_dict()
    sd["state"] = {i: {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in st.items()}
                   for i, st in sd["state"].items()}
    return sd


def _truncate_csv(path: Path, step: int) -> None:
    """Drop logged rows after the checkpoint we resume from (they will be trained again)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if int(r["step"]) <= step]
    if len(keep) == len(rows):
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, LOSS_COLUMNS)
        w.writeheader()
        w.writerows(keep)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the pose-to-video generator of one target (pix2pixHD + temporal smoothing).")
    ap.add_argument("--frames", required=True, help="the target's frames.npy")
    ap.add_argument("--pose", required=True, help="the target's smoothed pose table (Parquet)")
    ap.add_argument("--out-dir", required=True, help="writes generator.pt, loss.csv, loss.png, samples.png here")
    ap.add_argument("--ckpt-dir", required=True, help="checkpoints, the live loss.csv and sample grids; resumed from")
    ap.add_argument("--train-json", default="{}", help="the config's train section as JSON")
    ap.add_argument("--labels-json", default="{}", help="the config's labels section as JSON")
    ap.add_argument("--iuv", default=None, help="the target's DensePose IUV store (iuv.npy), for labels.iuv concat")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (checkpointed)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    t = json.loads(a.train_json)
    lab = json.loads(a.labels_json)
    t.update({f"label_{k}": lab[k] for k in ("thickness", "face", "hands", "iuv") if k in lab})
    cfg = TrainConfig.from_dict(t)
    try:
        train(cfg, a.frames, a.pose, a.out_dir, a.ckpt_dir, max_steps=a.max_steps, iuv_path=a.iuv)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
