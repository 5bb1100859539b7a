"""Training throughput of the pose-to-video GAN: the optimised step against a plain fp32 eager one.

One training step = one temporal pair (frames t and t+1: two generator passes, the multi-scale
discriminator, feature matching and the VGG loss, both optimiser steps). Every variant is built
from the same seed and timed in the same run, so the ratios are side by side:

  eager        fp32, contiguous (NCHW) tensors, no compile: the plain baseline
  cl           channels_last
  cl+compile   channels_last and torch.compile of G and D
  (CUDA only)  bf16 autocast, with and without compile, and the peak GPU memory

    python benchmarks/train.py                         # CPU: 256x128 and 512x256
    python benchmarks/train.py --sizes 512x256 1024x512  # on a GPU machine
    python benchmarks/train.py --ngf 32 --steps 2      # quicker, smaller model
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.models import PairGenerator, build_discriminator, build_generator, count_params  # noqa: E402
from steps.train import TrainConfig, train_step  # noqa: E402


def variants(cuda: bool):
    v = [("eager", dict(cl=False, compile=False, bf16=False)),
         ("cl", dict(cl=True, compile=False, bf16=False)),
         ("cl+compile", dict(cl=True, compile=True, bf16=False))]
    if cuda:
        v += [("bf16+cl", dict(cl=True, compile=False, bf16=True)),
              ("bf16+cl+compile", dict(cl=True, compile=True, bf16=True))]
    return v


def bench(cfg: TrainConfig, h: int, w: int, device, opts: dict, warmup: int, steps: int, vgg_on: bool):
    torch._dynamo.reset()  # each variant and size compiles afresh
    torch.manual_seed(0)
    mcfg = cfg.model_config("global")
    g, d = build_generator(mcfg), build_discriminator(mcfg)
    mem = torch.channels_last if opts["cl"] else torch.contiguous_format
    g.to(device, memory_format=mem)
    d.to(device, memory_format=mem)
    vgg = None
    if vgg_on:
        from steps.vgg import VGGLoss
        vgg = VGGLoss().to(device, memory_format=mem)
    if opts["compile"]:
        g.compile(dynamic=False)  # static shapes: sizes are fixed per phase
        d.compile(dynamic=False)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if opts["bf16"] else nullcontext()
    b = cfg.batch_size
    y_t, y_t1, x_t, x_t1 = (torch.rand(b, 3, h, w, device=device).mul(2).sub(1).contiguous(memory_format=mem)
                            for _ in range(4))
    pair = PairGenerator(g, mcfg.temporal)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        train_step(pair, g, d, d, opt_g, opt_d, vgg, cfg, y_t, y_t1, x_t, x_t1, amp)
    sync()
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(pair, g, d, d, opt_g, opt_d, vgg, cfg, y_t, y_t1, x_t, x_t1, amp)
    sync()
    dt = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del g, d, opt_g, opt_d, vgg
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dt, t_warm, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["256x128", "512x256"], help="WxH")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--n-blocks", type=int, default=9)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps (compilation happens here)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--no-vgg", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", nargs="+", default=None, help="variant names to run")
    a = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    cfg = TrainConfig(ngf=a.ngf, n_blocks=a.n_blocks, batch_size=a.batch, vgg=not a.no_vgg)
    mcfg = cfg.model_config("global")
    with torch.device("meta"):
        ng, nd = count_params(build_generator(mcfg)), count_params(build_discriminator(mcfg))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {where}; G {ng / 1e6:.1f} M (ngf {a.ngf}, {a.n_blocks} blocks), "
          f"D {nd / 1e6:.1f} M, VGG loss {'on' if cfg.vgg else 'off'}, batch {a.batch} pair(s); "
          f"{a.warmup} warm-up + {a.steps} timed steps")
    print(f"{'size':>9} {'variant':>16} {'s/step':>8} {'pairs/s':>8} {'frames/s':>9} {'vs eager':>9} {'warm-up s':>10} {'peak GiB':>9}")
    for size in a.sizes:
        w, h = map(int, size.lower().split("x"))
        base = None
        for name, opts in variants(device.type == "cuda"):
            if a.only and name not in a.only and name != "eager":
                continue
            dt, tw, peak = bench(cfg, h, w, device, opts, a.warmup, a.steps, cfg.vgg)
            base = base or dt
            pairs = a.batch / dt
            print(f"{size:>9} {name:>16} {dt:8.3f} {pairs:8.3f} {2 * pairs:9.3f} {base / dt:8.2f}x {tw:10.1f} "
                  f"{peak:9.2f}", flush=True)


if __name__ == "__main__":
    main()
