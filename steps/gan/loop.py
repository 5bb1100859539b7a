"""The fit loop every GAN of the project runs through: the target generator (steps.gan.train, one
call per phase), the multi-subject base (steps.gan.base) and the face GAN (steps.gan.face).

A trainer hands `fit` its `Run` (models, optimizers, step, checkpoints, loss log, collapse
guard), the `Span` of steps to run, and three functions of its own: `batches(start, stop)`
(the batches of those steps, a pure function of the step, so a resumed run equals a straight
one), `step(batch, step)` (one G and D update, returning the losses as 0-d tensors) and
`validate()` (held-out metrics and a sample grid). The loop does the rest, the same for all:
learning rates, reading the losses back (every `sync_every` steps: one host sync for many),
the loss CSV, validation and best.pt, checkpoints, the collapse guard, and preemption.

Every way a call ends is in `fit` and nowhere else, returned as `Ended.why`:
- "end": the span's last step was trained (a checkpoint is saved);
- "max_steps": the caller's step budget for this call ran out (a checkpoint is saved);
- "guard": the collapse guard gave up (a checkpoint is saved; the best model is kept);
- "signal": SIGTERM, SIGUSR1 (SLURM preemption) or SIGINT (Ctrl-C) arrived; the step under way
  is finished and checkpointed, and the caller's CLI exits with 128 + the signal number.
A collapse guard's "rewind" goes back to best.pt and carries on inside the loop.
"""
from __future__ import annotations

import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from steps.atomic import write_png
from steps.gan.checkpoints import Checkpoints, LossLog
from steps.gan.step import GANSettings, learning_rate, set_lr
from steps.gan.guard import CollapseGuard, GuardConfig

log = logging.getLogger("loop")

__all__ = ["Ended", "Run", "Span", "Stop", "fit"]


# --- preemption -------------------------------------------------------------------------------

class Stop:
    """Remembers a preemption signal (SIGTERM, SIGUSR1, SIGINT); the loop checkpoints the step
    under way and ends. A second Ctrl-C interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    signum = 0

    @classmethod
    def handler(cls, signum, _frame):
        if cls.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cls.signum = signum
        log.warning("received %s: saving a checkpoint at the end of this step", signal.Signals(signum).name)

    @classmethod
    @contextmanager
    def catching(cls):
        """The handlers installed for the duration of a training (the previous ones restored)."""
        cls.signum = 0
        before = {s: signal.signal(s, cls.handler) for s in cls.SIGNALS}
        try:
            yield cls
        finally:
            for s, h in before.items():
                signal.signal(s, h)

    @classmethod
    def ignore_in_worker(cls):
        """For data loader workers: the main process saves the checkpoint; workers carry on."""
        for s in cls.SIGNALS:
            signal.signal(s, signal.SIG_IGN)


# --- the state a loop carries -----------------------------------------------------------------

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
        gc = s.guard
        # a disabled guard still keeps the best step; it just never sees the discriminator win
        self.guard = CollapseGuard(GuardConfig(d_floor=gc["d_floor"] if gc["enabled"] else -1.0, window=gc["window"],
                                               patience=gc["patience"], max_returns=gc["max_returns"],
                                               lr_factor=gc["lr_factor"],
                                               metric={"stlpips": "ST-LPIPS", "ssim": "1 - SSIM", "l1": "L1"}[s.select_by]))

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

    def save(self):
        if self.is_main:
            return self.ckpts.save(self.snapshot())

    def validated(self, metrics: dict):
        """best.pt when the held-out metric is the best so far; the guard's verdict."""
        verdict = self.guard.observe_val(self.step, selection_metric(metrics, self.s.select_by))
        if self.guard.best_step == self.step and self.is_main:
            self.ckpts.save_best(self.snapshot())
        return verdict

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
            self.loss_log.write([{"step": self.step, "event": f"back from step {step}: lr x{self.guard.lr_scale:g}"}])
        log.info("back at step %d (from step %d), learning rates x%g", self.step, step, self.guard.lr_scale)


# --- the loop ---------------------------------------------------------------------------------

@dataclass
class Span:
    """What one call of `fit` runs: the steps up to `stop_at` of a phase [start, end) whose
    learning rates follow `learning_rate` (warm-up, constant, linear decay to 0)."""

    name: str            # the phase column of the loss CSV and the progress bar
    start: int
    end: int
    stop_at: int
    lr_G: float
    lr_D: float
    warmup: int = 0
    sync_every: int = 1  # steps between reads of the losses back to the host
    world: int = 1       # DDP processes
    samples: str = "samples.png"
    progress: bool = True


@dataclass
class Ended:
    why: str                       # end | max_steps | guard | signal
    steps: int                     # steps trained in this call
    metrics: dict = field(default_factory=dict)  # the last validation's
    message: str = ""              # the guard's last words
    signum: int = 0


