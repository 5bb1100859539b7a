"""One prepared command for a GPU machine (issue 19): held-out quality, training speed and transfer
speed of the defaults, within a wall-clock budget, into one folder to bring back.

    python benchmarks/gpu.py --bundle gpu_bundle --out $OUT --budget 480    # CUDA: the real run
    python benchmarks/gpu.py --bundle BUNDLE --out OUT --quick              # CPU, tiny, < 2 minutes

The bundle is `make gpu-bundle`'s folder (benchmarks/gpu_bundle.py): the target's frames as a
video OpenCV reads, its smoothed pose table, a source pose normalized onto it, VGG16 weights in
fp16. Nothing here needs Snakemake, MediaPipe, ffmpeg or PyAV; without ffmpeg the transfer table
stops at the generator rows (the encoders need it).

Three parts, each the project's own benchmark as a subprocess with a share of the budget (a part
that outlives its share gets SIGTERM, which makes training checkpoint and stop, then is killed;
what it logged so far is still reported):
  (a) benchmarks/quality.py on the bundle: schema defaults (the paper's networks, bf16), 3,000
      steps, validation every 500; the curve (loss.png), held-out samples and a transfer still of
      the trained generator on the normalized source
  (b) benchmarks/train.py at 512x256 and 1024x512: fp32 (eager), bf16, bf16 + channels_last, at
      batch 1 and the largest batch that fits; s/step, frames/s, peak memory, TFLOP/s, % of peak
  (c) benchmarks/transfer.py with the paper's networks and the face GAN at 1024x512, bf16
--quick runs the same three at tiny sizes with tiny networks on the CPU (CI).

OUT gets: gpu.md (every table and the goals), gpu.log (every part's output), quality.csv,
train.csv, quality_curve.png, heldout_samples.png, transfer_still.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from gpu_bundle import MANIFEST, POSE, TRANSFER_POSE, VGG, VIDEO  # noqa: E402
from quality import COLUMNS as QUALITY_COLUMNS, held_out_table, markdown  # noqa: E402

TINY_MODEL = "train.model={ngf: 8, n_down: 2, n_blocks: 1, ndf: 8, n_layers_D: 2, num_D: 1}"
# bf16 dense tensor TFLOP/s by card (the datasheets'); "% peak" is against this
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
               "B200": 2250.0}
GRACE = 20  # seconds a part has after SIGTERM (training checkpoints and stops) before SIGKILL
MARGIN = 25  # seconds kept for the transfer still and the report
GOALS = {"ssim": 0.85, "step_1024x512": 0.049, "transfer_fps": 30.0}


def plan(quick: bool, cuda: bool) -> dict:
    """Each part's arguments: the issue's on CUDA, tiny ones on the CPU with --quick."""
    if quick:
        return {"quality": ["--size", "24x32", "--steps", "10", "--val-every", "5", "--set", TINY_MODEL,
                            "--set", "train.workers=0", "--set", "train.min_train_frames=2",
                            "--set", "train.min_val_frames=1", "--threads", "2"],
                "train": ["--device", "cpu", "--sizes", "64x32", "--batch-sizes", "1", "max", "--max-batch", "2",
                          "--warmup", "1", "--steps", "1", "--only", "eager", "--set", TINY_MODEL,
                          "--set", "train.vgg=false", "--threads", "2"],
                "transfer": ["--device", "cpu", "--size", "64x32", "--frames", "6", "--face", "--threads", "2"],
                "still_frames": 8, "reserve": {"train": 30, "transfer": 20}}
    return {"quality": ["--size", "384x512", "--steps", "3000", "--val-every", "500"],
            "train": ["--device", "cuda" if cuda else "cpu", "--sizes", "512x256", "1024x512",
                      "--batch-sizes", "1", "max", "--max-batch", "32", "--only", "bf16", "bf16+cl",
                      "--warmup", "1", "--steps", "3"],
            "transfer": ["--device", "cuda" if cuda else "cpu", "--size", "1024x512", "--paper", "--face", "--bf16",
                         "--frames", "120"],
            "still_frames": 90, "reserve": {"train": 0.25, "transfer": 0.1}}


def load_bundle(folder) -> dict:
    """The bundle's manifest with its files' paths; a clear error when one is missing."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        sys.exit(f"gpu: {folder / MANIFEST} not found: make the bundle with `make gpu-bundle` "
                 "(benchmarks/gpu_bundle.py) and carry its folder")
    m = json.loads((folder / MANIFEST).read_text())
    paths = {k: folder / f for k, f in (("video", VIDEO), ("pose", POSE), ("transfer_pose", TRANSFER_POSE),
                                         ("vgg", VGG))}
    for p in paths.values():
        if not p.exists():
            sys.exit(f"gpu: the bundle lacks {p}; remake it with `make gpu-bundle`")
    return m | {"paths": paths}


