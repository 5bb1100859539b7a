"""Train the pose-to-video generator of one target person (the `train_generator` rule).

One loop for everything: CPU or CUDA, one process or DDP under torchrun, the global phase and
the local-enhancer phase. The data are the target's frames store and smoothed pose table; label
maps are rendered on the fly (steps.labels). The last `val_fraction` of the frames is a held-out
tail that is never trained on.

A step takes a temporal pair (t, t+1): G makes frame t from (label t, zeros) and frame t+1 from
(label t+1, its own frame t); the multi-scale discriminator sees both frames with both labels,
augmented the same way on real and fake (train.augment). Losses: LSGAN + feature matching
(lambda_feat) + VGG per frame (lambda_vgg) [+ L1]; Adam with lr_G / lr_D, constant then linear
decay. D and the losses run in fp32; bf16 autocast covers G and the VGG on CUDA.

Every `val_every` steps G generates the whole held-out tail recurrently, as transfer does; L1,
SSIM and ST-LPIPS go to loss.csv, the best checkpoint (train.select_by) is kept as best.pt and
becomes generator.pt, and the collapse guard (train.guard) goes back to it when D wins and the
held-out metric gets worse. Checkpoints every `checkpoint_every` steps; a rerun resumes;
SIGTERM/SIGUSR1 saves one and exits 128+signal. Sampling is a pure function of (seed, step), so
a resumed run equals a straight one on CPU. Shared pieces: steps.loop; inference: steps.generator.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .budget import TooSlowForCPU, check_cpu_hours, cpu_flops_per_second, train_step_flops
from .generator import autocast, generate_sequence, resize_frame, to_tensor
from .loop import (Checkpoints, GANSettings, LossLog, Run, Stop, TrainingStopped, adam, augmenter,
                   compile_mode, compile_models, compile_report, data_fingerprint, discriminator_step,
                   generator_adversarial, learning_rate, mark_step, perceptual_metric, pick_device, step_generator,
                   vgg_loss, write_final, write_png)
from .models import (IMG_CH, IUV_CH, LABEL_CH, ModelConfig, PairGenerator, build_discriminator, build_generator,
                     count_params, d_input, init_weights)
from .settings import section

log = logging.getLogger("train")


@dataclass
class TrainConfig(GANSettings):
    """The config's train section (defaults: the schema); `resources` belongs to the rule."""

    model: dict
    width: int | None
    height: int | None
    global_steps: int
    local_steps: int
    batch_size: int
    vgg_pair: str
    lambda_l1: float
    val_fraction: float
    val_max_frames: int | None
    workers: int
    data_on_device: bool | str
    sync_every: int
    channels_last: bool
    compile: bool | str
    compile_cache: str

    @classmethod
    def from_dict(cls, d: dict | None = None) -> "TrainConfig":
        return cls.from_section("train", d)

    def to_dict(self) -> dict:
        return asdict(self)

    def model_config(self, kind: str, iuv: bool = False) -> ModelConfig:
        return ModelConfig(**self.model, kind=kind, label_ch=LABEL_CH + (IUV_CH if iuv else 0))


@dataclass
class Phase:
    kind: str       # global | local
    start: int      # first global step of the phase
    end: int        # one past its last
    height: int
    width: int