def set_lrs(run: Run, span: Span) -> list[float]:
    """Both optimizers' learning rates at run.step: the schedule's, scaled by the guard."""
    lrs = [run.guard.lr_scale * learning_rate(lr, run.step, span.start, span.end, run.s.decay_from, span.warmup)
           for lr in (span.lr_G, span.lr_D)]
    set_lr(run.opt_g, lrs[0])
    set_lr(run.opt_d, lrs[1])
    return lrs


def fit(run: Run, span: Span, batches: Callable[[int, int], Iterator], step: Callable[[object, int], dict],
        validate: Callable[[], tuple[dict, np.ndarray]]) -> Ended:
    """Train run from run.step to span.stop_at; see the module's docstring for how it ends."""
    from tqdm import tqdm

    s, device = run.s, next(run.g.parameters()).device
    bar = tqdm(total=span.end - span.start, initial=run.step - span.start, desc=span.name,
               disable=not (run.is_main and span.progress), mininterval=1.0 if sys.stderr.isatty() else 30.0)
    t0, done, metrics = time.perf_counter(), 0, {}
    try:
        while run.step < span.stop_at:  # a rewind of the collapse guard restarts the data stream
            pending = []  # (step, losses on the device, lr_G, lr_D) not yet read back
            for batch in batches(run.step, span.stop_at):
                lrs = set_lrs(run, span)
                losses = step(batch, run.step)
                run.step, done = run.step + 1, done + 1
                pending.append((run.step, losses, *lrs))
                bar.update(1)
                val_due = (s.val_every and run.step % s.val_every == 0) or run.step == span.end
                ckpt_due = (s.checkpoint_every and run.step % s.checkpoint_every == 0) or run.step == span.stop_at
                # the signal is checked per step by one process, at read-backs by DDP ranks together
                if not (val_due or ckpt_due or run.step % span.sync_every == 0 or (span.world == 1 and Stop.signum)):
                    continue
                rows, signum = read_back(pending, span.world)
                pending = []
                for row in rows:
                    row.update(phase=span.name, time_s=round(time.perf_counter() - t0, 3))
                verdict = None
                if val_due:
                    metrics = validation(run, validate, span)
                    rows[-1].update(val_l1=metrics["l1"], val_ssim=metrics["ssim"], val_stlpips=metrics["stlpips"])
                    verdict = run.validated(metrics)
                    if span.world > 1:
                        dist.barrier()  # best.pt is on disk before any rank goes back to it
                for row in rows:  # the guard judges D on the steps before a validation
                    run.guard.observe_loss_d(row["loss_D"])
                if run.is_main:
                    run.loss_log.write(rows)
                bar.set_postfix(D=f"{rows[-1]['loss_D']:.3f}", G=f"{rows[-1]['loss_G_gan']:.3f}",
                                l1=f"{rows[-1]['l1']:.3f}", refresh=False)
                stop = verdict is not None and verdict.action == "stop"
                if ckpt_due or signum or stop:
                    path = run.save()
                    if signum or run.step == span.stop_at:
                        log.info("checkpoint %s", path)
                if signum:
                    log.warning("stopped by %s at step %d; rerun to resume", signal.Signals(signum).name, run.step)
                    return Ended("signal", done, metrics, signum=signum)
                if verdict is not None and verdict.action != "ok":
                    log.warning("%s", verdict.message)
                if stop:
                    return Ended("guard", done, metrics, message=verdict.message)
                if verdict is not None and verdict.action == "rewind":
                    run.rewind(device)
                    bar.n = run.step - span.start
                    break
        return Ended("end" if run.step >= span.end else "max_steps", done, metrics)
    finally:
        bar.close()


def read_back(pending: list, world: int) -> tuple[list[dict], int]:
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


def validation(run: Run, validate, span: Span) -> dict:
    """Validation on the main rank (sample grids written), its metrics shared with every rank."""
    metrics = {"l1": 0.0, "ssim": 0.0, "stlpips": 0.0}
    if run.is_main:
        metrics, grid = validate()
        folder, stem = run.ckpts.folder, span.samples.rsplit(".", 1)[0]
        write_png(folder / stem / f"step_{run.step:08d}.png", grid)
        write_png(folder / span.samples, grid)
        log.info("step %d held out: L1 %.4f SSIM %.4f ST-LPIPS %.4f", run.step, metrics["l1"], metrics["ssim"],
                 metrics["stlpips"])
    if span.world > 1:
        vec = torch.tensor([metrics[k] for k in ("l1", "ssim", "stlpips")], dtype=torch.float64)
        dist.broadcast(vec, 0)
        metrics = dict(zip(("l1", "ssim", "stlpips"), vec.tolist()))
    return metrics
