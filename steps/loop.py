"""What the two GAN trainers (steps.train, steps.face) share. Each keeps its own visible `for`
loop; this module holds the pieces of it that are the same in both:

- `GANSettings`: the settings both config sections have (learning rates, losses, validation,
  augmentation, the collapse guard, checkpoints, precision);
- `learning_rate`: a pure schedule (constant, then linear decay to 0);
- `adam`, `discriminator_step`: the optimizers and D's LSGAN step (with augmentation and R1);
- `Run`: the state a loop carries (models, optimizers, step, loss log, checkpoints, guard) with
  `snapshot`/`restore`, the end-of-step block (`end_step`: CSV row, checkpoint when due,
  preemption) and the validation block (`validated`: best.pt, the collapse guard);
- `Stop`: SIGTERM/SIGUSR1 (SLURM preemption) saves a checkpoint and exits 128+signal;
- small I/O: atomic PNG and model files, the loss plot, the data fingerprint.

Checkpoints are state dicts loaded with weights_only=True. `best.pt` (the checkpoint with the
best held-out metric) sits beside the newest `step_*.pt` files and is what the final model file
is made from.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .atomic import atomic_output
from .guard import CollapseGuard, GuardConfig
from .models import feature_matching_loss, lsgan_loss

log = logging.getLogger("loop")


# --- settings ---------------------------------------------------------------------------------

@dataclass
class GANSettings:
    """The keys of the train and face sections that the shared loop pieces read (defaults: the
    schema, steps.settings)."""

    device: str
    seed: int
    init_std: float
    lambda_feat: float
    lambda_vgg: float
    vgg: bool
    vgg_weights: str | None
    lr_G: float
    lr_D: float
    beta1: float
    beta2: float
    decay_from: float
    augment: dict
    r1_gamma: float
    val_every: int
    val_samples: int
    select_by: str
    guard: dict
    checkpoint_every: int
    keep_checkpoints: int
    bf16: bool

    @classmethod
    def from_section(cls, name: str, given: dict | None = None, drop=("resources",)):
        """The config section `name` (schema defaults filled in) as this dataclass."""
        from .settings import section

        s = section(name, given)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in s.items() if k in names and k not in drop})


def learning_rate(base: float, step: int, start: int, end: int, decay_from: float) -> float:
    """Constant `base` for the first `decay_from` of [start, end), then linear decay to 0."""
    n, k = end - start, step - start
    flat = decay_from * n
    if k < flat or n <= flat:
        return base
    return base * max(0.0, (n - k) / (n - flat))


def pick_device(want: str, local_rank: int = 0) -> torch.device:
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda asked for, but torch sees no CUDA device")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def adam(params, lr: float, s: GANSettings, device: torch.device) -> torch.optim.Adam:
    # fused Adam: one kernel for all parameters on CUDA
    return torch.optim.Adam(params, lr=lr, betas=(s.beta1, s.beta2), fused=device.type == "cuda" or None)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


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


def vgg_loss(s: GANSettings, device, memory_format=torch.contiguous_format):
    """The VGG perceptual loss module, or None when it is off."""
    if not (s.vgg and s.lambda_vgg > 0):
        return None
    from .vgg import VGGLoss

    return VGGLoss(s.vgg_weights).to(device, memory_format=memory_format)


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The RNG of one step's augmentation: a pure function of (seed, step), so resuming is exact."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, step, 7]).generate_state(1)[0]))
    return g


def augmenter(s: GANSettings, image_channels) -> Callable | None:
    """aug(real, fake, rng) -> (real, fake) with the same random change on both; None when off."""
    policy, p = s.augment["policy"], s.augment["p"]
    if policy in ("", "none") or p <= 0:
        return None
    from .augment import augment_pair

    return lambda real, fake, rng: augment_pair(real, fake, policy, p, image_channels, generator=rng)


def generator_adversarial(d, real_in, fake_in, lambda_feat: float, aug=None, rng=None):
    """G's adversarial and feature-matching terms against a frozen D (fp32). The stacks are
    augmented once here, so the D step that follows sees the same pair. Returns
    (real_in, fake_in, loss_gan, loss_fm), the stacks as augmented."""
    if aug is not None:
        real_in, fake_in = aug(real_in, fake_in, rng)
    pred_fake = d(fake_in)
    with torch.no_grad():
        pred_real = d(real_in)
    loss_gan = lsgan_loss(pred_fake, True)
    loss_fm = (feature_matching_loss(pred_fake, pred_real) * lambda_feat if lambda_feat
               else torch.zeros((), device=fake_in.device))
    return real_in, fake_in, loss_gan, loss_fm


def discriminator_step(d, opt_d, real_in, fake_in, r1_gamma: float = 0.0) -> dict:
    """One LSGAN step of D (in fp32) on (condition, image) stacks, already augmented; real and
    fake in one forward (instance norm keeps the samples apart). R1 penalises D's gradient on
    the real inputs. Returns loss_D, loss_D_real, loss_D_fake, loss_D_r1 (tensors)."""
    real_in, fake_in = real_in.detach().float(), fake_in.detach().float()
    if r1_gamma > 0:
        real_in.requires_grad_(True)
    b = real_in.shape[0]
    preds = d(torch.cat([real_in, fake_in], 0))
    loss_real = lsgan_loss([[f[:b] for f in p] for p in preds], True)
    loss_fake = lsgan_loss([[f[b:] for f in p] for p in preds], False)
    loss_d = 0.5 * (loss_real + loss_fake)
    r1 = torch.zeros((), device=real_in.device)
    if r1_gamma > 0:
        out = sum(p[-1][:b].sum() for p in preds)
        (grad,) = torch.autograd.grad(out, real_in, create_graph=True)
        r1 = 0.5 * r1_gamma * grad.pow(2).flatten(1).sum(1).mean()
    opt_d.zero_grad(set_to_none=True)
    (loss_d + r1).backward()
    opt_d.step()
    return {"loss_D": loss_d, "loss_D_real": loss_real, "loss_D_fake": loss_fake, "loss_D_r1": r1}


def perceptual_metric(s: GANSettings, device):
    """ST-LPIPS for validation when it selects the best model; None otherwise or without weights."""
    if s.select_by != "stlpips":
        return None
    from .metrics import Perceptual

    p = Perceptual(device, s.vgg_weights)
    return p if p.net is not None else None


# --- preemption -------------------------------------------------------------------------------

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


# --- files ------------------------------------------------------------------------------------

def save_torch(path, obj) -> Path:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def write_png(path, rgb: np.ndarray) -> None:
    import cv2

    with atomic_output(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def state_cpu(m: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in unwrap(m).state_dict().items()}


def opt_state_cpu(opt) -> dict:
    sd = opt.state_dict()
    sd["state"] = {i: {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in st.items()}
                   for i, st in sd["state"].items()}
    return sd


def move_opt(opt, device):
    for st in opt.state.values():
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(device)


def unwrap(m: nn.Module) -> nn.Module:
    m = getattr(m, "module", m)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile wrapper


class Checkpoints:
    """step_XXXXXXXX.pt files in one folder (the newest `keep`) and best.pt beside them."""

    def __init__(self, folder, keep: int):
        self.folder, self.keep = Path(folder), keep

    def steps(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def latest(self) -> dict | None:
        ck = self.steps()
        return self.load(ck[-1]) if ck else None

    def best(self) -> dict | None:
        return self.load(self.best_path) if self.best_path.exists() else None

    @staticmethod
    def load(path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, state: dict) -> Path:
        path = save_torch(self.folder / f"step_{state['step']:08d}.pt", state)
        for old in self.steps()[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, state: dict) -> Path:
        return save_torch(self.best_path, state)

    def clear(self) -> None:
        for p in [*self.steps(), self.best_path]:
            p.unlink(missing_ok=True)


def data_fingerprint(frames: np.ndarray, pose, iuv: np.ndarray | None = None) -> dict:
    """What checkpoints were trained on: frame count and size, hashes of a few frames, of the
    body keypoints and (labels.iuv concat) of a few IUV images. A checkpoint of other data is
    never resumed silently."""
    n = len(frames)
    picks = np.asarray(frames[:: max(1, n // 8)])
    body = np.nan_to_num(pose.parts["body"]).astype(np.float32)
    out = {"n": int(n), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
           "frames_sha1": hashlib.sha1(picks.tobytes()).hexdigest(),
           "pose_sha1": hashlib.sha1(body.tobytes()).hexdigest()}
    if iuv is not None:
        out["iuv_sha1"] = hashlib.sha1(np.asarray(iuv[:: max(1, n // 8)]).tobytes()).hexdigest()
    return out


# --- the loss log -----------------------------------------------------------------------------

LOSS_COLUMNS = ["step", "phase", "lr_G", "lr_D", "loss_D", "loss_D_real", "loss_D_fake", "loss_D_r1", "loss_G",
                "loss_G_gan", "loss_G_fm", "loss_G_vgg", "loss_G_l1", "l1", "val_l1", "val_ssim", "val_stlpips",
                "event", "time_s"]


class LossLog:
    """The live loss CSV: one row per step; rows after the step a run resumes from (or goes back
    to) are dropped, so the file always tells the history of the weights in hand."""

    def __init__(self, path, resume_step: int, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self.file = self.writer = None
        self.truncate(resume_step)

    def truncate(self, step: int) -> None:
        if not self.enabled:
            return
        self.close()
        rows = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with atomic_output(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, LOSS_COLUMNS, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, LOSS_COLUMNS, extrasaction="ignore")

    def write(self, rows: list[dict]) -> None:
        """Append rows, flushed once (the loop hands over every step since the last read-back)."""
        if self.writer:
            self.writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = self.writer = None


def plot_losses(csv_path, png_path) -> None:
    """Four panels: the discriminator, the adversarial term, the matching terms, the held-out
    metrics (and the events of the collapse guard as vertical lines)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    groups = [("discriminator", ["loss_D", "loss_D_real", "loss_D_fake"]),
              ("generator (adversarial)", ["loss_G_gan"]),
              ("generator (matching)", ["loss_G_fm", "loss_G_vgg", "loss_G_l1", "loss_G"]),
              ("held out (L1, ST-LPIPS: lower is better; SSIM: higher)", ["l1", "val_l1", "val_stlpips", "val_ssim"])]
    for ax, (title, cols) in zip(axes.flat, groups):
        for c in cols:
            if c not in df:
                continue
            s = df[["step", c]].dropna()
            if len(s):
                ax.plot(s["step"], s[c], "o-" if c.startswith("val_") else "-", label=c, lw=1, ms=3)
        for st in df.loc[df.get("event", pd.Series(dtype=str)).notna(), "step"] if "event" in df else []:
            ax.axvline(st, color="red", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def write_final(ckpts: Checkpoints, model_path: Path, keys: tuple, log_name: str, samples_name: str,
                stopped: str = "") -> None:
    """The model file from best.pt (else the last checkpoint) with the checkpoint's `keys`, the
    step it was taken at and the last step; beside it the loss CSV and curves and the samples."""
    out_dir = model_path.parent
    last = ckpts.latest()
    best = ckpts.best() or last
    final = {k: best[k] for k in keys}
    final.update(state_dict=best["G"], step=best["step"], last_step=last["step"], stopped=stopped,
                 best=best.get("guard", {}).get("best_metric"))
    save_torch(model_path, final)
    csv_path = out_dir / log_name
    shutil.copyfile(ckpts.folder / log_name, csv_path)
    plot_losses(csv_path, csv_path.with_suffix(".png"))
    shutil.copyfile(ckpts.folder / samples_name, out_dir / samples_name)
    log.info("wrote %s: step %d of %d (best held-out)%s", model_path, best["step"], last["step"],
             f"; training stopped early: {stopped}" if stopped else "")


# --- the state a loop carries -----------------------------------------------------------------

class TrainingStopped(Exception):
    """The collapse guard gave up; the message says why, the best checkpoint is kept."""


def selection_metric(metrics: dict, select_by: str) -> float:
    """The held-out number that picks the best checkpoint; lower is better. ST-LPIPS falls back
    to L1 when its weights are missing (NaN)."""
    if select_by == "stlpips" and math.isfinite(metrics.get("stlpips", float("nan"))):
        return metrics["stlpips"]
    if select_by == "ssim":
        return 1.0 - metrics["ssim"]
    return metrics["l1"]


class Run:
    """Models, optimizers, the step and the bookkeeping of one training run.

    `fixed` is stored in every checkpoint as it is (model config, settings, data fingerprint)."""

    def __init__(self, g, d, opt_g, opt_d, s: GANSettings, ckpts: Checkpoints, loss_log: LossLog,
                 fixed: dict, step: int = 0, is_main: bool = True):
        self.g, self.d, self.opt_g, self.opt_d, self.s = g, d, opt_g, opt_d, s
        self.ckpts, self.loss_log, self.fixed, self.step, self.is_main = ckpts, loss_log, fixed, step, is_main
        self.message = ""  # the collapse guard's last words
        gc = s.guard
        # a disabled guard still keeps the best step; it just never sees the discriminator win
        self.guard = CollapseGuard(GuardConfig(d_floor=gc["d_floor"] if gc["enabled"] else -1.0, window=gc["window"],
                                               patience=gc["patience"], max_returns=gc["max_returns"],
                                               lr_factor=gc["lr_factor"],
                                               metric={"stlpips": "ST-LPIPS", "ssim": "1 - SSIM", "l1": "L1"}[s.select_by]))

    @property
    def lr_scale(self) -> float:
        return self.guard.lr_scale

    def snapshot(self) -> dict:
        return {**self.fixed, "step": self.step, "G": state_cpu(self.g), "D": state_cpu(self.d),
                "optG": opt_state_cpu(self.opt_g), "optD": opt_state_cpu(self.opt_d),
                "guard": self.guard.state_dict()}

    def restore(self, state: dict, device) -> None:
        """Weights, optimizers, step and guard of a checkpoint (the models are on `device`)."""
        unwrap(self.g).load_state_dict(state["G"])
        unwrap(self.d).load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["optG"])
        self.opt_d.load_state_dict(state["optD"])
        move_opt(self.opt_g, device)
        move_opt(self.opt_d, device)
        self.step = state["step"]
        if "guard" in state:
            self.guard.load_state_dict(state["guard"])

    def stop(self, message: str) -> None:
        """The guard gave up: a last checkpoint (the final model file reads it) and the message."""
        if self.is_main:
            self.ckpts.save(self.snapshot())
        raise TrainingStopped(message)

    def set_lr(self, lr_G: float, lr_D: float) -> None:
        set_lr(self.opt_g, lr_G)
        set_lr(self.opt_d, lr_D)

    def checkpoint_due(self, stop_at: int) -> bool:
        every = self.s.checkpoint_every
        return bool(every and self.step % every == 0) or self.step == stop_at

    def end_step(self, rows: list[dict], stop_at: int, signum: int = 0) -> None:
        """After the steps whose losses were just read back (`rows`, each with its "step"; the
        last is the current step): the CSV rows, a checkpoint when due (every checkpoint_every
        steps, at stop_at, on a preemption signal), and the exit with 128+signal after a signal."""
        for row in rows:
            self.guard.observe_loss_d(row["loss_D"])
        if self.is_main:
            self.loss_log.write(rows)
        if self.is_main and (self.checkpoint_due(stop_at) or signum):
            p = self.ckpts.save(self.snapshot())
            if signum or self.step == stop_at:
                log.info("checkpoint %s", p)
        if signum:
            log.warning("stopped by %s at step %d; rerun to resume", signal.Signals(signum).name, self.step)
            raise SystemExit(128 + int(signum))

    def validated(self, metrics: dict) -> str:
        """After a validation: best.pt when the held-out metric is the best so far, then the
        collapse guard's verdict: "" (carry on), "rewind" (call `rewind`) or "stop" (raise
        TrainingStopped after logging the step). The guard's message goes to the log."""
        m = selection_metric(metrics, self.s.select_by)
        verdict = self.guard.observe_val(self.step, m)
        if self.guard.best_step == self.step and self.is_main:
            self.ckpts.save_best(self.snapshot())
        if verdict.action == "ok":
            return ""
        log.warning("%s", verdict.message)
        self.message = verdict.message
        return verdict.action

    def rewind(self, device) -> None:
        """Back to best.pt: its weights and optimizers; the guard keeps its count of returns and
        the lowered learning rate; newer checkpoints and log rows are dropped, so a later resume
        starts from the best model too."""
        guard_state, step = self.guard.state_dict(), self.step
        self.restore(self.ckpts.best(), device)
        self.guard.load_state_dict(guard_state)
        if self.is_main:
            for p in self.ckpts.steps():
                if int(p.stem.split("_")[1]) > self.step:
                    p.unlink(missing_ok=True)
            self.loss_log.truncate(self.step)
            self.loss_log.write([{"step": self.step, "event": f"back from step {step}: lr x{self.lr_scale:g}"}])
        log.info("back at step %d (from step %d), learning rates x%g", self.step, step, self.lr_scale)