def plan_phases(cfg: TrainConfig, height: int, width: int) -> list[Phase]:
    """global at full size, or global at half size then the local enhancer at full size."""
    n_down = cfg.model["n_down"]
    if cfg.local_steps > 0:
        m = 2 ** (n_down + 1)
        plan = [Phase("global", 0, cfg.global_steps, height // 2, width // 2),
                Phase("local", cfg.global_steps, cfg.global_steps + cfg.local_steps, height, width)]
    else:
        m = 2**n_down
        plan = [Phase("global", 0, cfg.global_steps, height, width)]
    if height % m or width % m:
        raise ValueError(f"training size {width}x{height} must be a multiple of {m} "
                         f"(2^n_down{' * 2 for the local enhancer' if cfg.local_steps else ''}); "
                         "set train.width/height or frames.width/height accordingly")
    return plan


# --- data -------------------------------------------------------------------------------------

class FrameData(Dataset):
    """Frame i of the target at (height, width) as uint8 (`label`, `frame`) or as tensors in
    [-1, 1] (`sample`). Items are temporal pairs (i, i+1): (y_t, y_t1, x_t, x_t1)."""

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

    def label(self, i: int) -> np.ndarray:
        return self.render(self.pose, i, self.height, self.width)

    def frame(self, i: int) -> np.ndarray:
        return resize_frame(self.frames[i], self.height, self.width)

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensor(self.label(i)), to_tensor(self.frame(i))

    def __getitem__(self, i: int):
        y_t, x_t = self.sample(i)
        y_t1, x_t1 = self.sample(i + 1)
        return y_t, y_t1, x_t, x_t1


def split_frames(n: int, val_fraction: float) -> tuple[int, int]:
    """(n_train, n_val): the held-out tail is the last ceil(n * val_fraction) frames."""
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

    def indices(self, step: int) -> list[int]:
        idx = np.random.default_rng([self.seed, step]).integers(0, self.n_pairs, self.batch * self.world)
        return idx[self.rank * self.batch:(self.rank + 1) * self.batch].tolist()

    def __iter__(self):
        for s in range(self.start, self.stop):
            yield from self.indices(s)


class DeviceData:
    """The training frames and their label maps as uint8 tensors on the device (train.data_on_device):
    a step's batch is an index and a conversion there, with no loader and no host copy. The same
    values as FrameData's."""

    def __init__(self, data: FrameData, n_frames: int, device, memory_format):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:  # cv2's drawing and resizing release the GIL
            labels = np.stack(list(pool.map(data.label, range(n_frames))))
            frames = np.stack(list(pool.map(data.frame, range(n_frames))))
        self.labels, self.frames = (torch.from_numpy(a).to(device) for a in (labels, frames))
        self.mem = memory_format

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes + self.frames.nbytes

    def _floats(self, store: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # as generator.to_tensor: uint8 -> [-1, 1]
        return store[idx].permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous(memory_format=self.mem)

    def batch(self, indices: list[int]) -> list[torch.Tensor]:
        """(y_t, y_t1, x_t, x_t1) of the pairs (i, i + 1)."""
        i = torch.tensor(indices, device=self.labels.device)
        return [self._floats(self.labels, i), self._floats(self.labels, i + 1),
                self._floats(self.frames, i), self._floats(self.frames, i + 1)]


def data_fits_device(n_frames: int, height: int, width: int, channels: int, device, setting) -> bool:
    """train.data_on_device: true, false, or auto (CUDA, and under a quarter of the free memory)."""
    if setting != "auto":
        return bool(setting)
    if device.type != "cuda":
        return False
    return n_frames * height * width * channels < torch.cuda.mem_get_info(device)[0] / 4


def phase_data(cfg: TrainConfig, frames_path, pose, ph: Phase, render, n_train: int, device, mem):
    """(FrameData at the phase's size, its training frames on the device or None)."""
    data = FrameData(frames_path, pose, ph.height, ph.width, render)
    if not data_fits_device(n_train, ph.height, ph.width, data.label(0).shape[-1] + IMG_CH, device, cfg.data_on_device):
        log.info("data: rendered by %d loader workers", cfg.workers)
        return data, None
    device_data = DeviceData(data, n_train, device, mem)
    log.info("data: %d frames and label maps on %s as uint8 (%.2f GiB)", n_train, device, device_data.nbytes / 2**30)
    return data, device_data


def batches(data: FrameData, device_data: DeviceData | None, sampler: StepSampler, cfg: TrainConfig, device, mem):
    """The batches of sampler's steps, on the device."""
    if device_data is not None:
        for s in range(sampler.start, sampler.stop):
            yield device_data.batch(sampler.indices(s))
        return
    loader = DataLoader(data, batch_size=cfg.batch_size, num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        sampler=sampler, worker_init_fn=_worker_init if cfg.workers else None,
                        prefetch_factor=4 if cfg.workers else None)
    for batch in loader:
        yield [t.to(device, non_blocking=True).contiguous(memory_format=mem) for t in batch]


def _worker_init(_):
    # preemption signals are for the main process, which saves a checkpoint; workers carry on
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    torch.set_num_threads(1)


def default_renderer(labels: dict, iuv=None) -> Callable:
    from .labels import generator_renderer

    return generator_renderer(labels["thickness"], labels["face"], labels["hands"], iuv)


# --- validation -------------------------------------------------------------------------------

@torch.no_grad()
def validate(g: nn.Module, data: FrameData, tail: range, temporal: bool, device, bf16: bool, perceptual,
             n_grid: int) -> tuple[dict, np.ndarray]:
    """Generate the held-out frames `tail` recurrently from its first (as transfer does).
    Returns ({l1, ssim, stlpips}, grid uint8 with rows label | generated | real)."""
    from .metrics import held_out_metrics

    was_training = g.training
    g.eval()
    labels = [data.label(i) for i in tail]
    fake = list(generate_sequence(g, labels, device=device, temporal=temporal, bf16=bf16))
    real = [data.frame(i) for i in tail]
    g.train(was_training)
    picks = np.unique(np.linspace(0, len(tail) - 1, min(n_grid, len(tail))).round().astype(int))
    grid = np.concatenate([np.concatenate([labels[k][..., :LABEL_CH], fake[k], real[k]], 1) for k in picks], 0)
    return held_out_metrics(fake, real, perceptual), grid


# --- the step ---------------------------------------------------------------------------------

def train_step(pair_run, d_run, run: Run, vgg, cfg: TrainConfig, batch, amp, aug=None, rng=None) -> dict:
    """One temporal-pair step: the generator update (D frozen), then the discriminator update.
    Returns the losses as 0-d tensors (no host sync here)."""
    y_t, y_t1, x_t, x_t1 = batch
    temporal = cfg.model["temporal"]
    # generator: adversarial + feature matching + VGG (+ L1); G and VGG under autocast, D in fp32
    run.d.requires_grad_(False)
    with amp:
        fake_t, fake_t1 = pair_run(y_t, y_t1)
    fake_in = d_input(y_t, y_t1, fake_t, fake_t1, temporal).float()
    real_in = d_input(y_t, y_t1, x_t, x_t1, temporal)
    real_in, fake_in, loss_gan, loss_fm = generator_adversarial(d_run, real_in, fake_in, cfg.lambda_feat, aug, rng)
    zero = torch.zeros((), device=x_t.device)
    pair_w = 1.0 if cfg.vgg_pair == "sum" else 0.5  # the official code sums the per-frame VGG terms
    if vgg is not None:
        with amp:
            loss_vgg = (vgg(fake_t, x_t) + vgg(fake_t1, x_t1)) * pair_w * cfg.lambda_vgg
    else:
        loss_vgg = zero
    l1 = 0.5 * ((fake_t.float() - x_t).abs().mean() + (fake_t1.float() - x_t1).abs().mean())
    loss_l1 = l1 * cfg.lambda_l1 if cfg.lambda_l1 else zero
    loss_g = loss_gan + loss_fm + loss_vgg + loss_l1
    run.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_g.step()
    run.d.requires_grad_(True)
    d_losses = discriminator_step(d_run, run.opt_d, real_in, fake_in, cfg.r1_gamma)
    return {**d_losses, "loss_G": loss_g, "loss_G_gan": loss_gan, "loss_G_fm": loss_fm, "loss_G_vgg": loss_vgg,
            "loss_G_l1": loss_l1, "l1": l1.detach() / 2}


# --- the loop ---------------------------------------------------------------------------------

def setup_distributed(cfg: TrainConfig):
    """(rank, world, device). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def open_data(cfg: TrainConfig, labels: dict, frames_path, pose, iuv_path, render):
    """(frames, pose, iuv, render) checked against each other."""
    from .labels import open_iuv
    from .posetable import read_pose

    if isinstance(pose, (str, os.PathLike)):
        pose = read_pose(pose)
    frames = np.load(frames_path, mmap_mode="r")
    if pose.n_frames != len(frames):
        raise ValueError(f"{frames_path} has {len(frames)} frames but the pose table has {pose.n_frames}")
    iuv = None
    if labels["iuv"] == "concat":
        if iuv_path is None:
            raise ValueError(f"labels.iuv concat: the generator's label maps include DensePose's IUV channels, so "
                             f"training on {frames_path} needs the target's IUV store (results/densepose/<target>/iuv.npy, --iuv)")
        iuv = open_iuv(iuv_path, len(frames), frames_path)
    return frames, pose, iuv, render or default_renderer(labels, iuv)


def build_phase(cfg: TrainConfig, ph: Phase, pi: int, state: dict | None, iuv: bool, device, mem):
    """G, D and their optimizers for phase `ph`: fresh, resumed from `state`, or the enhancer
    around the global phase's G. Returns (mcfg, g, d, opt_g, opt_d, resumed_in_phase)."""
    mcfg = cfg.model_config(ph.kind, iuv)
    torch.manual_seed(cfg.seed + pi)
    g, d = build_generator(mcfg), build_discriminator(mcfg)
    init_weights(g, cfg.init_std)
    init_weights(d, cfg.init_std)
    g.to(device, memory_format=mem)
    d.to(device, memory_format=mem)
    opt_g, opt_d = adam(g.parameters(), cfg.lr_G, cfg, device), adam(d.parameters(), cfg.lr_D, cfg, device)
    if state is None:
        return mcfg, g, d, opt_g, opt_d, False
    if ModelConfig(**state["model"]) == mcfg:
        return mcfg, g, d, opt_g, opt_d, True
    if state["model"]["kind"] == "global" and ph.kind == "local":
        g.load_global(state["G"])
        d.load_state_dict(state["D"])
        return mcfg, g, d, opt_g, opt_d, False
    raise ValueError(f"checkpoint was trained with {state['model']}, the config now asks for {asdict(mcfg)}; "
                     "delete the checkpoints folder to start again")


def train(cfg: TrainConfig, frames_path, pose, out_dir, ckpt_dir, labels: dict | None = None,
          render: Callable | None = None, max_steps: int | None = None, progress: bool = True, iuv_path=None) -> dict:
    """Train (or resume) and write out_dir/{generator.pt, loss.csv, loss.png, samples.png}.

    pose: PoseArrays or a path. labels: the config's labels section (schema defaults when None).
    render: a label renderer instead of the labels section's (tests). max_steps: stop after this
    many steps in this call with a checkpoint and no final outputs. Returns {"step", "done",
    "metrics" (last validation), "best_step", "stopped" (the guard's message or ""), "generator",
    "discriminator"} (the models in memory; None when nothing was trained in this call)."""
    from tqdm import tqdm

    from .settings import section

    labels = section("labels", labels)
    rank, world, device = setup_distributed(cfg)
    is_main = rank == 0
    out_dir, ckpts = Path(out_dir), Checkpoints(ckpt_dir, cfg.keep_checkpoints)
    frames, pose, iuv, render = open_data(cfg, labels, frames_path, pose, iuv_path, render)
    n, fh, fw = frames.shape[:3]
    height, width = cfg.height or fh, cfg.width or fw
    phases = plan_phases(cfg, height, width)
    n_train, n_val = split_frames(n, cfg.val_fraction)
    tail = range(n_train, min(n, n_train + (cfg.val_max_frames or n)))
    torch.backends.cudnn.benchmark = device.type == "cuda"
    amp, mem = autocast(device, cfg.bf16), (torch.channels_last if cfg.channels_last else torch.contiguous_format)
    vgg, perceptual = vgg_loss(cfg, device, mem), perceptual_metric(cfg, device) if is_main else None
    aug = augmenter(cfg, _d_image_channels(cfg, iuv is not None))
    state = ckpts.latest()
    fingerprint = data_fingerprint(frames, pose, iuv)
    if state and state.get("data") != fingerprint:
        raise ValueError(f"the checkpoints in {ckpts.folder} were trained on other frames, poses or IUV images than "
                         f"{frames_path}; delete that folder to train from scratch on the new data")
    step = state["step"] if state else 0
    if is_main:
        log.info("CUDA_VISIBLE_DEVICES=%s device=%s world_size=%d torch=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
                 device, world, torch.__version__)
        log.info("%d frames of %dx%d: %d for training, the last %d held out; phases %s", n, fw, fh, n_train, n_val,
                 [(p.kind, p.end - p.start, f"{p.width}x{p.height}") for p in phases])
        if state:
            log.info("resuming from %s (step %d of %d)", ckpts.steps()[-1], step, phases[-1].end)
        out_dir.mkdir(parents=True, exist_ok=True)
    Stop.install()
    mode = compile_mode(cfg.compile)
    calls_left = max_steps if max_steps is not None else phases[-1].end
    run, stopped, metrics = None, "", {}
    for pi, ph in enumerate(phases):
        if step >= ph.end or calls_left <= 0:
            continue
        mcfg, g, d, opt_g, opt_d, resumed = build_phase(cfg, ph, pi, state, iuv is not None, device, mem)
        if not resumed and is_main:
            ckpts.best_path.unlink(missing_ok=True)  # the best model is chosen within the last phase
        fixed = {"phase": pi, "model": asdict(mcfg), "train": cfg.to_dict(), "labels": labels, "data": fingerprint,
                 "height": ph.height, "width": ph.width, "held_out_from": n_train}
        run = Run(g, d, opt_g, opt_d, cfg, ckpts, LossLog(ckpts.folder / "loss.csv", step, is_main), fixed, step, is_main)
        if resumed:
            run.restore(state, device)
        if is_main:
            log.info("phase %s: G %.2f M parameters, D %.2f M parameters, %dx%d, steps %d..%d", ph.kind,
                     count_params(g) / 1e6, count_params(d) / 1e6, ph.width, ph.height, step, ph.end)
        first_compiled = bool(mode)  # each phase compiles its own graphs
        if mode:
            log.info("%s", compile_models([g, d], mode, cfg.compile_cache, device))
        pair_run, d_run = PairGenerator(g, mcfg.temporal), d
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            pair_run = nn.parallel.DistributedDataParallel(pair_run, device_ids=ids)
            d_run = nn.parallel.DistributedDataParallel(d, device_ids=ids)
        data = device_data = None  # the last phase's copy on the device goes before this one's is made
        data, device_data = phase_data(cfg, frames_path, pose, ph, render, n_train, device, mem)
        stop_at = min(ph.end, run.step + calls_left)
        bar = tqdm(total=ph.end - ph.start, initial=run.step - ph.start, desc=f"{ph.kind} {ph.width}x{ph.height}",
                   disable=not (is_main and progress), mininterval=1.0 if sys.stderr.isatty() else 30.0)
        t0 = time.perf_counter()
        try:
            while run.step < stop_at:  # a rewind of the collapse guard restarts the data stream
                sampler = StepSampler(n_train - 1, cfg.batch_size, cfg.seed, run.step, stop_at, rank, world)
                pending = []  # (step, losses on the device, lr_G, lr_D) not yet read back
                for batch in batches(data, device_data, sampler, cfg, device, mem):
                    lr_G, lr_D = (run.lr_scale * learning_rate(lr, run.step, ph.start, ph.end, cfg.decay_from)
                                  for lr in (cfg.lr_G, cfg.lr_D))
                    run.set_lr(lr_G, lr_D)
                    mark_step(mode)
                    losses = train_step(pair_run, d_run, run, vgg, cfg, batch, amp, aug,
                                        step_generator(cfg.seed, run.step, device) if aug else None)
                    run.step += 1
                    calls_left -= 1
                    pending.append((run.step, losses, lr_G, lr_D))
                    bar.update(1)
                    if mode and first_compiled:
                        log.info("%s", compile_report(time.perf_counter() - t0))
                        first_compiled = False
                    val_due = (cfg.val_every and run.step % cfg.val_every == 0) or run.step == ph.end
                    # read the losses back only every sync_every steps (and where the host needs them);
                    # the signal is checked per step by one process, at those points by DDP ranks together
                    if not (val_due or run.checkpoint_due(stop_at) or run.step % cfg.sync_every == 0
                            or (world == 1 and Stop.signum)):
                        continue
                    rows, signum = _read_back(pending, world)
                    elapsed = round(time.perf_counter() - t0, 3)
                    for row in rows:
                        row.update(phase=ph.kind, time_s=elapsed)
                    pending = []
                    verdict = ""
                    if val_due:
                        metrics, verdict = _validate(run, g, data, tail, mcfg.temporal, device, cfg, perceptual, world)
                        rows[-1].update(val_l1=metrics["l1"], val_ssim=metrics["ssim"], val_stlpips=metrics["stlpips"])
                    last = rows[-1]
                    bar.set_postfix(D=f"{last['loss_D']:.3f}", G=f"{last['loss_G_gan']:.3f}", l1=f"{last['l1']:.3f}",
                                    refresh=False)
                    run.end_step(rows, stop_at, signum)
                    if verdict == "stop":
                        run.stop(run.message)
                    if verdict == "rewind":
                        run.rewind(device)
                        bar.n = run.step - ph.start
                        break
        except TrainingStopped as e:
            stopped = str(e)
        finally:
            bar.close()
            run.loss_log.close()
        state, step = run.snapshot(), run.step
        if stopped:
            break
    done = stopped or step_of(ckpts) >= phases[-1].end
    if done and is_main:
        write_final(ckpts, out_dir / "generator.pt", ("model", "height", "width", "labels", "held_out_from", "train"),
                    "loss.csv", "samples.png", stopped)
    if world > 1:
        dist.barrier()
    return {"step": run.step if run else step, "done": bool(done), "metrics": metrics, "stopped": stopped,
            "best_step": run.guard.best_step if run else None, "val_l1": metrics.get("l1", float("nan")),
            "generator": run and run.g, "discriminator": run and run.d}


def step_of(ckpts: Checkpoints) -> int:
    s = ckpts.steps()
    return int(s[-1].stem.split("_")[1]) if s else 0


def _d_image_channels(cfg: TrainConfig, iuv: bool):
    from .augment import d_image_channels

    return d_image_channels(LABEL_CH + (IUV_CH if iuv else 0), cfg.model["temporal"])


def _read_back(pending: list, world: int) -> tuple[list[dict], int]:
    """The loss rows of the pending steps (one host sync for all), averaged over DDP ranks, with
    any preemption signal seen by a rank."""
    names = list(pending[0][1])
    vec = torch.stack([v.detach().float().reshape(()) for _, losses, _, _ in pending for v in losses.values()])
    vec = torch.cat([vec.double(), torch.tensor([float(Stop.signum)], dtype=torch.float64, device=vec.device)])
    if world > 1:
        dist.all_reduce(vec)
        vec[:-1] /= world
    vec = vec.cpu()
    signum = (Stop.signum or int(signal.SIGTERM)) if vec[-1].item() > 0 else 0
    values = vec[:-1].view(len(pending), len(names)).tolist()
    return [{"step": step, "lr_G": lr_G, "lr_D": lr_D, **dict(zip(names, v))}
            for (step, _, lr_G, lr_D), v in zip(pending, values)], signum


def _validate(run: Run, g, data, tail, temporal, device, cfg, perceptual, world) -> tuple[dict, str]:
    """Validation on the main rank, its metrics shared with every rank, the guard acted on by all."""
    metrics = {"l1": 0.0, "ssim": 0.0, "stlpips": 0.0}
    if run.is_main:
        metrics, grid = validate(g, data, tail, temporal, device, cfg.bf16, perceptual, cfg.val_samples)
        write_png(run.ckpts.folder / "samples" / f"step_{run.step:08d}.png", grid)
        write_png(run.ckpts.folder / "samples.png", grid)
        log.info("step %d held out: L1 %.4f SSIM %.4f ST-LPIPS %.4f", run.step, metrics["l1"], metrics["ssim"],
                 metrics["stlpips"])
    if world > 1:
        vec = torch.tensor([metrics[k] for k in ("l1", "ssim", "stlpips")], dtype=torch.float64)
        dist.broadcast(vec, 0)
        metrics = dict(zip(("l1", "ssim", "stlpips"), vec.tolist()))
    verdict = run.validated(metrics)
    if world > 1:
        dist.barrier()  # best.pt is on disk before any rank goes back to it
    return metrics, verdict


def cpu_hours(cfg: TrainConfig, frames_path, iuv: bool, limit_h: float | None) -> str:
    """The estimated time of this training on this CPU (a log line); TooSlowForCPU over limit_h."""
    _, h, w = np.load(frames_path, mmap_mode="r").shape[:3]
    flops = sum(train_step_flops(cfg.model_config(p.kind, iuv), p.height, p.width, cfg.batch_size) * (p.end - p.start)
                for p in plan_phases(cfg, cfg.height or h, cfg.width or w))
    return check_cpu_hours(flops / cpu_flops_per_second() / 3600, limit_h, "this training", "train.cpu_hours_limit")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the pose-to-video generator of one target (pix2pixHD + temporal smoothing).")
    ap.add_argument("--frames", required=True, help="the target's frames.npy")
    ap.add_argument("--pose", required=True, help="the target's smoothed pose table (Parquet)")
    ap.add_argument("--out-dir", required=True, help="writes generator.pt, loss.csv, loss.png, samples.png here")
    ap.add_argument("--ckpt-dir", required=True, help="checkpoints, best.pt, the live loss.csv and sample grids; resumed from")
    ap.add_argument("--settings", default="{}", help="the config's train section as JSON (schema defaults fill the rest)")
    ap.add_argument("--labels", default="{}", help="the config's labels section as JSON")
    ap.add_argument("--iuv", default=None, help="the target's DensePose IUV store (iuv.npy), for labels.iuv concat")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (checkpointed)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    given = json.loads(a.settings)
    cfg = TrainConfig.from_dict(given)
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        try:
            log.info(cpu_hours(cfg, a.frames, a.iuv is not None, section("train", given)["cpu_hours_limit"]))
        except TooSlowForCPU as e:
            sys.exit(f"train_generator: {e}")
    try:
        train(cfg, a.frames, a.pose, a.out_dir, a.ckpt_dir, json.loads(a.labels), max_steps=a.max_steps, iuv_path=a.iuv)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
