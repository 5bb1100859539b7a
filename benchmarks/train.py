"""Training throughput of the pose-to-video GAN: the precision/layout/compile variants side by side
against a plain fp32 eager step (issue 14).

One training step = steps.gan.train.train_step on one temporal pair per sample (two generator passes,
the multi-scale discriminator, feature matching, the VGG loss, augmentation, both optimiser
steps), with G, D, the optimizers and the Run built as train() builds them (build_phase, Run).
Every variant starts from the same seed and is timed in the same process:

  eager              fp32, contiguous (NCHW), no compile: the baseline (ratio 1.00)
  channels_last      fp32, channels_last
  bf16               bf16 autocast over G and VGG (CUDA only; D stays fp32, as in training)
  bf16+cl            bf16 + channels_last, no compile: the schema's defaults (CUDA only)
  bf16+cl+compile    bf16 + channels_last + torch.compile of G and D (train.compile: default; on
                     CPU autocast is off in the project, so this runs fp32 channels_last + compile)
  bf16+cl+graphs     the same with mode reduce-overhead: CUDA graphs replay the step's kernels
                     (train.compile: reduce-overhead; on CPU the graphs are skipped)

Compiled variants keep Inductor's cache in --compile-cache (as train.compile_cache does), so a
second run of the benchmark shows the warm-up of a rerun of the rule.

`--batch-sizes 1 max`: "max" is the largest batch that fits, found by doubling from 2 (one fp32
eager step each, the hungriest variant, so every variant fits it) until the device runs out of
memory or --max-batch.

FLOPs are counted once per size and batch with torch.utils.flop_counter.FlopCounterMode around
one eager step; TFLOP/s = FLOPs / (s/step) and "% peak" against --peak-tflops (default 989:
H100 SXM bf16 dense; on a CPU the fraction only compares variants).

    python benchmarks/train.py                                   # CPU: 256x128, paper model
    python benchmarks/train.py --device cuda --sizes 512x256 1024x512 --batch-sizes 1 2 4 8
    python benchmarks/train.py --device cuda --only bf16 bf16+cl --batch-sizes 1 max --csv train.csv
    python benchmarks/train.py --set train.model.ngf=8 --set train.vgg=false --steps 1   # seconds
"""
from __future__ import annotations

import argparse
import csv
import gc
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import apply_set, markdown  # noqa: E402
from steps.render.inference import autocast  # noqa: E402
from steps.gan.checkpoints import Checkpoints, LossLog  # noqa: E402
from steps.gan.step import augmenter, step_generator, vgg_loss  # noqa: E402
from steps.gan.budget import cpu_flops_per_second, train_step_flops  # noqa: E402
from steps.gan.loop import Run  # noqa: E402
from steps.gan.models import LABEL_CH, IMG_CH, PairGenerator, count_params  # noqa: E402
from steps.gan.compile import compile_models, mark_step  # noqa: E402
from steps.gan.train import Phase, TrainConfig, _d_image_channels, build_phase, train_step  # noqa: E402

VARIANTS = {  # name: (bf16, channels_last, torch.compile mode)
    "eager": (False, False, None),
    "channels_last": (False, True, None),
    "bf16": (True, False, None),
    "bf16+cl": (True, True, None),
    "bf16+cl+compile": (True, True, "default"),
    "bf16+cl+graphs": (True, True, "reduce-overhead"),
}
COLUMNS = ["size", "batch", "variant", "s/step", "frames/s", "vs eager", "TFLOP/s", "% peak", "peak GiB", "warm-up s"]


def variants(cuda: bool, only=None) -> list[str]:
    names = [n for n in VARIANTS if cuda or n not in ("bf16", "bf16+cl")]
    return [n for n in names if not only or n in only or n == "eager"]


