"""What a training run leaves on disk and how a rerun reads it back.

- `Checkpoints`: step_XXXXXXXX.pt files in one folder (the newest `keep`) and best.pt beside
  them. A damaged newest checkpoint (a crash or a full disk mid-write) is set aside with a
  warning and the one before it is used;
- `data_fingerprint`, `check_settings`: what a checkpoint was trained on and with; a rerun on
  other data, or with other settings (beyond the step budget and what does not change the
  math), stops before training and says how to go on;
- `LossLog`, `plot_losses`: the live loss CSV and its curves;
- `write_final`: the model file from best.pt, with the loss CSV, curves and samples beside it.

Checkpoints are state dicts loaded with weights_only=True through steps.atomic.load_torch.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np

from steps.atomic import DamagedFile, atomic_output, load_torch, save_torch

log = logging.getLogger("checkpoints")


class Checkpoints:
    """step_XXXXXXXX.pt files in one folder (the newest `keep`) and best.pt beside them."""

    def __init__(self, folder, keep: int):
        self.folder, self.keep = Path(folder), keep
        self.loaded_from: Path | None = None  # the checkpoint `latest` read

    def steps(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def latest(self) -> dict | None:
        """The newest intact step checkpoint, or None. A damaged one is renamed *.damaged with a
        warning (so it is neither read nor counted again) and the one before it is tried."""
        for path in reversed(self.steps()):
            state = self._load_or_set_aside(path)
            if state is not None:
                self.loaded_from = path
                return state
        return None

    def best(self) -> dict | None:
        return self._load_or_set_aside(self.best_path) if self.best_path.exists() else None

    def _load_or_set_aside(self, path: Path) -> dict | None:
        try:
            return load_torch(path, f"delete it; training then resumes from the checkpoint before it in {self.folder}")
        except DamagedFile as e:
            aside = path.with_name(path.name + ".damaged")
            path.replace(aside)
            log.warning("%s; set aside as %s, falling back to the newest intact checkpoint", e, aside.name)
            return None

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


# Keys of a section that do not change what is trained: the step budget (raising it continues a
# run), where and how fast it runs, how often it validates and checkpoints, the minimum data and
# `continue` itself. Everything else is the checkpoint's identity, init_from included (it decides
# the schedule: a fine-tune or a run from scratch).
NOT_IDENTITY = {"global_steps", "local_steps", "steps", "finetune.steps", "device", "workers", "data_on_device",
                "sync_every", "channels_last", "compile", "compile_cache", "val_every", "val_samples", "val_max_frames",
                "checkpoint_every", "keep_checkpoints", "continue_", "resources", "min_train_frames", "min_val_frames",
                "enabled"}


def _flat(d: dict, prefix: str = "") -> dict:
    """{"model.ngf": 64, ...}: nested keys dotted, those in NOT_IDENTITY left out."""
    out = {}
    for k, v in d.items():
        if f"{prefix}{k}" in NOT_IDENTITY:
            continue
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def changed_settings(old: dict, new: dict) -> list[str]:
    """["train.lr_G: 0.0004 -> 0.001", ...] for {section: settings} dicts; keys the old
    checkpoint does not have (written before they existed) are not counted."""
    a = {f"{s}.{k}": v for s, d in old.items() for k, v in _flat(d or {}).items()}
    b = {f"{s}.{k}": v for s, d in new.items() for k, v in _flat(d or {}).items()}
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a) if k in b and a[k] != b[k]]


def check_settings(old: dict, new: dict, folder, section: str, continue_: bool) -> None:
    """Stop before training when the checkpoints in `folder` were trained with settings `old`
    other than `new` (both {section name: settings}), unless `{section}.continue` is set (then a
    warning)."""
    changes = changed_settings(old, new)
    if not changes:
        return
    listed = "\n  ".join(changes)
    if continue_:
        log.warning("%s.continue is set: continuing the checkpoints in %s with changed settings:\n  %s",
                    section, folder, listed)
        return
    raise ValueError(
        f"the checkpoints in {folder} were trained with other settings than the config's:\n  {listed}\n"
        f"Resuming them would hand back a model of the old settings. Either delete {folder} to train from "
        f"scratch with the new ones, or set {section}.continue: true to continue from those weights on "
        f"purpose (or move the folder away and set {section}.init_from to a checkpoint in it to start a new "
        f"schedule from its weights). Raising the step budget alone needs neither.")


# --- starting points --------------------------------------------------------------------------

def load_start(init_from: str, section: str, base_path) -> dict:
    """The weights `{section}.init_from` names: "base" (the train_base model at `base_path`), a
    model file (generator.pt, face.pt: G and D) or a checkpoint (step_*.pt, best.pt). Returns
    {"G", "D", "model", "labels", "from"},
    "from" being what the new model records it started from."""
    path = Path(base_path if init_from == "base" else init_from)
    what = "rerun train_base" if init_from == "base" else f"point {section}.init_from at an intact file"
    ck = load_torch(path, what)
    if ("G" not in ck and "state_dict" not in ck) or "D" not in ck or "model" not in ck:
        raise ValueError(f"{section}.init_from {path} is neither a model file nor a checkpoint of this project")
    g = ck["G"] if "G" in ck else ck["state_dict"]
    return {"G": g, "D": ck["D"], "model": ck["model"], "labels": ck.get("labels"),
            "from": {"init_from": init_from, "path": str(path), "step": ck.get("step"),
                     "started_from": ck.get("init_from")}}


def check_start(start: dict, model: dict, labels: dict | None, section: str) -> None:
    """The starting weights must fit the networks the config asks for: the same model settings
    (widths, blocks, channels, kind) and label maps of the same kind (IUV, face, hands)."""
    diffs = [(f"{section}.model.{k}", v, model.get(k)) for k, v in start["model"].items() if model.get(k) != v]
    if labels is not None and start["labels"] is not None:
        was = start["labels"]
        diffs += [(f"labels.{k}", was.get(k), labels.get(k)) for k in ("iuv", "face", "hands", "background", "reference")
                  if was.get(k) != labels.get(k)]
    if not diffs:
        return
    names = {"kind": f"{section}.local_steps (0: global, > 0: the local enhancer)",
             "label_ch": "labels.iuv, labels.background and labels.reference (concat and true add 3, 3 and 6 label "
                         "channels)",
             "composite": "labels.background (true: the generator draws over the target's background)"}
    lines = "\n  ".join(f"{names.get(k.rsplit('.', 1)[1], k)}: {a!r} there, {b!r} here" for k, a, b in diffs)
    raise ValueError(f"{section}.init_from {start['from']['path']} does not fit this config:\n  {lines}\n"
                     f"Set these as the starting model had them, start from a model trained with these settings, "
                     f"or set {section}.init_from: null to train from scratch.")


# --- the loss log ---------------------------------------------------------------------------

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
    """The model file from best.pt (else the last checkpoint) with the checkpoint's `keys` (those
    it has), its D (a later run may start from both), the step it was taken at and the last
    step; beside it the loss CSV and curves and the samples."""
    out_dir = model_path.parent
    last = ckpts.latest()
    best = ckpts.best() or last
    final = {k: best[k] for k in keys if k in best}
    final.update(state_dict=best["G"], D=best["D"], step=best["step"], last_step=last["step"], stopped=stopped,
                 best=best.get("guard", {}).get("best_metric"))
    save_torch(model_path, final)
    csv_path = out_dir / log_name
    shutil.copyfile(ckpts.folder / log_name, csv_path)
    plot_losses(csv_path, csv_path.with_suffix(".png"))
    shutil.copyfile(ckpts.folder / samples_name, out_dir / samples_name)
    log.info("wrote %s: step %d of %d (best held-out)%s", model_path, best["step"], last["step"],
             f"; training stopped early: {stopped}" if stopped else "")