class Part:
    """A benchmark as a subprocess with a deadline; its output goes to the log as it comes."""

    def __init__(self, name: str, cmd: list[str], log, env: dict):
        self.name, self.log = name, log
        print(f"== {name}: {' '.join(cmd)}", file=log, flush=True)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self.log.write(line)
            self.log.flush()

    def wait(self, timeout: float) -> tuple[int, float, bool]:
        """(return code, seconds, timed out). Past `timeout`: SIGTERM, GRACE s to stop, then SIGKILL."""
        t0, timed_out = time.perf_counter(), False
        try:
            self.proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.reader.join(timeout=5)
        dt = time.perf_counter() - t0
        print(f"== {self.name}: exit {self.proc.returncode} after {dt:.0f} s"
              f"{' (over its share of the budget: stopped)' if timed_out else ''}", file=self.log, flush=True)
        return self.proc.returncode, dt, timed_out

    def stdout_tables(self) -> str:
        """The part's printed lines that are not logging (its tables and summaries)."""
        return "".join(ln for ln in self.lines if ln.startswith("|") or ln.startswith("final generator")
                       or ln.startswith("end to end /") or "largest batch" in ln or "GFLOP per step" in ln)


def ffmpeg_works() -> bool:
    """Whether steps.prepare.video can encode here: ffmpeg-python, imageio-ffmpeg and its binary running."""
    try:
        from steps.prepare.video import FFMPEG
        return subprocess.run([FFMPEG, "-version"], capture_output=True, timeout=30).returncode == 0
    except Exception:  # not installed, or a binary that cannot run here
        return False


def status(rc: int, dt: float, timed_out: bool) -> str:
    if timed_out and rc == 0:
        return f"{dt:.0f} s: past its share of the budget, it finished in the grace after SIGTERM"
    if timed_out:
        return f"stopped at its share of the budget after {dt:.0f} s; partial results"
    return f"{dt:.0f} s" if rc == 0 else f"FAILED (exit {rc}) after {dt:.0f} s; see gpu.log"


def transfer_still(generator, pose_path, png, device, n_frames: int) -> str:
    """Four side-by-side panels (pose | output) of the trained generator on the normalized source."""
    import numpy as np
    import torch

    from steps.render.inference import generate_sequence, label_renderer, load_generator, trained_bf16
    from steps.atomic import write_png
    from steps.gan.models import LABEL_CH
    from steps.prepare.posetable import read_pose
    from steps.render.transfer import hold_missing, side_by_side

    dev = torch.device(device)
    g, meta = load_generator(generator, dev)
    render = label_renderer(meta)
    pose, held, _ = hold_missing(read_pose(pose_path))
    n = min(n_frames, pose.n_frames)
    labels = [render(pose, i) for i in range(n)]
    t0 = time.perf_counter()
    frames = list(generate_sequence(g, labels, dev, bf16=trained_bf16(meta)))
    dt = time.perf_counter() - t0
    picks = np.linspace(0, n - 1, 4).round().astype(int)
    write_png(png, np.concatenate([side_by_side(None, labels[i][..., :LABEL_CH], frames[i], bool(held[i]))
                                   for i in picks], 1))
    return f"frames {', '.join(map(str, picks))} of {n} generated recurrently ({n / dt:.1f} frames/s incl. warm-up)"


