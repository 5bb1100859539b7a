"""A new target from a multi-person base against the same target from scratch (issue 21).

In one run: a base generator (steps.gan.base) is trained on every subject but the target, then the
target is trained twice with the same settings, from the base (train.init_from, the fine-tune
schedule) and from scratch, each validated on its held-out tail every --val-every steps:
SSIM and ST-LPIPS (the training loop's own validation, loss.csv) and the face SSIM (every
kept checkpoint regenerated here, faces cropped with steps.prepare.faceboxes). The table says at each
validation step where both runs are, and how many steps each needs to reach the scratch run's
final SSIM and ST-LPIPS; a PNG shows the curves.

Real clips: the frames and smoothed poses of the subjects are read from a pipeline working
directory (--data, results/frames/<s>/frames.mjpeg and results/pose_smooth/<s>.parquet), made
e.g. by `snakemake --configfile <clips config> results/pose_smooth/<s>.parquet` for each. The
training settings are the cpu preset's (workflow/presets/cpu.yaml: 192x256, ngf 16, 4 blocks, no VGG).

    python benchmarks/warm_start.py --data ../edn-warm --base dancer model_small --target model \
        --base-steps 800 --warm-steps 500 --scratch-steps 2500 --out ../edn-warm/bench
    python benchmarks/warm_start.py --quick --out /tmp/ws   # synthetic dancers, tiny, seconds

--quick makes three synthetic dancers (steps.synth: rendered people with known poses) and runs
the same comparison at toy size; a CI test runs it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps import logs  # noqa: E402
from steps.gan.base import base_config, train_base  # noqa: E402
from steps.prepare.faceboxes import face_boxes  # noqa: E402
from steps.render.inference import generate_sequence, label_renderer  # noqa: E402
from steps.evaluate.metrics import ssim  # noqa: E402
from steps.gan.models import ModelConfig, build_generator  # noqa: E402
from steps.prepare.framestore import open_frames, store_path  # noqa: E402
from steps.prepare.posetable import read_pose  # noqa: E402
from steps.gan.train import TrainConfig, train  # noqa: E402

log = logging.getLogger("warm_start")
QUICK_TRAIN = dict(model=dict(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1), vgg=False, workers=0,
                   val_fraction=0.2, val_samples=2, channels_last=False, device="cpu", min_train_frames=10,
                   min_val_frames=2, select_by="l1")


def real_settings() -> dict:
    """The train section of the cpu preset (workflow/presets/cpu.yaml), without its resources."""
    import yaml

    t = yaml.safe_load((ROOT / "workflow/presets/cpu.yaml").read_text())["train"]
    return {k: v for k, v in t.items() if k not in ("resources", "global_steps")}


def synth_subjects(folder: Path, names: list[str], size: int = 64, seconds: float = 3.0) -> dict:
    """--quick: rendered dancers (the synth presets' people, each its own dance) as pipeline outputs."""
    from steps.prepare.posetable import write_pose
    from steps.synth import make_clip

    for k, name in enumerate(names):
        d = folder / "results/frames" / name
        if (d / "frames.npy").exists():  # rendered frames, stored raw (open_frames reads both)
            continue
        clip = make_clip("target" if k % 2 == 0 else "source", seconds, 10, size, size, seed=11 + k)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "frames.npy", np.stack(list(clip.frames())))
        (folder / "results/pose_smooth").mkdir(parents=True, exist_ok=True)
        write_pose(clip.truth(name, "target"), folder / f"results/pose_smooth/{name}.parquet")
    return paths(folder, names)


