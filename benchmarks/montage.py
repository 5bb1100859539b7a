"""A source with cuts (issue 27, item 5): 13 clips of 13 different people joined into one video (a
montage, like a music video's shots) transferred onto a target at the `cpu` preset.

The montage: ../shared/data/people clips, each scaled into a 720x960 frame (padded, not cropped)
at 30 fps and joined with ffmpeg's concat filter (re-encoded: the clips differ in size and rate).
One real Snakemake run (`--cores 2`): the target (../shared/data/clips/model_target.mp4) trained
--steps steps, the montage's poses, normalize_pose, the transfer and score_transfer. Printed:
- the cuts normalize_pose found (results/normalized/*.shots.json) against the joins (a cut
  within 3 frames of a join counts);
- the share of frames whose normalized pose lies inside the target's frame, side by side on the
  same poses: one global mapping (normalize.shots none, as before per-shot normalization), per
  shot, per shot kept inside (the workflow's default);
- the transfer's person found and pose inside, overall and minute by minute (score_transfer).
Goals: pose inside >= 95% of frames, person found >= 95% of the transfer's frames.

    .venv/bin/python benchmarks/montage.py --out OUT --work ../edn-montage   # about 40 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.scale import CLIPS, run_workflow, write_results  # noqa: E402
from steps.prepare.posetable import read_meta  # noqa: E402

PEOPLE = ROOT.parent / "shared" / "data" / "people"
# dancers and athletes seen head to feet (body+ankles in at least 7 of 8 of its README's frames)
MONTAGE = ["dance_blazer", "aerobics_studio", "dance_curtain", "basketball_dance_studio", "dance_lakeside",
           "jumping_jacks", "dance_pink_backdrop", "shadow_boxing", "dance_hallway", "taichi_wall",
           "dance_purple_room", "football_juggle", "cartwheels"]
GOALS = {"inside": 0.95, "person_found": 0.95}
CUT_TOLERANCE = 3  # frames


def make_montage(clips: list[Path], out: Path, width: int = 720, height: int = 960, fps: int = 30) -> list[float]:
    """Join `clips` into one video at `out` (each fitted into width x height, padded); returns the
    times (s) of the joins."""
    import imageio_ffmpeg

    ff, chains = imageio_ffmpeg.get_ffmpeg_exe(), []
    for i in range(len(clips)):
        chains.append(f"[{i}:v]scale={width}:{height}:force_original_aspect_ratio=decrease,"
                      f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},format=yuv420p[v{i}]")
    graph = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(len(clips))) + f"concat=n={len(clips)}:v=1:a=0[v]"
    tmp = out.with_suffix(".part.mp4")
    cmd = [ff, "-v", "error", "-y", *[a for c in clips for a in ("-i", str(c))], "-filter_complex", graph,
           "-map", "[v]", "-c:v", "libx264", "-crf", "18", "-preset", "veryfast", str(tmp)]
    subprocess.run(cmd, check=True)
    tmp.rename(out)
    lengths = [round(imageio_ffmpeg.count_frames_and_secs(str(c))[1] * fps) / fps for c in clips]
    return list(np.cumsum(lengths)[:-1])


def match_cuts(found: list[int], joins: list[int], tolerance: int = CUT_TOLERANCE) -> dict:
    """Joins with a cut found within `tolerance` frames, and cuts found far from any join."""
    hit = [j for j in joins if any(abs(f - j) <= tolerance for f in found)]
    extra = [f for f in found if all(abs(f - j) > tolerance for j in joins)]
    return {"joins": len(joins), "found": len(hit), "missed": [j for j in joins if j not in hit], "extra": extra}


def normalizations(run: Path, source: str, target: str) -> dict:
    """On the workflow's own smoothed poses and statistics: the share of frames whose normalized
    body lies inside the target's frame, and the cuts (shot starts), for one global mapping, per
    shot from the pose alone, per shot with the cuts confirmed by the picture, and that kept
    inside the frame (the workflow's default)."""
    from steps.evaluate.score import outside_frame
    from steps.prepare.framestore import open_frames
    from steps.prepare.normalize import normalize_source
    from steps.prepare.posetable import read_pose
    from steps.prepare.stats import load_stats
    from steps.settings import section

    pose, frames = read_pose(run / f"results/pose_smooth/{source}.parquet"), open_frames(run / f"results/frames/{source}")
    src, tgt = (load_stats(run / f"results/stats/{s}.json") for s in (source, target))
    out, stats_c = {}, section("stats", {})
    for name, c, fr in (("global", {"shots": "none", "keep_inside": False}, None),
                        ("per_shot_pose_alone", {"keep_inside": False}, None),
                        ("per_shot", {"keep_inside": False}, frames), ("per_shot_kept_inside", {}, frames)):
        norm, report = normalize_source(pose, src, tgt, section("normalize", c), stats_c, frames=fr)
        inside = 1.0 - float(outside_frame(norm.parts["body"], tgt.height, tgt.width, stats_c["min_confidence"]).mean())
        out[name] = {"inside": inside, "cuts": [s["start"] for s in report["shots"][1:]]}
    return out


def score_figures(run: Path, pair: str) -> dict:
    import pandas as pd

    from benchmarks.scale import drift

    row = pd.read_csv(run / f"results/eval/{pair}_transfer.csv").set_index("row").loc["transfer"]
    minutes = drift(run / f"results/eval/{pair}_transfer.md")["minutes"]
    return {"frames": int(row["frames"]), "person_found": float(row["person_found"]),
            "inside": 1.0 - float(row["pose_outside"]), "minutes": minutes}


def per_clip_found(run: Path, pair: str, joins: list[int], stride: int = 2) -> list[float]:
    """The share of each clip's transferred frames (every `stride`-th) in which the detector finds
    the person (score_transfer's person_found, per clip of the montage)."""
    from steps.evaluate.score import detect_every, person_found
    from steps.prepare.video import read_video
    from steps.settings import section

    n = int(json.loads((run / f"results/normalized/{pair}.shots.json").read_text())["frames"])
    det = detect_every(read_video(run / f"results/transfer/{pair}.mp4"), n, stride, "mediapipe")
    found = person_found(det["body"], section("evaluate", {})["found_confidence"])
    edges = [0, *joins, n]
    return [float(found[-(-a // stride):-(-b // stride)].mean()) for a, b in zip(edges[:-1], edges[1:])]


def markdown(res: dict) -> str:
    ins, s = res["normalizations"], res["score"]
    ok = lambda v, goal: "met" if v >= goal else "not met"  # noqa: E731
    lines = [f"Montage: {len(res['clips'])} clips of different people joined, {res['seconds']:.0f} s "
             f"({', '.join(res['clips'])}); target model_target.mp4, cpu preset, {res['steps']} steps.", "",
             f"Joins: {ins['global']['joins']}. A cut counts as found within {CUT_TOLERANCE} frames of a join.", "",
             "| normalization (same poses) | joins found | cuts away from a join | pose inside the target's frame |",
             "|---|---|---|---|"]
    names = {"global": "one global mapping (normalize.shots: none)", "per_shot_pose_alone": "per shot, cuts from the pose alone",
             "per_shot": "per shot, cuts confirmed by the picture", "per_shot_kept_inside": "... and kept inside (default)"}
    for key, label in names.items():
        r = ins[key]
        lines.append(f"| {label} | {r['found']} | {len(r['extra'])} | {r['inside']:.1%} |")
    lines += ["",
             f"Transfer ({s['frames']} frames, score_transfer): person found {s['person_found']:.1%} (goal "
             f">= {GOALS['person_found']:.0%}: {ok(s['person_found'], GOALS['person_found'])}), input pose inside "
             f"{s['inside']:.1%} (goal >= {GOALS['inside']:.0%}: {ok(s['inside'], GOALS['inside'])}).", "",
             "| minute | frames | person found | pose inside |", "|---|---|---|---|"]
    lines += [f"| {m['minute']:.0f} | {m['frames']:.0f} | {m['person_found']:.1%} | {1 - m['pose_outside']:.1%} |"
              for m in s["minutes"]]
    lines += ["", "| clip | person found in its transferred frames |", "|---|---|"]
    lines += [f"| {name} | {share:.1%} |" for name, share in zip(res["clips"], res["per_clip_found"])]
    return "\n".join(lines + ["", f"Wall time {res['wall_s']:.0f} s."]) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for montage.md and montage.json")
    ap.add_argument("--work", type=Path, help="keep the video and the run here (default: a temporary folder)")
    ap.add_argument("--people", type=Path, default=PEOPLE)
    ap.add_argument("--steps", type=int, help="train.global_steps (default: the cpu preset's, 2,500)")
    ap.add_argument("--cores", type=int, default=2)
    a = ap.parse_args(argv)
    clips = [a.people / f"{name}.mp4" for name in MONTAGE]
    if not all(c.exists() for c in clips) or not (CLIPS / "model_target.mp4").exists():
        print(f"skipped: the montage's clips are not all in {a.people} (or model_target.mp4 in {CLIPS})")
        return
    work = (a.work or Path(tempfile.mkdtemp(prefix="edn-montage-"))).resolve()
    try:
        res = run_montage(a, clips, work)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_results(a.out, "montage", res, markdown(res))


def run_montage(a, clips: list[Path], work: Path) -> dict:
    (work / "videos").mkdir(parents=True, exist_ok=True)
    video, t0 = work / "videos" / "montage.mp4", time.perf_counter()
    joins_s = make_montage(clips, video) if not video.exists() else json.loads((work / "joins.json").read_text())
    (work / "joins.json").write_text(json.dumps(joins_s))
    cfg = {"preset": "cpu", "subjects": {"target": {"video": str(CLIPS / "model_target.mp4")},
                                         "montage": {"video": str(video)}},
           "transfers": [{"source": "montage", "target": "target"}], "train": {"global_steps": a.steps} if a.steps else {}}
    run, pair = work / "run", "montage__target"
    wall = run_workflow(run, cfg, [f"results/eval/{pair}_transfer.csv"], a.cores)
    report = json.loads((run / f"results/normalized/{pair}.shots.json").read_text())
    fps = read_meta(run / "results/pose_smooth/montage.parquet").fps
    joins = [round(t * fps) for t in joins_s]
    norms = {k: {**v, **match_cuts(v["cuts"], joins)} for k, v in normalizations(run, "montage", "target").items()}
    return {"clips": MONTAGE, "seconds": report["frames"] / fps, "steps": a.steps or 2500, "wall_s": wall,
            "shots": report["shots"], "normalizations": norms, "score": score_figures(run, pair),
            "per_clip_found": per_clip_found(run, pair, joins), "total_s": time.perf_counter() - t0}


if __name__ == "__main__":
    main()
