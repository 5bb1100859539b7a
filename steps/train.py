"""Train the pose-to-video generator of one target person (the `train_generator` rule).

CPU or CUDA, one process or DDP under torchrun, the global phase and the local-enhancer phase,
from scratch or from other weights (train.init_from: the base, another target's generator, a
checkpoint; then the fine-tune schedule train.finetune applies). The data are the target's
frames store and smoothed pose table; label maps are rendered on the fly (steps.labels), with
the target's static background after the skeleton (labels.background: estimated here from the
training frames, kept in generator.pt). The last `val_fraction` of the frames is a held-out
tail that is never trained on.

A step takes a temporal pair (t, t+1): G makes frame t from (label t, zeros) and frame t+1 from
(label t+1, its own frame t); the multi-scale discriminator sees both frames with both labels,
augmented the same way on real and fake (train.augment). Losses: LSGAN + feature matching
(lambda_feat) + VGG per frame (lambda_vgg) [+ L1]; Adam with lr_G / lr_D, constant then linear
decay. D and the losses run in fp32; bf16 autocast covers G and the VGG on CUDA.

This module keeps what is particular to the target generator: its data, its phases and its
step. The loop (validation on the held-out tail, best.pt, the collapse guard, checkpoints,
resume, preemption) is steps.loop's `fit`; checkpoints and their checks are steps.checkpoints';
inference is steps.generator's. A rerun resumes from the checkpoints when their data and
settings are the config's (beyond the step budget; see checkpoints.check_settings).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
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

from .budget import estimate_cpu, guard_cpu, train_step_flops
from .checkpoints import (Checkpoints, LossLog, check_settings, check_start, data_fingerprint, load_start,
                          write_final)
from .gan import (GANSettings, adam, augmenter, discriminator_step, generator_adversarial, perceptual_metric,
                  step_generator, vgg_loss)
from .generator import autocast, generate_sequence, pick_device, resize_frame, to_tensor
from .loop import Run, Span, Stop, fit
from .models import (IMG_CH, LABEL_CH, ModelConfig, PairGenerator, build_discriminator, build_generator,
                     count_params, d_input, init_weights, label_channels)
from .settings import section

log = logging.getLogger("train")
BASE_MODEL = "results/models/_base/generator.pt"  # train.init_from: base (the train_base rule's output)
PAPER_MINUTES = "the paper trained on 8 to 17 minutes of video of each target"


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
    finetune: dict
    min_train_frames: int
    min_val_frames: int

    @classmethod
    def from_dict(cls, d: dict | None = None) -> "TrainConfig":
        return cls.from_section("train", d)

    def model_config(self, kind: str, iuv: bool = False, background: bool = False) -> ModelConfig:
        return ModelConfig(**self.model, kind=kind, label_ch=label_channels(iuv, background), composite=background)

    def schedule(self) -> tuple[float, float, int]:
        """(lr_G, lr_D, warm-up steps): the fine-tune's with init_from, else the scratch run's."""
        if not self.init_from:
            return self.lr_G, self.lr_D, 0
        ft = self.finetune
        return ft["lr_G"] or self.lr_G, ft["lr_D"] or self.lr_D, ft["warmup"]


@dataclass
class Phase:
    kind: str       # global | local
    start: int      # first global step of the phase
    end: int        # one past its last
    height: int
    width: int


def plan_phases(cfg: TrainConfig, height: int, width: int) -> list[Phase]:
    """global at full size, or global at half size then the local enhancer at full size. A
    fine-tune (init_from) is one phase of finetune.steps (default: a fifth of global_steps) of
    the config's final model, which is what the starting weights must be."""
    n_down = cfg.model["n_down"]
    m = 2 ** (n_down + (1 if cfg.local_steps > 0 else 0))
    if height % m or width % m:
        raise ValueError(f"training size {width}x{height} must be a multiple of {m} "
                         f"(2^n_down{' * 2 for the local enhancer' if cfg.local_steps else ''}); "
                         "set train.width/height or frames.width/height accordingly")
    if cfg.init_from:
        steps = cfg.finetune["steps"] or max(1, cfg.global_steps // 5)
        return [Phase("local" if cfg.local_steps > 0 else "global", 0, steps, height, width)]
    if cfg.local_steps > 0:
        return [Phase("global", 0, cfg.global_steps, height // 2, width // 2),
                Phase("local", cfg.global_steps, cfg.global_steps + cfg.local_steps, height, width)]
    return [Phase("global", 0, cfg.global_steps, height, width)]


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
def split_frames(n: int, cfg: TrainConfig, frames_path="the frames store") -> tuple[int, int]:
    """(n_train, n_val): the held-out tail is the last ceil(n * val_fraction) frames. Fewer than
    train.min_train_frames / min_val_frames is an error, fewer than twice as many a warning."""
    n_val = math.ceil(n * cfg.val_fraction)
    n_train = n - n_val
    counts = (f"{frames_path} has {n} frames: {n_train} to train on and {n_val} held out "
              f"(train.val_fraction {cfg.val_fraction:g})")
    if n_train < max(2, cfg.min_train_frames) or n_val < cfg.min_val_frames:
        raise ValueError(f"{counts}; at least train.min_train_frames = {cfg.min_train_frames} and "
                         f"train.min_val_frames = {cfg.min_val_frames} are needed. Film the target for longer "
                         f"({PAPER_MINUTES}), or lower those keys knowingly")
    if n_train < 2 * cfg.min_train_frames or n_val < 2 * cfg.min_val_frames:
        log.warning("%s: little data, the model will see few poses and the held-out scores rest on few frames "
                    "(%s)", counts, PAPER_MINUTES)
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


class Subjects(Dataset):
    """The training pairs of one subject, or of several (the base), as one dataset: pair j is
    pair j - offset of the subject whose range holds j, so a pair never spans two subjects and
    one subject's pairs are FrameData's own."""

    def __init__(self, datas: list[FrameData], n_train: list[int]):
        self.datas, self.offsets = datas, np.cumsum([0] + [n - 1 for n in n_train])

    def __len__(self):
        return int(self.offsets[-1])

    def locate(self, j: int) -> tuple[int, int]:
        """(subject, pair) of pair j."""
        s = int(np.searchsorted(self.offsets, j, side="right")) - 1
        return s, int(j - self.offsets[s])

    def __getitem__(self, j: int):
        s, i = self.locate(j)
        return self.datas[s][i]


def phase_data(cfg: TrainConfig, subjects: list, ph: Phase, device, mem):
    """(each subject's FrameData at the phase's size, their training pairs as one dataset, the
    training frames on the device or None: one subject's, when they fit)."""
    datas = [FrameData(s.frames_path, s.pose, ph.height, ph.width, s.render) for s in subjects]
    pairs, n_train = Subjects(datas, [s.n_train for s in subjects]), subjects[0].n_train
    if len(subjects) > 1 or not data_fits_device(n_train, ph.height, ph.width, datas[0].label(0).shape[-1] + IMG_CH,
                                                 device, cfg.data_on_device):
        log.info("data: rendered by %d loader workers", cfg.workers)
        return datas, pairs, None
    device_data = DeviceData(datas[0], n_train, device, mem)
    log.info("data: %d frames and label maps on %s as uint8 (%.2f GiB)", n_train, device, device_data.nbytes / 2**30)
    return datas, pairs, device_data


def batches(data: Dataset, device_data: DeviceData | None, sampler: StepSampler, cfg: TrainConfig, device, mem):
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
    Stop.ignore_in_worker()
    torch.set_num_threads(1)


def default_renderer(labels: dict, iuv=None, background=None) -> Callable:
    from .labels import generator_renderer

    return generator_renderer(labels["thickness"], labels["face"], labels["hands"], iuv, background)


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
def validate_subjects(g: nn.Module, datas: list[FrameData], subjects: list, temporal: bool, device, bf16: bool,
                      perceptual, n_grid: int) -> tuple[dict, np.ndarray]:
    """`validate` on each subject's held-out tail: the mean of their metrics, their grids stacked."""
    results = [validate(g, d, s.tail, temporal, device, bf16, perceptual, n_grid) for d, s in zip(datas, subjects)]
    metrics = {k: float(np.mean([m[k] for m, _ in results])) for k in results[0][0]}
    return metrics, np.concatenate([grid for _, grid in results], 0)


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

# --- torch.compile (train.compile) -------------------------------------------------------------

def compile_mode(setting) -> str | None:
    """train.compile as torch.compile's mode: None (off), default, reduce-overhead, max-autotune."""
    if setting is False or setting in (None, "off"):
        return None
    return "default" if setting is True else str(setting)


def compile_models(models, mode: str, cache_dir, device: torch.device) -> str:
    """torch.compile each model in place for static shapes, with Inductor's on-disk caches
    (FX graphs, AOTAutograd, autotuning) in `cache_dir`, so a rerun compiles from the cache.
    Returns a line for the log that says what was done."""
    cache = Path(cache_dir).resolve()
    warm = cache.is_dir() and any(cache.iterdir())
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # Inductor reads it at each cache access
    for m in models:
        m.compile(mode=mode, dynamic=False)  # sizes are fixed per phase
    graphs = ("with CUDA graphs" if device.type == "cuda" else "CUDA graphs skipped on CPU") if mode == "reduce-overhead" else ""
    return (f"torch.compile mode {mode}{f' ({graphs})' if graphs else ''}; on-disk cache {cache} "
            f"({'warm: compiled graphs from an earlier run are reused' if warm else 'cold: the first steps compile'})")


def compile_report(seconds: float) -> str:
    """After the first compiled step: how long it took and what came from the cache."""
    from torch._dynamo.utils import counters

    ind, aot = counters["inductor"], counters["aot_autograd"]
    return (f"first compiled step took {seconds:.1f} s; Inductor FX graph cache {ind['fxgraph_cache_hit']} hits, "
            f"{ind['fxgraph_cache_miss']} misses; AOTAutograd cache {aot['autograd_cache_hit']} hits, "
            f"{aot['autograd_cache_miss']} misses")


def mark_step(mode: str | None) -> None:
    """CUDA graph trees need to know where a step begins, so the outputs of the last one may be
    overwritten."""
    if mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()


# --- the run --------------------------------------------------------------------------------------

def setup_distributed(cfg: TrainConfig):
    """(rank, world, device). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def open_data(cfg: TrainConfig, labels: dict, frames_path, pose, iuv_path):
    """(frames, pose, iuv) checked against each other."""
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
    return frames, pose, iuv


def _d_image_channels(cfg: TrainConfig, mcfg: ModelConfig):
    from .augment import d_image_channels

    return d_image_channels(mcfg.label_ch, cfg.model["temporal"])


def build_phase(cfg: TrainConfig, ph: Phase, pi: int, state: dict | None, iuv: bool, background: bool, device,
                mem, start: dict | None = None):
    """G, D and their optimizers for phase `ph`: resumed from the checkpoint `state`, the
    enhancer around the global phase's G, started from the weights `start` (init_from), or
    fresh. Returns (mcfg, g, d, opt_g, opt_d, resumed_in_phase)."""
    mcfg = cfg.model_config(ph.kind, iuv, background)
    torch.manual_seed(cfg.seed + pi)
    g, d = build_generator(mcfg), build_discriminator(mcfg)
    init_weights(g, cfg.init_std)
    init_weights(d, cfg.init_std)
    g.to(device, memory_format=mem)
    d.to(device, memory_format=mem)
    opt_g, opt_d = adam(g.parameters(), cfg.lr_G, cfg, device), adam(d.parameters(), cfg.lr_D, cfg, device)
    if state is not None:
        if ModelConfig(**state["model"]) == mcfg:
            return mcfg, g, d, opt_g, opt_d, True
        if state["model"]["kind"] == "global" and ph.kind == "local":
            g.load_global(state["G"])
            d.load_state_dict(state["D"])
            return mcfg, g, d, opt_g, opt_d, False
        raise ValueError(f"checkpoint was trained with {state['model']}, the config now asks for {asdict(mcfg)}; "
                         "delete the checkpoints folder to start again")
    if start is not None:
        g.load_state_dict(start["G"])
        if start["D"] is not None:
            d.load_state_dict(start["D"])
        else:
            log.warning("%s holds no discriminator (written before model files kept it): D starts fresh",
                        start["from"]["path"])
    return mcfg, g, d, opt_g, opt_d, False


@dataclass
class Subject:
    """One person's training data, checked: frames, poses, the renderer, the split."""

    frames_path: str
    pose: object
    render: Callable
    n_train: int
    tail: range
    background: np.ndarray | None  # labels.background: the static background of its training frames


@dataclass
class Target:
    """What one generator is trained on: one subject (a target) or several (the base)."""

    subjects: list[Subject]
    iuv: bool
    fingerprint: dict
    size: tuple[int, int]  # the frames' (height, width)

    @property
    def frames_path(self) -> str:
        return ", ".join(s.frames_path for s in self.subjects)

    @property
    def background(self) -> bool:
        """Whether its label maps end with a background (labels.background, a renderer of its own off)."""
        return self.subjects[0].background is not None

    def stored_background(self) -> torch.Tensor | None:
        """The background the model file keeps for transfer: a target's (a base has none)."""
        bg = self.subjects[0].background
        return torch.from_numpy(bg) if bg is not None and len(self.subjects) == 1 else None


def open_target(cfg: TrainConfig, labels: dict, data: list[tuple], render: Callable | None) -> Target:
    """data: (frames_path, pose or its path, iuv_path or None) of each subject. render: the whole
    label map's renderer instead of the labels section's (tests; labels.background is off)."""
    from .labels import static_background

    subjects, fingerprints, sizes, iuvs = [], [], set(), set()
    for frames_path, pose, iuv_path in data:
        frames, pose, iuv = open_data(cfg, labels, frames_path, pose, iuv_path)
        n = len(frames)
        n_train, _ = split_frames(n, cfg, frames_path)
        bg = static_background(frames, pose, n_train, what=str(frames_path)) if labels["background"] else None
        rend = render or default_renderer(labels, iuv, bg)
        subjects.append(Subject(str(frames_path), pose, rend, n_train,
                                range(n_train, min(n, n_train + (cfg.val_max_frames or n))), bg))
        fingerprints.append(data_fingerprint(frames, pose, iuv))
        sizes.add(frames.shape[1:3])
        iuvs.add(iuv is not None)
    if len(sizes) > 1:
        raise ValueError(f"the frames of {', '.join(str(d[0]) for d in data)} have different sizes {sorted(sizes)}; "
                         "decode them at one size (frames.width/height)")
    fingerprint = fingerprints[0] if len(data) == 1 else {"subjects": fingerprints}
    return Target(subjects, iuvs.pop(), fingerprint, sizes.pop())


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
    check_start(start, asdict(cfg.model_config(kind, target.iuv, target.background)), labels, "train")
    log.info("starting from %s (step %s): G and D loaded", start["from"]["path"], start["from"]["step"])
    return None, start


def phase_step(cfg: TrainConfig, run: Run, mcfg: ModelConfig, device, mem, world: int) -> Callable:
    """step(batch, k) of one phase: train_step with its compiled, DDP-wrapped models, autocast,
    VGG and the augmentation of step k."""
    mode = compile_mode(cfg.compile)
    if mode:  # each phase compiles its own graphs
        log.info("%s", compile_models([run.g, run.d], mode, cfg.compile_cache, device))
    pair_run, d_run = PairGenerator(run.g, mcfg.temporal), run.d
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        pair_run = nn.parallel.DistributedDataParallel(pair_run, device_ids=ids)
        d_run = nn.parallel.DistributedDataParallel(run.d, device_ids=ids)
    amp, vgg, aug = autocast(device, cfg.bf16), vgg_loss(cfg, device, mem), augmenter(cfg, _d_image_channels(cfg, mcfg))
    t0, first = time.perf_counter(), [bool(mode)]

    def step(batch, k: int) -> dict:
        mark_step(mode)
        losses = train_step(pair_run, d_run, run, vgg, cfg, batch, amp, aug,
                            step_generator(cfg.seed, k, device) if aug else None)
        if first[0]:
            log.info("%s", compile_report(time.perf_counter() - t0))
            first[0] = False
        return losses
    return step


def fit_phase(cfg: TrainConfig, target: Target, labels: dict, ph: Phase, pi: int, state, start, ckpts: Checkpoints,
              step: int, budget, rank: int, world: int, device, progress: bool):
    """Phase `ph` from `step` (resumed from `state` or started from `start`), at most `budget`
    steps, through the fit loop. Returns (run, how fit ended)."""
    is_main = rank == 0
    mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
    mcfg, g, d, opt_g, opt_d, resumed = build_phase(cfg, ph, pi, state, target.iuv, target.background, device, mem, start)
    if not resumed and is_main:
        ckpts.best_path.unlink(missing_ok=True)  # the best model is chosen within the last phase
    origin = state.get("init_from") if state else start and start["from"]  # what the model started from
    fixed = {"phase": pi, "model": asdict(mcfg), "train": cfg.to_dict(), "labels": labels, "data": target.fingerprint,
             "height": ph.height, "width": ph.width, "held_out_from": target.subjects[0].n_train, "init_from": origin,
             "background": target.stored_background()}
    run = Run(g, d, opt_g, opt_d, cfg, ckpts, LossLog(ckpts.folder / "loss.csv", step, is_main), fixed, step, is_main)
    if resumed:
        run.restore(state, device)
    if is_main:
        log.info("phase %s: G %.2f M parameters, D %.2f M parameters, %dx%d, steps %d..%d", ph.kind,
                 count_params(g) / 1e6, count_params(d) / 1e6, ph.width, ph.height, run.step, ph.end)
    step_fn = phase_step(cfg, run, mcfg, device, mem, world)
    datas, pairs, device_data = phase_data(cfg, target.subjects, ph, device, mem)
    perceptual = perceptual_metric(cfg, device) if is_main else None
    lr_G, lr_D, warmup = cfg.schedule()
    span = Span(ph.kind, ph.start, ph.end, min(ph.end, run.step + budget), lr_G, lr_D, warmup, cfg.sync_every, world,
                "samples.png", progress)

    def batches_of(a: int, b: int):
        sampler = StepSampler(len(pairs), cfg.batch_size, cfg.seed, a, b, rank, world)
        return batches(pairs, device_data, sampler, cfg, device, mem)

    try:
        return run, fit(run, span, batches_of, step_fn, lambda: validate_subjects(
            g, datas, target.subjects, mcfg.temporal, device, cfg.bf16, perceptual, cfg.val_samples))
    finally:
        run.loss_log.close()


def train(cfg: TrainConfig, frames_path, pose, out_dir, ckpt_dir, labels: dict | None = None,
          render: Callable | None = None, max_steps: int | None = None, progress: bool = True, iuv_path=None,
          base_path=BASE_MODEL) -> dict:
    """Train (or resume) the generator of one target and write out_dir/{generator.pt, loss.csv,
    loss.png, samples.png}. pose: PoseArrays or a path; iuv_path: its IUV store (labels.iuv
    concat). See `train_subjects`."""
    return train_subjects(cfg, [(frames_path, pose, iuv_path)], out_dir, ckpt_dir, labels, render, max_steps,
                          progress, base_path)


def train_subjects(cfg: TrainConfig, data: list[tuple], out_dir, ckpt_dir, labels: dict | None = None,
                   render: Callable | None = None, max_steps: int | None = None, progress: bool = True,
                   base_path=BASE_MODEL) -> dict:
    """Train (or resume) one generator on the subjects `data` ((frames_path, pose, iuv_path) each:
    a target, or the several subjects of the base) and write out_dir/{generator.pt, loss.csv,
    loss.png, samples.png}.

    labels: the config's labels section (schema defaults when None). render: a label renderer
    instead of the labels section's (tests). max_steps: stop after this many steps in this call
    with a checkpoint and no final outputs. base_path: the model train.init_from "base" names.
    Returns {"step", "done", "ended" (fit's reason: end, max_steps, guard, signal), "signal" (its
    number or 0), "metrics" (last validation), "best_step", "stopped" (the guard's message or
    ""), "generator", "discriminator"} (the models in memory; None when nothing was trained)."""
    from .settings import section

    labels = section("labels", labels)
    if render is not None:  # it draws the whole label map
        labels = {**labels, "background": False}
    rank, world, device = setup_distributed(cfg)
    ckpts = Checkpoints(ckpt_dir, cfg.keep_checkpoints)
    target = open_target(cfg, labels, data, render)
    (fh, fw), n_train = target.size, [s.n_train for s in target.subjects]
    phases = plan_phases(cfg, cfg.height or fh, cfg.width or fw)
    state, start = starting_point(cfg, labels, ckpts, target, phases[0].kind, base_path)
    step = state["step"] if state else 0
    if rank == 0:
        log.info("CUDA_VISIBLE_DEVICES=%s device=%s world_size=%d torch=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
                 device, world, torch.__version__)
        log.info("%s: frames of %dx%d, %s for training, the rest held out; phases %s", target.frames_path, fw, fh,
                 " + ".join(map(str, n_train)), [(p.kind, p.end - p.start, f"{p.width}x{p.height}") for p in phases])
        if state:
            log.info("resuming from %s (step %d of %d)", ckpts.loaded_from, step, phases[-1].end)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    budget, run, ended = (math.inf if max_steps is None else max_steps), None, None
    with Stop.catching():
        for pi, ph in enumerate(phases):
            if step >= ph.end or budget <= 0:
                continue
            run, ended = fit_phase(cfg, target, labels, ph, pi, state, start if pi == 0 else None, ckpts, step, budget,
                                   rank, world, device, progress and rank == 0)
            budget -= ended.steps
            state, step = run.snapshot(), run.step
            if ended.why in ("guard", "signal"):
                break
    stopped = ended.message if ended else ""
    done = bool(stopped) or step >= phases[-1].end
    if done and rank == 0:
        write_final(ckpts, Path(out_dir) / "generator.pt",
                    ("model", "height", "width", "labels", "held_out_from", "train", "init_from", "background"), "loss.csv",
                    "samples.png", stopped)
    if world > 1:
        dist.barrier()
    metrics = ended.metrics if ended else {}
    return {"step": step, "done": done, "ended": ended.why if ended else "end", "signal": ended.signum if ended else 0,
            "metrics": metrics, "stopped": stopped, "best_step": run.guard.best_step if run else None,
            "val_l1": metrics.get("l1", float("nan")), "generator": run and run.g, "discriminator": run and run.d}


def cpu_hours(cfg: TrainConfig, frames_path, iuv: bool, background: bool, limit_h: float | None) -> str:
    """The estimated time of this training on this CPU (a log line); TooSlowForCPU over limit_h."""
    _, h, w = np.load(frames_path, mmap_mode="r").shape[:3]
    flops = sum(train_step_flops(cfg.model_config(p.kind, iuv, background), p.height, p.width, cfg.batch_size,
                             cfg.vgg and cfg.lambda_vgg > 0) * (p.end - p.start)
                for p in plan_phases(cfg, cfg.height or h, cfg.width or w))
    return estimate_cpu(flops, limit_h, "this training", "train.cpu_hours_limit")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the pose-to-video generator of one target (pix2pixHD + temporal smoothing).")
    ap.add_argument("--frames", required=True, help="the target's frames.npy")
    ap.add_argument("--pose", required=True, help="the target's smoothed pose table (Parquet)")
    ap.add_argument("--out-dir", required=True, help="writes generator.pt, loss.csv, loss.png, samples.png here")
    ap.add_argument("--ckpt-dir", required=True, help="checkpoints, best.pt, the live loss.csv and sample grids; resumed from")
    ap.add_argument("--settings", default="{}", help="the config's train section as JSON (schema defaults fill the rest)")
    ap.add_argument("--labels", default="{}", help="the config's labels section as JSON")
    ap.add_argument("--iuv", default=None, help="the target's DensePose IUV store (iuv.npy), for labels.iuv concat")
    ap.add_argument("--base", default=BASE_MODEL, help="the base model train.init_from: base starts from")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (checkpointed)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.threads:
        torch.set_num_threads(a.threads)
    given = json.loads(a.settings)
    cfg = TrainConfig.from_dict(given)
    limit, labels = section("train", given)["cpu_hours_limit"], section("labels", json.loads(a.labels))
    guard_cpu(cfg.device, lambda: cpu_hours(cfg, a.frames, a.iuv is not None, labels["background"], limit),
              "train_generator")
    try:
        r = train(cfg, a.frames, a.pose, a.out_dir, a.ckpt_dir, labels, max_steps=a.max_steps,
                  iuv_path=a.iuv, base_path=a.base)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if r["signal"]:  # preempted: a checkpoint is saved; a nonzero status tells the scheduler to rerun
        sys.exit(128 + r["signal"])


if __name__ == "__main__":
    main()
