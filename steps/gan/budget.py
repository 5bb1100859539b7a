"""How long a GAN training would take on this CPU, and a stop before it starts when that is days.

The paper's networks on a 2-core CPU take about 15 s per step at 512x256, so 20,000 steps is
weeks; nothing in a training log says so until hours have gone. Before the first step the
trainers count the FLOPs of one step (the generator and discriminator forward and backward,
counted on the meta device: nothing is allocated) and divide by this CPU's measured speed on a
convolution of the size the paper's networks are made of (the VGG loss counted too when it is
on). An estimate, not a promise: on 2 idle cores it is 0.4 of a measured step, for the paper's
networks at 256x128 (1.64 s against 4.16 s) and the cpu preset's at 192x256 (0.082 s against
0.205 s; `python benchmarks/train.py --only eager` prints both side by side); it rises when the
CPU is busy as it is measured (the cpu preset on a real clip: 32.7 minutes estimated beside a
test run, 12.9 minutes trained). It tells minutes from days, which is what the guard needs.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from steps.gan.models import (FaceModelConfig, ModelConfig, PairGenerator, build_discriminator, build_face_models,
                     build_generator, d_input)


log = logging.getLogger("budget")


class TooSlowForCPU(RuntimeError):
    """A training whose estimated time on this CPU is over its cpu_hours_limit."""


def _flops(run) -> float:
    with FlopCounterMode(display=False) as fc:
        run()
    return float(fc.get_total_flops())


def vgg_flops(height: int, width: int, images: int) -> float:
    """FLOPs of the VGG loss on `images` generated frames: their features and the real frames'
    forward, and the backward to the generated ones (the trunk is frozen): about 3 forwards each."""
    from steps.gan.vgg import VGG16Features

    with torch.device("meta"):
        trunk, x = VGG16Features(), torch.zeros(1, 3, height, width)
    return 3 * images * _flops(lambda: trunk(x))


def train_step_flops(mc: ModelConfig, height: int, width: int, batch: int = 1, vgg: bool = False) -> float:
    """FLOPs of one pair step: G on both frames, D on fake (for G, then for D) and real, backward,
    and with `vgg` the perceptual loss on both frames."""
    with torch.device("meta"):
        g, d = PairGenerator(build_generator(mc), mc.temporal), build_discriminator(mc)
        y = torch.zeros(batch, mc.label_ch, height, width)
        x = torch.zeros(batch, 3, height, width)

    def step():
        fake_t, fake_t1 = g(y, y)
        fake = d_input(y, y, fake_t, fake_t1, mc.temporal)
        sum(o[-1].mean() for o in d(fake)).backward()
        real = d_input(y, y, x, x, mc.temporal)
        (sum(o[-1].mean() for o in d(real)) + sum(o[-1].mean() for o in d(fake.detach()))).backward()

    return _flops(step) + (vgg_flops(height, width, 2 * batch) if vgg else 0.0)


def face_step_flops(fc: FaceModelConfig, box: int, batch: int, vgg: bool = False) -> float:
    """FLOPs of one face GAN step on `batch` crops of `box` pixels (with `vgg`, its perceptual loss)."""
    with torch.device("meta"):
        g, d = build_face_models(fc)
        y = torch.zeros(batch, 3, box, box)

    def step():
        fake = torch.cat([y, g.refine(y, y)], 1)
        sum(o[-1].mean() for o in d(fake)).backward()
        real = torch.cat([y, y], 1)
        (sum(o[-1].mean() for o in d(real)) + sum(o[-1].mean() for o in d(fake.detach()))).backward()

    return _flops(step) + (vgg_flops(box, box, batch) if vgg else 0.0)


def cpu_flops_per_second(seconds: float = 0.3) -> float:
    """This CPU's speed (torch's threads as set) on a 64-channel 3x3 convolution at 128x128,
    forward and backward: a wider convolution (the CPU's best case) made small networks look
    several times faster than they train."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(1, 64, 128, 128, requires_grad=True)
    per_run = _flops(lambda: conv(x).sum().backward())
    conv(x).sum().backward()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        conv(x).sum().backward()
        n += 1
    return per_run * n / (time.perf_counter() - t0)


def estimate_cpu(flops: float, limit_h: float | None, what: str, key: str) -> str:
    """check_cpu_hours of `flops` of work at this CPU's speed now."""
    return check_cpu_hours(flops / cpu_flops_per_second() / 3600, limit_h, what, key)


def check_cpu_hours(estimate_h: float, limit_h: float | None, what: str, key: str) -> str:
    """The log line of an estimate; TooSlowForCPU when it is over `limit_h` (None: no limit)."""
    amount = f"{estimate_h:.1f} hours" if estimate_h >= 1 else f"{estimate_h * 60:.1f} minutes"
    line = f"{what} on this CPU: about {amount} (estimated from its FLOPs and this CPU's speed now)"
    if limit_h is not None and estimate_h > limit_h:
        raise TooSlowForCPU(
            f"{line}, over {key} = {limit_h:g} h. On a machine without a GPU use the small networks: "
            f"`preset: cpu` in config/config.yaml (about 20 minutes on 2 cores), or smaller sizes or fewer steps; "
            f"set {key}: null to train anyway."
        )
    return line


def guard_cpu(device: str, estimate: Callable[[], str], stage: str) -> None:
    """When the job trains on the CPU (`device` cpu, or auto without CUDA): log `estimate()`, or
    exit naming the stage when it raises TooSlowForCPU, before any data is loaded."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        try:
            log.info(estimate())
        except TooSlowForCPU as e:
            sys.exit(f"{stage}: {e}")