def paths(folder: Path, names: list[str]) -> dict:
    out = {n: (store_path(folder / f"results/frames/{n}"), folder / f"results/pose_smooth/{n}.parquet") for n in names}
    missing = [str(p) for pair in out.values() for p in pair if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run the pipeline up to pose_smooth for these subjects")
    return out


@torch.no_grad()
def face_ssim(ckpt: Path, frames_path, pose, labels: dict) -> float:
    """Face-box SSIM of a checkpoint's G on the held-out tail (generated recurrently, as transfer does)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    mcfg = ModelConfig(**state["model"])
    g = build_generator(mcfg)
    g.load_state_dict(state["G"])
    g.temporal = mcfg.temporal
    g.eval()
    h, w, lo = state["height"], state["width"], state["held_out_from"]
    frames = open_frames(frames_path)
    render = label_renderer({"labels": labels, "height": h, "width": w, "model": state["model"],
                             "background": state.get("background")})
    tail = range(lo, len(frames))
    fake = list(generate_sequence(g, [render(pose, i) for i in tail]))
    boxes = face_boxes(pose, h, w)
    from steps.render.inference import resize_frame

    crops = [(boxes.crop(f, i), boxes.crop(resize_frame(frames[i], h, w), i)) for f, i in zip(fake, tail)]
    return float(np.mean([ssim(a, b) for a, b in crops]))


def curve(run_dir: Path, frames_path, pose, labels: dict) -> list[dict]:
    """(step, SSIM, ST-LPIPS, face SSIM) at each validation of a finished run."""
    import pandas as pd

    df = pd.read_csv(run_dir / "loss.csv")
    rows = []
    for r in df[df["val_ssim"].notna()].itertuples():
        ck = run_dir / "checkpoints" / f"step_{int(r.step):08d}.pt"
        rows.append({"step": int(r.step), "ssim": float(r.val_ssim), "stlpips": float(r.val_stlpips),
                     "face_ssim": face_ssim(ck, frames_path, pose, labels) if ck.exists() else float("nan")})
    return rows


def train_seconds(run_dir: Path) -> float:
    import pandas as pd

    return float(pd.read_csv(run_dir / "loss.csv")["time_s"].dropna().iloc[-1])


def steps_to_reach(rows: list[dict], ssim_goal: float, lpips_goal: float) -> dict:
    """The first validation step at which a run reaches each goal (None: never)."""
    first = {}
    for key, ok in (("ssim", lambda r: r["ssim"] >= ssim_goal), ("stlpips", lambda r: r["stlpips"] <= lpips_goal)):
        first[key] = next((r["step"] for r in rows if ok(r)), None)
    first["both"] = next((r["step"] for r in rows if r["ssim"] >= ssim_goal and r["stlpips"] <= lpips_goal), None)
    return first


def run_one(name: str, settings: dict, frames_path, pose_path, out: Path, labels: dict, base_path=None) -> dict:
    t0 = time.perf_counter()
    cfg = TrainConfig.from_dict(settings)
    r = train(cfg, frames_path, pose_path, out / name, out / name / "checkpoints", labels, progress=False,
              base_path=base_path)
    log.info("%s: %d steps in %.0f s", name, r["step"], time.perf_counter() - t0)
    return r


def transfer_and_score(run_dir: Path, data_dir: Path, source: str, target: str, quick: bool) -> dict:
    """The source's dance on the run's generator (steps.render.transfer, stills in run_dir/transfer/stills)
    and its score (steps.evaluate.score.score_transfer: the person found, keypoint distances, change)."""
    from steps.evaluate.score import score_transfer
    from steps.render.transfer import transfer

    norm = data_dir / f"results/normalized/{source}__{target}.parquet"
    if not norm.exists():
        raise SystemExit(f"missing {norm}: run the pipeline up to normalize_pose for {source} -> {target}")
    out = run_dir / "transfer"
    transfer(norm, run_dir / "generator.pt", out / "transfer.mp4", out / "side_by_side.mp4", out / "stills",
             out / "frames.csv", source_frames=store_path(data_dir / f"results/frames/{source}"), progress=False,
             device="cpu", n_stills=4)
    df, _ = score_transfer(out / "transfer.mp4", norm, store_path(data_dir / f"results/frames/{target}"),
                           data_dir / f"results/pose_smooth/{target}.parquet", max_frames=40 if quick else None)
    t = df.iloc[0]
    return {"found": int(t["found_frames"]), "frames": int(t["frames"]), "body_px": float(t["pose_body_px"]),
            "temporal_ratio": float(t["temporal_ratio"])}


def stills_side_by_side(out: Path, runs=("scratch", "warm")) -> None:
    """One PNG: each transfer still of the runs side by side (source | label | result, as transfer
    writes them), a row per still."""
    import cv2

    names = sorted(p.name for p in (out / runs[0] / "transfer" / "stills").glob("*.png"))
    rows = [np.concatenate([cv2.imread(str(out / r / "transfer" / "stills" / n)) for r in runs], 1) for n in names]
    cv2.imwrite(str(out / "transfer_stills.png"), np.concatenate(rows, 0))


def markdown(scratch: list[dict], warm: list[dict], reach: dict, info: dict) -> str:
    by_step = {r["step"]: r for r in scratch}
    wby = {r["step"]: r for r in warm}
    lines = [f"Target {info['target']}, base {' + '.join(info['base'])} "
             f"({info['base_steps']} steps, {info['base_s']:.0f} s); "
             f"scratch {info['scratch_steps']} steps ({info['scratch_s']:.0f} s), from the base "
             f"{info['warm_steps']} steps ({info['warm_s']:.0f} s); held-out tail, validation every "
             f"{info['val_every']} steps.", "",
             "| step | scratch SSIM | ST-LPIPS | face SSIM | from base SSIM | ST-LPIPS | face SSIM |",
             "|---|---|---|---|---|---|---|"]
    for step in sorted(set(by_step) | set(wby)):
        s, w = by_step.get(step), wby.get(step)
        cell = (lambda r: f"{r['ssim']:.3f} | {r['stlpips']:.3f} | {r['face_ssim']:.3f}" if r else "– | – | –")
        lines.append(f"| {step} | {cell(s)} | {cell(w)} |")
    goal = scratch[-1]
    lines += ["", f"Steps to reach the scratch run's final SSIM {goal['ssim']:.3f} and ST-LPIPS {goal['stlpips']:.3f}:",
              "", "| run | SSIM | ST-LPIPS | both |", "|---|---|---|---|"]
    for k in ("scratch", "warm"):
        lines.append(f"| {'from scratch' if k == 'scratch' else 'from the base'} | "
                     + " | ".join(str(reach[k][m]) if reach[k][m] is not None else f"not within {info[k + '_steps']}"
                                  for m in ("ssim", "stlpips", "both")) + " |")
    if info.get("transfer"):
        t = info["transfer"]
        lines += ["", f"The transfer {info['source']} -> {info['target']} (steps.evaluate.score.score_transfer):", "",
                  "| run | person found | body keypoints off (px) | frame-to-frame change / the real video's |",
                  "|---|---|---|---|"]
        for k, name in (("scratch", f"from scratch, {info['scratch_steps']} steps"),
                        ("warm", f"from the base, {info['warm_steps']} steps")):
            lines.append(f"| {name} | {t[k]['found']} of {t[k]['frames']} | {t[k]['body_px']:.2f} | "
                         f"{t[k]['temporal_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def zero_shot(base_model: Path, frames_path, pose, val_fraction: float) -> tuple[dict, np.ndarray]:
    """The base on a target it never saw, before any fine-tune step: the target's held-out tail
    generated with the target's own background (and reference frame, labels.reference) in the
    label maps. Returns ({l1, ssim, stlpips}, the sample grid)."""
    import math

    from steps.evaluate.metrics import Perceptual
    from steps.gan.pairs import FrameData
    from steps.gan.validate import validate
    from steps.prepare.labels import generator_renderer, reference_of, static_background
    from steps.render.inference import load_generator

    g, meta = load_generator(base_model)
    frames = open_frames(frames_path)
    n = len(frames)
    n_train, lab = n - math.ceil(n * val_fraction), meta["labels"]
    bg = static_background(frames, pose, n_train) if lab["background"] else None
    ref = reference_of(frames, pose, n_train, lab) if lab.get("reference") else None
    render = generator_renderer(lab["thickness"], lab["face"], lab["hands"], None, bg, ref)
    data = FrameData(frames_path, pose, meta["height"], meta["width"], render)
    cpu = torch.device("cpu")
    return validate(g, data, range(n_train, n), meta["model"]["temporal"], cpu, False, Perceptual(cpu), 4)


def summary(info: dict, reach: dict) -> dict:
    """The figures the issue's goals are stated in: people in the base; speedup (scratch's steps over
    the fine-tune steps that reach both of scratch's final held-out SSIM and ST-LPIPS; 0 when the
    fine-tune never does); and, with a transfer, keypoints_ratio (the fine-tune's body keypoint
    distance over scratch's) and person_found (the fine-tune's share of frames with a person)."""
    both = reach["warm"]["both"]
    out = {"people": len(info["base"]), "speedup": info["scratch_steps"] / both if both else 0.0}
    t = info.get("transfer")
    if t:
        out["keypoints_ratio"] = t["warm"]["body_px"] / t["scratch"]["body_px"]
        out["person_found"] = t["warm"]["found"] / t["warm"]["frames"]
    return out


def plot(scratch, warm, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(axes, ("ssim", "stlpips", "face_ssim"),
                              ("held-out SSIM (higher is better)", "held-out ST-LPIPS (lower)", "face SSIM (higher)")):
        for rows, label in ((scratch, "from scratch"), (warm, "from the base")):
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], "o-", ms=3, label=label)
        ax.axhline(scratch[-1][key], color="grey", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("target training steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="synthetic dancers at toy size (seconds; CI)")
    ap.add_argument("--data", type=Path, help="a pipeline working directory with the subjects' frames and poses")
    ap.add_argument("--base", nargs="+", default=["dancer", "model_small"], help="subjects of the base")
    ap.add_argument("--target", default="model", help="the held-out person (never in the base)")
    ap.add_argument("--base-steps", type=int, default=800)
    ap.add_argument("--warm-steps", type=int, default=500)
    ap.add_argument("--scratch-steps", type=int, default=2500)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=0, help="train.finetune.warmup of the run from the base")
    ap.add_argument("--lr-scale", type=float, default=1.0,
                    help="the run from the base learns at this times train.lr_G and lr_D (train.finetune.lr_G/lr_D)")
    ap.add_argument("--labels", default="{}", help="the labels section as JSON (e.g. '{\"background\": false}')")
    ap.add_argument("--source", help="also transfer this subject's dance (its normalized poses onto the target, "
                    "results/normalized/<source>__<target>.parquet) with both generators and score it")
    ap.add_argument("--base-model", type=Path, help="a trained base (train_base's generator.pt, e.g. of "
                    "../shared/data/people/) to start from instead of training one here on --base")
    ap.add_argument("--labels-reference", action="store_true", help="labels.reference: the generators see a "
                    "reference frame of the person (the base must have been trained so)")
    ap.add_argument("--zero-shot-only", action="store_true", help="with --base-model: only the base on the target "
                    "before any fine-tune (zero_shot.json and zero_shot.png in --out)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["warm", "scratch"], help="train only the base and the run from it, or only "
                    "the scratch run (two processes side by side on two cores), and write no table; a run without "
                    "--only then finds both trained (they resume as finished) and writes the table")
    a = ap.parse_args(argv)
    logs.setup()
    torch.set_num_threads(a.threads)
    if a.target in a.base:
        raise SystemExit(f"the target {a.target} is also in the base: leave it out")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.quick:
        a.base_steps, a.warm_steps, a.scratch_steps, a.val_every = 6, 4, 8, 2
        data, settings = synth_subjects(a.out / "data", [*a.base, a.target]), dict(QUICK_TRAIN)
    else:
        data, settings = paths(a.data, [*a.base, a.target]), real_settings()
    settings.update(val_every=a.val_every, checkpoint_every=a.val_every, keep_checkpoints=10_000)
    from steps.settings import section

    labels = section("labels", {**json.loads(a.labels), **({"reference": True} if a.labels_reference else {})})
    base_model = a.base_model or a.out / "_base" / "generator.pt"
    frames_path, pose_path = data[a.target]
    if a.zero_shot_only:
        import cv2

        metrics, grid = zero_shot(a.base_model, frames_path, read_pose(pose_path),
                                  TrainConfig.from_dict(settings).val_fraction)
        (a.out / "zero_shot.json").write_text(json.dumps({"base": str(a.base_model), "target": a.target, **metrics}))
        cv2.imwrite(str(a.out / "zero_shot.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print(json.dumps(metrics))
        return
    if a.only != "scratch":
        if not a.base_model:
            bcfg = base_config(settings, {"global_steps": a.base_steps})
            train_base(bcfg, [data[s][0] for s in a.base], [data[s][1] for s in a.base], a.out / "_base",
                       a.out / "_base" / "checkpoints", labels, progress=False)
        lr = TrainConfig.from_dict(settings)
        finetune = {"steps": a.warm_steps, "warmup": a.warmup, "lr_G": a.lr_scale * lr.lr_G,
                    "lr_D": a.lr_scale * lr.lr_D}
        run_one("warm", {**settings, "global_steps": a.scratch_steps, "init_from": "base", "finetune": finetune},
                frames_path, pose_path, a.out, labels, base_model)
    if a.only != "warm":
        run_one("scratch", {**settings, "global_steps": a.scratch_steps}, frames_path, pose_path,
                               a.out, labels)
    if a.only:
        return
    # training time: the loss CSV's clock (seconds since its run started; a resumed run restarts it)
    base_s = train_seconds(base_model.parent)
    warm_s, scratch_s = (train_seconds(a.out / k) for k in ("warm", "scratch"))
    pose = read_pose(pose_path)
    curves = {k: curve(a.out / k, frames_path, pose, labels) for k in ("scratch", "warm")}
    goal = curves["scratch"][-1]
    reach = {k: steps_to_reach(v, goal["ssim"], goal["stlpips"]) for k, v in curves.items()}
    info = dict(target=a.target, base=a.base, base_steps=a.base_steps, warm_steps=a.warm_steps,
                scratch_steps=a.scratch_steps, val_every=a.val_every, base_s=base_s, warm_s=warm_s,
                scratch_s=scratch_s, source=a.source)
    if a.source:
        d = a.out / "data" if a.quick else a.data
        if a.quick:  # the synthetic dancers share one frame: the source's poses stand as normalized
            import shutil

            (d / "results/normalized").mkdir(exist_ok=True)
            shutil.copyfile(data[a.source][1], d / f"results/normalized/{a.source}__{a.target}.parquet")
        info["transfer"] = {k: transfer_and_score(a.out / k, d, a.source, a.target, a.quick) for k in ("scratch", "warm")}
        stills_side_by_side(a.out)
    table = markdown(curves["scratch"], curves["warm"], reach, info)
    (a.out / "warm_start.md").write_text(table)
    (a.out / "warm_start.json").write_text(json.dumps({**summary(info, reach), "info": info, "curves": curves,
                                                       "reach": reach}, indent=1))
    plot(curves["scratch"], curves["warm"], a.out / "warm_start.png")
    print(table)


if __name__ == "__main__":
    main()