class Bench:
    """G, D, optimizers, Run, VGG and augmentation for one (size, batch, variant), as train() has them."""

    def __init__(self, cfg: TrainConfig, h: int, w: int, batch: int, device, variant: str, tmp: Path, cache: str):
        bf16, cl, self.mode = VARIANTS[variant]
        self.cfg, self.device = cfg, device
        mem = torch.channels_last if cl else torch.contiguous_format
        torch._dynamo.reset()  # each variant and size compiles afresh
        mcfg, g, d, opt_g, opt_d, _ = build_phase(cfg, Phase("global", 0, 1, h, w), 0, None, False, False, device, mem)
        self.run = Run(g, d, opt_g, opt_d, cfg, Checkpoints(tmp, 1), LossLog(tmp / "loss.csv", 0, enabled=False),
                       {}, 0, True)
        if self.mode:
            print(f"  {compile_models([g, d], self.mode, cache, device)}", file=sys.stderr, flush=True)
        self.pair, self.d = PairGenerator(g, mcfg.temporal), d
        self.vgg = vgg_loss(cfg, device, mem)
        self.aug = augmenter(cfg, _d_image_channels(cfg, cfg.model_config("global")))
        self.amp = autocast(device, bf16)
        gen = torch.Generator().manual_seed(0)
        shapes = [LABEL_CH, LABEL_CH, IMG_CH, IMG_CH]
        self.batch = [(torch.rand(batch, c, h, w, generator=gen) * 2 - 1).to(device).contiguous(memory_format=mem)
                      for c in shapes]

    def step(self):
        mark_step(self.mode)
        rng = step_generator(self.cfg.seed, self.run.step, self.device) if self.aug else None
        losses = train_step(self.pair, self.d, self.run, self.vgg, self.cfg, self.batch, self.amp, self.aug, rng)
        self.run.step += 1
        return losses

    def timed(self, warmup: int, steps: int) -> tuple[float, float]:
        """(seconds per step, warm-up seconds)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        for _ in range(warmup):
            self.step()
        sync()
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            losses = self.step()
        sync()
        dt = (time.perf_counter() - t0) / steps
        if not math.isfinite(float(losses["loss_G"])):
            raise RuntimeError("non-finite loss_G")
        return dt, t_warm


def count_flops(b: Bench) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        b.step()
    return float(fc.get_total_flops())


def fits(cfg: TrainConfig, h: int, w: int, batch: int, device, tmp: Path, cache: str) -> bool:
    """Whether one fp32 eager training step at `batch` fits in the device's memory."""
    try:
        Bench(cfg, h, w, batch, device, "eager", tmp, cache).step()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(cfg: TrainConfig, h: int, w: int, device, tmp: Path, cache: str, cap: int) -> int:
    """The largest power of two up to `cap` whose training step fits (1 when none above it does)."""
    best, b = 1, 2
    while b <= cap and fits(cfg, h, w, b, device, tmp, cache):
        best, b = b, 2 * b
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=None, help="WxH (default 256x128 on CPU, 512x256 1024x512 on CUDA)")
    ap.add_argument("--batch-sizes", nargs="+", default=["1"], help="pairs per step; 'max': the largest that fits")
    ap.add_argument("--max-batch", type=int, default=64, help="the largest batch 'max' tries")
    ap.add_argument("--csv", default=None, help="also append each row to this CSV as it is measured")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps (compilation happens here)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--only", nargs="+", default=None, choices=list(VARIANTS), help="variants to run (eager always)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="train.KEY=VALUE",
                    help="a train.* setting (default: the schema's, i.e. the paper's networks)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="peak for the %% column (H100 bf16 dense: 989)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--compile-cache", default="results/.compile_cache", help="Inductor's on-disk cache")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    cuda = device.type == "cuda"
    sizes = a.sizes or (["512x256", "1024x512"] if cuda else ["256x128"])
    given = {"device": device.type}
    for s in a.sets:
        apply_set(given, s)
    cfg = TrainConfig.from_dict(given)
    if cuda:
        torch.backends.cudnn.benchmark = True
    with torch.device("meta"):
        _, g, d, *_ = build_phase(cfg, Phase("global", 0, 1, 64, 64), 0, None, False, False, torch.device("meta"),
                                  torch.contiguous_format)
        ng, nd = count_params(g), count_params(d)
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {where}; G {ng / 1e6:.2f} M, D {nd / 1e6:.2f} M ({cfg.model}); "
          f"VGG loss {'on' if cfg.vgg and cfg.lambda_vgg else 'off'}, augment {cfg.augment['policy'] or 'none'}; "
          f"{a.warmup} warm-up + {a.steps} timed steps; peak {a.peak_tflops:g} TFLOP/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            w, h = (int(v) for v in size.lower().split("x"))
            done = set()
            for batch in a.batch_sizes:
                if batch == "max":
                    batch = largest_batch(cfg, h, w, device, Path(tmp), a.compile_cache, a.max_batch)
                    print(f"{size}: largest batch that fits: {batch} (tried powers of two up to {a.max_batch})",
                          flush=True)
                batch = int(batch)
                if batch in done:
                    continue
                done.add(batch)
                base = flops = None
                for name in variants(cuda, a.only):
                    if cuda:
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    b = Bench(cfg, h, w, batch, device, name, Path(tmp), a.compile_cache)
                    if flops is None:
                        flops = count_flops(b)  # the eager step's FLOPs: the same work in every variant
                    dt, tw = b.timed(a.warmup, a.steps)
                    base = base or dt
                    tflops = flops / dt / 1e12
                    rows.append({"size": size, "batch": batch, "variant": name, "s/step": dt,
                                 "frames/s": 2 * batch / dt, "vs eager": base / dt, "TFLOP/s": tflops,
                                 "% peak": 100 * tflops / a.peak_tflops,
                                 "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
                                 "warm-up s": tw})
                    print(f"  {size} batch {batch} {name}: {dt:.4f} s/step", file=sys.stderr, flush=True)
                    if a.csv:
                        append_csv(a.csv, rows[-1])
                    del b
                print(f"{size} batch {batch}: {flops / 1e9:.2f} GFLOP per step", flush=True)
                if not cuda:  # the CPU guard's estimate (steps.gan.budget) beside the measured eager step
                    est = train_step_flops(cfg.model_config("global"), h, w, batch,
                                           cfg.vgg and cfg.lambda_vgg > 0) / cpu_flops_per_second()
                    print(f"{size} batch {batch}: CPU guard's estimate {est:.3f} s/step, measured eager "
                          f"{base:.3f} s/step: estimate / measured {est / base:.2f}", flush=True)
    print(markdown(rows, COLUMNS))


def append_csv(path, row: dict) -> None:
    new = not Path(path).exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)


if __name__ == "__main__":
    main()
