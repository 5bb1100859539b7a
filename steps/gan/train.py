"""Train the pose-to-video generator of one target person (the `train_generator` rule).

CPU or CUDA, one process or DDP under torchrun, the global phase and the local-enhancer phase,
from scratch or from other weights (train.init_from: the base, another target's generator, a
checkpoint; then the fine-tune schedule train.finetune applies). The data are the target's
frames store and smoothed pose table; label maps are rendered on the fly (steps.prepare.labels), with
the target's static background after the skeleton (labels.background: estimated here from the
training frames, kept in generator.pt). The last `val_fraction` of the frames is a held-out
tail that is never trained on.

A step takes a temporal pair (t, t+1): G makes frame t from (label t, zeros) and frame t+1 from
(label t+1, its own frame t); the multi-scale discriminator sees both frames with both labels,
augmented the same way on real and fake (train.augment). Losses: LSGAN + feature matching
(lambda_feat) + VGG per frame (lambda_vgg) [+ L1]; Adam with lr_G / lr_D, constant then linear
decay. D and the losses run in fp32; bf16 autocast covers G and the VGG on CUDA.

This module keeps what is particular to the target generator: its phases and its step. The
pairs are steps.gan.pairs'; opening the subjects and the starting point, steps.gan.target's; the loop (validation on the held-out tail, best.pt, the collapse guard, checkpoints,
resume, preemption) is steps.gan.loop's `fit`; checkpoints and their checks are steps.gan.checkpoints';
inference is steps.render.inference's. A rerun resumes from the checkpoints when their data and
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

import torch
import torch.distributed as dist
import torch.nn as nn

from steps.prepare.framestore import open_frames
from steps import logs
from steps.gan.budget import estimate_cpu, guard_cpu, train_step_flops
from steps.gan.checkpoints import Checkpoints, LossLog, write_final
from steps.gan.compile import compile_mode, compile_models, compile_report, mark_step
from steps.gan.distributed import Place, setup_distributed
from steps.gan.loop import Run, Span, Stop, fit
from steps.gan.models import (
    ModelConfig,
    PairGenerator,
    build_discriminator,
    build_generator,
    count_params,
    d_input,
    init_weights,
    label_channels,
)
from steps.gan.pairs import StepSampler, batches, phase_data
from steps.gan.step import (
    GANSettings,
    adam,
    augmenter,
    gan_update,
    perceptual_metric,
    step_generator,
    vgg_loss,
)
from steps.gan.target import Target, open_target, starting_point
from steps.gan.validate import validate_subjects
from steps.render.inference import autocast
from steps.settings import section

log = logging.getLogger("train")
BASE_MODEL = "results/models/_base/generator.pt"  # train.init_from: base (the train_base rule's output)


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

    def model_config(self, kind: str, iuv: bool = False, background: bool = False, reference: bool = False) -> ModelConfig:
        return ModelConfig(**self.model, kind=kind, label_ch=label_channels(iuv, background, reference),
                           composite=background)

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


# --- the step ---------------------------------------------------------------------------------

def train_step(pair_run, d_run, run: Run, vgg, cfg: TrainConfig, batch, amp, aug=None, rng=None) -> dict:
    """One temporal-pair step (steps.gan.step.gan_update): G makes frames t and t+1 under autocast,
    D sees both with both labels. Returns the losses as 0-d tensors (no host sync here)."""
    y_t, y_t1, x_t, x_t1 = batch
    temporal = cfg.model["temporal"]
    with amp:
        fake_t, fake_t1 = pair_run(y_t, y_t1)
    zero = torch.zeros((), device=x_t.device)
    pair_w = 1.0 if cfg.vgg_pair == "sum" else 0.5  # the official code sums the per-frame VGG terms
    if vgg is not None:
        with amp:
            loss_vgg = (vgg(fake_t, x_t) + vgg(fake_t1, x_t1)) * pair_w * cfg.lambda_vgg
    else:
        loss_vgg = zero
    l1 = 0.5 * ((fake_t.float() - x_t).abs().mean() + (fake_t1.float() - x_t1).abs().mean())
    losses = gan_update(run, d_run, d_input(y_t, y_t1, x_t, x_t1, temporal),
                        d_input(y_t, y_t1, fake_t, fake_t1, temporal).float(),
                        {"loss_G_vgg": loss_vgg, "loss_G_l1": l1 * cfg.lambda_l1 if cfg.lambda_l1 else zero}, cfg, aug, rng)
    return {**losses, "l1": l1.detach() / 2}


def _d_image_channels(cfg: TrainConfig, mcfg: ModelConfig):
    from steps.gan.augment import d_image_channels

    return d_image_channels(mcfg.label_ch, cfg.model["temporal"])


def build_phase(cfg: TrainConfig, ph: Phase, pi: int, state: dict | None, iuv: bool, background: bool, device,
                mem, start: dict | None = None, reference: bool = False):
    """G, D and their optimizers for phase `ph`: resumed from the checkpoint `state`, the
    enhancer around the global phase's G, started from the weights `start` (init_from), or
    fresh. Returns (mcfg, g, d, opt_g, opt_d, resumed_in_phase)."""
    mcfg = cfg.model_config(ph.kind, iuv, background, reference)
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
        d.load_state_dict(start["D"])
    return mcfg, g, d, opt_g, opt_d, False


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
              step: int, budget, place: Place, progress: bool):
    """Phase `ph` from `step` (resumed from `state` or started from `start`), at most `budget`
    steps, through the fit loop. Returns (run, how fit ended)."""
    rank, world, device, is_main = place.rank, place.world, place.device, place.is_main
    mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
    mcfg, g, d, opt_g, opt_d, resumed = build_phase(cfg, ph, pi, state, target.iuv, target.background, device, mem, start,
                                                    target.reference)
    if not resumed and is_main:
        ckpts.best_path.unlink(missing_ok=True)  # the best model is chosen within the last phase
    origin = state.get("init_from") if state else start and start["from"]  # what the model started from
    fixed = {"phase": pi, "model": asdict(mcfg), "train": cfg.to_dict(), "labels": labels, "data": target.fingerprint,
             "height": ph.height, "width": ph.width, "held_out_from": target.subjects[0].n_train, "init_from": origin,
             "background": target.stored("background"), "reference": target.stored("reference")}
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
        sampler = StepSampler(pairs.sizes, cfg.batch_size, cfg.seed, a, b, rank, world)
        return batches(pairs, device_data, sampler, cfg, device, mem)

    try:
        return run, fit(run, span, batches_of, step_fn, lambda: validate_subjects(
            g, [datas[i] for i in target.validated], [target.subjects[i] for i in target.validated], mcfg.temporal,
            device, cfg.bf16, perceptual, cfg.val_samples))
    finally:
        run.loss_log.close()


def log_start(place: Place, target: Target, phases: list[Phase], resumed_from, step: int) -> None:
    (fh, fw), n_train = target.size, [s.n_train for s in target.subjects]
    log.info("CUDA_VISIBLE_DEVICES=%s device=%s world_size=%d torch=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
             place.device, place.world, torch.__version__)
    log.info("%s: frames of %dx%d, %s for training, the rest held out; phases %s", target.frames_path, fw, fh,
             " + ".join(map(str, n_train)), [(p.kind, p.end - p.start, f"{p.width}x{p.height}") for p in phases])
    if resumed_from:
        log.info("resuming from %s (step %d of %d)", resumed_from, step, phases[-1].end)


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
                   base_path=BASE_MODEL, val_subjects: int | None = None) -> dict:
    """Train (or resume) one generator on the subjects `data` ((frames_path, pose, iuv_path) each:
    a target, or the several subjects of the base) and write out_dir/{generator.pt, loss.csv,
    loss.png, samples.png}.

    labels: the config's labels section (schema defaults when None). render: a label renderer
    instead of the labels section's (tests). max_steps: stop after this many steps in this call
    with a checkpoint and no final outputs. base_path: the model train.init_from "base" names.
    val_subjects: validate on this many of the subjects (evenly spaced; None: all).
    Returns {"step", "done", "ended" (fit's reason: end, max_steps, guard, signal), "signal" (its
    number or 0), "metrics" (last validation), "best_step", "stopped" (the guard's message or
    ""), "generator", "discriminator"} (the models in memory; None when nothing was trained)."""
    from steps.settings import section

    labels = section("labels", labels)
    if render is not None:  # it draws the whole label map
        labels = {**labels, "background": False, "reference": False}
    place = setup_distributed(cfg.device)
    ckpts = Checkpoints(ckpt_dir, cfg.keep_checkpoints)
    target = open_target(cfg, labels, data, render, val_subjects)
    phases = plan_phases(cfg, cfg.height or target.size[0], cfg.width or target.size[1])
    state, start = starting_point(cfg, labels, ckpts, target, phases[0].kind, base_path)
    step = state["step"] if state else 0
    if place.is_main:
        log_start(place, target, phases, state and ckpts.loaded_from, step)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = place.device.type == "cuda"
    budget, run, ended = (math.inf if max_steps is None else max_steps), None, None
    with Stop.catching():
        for pi, ph in enumerate(phases):
            if step >= ph.end or budget <= 0:
                continue
            run, ended = fit_phase(cfg, target, labels, ph, pi, state, start if pi == 0 else None, ckpts, step, budget,
                                   place, progress and place.is_main)
            budget -= ended.steps
            state, step = run.snapshot(), run.step
            if ended.why in ("guard", "signal"):
                break
    stopped = ended.message if ended else ""
    done = bool(stopped) or step >= phases[-1].end
    if done and place.is_main:
        write_final(ckpts, Path(out_dir) / "generator.pt",
                    ("model", "height", "width", "labels", "held_out_from", "train", "init_from", "background", "reference"),
                    "loss.csv",
                    "samples.png", stopped)
    if place.world > 1:
        dist.barrier()
    metrics = ended.metrics if ended else {}
    return {"step": step, "done": done, "ended": ended.why if ended else "end", "signal": ended.signum if ended else 0,
            "metrics": metrics, "stopped": stopped, "best_step": run.guard.best_step if run else None,
            "val_l1": metrics.get("l1", float("nan")), "generator": run and run.g, "discriminator": run and run.d}


def cpu_hours(cfg: TrainConfig, frames_path, iuv: bool, background: bool, limit_h: float | None,
              reference: bool = False) -> str:
    """The estimated time of this training on this CPU (a log line); TooSlowForCPU over limit_h."""
    _, h, w = open_frames(frames_path).shape[:3]
    flops = sum(train_step_flops(cfg.model_config(p.kind, iuv, background, reference), p.height, p.width, cfg.batch_size,
                             cfg.vgg and cfg.lambda_vgg > 0) * (p.end - p.start)
                for p in plan_phases(cfg, cfg.height or h, cfg.width or w))
    return estimate_cpu(flops, limit_h, "this training", "train.cpu_hours_limit")


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the pose-to-video generator of one target (pix2pixHD + temporal smoothing).")
    ap.add_argument("--frames", required=True, help="the target's frames store (frames.mjpeg)")
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
    logs.setup()
    if a.threads:
        torch.set_num_threads(a.threads)
    given = json.loads(a.settings)
    cfg = TrainConfig.from_dict(given)
    limit, labels = section("train", given)["cpu_hours_limit"], section("labels", json.loads(a.labels))
    guard_cpu(cfg.device, lambda: cpu_hours(cfg, a.frames, a.iuv is not None, labels["background"], limit,
                                            labels["reference"]),
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