def quality_goals(rows: list[dict], final: str) -> list[str]:
    if not rows:
        return ["no validation was reached"]
    best = max(rows, key=lambda r: r["val_ssim"])
    d_min = min(r["loss_D_mean"] for r in rows)
    events = [f"step {r['step']}: {r['event']}" for r in rows if r["event"]]
    return [f"held-out SSIM: best {best['val_ssim']:.3f} at step {best['step']}, last {rows[-1]['val_ssim']:.3f} at "
            f"step {rows[-1]['step']} (goal >= {GOALS['ssim']}: {'met' if best['val_ssim'] >= GOALS['ssim'] else 'NOT met'})",
            f"loss_D: lowest interval mean {d_min:.3f} (the guard's floor is train.guard.d_floor)",
            "collapse guard: " + ("; ".join(events) if events else "silent"), final or "no final generator"]


def train_goals(csv_path: Path) -> list[str]:
    import pandas as pd

    if not csv_path.exists():
        return []
    df = pd.read_csv(csv_path)
    lines = []
    big = df[(df["size"] == "1024x512") & (df["batch"] == 1) & (df["variant"] == "bf16+cl")]
    if len(big):
        s = float(big["s/step"].iloc[0])
        lines.append(f"1024x512 batch 1 bf16+cl (the defaults): {s:.4f} s/step "
                     f"(goal <= {GOALS['step_1024x512']}: {'met' if s <= GOALS['step_1024x512'] else 'NOT met'})")
    small = df[(df["size"] == "512x256") & (df["batch"] == 1)].set_index("variant")["s/step"]
    if {"eager", "bf16"} <= set(small.index):
        ok = small["bf16"] <= small["eager"]
        lines.append(f"512x256 batch 1: bf16 {small['bf16']:.4f} vs fp32 {small['eager']:.4f} s/step "
                     f"(bf16 never slower: {'met' if ok else 'NOT met'})")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="gpu_bundle", help="make gpu-bundle's folder")
    ap.add_argument("--out", required=True, help="where gpu.md and the pictures go")
    ap.add_argument("--work", default=None, help="scratch (frames, checkpoints; default: a temporary folder)")
    ap.add_argument("--budget", type=float, default=None,
                    help="wall-clock seconds for everything (default 480; 150 with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and networks on the CPU (CI)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's bf16 peak (default: by its name)")
    a = ap.parse_args(argv)
    a.budget = a.budget or (150.0 if a.quick else 480.0)
    t_start = time.perf_counter()
    deadline = t_start + a.budget - MARGIN

    import torch

    cuda = torch.cuda.is_available() and not a.quick
    b = load_bundle(a.bundle)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else Path(__import__("tempfile").mkdtemp(prefix="edn_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name(0) if cuda else "CPU"
    peak = a.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in card), 989.0)
    has_ffmpeg = ffmpeg_works()
    p = plan(a.quick, cuda)
    # every VGG the parts build (the loss, ST-LPIPS) reads the bundle's fp16 weights
    env = {**os.environ, "EDN_VGG_WEIGHTS": str(b["paths"]["vgg"].resolve()), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    py = sys.executable
    log = open(out / "gpu.log", "w")
    report = [f"# GPU run: {card}", "",
              f"torch {torch.__version__}, CUDA {torch.version.cuda}; budget {a.budget:.0f} s"
              f"{'; --quick (tiny networks on the CPU)' if a.quick else ''}; bundle: {b['frames']} frames "
              f"{b['width']}x{b['height']} at {b['fps']:g} fps (OpenCV read-back {b['psnr_db']} dB), "
              f"{b['bytes'] / 2**20:.1f} MiB", ""]

    reserve = {k: v * a.budget if v < 1 else v for k, v in p["reserve"].items()}

    def until(*later: str) -> float:
        """Seconds this part may run: what is left, less the later parts' reserves and its own grace."""
        return deadline - time.perf_counter() - sum(reserve[k] for k in later) - GRACE

    # (a) held-out quality, the curve, samples and a transfer still
    qdir = work / "quality"
    part = Part("quality", [py, str(BENCH / "quality.py"), "--frames", str(b["paths"]["video"]),
                            "--pose", str(b["paths"]["pose"]), "--vgg-weights", env["EDN_VGG_WEIGHTS"],
                            "--out", str(qdir), *p["quality"]], log, env)
    qs = status(*part.wait(until("train", "transfer")))
    rows = held_out_table(qdir / "ckpt" / "loss.csv") if (qdir / "ckpt" / "loss.csv").exists() else []
    if rows:
        import pandas as pd
        pd.DataFrame(rows, columns=QUALITY_COLUMNS).to_csv(out / "quality.csv", index=False)
    final = next((ln.strip() for ln in part.lines if ln.startswith("final generator")), "")
    report += ["## (a) Held-out quality: " + " ".join(p["quality"]), "", f"status: {qs}", "",
               markdown(rows, QUALITY_COLUMNS) if rows else "(no validation reached)", ""]
    report += [f"- {ln}" for ln in quality_goals(rows, final)] + [""]
    for src, dst in (("train/loss.png", "quality_curve.png"), ("train/samples.png", "heldout_samples.png"),
                     ("ckpt/samples.png", "heldout_samples.png")):
        if (qdir / src).exists() and not (out / dst).exists():
            shutil.copyfile(qdir / src, out / dst)
    quality_at = len(report)

    # (b) the training-step table
    tcsv = out / "train.csv"
    part = Part("train", [py, str(BENCH / "train.py"), "--csv", str(tcsv), "--peak-tflops", str(peak),
                          "--compile-cache", str(work / "compile_cache"), *p["train"]], log, env)
    ts = status(*part.wait(until("transfer")))
    report += ["## (b) Training step: " + " ".join(p["train"]), "",
               f"status: {ts}; fp32 = eager; % peak against {peak:g} TFLOP/s (bf16 dense) for every variant", "",
               part.stdout_tables() or "(no table printed)", ""]
    if tcsv.exists() and not part.stdout_tables().count("|"):  # stopped before its table: the rows it measured
        import pandas as pd
        from train import COLUMNS as TRAIN_COLUMNS
        report += [markdown(pd.read_csv(tcsv).to_dict("records"), TRAIN_COLUMNS), ""]
    report += [f"- {ln}" for ln in train_goals(tcsv)] + [""]

    # (c) transfer throughput
    targs = p["transfer"] + ([] if has_ffmpeg else ["--no-encode"])
    part = Part("transfer", [py, str(BENCH / "transfer.py"), *targs], log, env)
    cs = status(*part.wait(until()))
    report += ["## (c) Transfer: " + " ".join(targs), "", f"status: {cs}", "",
               part.stdout_tables() or "(no table printed)", ""]
    if not has_ffmpeg:
        report += ["- no ffmpeg here (ffmpeg-python + imageio-ffmpeg): the encoder and end-to-end rows need it", ""]
    fps_row = [ln for ln in part.lines if ln.startswith("| ") and "end to end" in ln]
    if fps_row:
        fps = float(fps_row[0].strip("|\n ").split("|")[6])
        report += [f"- end to end {fps:.1f} frames/s (goal >= {GOALS['transfer_fps']:g}: "
                   f"{'met' if fps >= GOALS['transfer_fps'] else 'NOT met'})", ""]

    # last, so that this process holds no GPU memory while the parts run
    if (qdir / "train" / "generator.pt").exists():
        try:
            what = transfer_still(qdir / "train" / "generator.pt", b["paths"]["transfer_pose"],
                                  out / "transfer_still.png", "cuda" if cuda else "cpu", p["still_frames"])
            still = f"transfer_still.png: the trained generator on the normalized source, {what}"
        except Exception as e:  # a still is a picture: its failure must not lose the tables
            still = f"transfer still failed: {e!r}"
        report[quality_at:quality_at] = [still, ""]

    report += [f"total {time.perf_counter() - t_start:.0f} s of a {a.budget:.0f}-s budget"]
    (out / "gpu.md").write_text("\n".join(report) + "\n")
    log.close()
    print("\n".join(report))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
