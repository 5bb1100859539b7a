"""Long videos through the workflow (issue 27): does each stage scale with the video's length?

Real Snakemake runs (`snakemake --cores 2 --notemp`) on videos made from real footage, a clip of
../shared/data/clips looped and stream-copied (`ffmpeg -stream_loop -1 -t SECONDS -c copy`):
preset `paper` (384x512, 30 fps) up to the label maps of a 1- and a 10-minute target
(model_target.mp4); preset `cpu` (192x256, 15 fps): the 1-minute target trained --steps steps,
the whole transfer of a 1- and a 5-minute source (dancer_source.mp4) and score_transfer. Per stage
and per minute of video, short and long side by side with the ratios long/short: s/min (its jobs'
`s` in logs/benchmarks/<rule>/*.tsv, summed), peak MB (the max of their `max_rss`, or of the peak
sampled here every 0.1 s when larger: Snakemake samples every 0.5 s, every 30 s after 15 s), disk
MB/min (its outputs, folders whole: results/frames/<subject>/ whatever the store's files are
called). Goals, each met or not: peak memory <= 1.5x; the prepare stages' s/min <= 1.2x; the
frames store <= 0.15 GB/min at 384x512, 30 fps (scaled by the pixel rate); the long transfer's
frames/s end to end against real time (30); no drift (score_transfer's minute-by-minute table:
the last minute within 10% of the first, person found and body keypoint distance).

    .venv/bin/python benchmarks/scale.py --out docs/scale --work ../edn-scale   # about 40 min
    .venv/bin/python benchmarks/scale.py --quick --out /tmp/scale               # about 2 min

--quick renders its own dancers (steps.synth, no shared data): 6 s and 18 s targets, 6 s and 12 s
sources, 64x64 frames at 10 fps, tiny networks, 20 steps (tests/test_scale.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import namedtuple
from pathlib import Path

import yaml

ratio = lambda a, b: a / b if b > 0 else math.nan  # noqa: E731
read_json = lambda path: json.loads(path.read_text()) if path.exists() else {}  # noqa: E731
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIPS = ROOT.parent / "shared" / "data" / "clips"

PREPARE = ["decode_frames", "extract_pose", "merge_pose", "smooth_pose", "subject_stats", "render_labels"]
# what each rule writes, by its subject or pair {k} (folders whole; extract_pose's temp chunks kept by --notemp)
M, T = "results/models/{k}/", "results/transfer/{k}"
OUTPUTS = {"decode_frames": ["results/frames/{k}"], "extract_pose": ["results/pose/chunks/{k}"],
           "merge_pose": ["results/pose/{k}.parquet"], "smooth_pose": ["results/pose_smooth/{k}.parquet"],
           "subject_stats": [f"results/stats/{{k}}{f}" for f in (".json", "_frames.parquet", ".png", "_coverage.png")],
           "render_labels": ["results/labels/{k}.mp4"],
           "normalize_pose": ["results/normalized/{k}.parquet", "results/normalized/{k}.shots.json"],
           "train_generator": [M + f for f in ("generator.pt", "loss.csv", "loss.png", "samples.png", "checkpoints")],
           "train_face": [M + f for f in ("face.pt", "face_loss.csv", "face_loss.png", "face_samples.png",
                                          "face_checkpoints")],
           "transfer": [T + f for f in (".mp4", "_side_by_side.mp4", "_stills", "_frames.csv")],
           "score_transfer": ["results/eval/{k}_transfer.csv", "results/eval/{k}_transfer.md"]}
GOALS = {"memory": 1.5, "time": 1.2, "store_gb_per_min": 0.15, "real_time_fps": 30.0, "drift": 0.10}
PAPER_PIXEL_RATE = 384 * 512 * 30
QUICK_NET = dict(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1)
QUICK_TRAIN = dict(model=QUICK_NET, vgg=False, workers=0, val_fraction=0.25, val_samples=2, val_every=0,
                   checkpoint_every=0, channels_last=False, device="cpu", min_train_frames=2, min_val_frames=1)
QUICK_FACE = dict(batch_size=2, model=QUICK_NET, vgg=False, val_every=0, checkpoint_every=0, device="cpu")
# rough rates on 2 cores for the estimate (frames/s; s per step, per job start; docs/performance.md)
RATE = dict(decode=400, pose=22, labels=300, transfer=30, score=22, step=0.4, face_step=0.4, job=4)
PAPER_TARGETS = [f"results/{d}/{s}.{e}" for s in ("tshort", "tlong") for d, e in (("stats", "json"), ("labels", "mp4"))]
CPU_TARGETS = [f"results/eval/{s}__tshort_transfer.csv" for s in ("sshort", "slong")]


# seconds of short and long target and source, the two runs' frames, pose.chunk_frames (0: the presets')
Plan = namedtuple("Plan", "target_s source_s paper cpu steps face_steps quick chunk")


def make_plan(a) -> Plan:
    face = a.face_steps if a.face_steps is not None else (4 if a.quick else 100)
    if a.quick:
        small = {"fps": 10, "width": 64, "height": 64}
        return Plan((6, 18), (6, 12), small, small, a.steps or 20, face, True, 60)
    paper, cpu = {"fps": 30, "width": 384, "height": 512}, {"fps": 15, "width": 192, "height": 256}
    return Plan((60, 600), (60, 300), paper, cpu, a.steps or 300, face, False, 0)


def make_videos(plan: Plan, work: Path, clips: Path) -> dict:
    """{subject: video}: tshort, tlong (targets), sshort, slong (sources); real clips looped and
    stream-copied, or with --quick the demo's renderer (steps.synth) at 192x192, 10 fps."""
    import imageio_ffmpeg

    from steps.prepare.video import write_video
    from steps.synth import make_clip

    clips = {"target": clips / "model_target.mp4", "source": clips / "dancer_source.mp4"}
    spec = [("tshort", "target", plan.target_s[0]), ("tlong", "target", plan.target_s[1]),
            ("sshort", "source", plan.source_s[0]), ("slong", "source", plan.source_s[1])]
    (work / "videos").mkdir(parents=True, exist_ok=True)
    videos = {name: work / "videos" / f"{name}_{seconds}s.mp4" for name, _, seconds in spec}
    for k, (name, preset, seconds) in enumerate(spec):
        out, tmp = videos[name], videos[name].with_suffix(".part.mp4")
        if plan.quick and not out.exists():
            write_video(out, make_clip(preset, seconds, 10, 192, 192, 5 + k).frames(), 10)
        elif not out.exists():
            subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i",
                            str(clips[preset]), "-t", str(seconds), "-c", "copy", str(tmp)], check=True)
            tmp.rename(out)
    return videos


def configs(plan: Plan, videos: dict) -> dict:
    """The two runs' configs: paper (both targets), cpu (the short target and both sources)."""
    subjects = lambda names: {n: {"video": str(videos[n])} for n in names}  # noqa: E731
    paper = {"preset": "paper", "subjects": subjects(["tshort", "tlong"]), "transfers": [], "frames": plan.paper}
    cpu = {"preset": "cpu", "subjects": subjects(["tshort", "sshort", "slong"]), "frames": plan.cpu,
           "transfers": [{"source": s, "target": "tshort"} for s in ("sshort", "slong")],
           "train": {"global_steps": plan.steps},
           "face": {"steps": plan.face_steps} if plan.face_steps else {"enabled": False}}
    if plan.quick:
        paper["pose"] = cpu["pose"] = {"chunk_frames": plan.chunk}
        cpu["train"].update(QUICK_TRAIN)
        cpu["face"].update(QUICK_FACE if plan.face_steps else {})
    return {"paper": paper, "cpu": cpu}


def run_workflow(run: Path, cfg: dict, targets: list[str], cores: int) -> float:
    """snakemake --cores N in `run` with `cfg` as its only config file, the jobs' peaks sampled
    (run/peaks.json: a rerun that skips finished jobs keeps theirs); returns the wall time."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(run / "config.yaml"),
           "--directory", str(run), "--cores", str(cores), "--notemp", *targets]
    t0 = time.perf_counter()
    with open(run / "snakemake.log", "w") as logf:
        proc = subprocess.Popen(cmd, cwd=run, stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        sampler = PeakSampler(proc.pid)
        sampler.start()
        code = proc.wait()
        sampler.done.set()
        sampler.join()
    wall = time.perf_counter() - t0
    (run / "peaks.json").write_text(json.dumps({**read_json(run / "peaks.json"), **sampler.peaks}, indent=1))
    if code != 0:
        sys.exit(f"snakemake failed in {run} ({code}):\n{(run / 'snakemake.log').read_text()[-6000:]}")
    return wall


def job_name(folder: str, rest: str) -> tuple:
    """(rule, subject or pair) of a job from its log's or its benchmark's folder and name."""
    if folder == "extract_pose":
        return folder, re.split(r"[/_]\d+$", rest)[0]
    if folder == "render_labels" and "__" in rest:
        return "render_labels_normalized", rest
    return {"train": "train_generator"}.get(folder, folder), rest


class PeakSampler(threading.Thread):
    """The peak resident memory of every job (its shell and all it starts, summed, as Snakemake's
    benchmark does) every 0.1 s: Snakemake's 0.5 s misses the peak of a job of a second or two (often
    all but the shell's few MB), its 30 s after a job's first 15 s that of a long one."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.done, self.peaks, self.jobs = pid, threading.Event(), {}, {}

    def run(self) -> None:
        import psutil

        while not self.done.wait(0.1):
            try:
                procs = psutil.Process(self.pid).children(recursive=True)
            except psutil.Error:
                return
            parent, rss, owner, now = {}, {}, {}, {}
            for pr in procs:
                try:
                    parent[pr.pid], rss[pr.pid], key = pr.ppid(), pr.memory_info().rss, (pr.pid, pr.create_time())
                    if key not in self.jobs:  # a job's shell: `... > logs/<rule>/<name>.log 2>&1`
                        m = re.search(r"> logs/(\S+?)/(\S+)\.log 2>&1", " ".join(pr.cmdline()))
                        self.jobs[key] = f"{m[1]}/{m[2]}" if m else None  # one job: e.g. extract_pose/a/0003
                    owner[pr.pid] = self.jobs[key]
                except psutil.Error:
                    continue
            for pid, r in rss.items():
                while pid in parent and not owner.get(pid):
                    pid = parent[pid]
                if owner.get(pid):
                    now[owner[pid]] = now.get(owner[pid], 0) + r / 2**20
            for job, mb in now.items():
                self.peaks[job] = max(self.peaks.get(job, 0.0), mb)


def number(v) -> float:  # a table's cell; NaN for NA (Snakemake's, a job too short to be sampled) or –
    return float(v) if re.fullmatch(r"-?[0-9.]+(e[-+]?[0-9]+)?", str(v).strip()) else math.nan


def bench_jobs(run: Path) -> dict:
    """{(rule, subject or pair): {s: summed over its jobs, rss: the larger peak (MB) of its jobs'
    max_rss and of PeakSampler's, benchmark_rss, jobs}} from logs/benchmarks and peaks.json."""
    out, sampled = {}, read_json(run / "peaks.json")
    for p in sorted((run / "logs/benchmarks").rglob("*.tsv")):
        with open(p) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        e = out.setdefault(job_name(p.parent.name, p.stem), {"s": 0.0, "rss": 0.0, "benchmark_rss": 0.0, "jobs": 0})
        e["s"] += number(row["s"])
        e["benchmark_rss"] = max(e["benchmark_rss"], number(row["max_rss"]))
        e["jobs"] += 1
    for job, mb in sampled.items():
        e = out.get(job_name(*job.split("/", 1)), {"rss": 0.0})  # (a job without a benchmark: not a stage)
        e["rss"] = max(e["rss"], mb)
    for e in out.values():
        e["rss"] = max(e["rss"], e["benchmark_rss"])
    return out


def disk_bytes(run: Path, rule: str, key: str) -> int:
    """What the rule's outputs take on disk (du: allocated blocks), folders whole."""
    paths = [run / pattern.format(k=key) for pattern in OUTPUTS[rule]]
    files = [p for p in paths if p.is_file()] + [Path(d) / f for p in paths for d, _, fs in os.walk(p) for f in fs]
    return sum(f.stat().st_blocks * 512 for f in files)


def figures(run: Path, jobs: dict, rule: str, key: str, seconds: float) -> dict:
    j = jobs.get((rule, key)) or sys.exit(f"no benchmark of rule {rule} for {key} under {run}/logs/benchmarks")
    minutes = seconds / 60
    return {"minutes": minutes, "jobs": j["jobs"], "s": j["s"], "s_per_min": j["s"] / minutes, "peak_mb": j["rss"],
            "benchmark_max_rss": j["benchmark_rss"], "disk_mb_per_min": disk_bytes(run, rule, key) / 1e6 / minutes}


def stage_list(plan: Plan) -> list[tuple]:
    """(run, rule, short key, long key or None, short seconds, long seconds, what the minutes are of)."""
    (t1, t2), (s1, s2) = plan.target_s, plan.source_s
    rows = [("paper", r, "tshort", "tlong", t1, t2, "target") for r in PREPARE]
    rows += [("cpu", r, "sshort", "slong", s1, s2, "source") for r in PREPARE if r != "render_labels"]
    rows += [("cpu", r, "tshort", None, t1, None, "target") for r in ("train_generator", "train_face")
             if r != "train_face" or plan.face_steps]
    return rows + [("cpu", r, "sshort__tshort", "slong__tshort", s1, s2, "source")
                   for r in ("normalize_pose", "transfer", "score_transfer")]


def stage_rows(plan: Plan, runs: dict) -> list[dict]:
    """Every stage's figures on the short and the long video, the ratios and its goals."""
    jobs = {name: bench_jobs(run) for name, run in runs.items()}
    rows = []
    for run, rule, k1, k2, sec1, sec2, of in stage_list(plan):
        short = figures(runs[run], jobs[run], rule, k1, sec1)
        long = figures(runs[run], jobs[run], rule, k2, sec2) if k2 else None
        row = {"stage": rule, "preset": run, "video": of, "short": short, "long": long,
               "time_ratio": ratio(long["s_per_min"], short["s_per_min"]) if long else None,
               "memory_ratio": ratio(long["peak_mb"], short["peak_mb"]) if long else None}
        row["goals"] = row_goals(row, getattr(plan, run))
        rows.append(row)
    return rows


def row_goals(row: dict, frames: dict) -> dict:
    """{goal: (value, limit, met)} of one stage; the store's limit at these frames' pixel rate."""
    g = {}
    if row["long"]:
        g["memory"] = (row["memory_ratio"], GOALS["memory"], row["memory_ratio"] <= GOALS["memory"])
        if row["stage"] in PREPARE:
            g["time"] = (row["time_ratio"], GOALS["time"], row["time_ratio"] <= GOALS["time"])
    if row["stage"] == "decode_frames":
        limit = GOALS["store_gb_per_min"] * 1e3 * frames["width"] * frames["height"] * frames["fps"] / PAPER_PIXEL_RATE
        worst = max(r["disk_mb_per_min"] for r in (row["short"], row["long"]) if r)
        g["store"] = (worst, limit, worst <= limit)
    return g


def transfer_speed(run: Path, jobs: dict, pair: str) -> dict:
    """The long transfer's frames/s end to end (its rule's benchmark) against real time."""
    n = len((run / f"results/transfer/{pair}_frames.csv").read_text().splitlines()) - 1  # a row per frame
    s = jobs[("transfer", pair)]["s"]
    return {"frames": n, "s": s, "fps": n / s, "x_real_time": n / s / GOALS["real_time_fps"],
            "met": n / s >= GOALS["real_time_fps"]}


def drift(md: Path) -> dict:
    """score_transfer's minute-by-minute table (steps.evaluate.score.per_minute, read back from its
    Markdown): the last (at least half-full) minute against the first, person found and body px."""
    rows = [ln for ln in md.read_text().split("Minute by minute", 1)[1].splitlines() if ln.startswith("|")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    minutes = [dict(zip(head, (number(c.strip()) for c in r.strip("|").split("|")))) for r in rows[2:]]
    full = [m for m in minutes if m["frames"] >= 0.5 * minutes[0]["frames"]]
    first, last = minutes[0], full[-1]
    out = {"minutes": minutes, "first": int(first["minute"]), "last": int(last["minute"])}
    for key in ("person_found", "pose_body_px"):
        a, b = first[key], last[key]
        change = abs(b - a) / abs(a) if a and math.isfinite(a) and math.isfinite(b) else math.nan
        out[key] = {"first": a, "last": b, "change": change,
                    "met": None if len(full) < 2 or not math.isfinite(change) else change <= GOALS["drift"]}
    return out


def cell(v) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def length(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def goal_cell(goals: dict) -> str:
    missed = [f"{k} {cell(v)} > {cell(lim)}" for k, (v, lim, ok) in goals.items() if not ok]
    return "–" if not goals else "yes" if not missed else "no: " + "; ".join(missed)


def markdown(res: dict) -> str:
    p, t, d = res["plan"], res["transfer"], res["drift"]
    lines = [f"Targets {length(p['target_s'][0])} and {length(p['target_s'][1])}, sources {length(p['source_s'][0])} "
             f"and {length(p['source_s'][1])}; frames {p['paper']} (paper run), {p['cpu']} (cpu run); {p['steps']} "
             f"training steps, {p['face_steps']} face steps. s/min: the rule's jobs' seconds summed, per minute of "
             "video; peak MB: the largest peak resident memory of its jobs; disk: its outputs.", "",
             "| stage | preset | video | short: s/min | peak MB | disk MB/min | long: s/min | peak MB | disk MB/min "
             "| s/min long/short | peak long/short | goals met |", "|" + "---|" * 12]
    for r in res["rows"]:
        s, lg = r["short"], r["long"] or {}
        span = f"{r['video']} {length(s['minutes'] * 60)}" + (f" → {length(lg['minutes'] * 60)}" if lg else "")
        lines.append(f"| {r['stage']} | {r['preset']} | {span} | {cell(s['s_per_min'])} | {cell(s['peak_mb'])} | "
                     f"{cell(s['disk_mb_per_min'])} | {cell(lg.get('s_per_min'))} | {cell(lg.get('peak_mb'))} | "
                     f"{cell(lg.get('disk_mb_per_min'))} | {cell(r['time_ratio'])} | {cell(r['memory_ratio'])} | "
                     f"{goal_cell(r['goals'])} |")
    yes = {True: "met", False: "not met", None: "not measurable"}
    pf, bp = d["person_found"], d["pose_body_px"]
    return "\n".join(lines + [
        "", f"Transfer of the {length(p['source_s'][1])} source (cpu preset): {t['frames']} frames in {t['s']:.0f} s "
        f"end to end, {t['fps']:.1f} frames/s, {t['x_real_time']:.2f}x real time ({GOALS['real_time_fps']:g} "
        f"frames/s): {yes[t['met']]}.",
        f"Drift (score_transfer, minute {d['first']} → minute {d['last']} of that transfer, within "
        f"{GOALS['drift']:.0%}): person found {cell(pf['first'])} → {cell(pf['last'])}: {yes[pf['met']]}; body "
        f"keypoints off {cell(bp['first'])} → {cell(bp['last'])} px: {yes[bp['met']]}.",
        f"Goals met: {res['met']} of {res['checked']}. Wall time: paper run {res['wall']['paper']:.0f} s, cpu run "
        f"{res['wall']['cpu']:.0f} s (estimated {res['estimate_s']:.0f} s in all)."]) + "\n"


def estimate_s(plan: Plan) -> float:
    """A rough time of the whole benchmark from its frame and job counts (RATE, on 2 cores)."""
    pf = plan.paper["fps"] * sum(plan.target_s)
    cf = plan.cpu["fps"] * (plan.target_s[0] + sum(plan.source_s))
    transfer = plan.cpu["fps"] * sum(plan.source_s)
    score = transfer + 2 * plan.cpu["fps"] * plan.target_s[0]  # the transfers and the real frames, each once
    jobs = pf / (plan.chunk or 150) + 8 + cf / (plan.chunk or 100) + 16
    return (pf / RATE["decode"] + pf / RATE["pose"] + pf / RATE["labels"] + cf / RATE["decode"] + cf / RATE["pose"]
            + jobs * RATE["job"] / 2 + plan.steps * RATE["step"] + plan.face_steps * RATE["face_step"]
            + transfer / RATE["transfer"] + score / RATE["score"])


def run_all(a, plan: Plan, work: Path) -> dict:
    est = estimate_s(plan)
    print(f"estimated time of this run on 2 cores: about {est / 60:.0f} min (paper preset to the label maps of "
          f"{length(plan.target_s[0])} and {length(plan.target_s[1])} targets, then the cpu preset's "
          f"{plan.steps} steps and transfers of {length(plan.source_s[0])} and {length(plan.source_s[1])})", flush=True)
    videos = make_videos(plan, work, a.clips)
    runs, wall, cfgs = {"paper": work / "paper", "cpu": work / "cpu"}, {}, configs(plan, videos)
    for name, targets in (("paper", PAPER_TARGETS), ("cpu", CPU_TARGETS)):
        wall[name] = run_workflow(runs[name], cfgs[name], targets, a.cores)
        print(f"{name} run: {wall[name]:.0f} s", flush=True)
    rows = stage_rows(plan, runs)
    res = {"plan": plan._asdict(), "rows": rows, "wall": wall, "estimate_s": est,
           "transfer": transfer_speed(runs["cpu"], bench_jobs(runs["cpu"]), "slong__tshort"),
           "drift": drift(runs["cpu"] / "results/eval/slong__tshort_transfer.md")}
    checks = [ok for r in rows for (_, _, ok) in r["goals"].values()] + [res["transfer"]["met"]]
    checks += [res["drift"][k]["met"] for k in ("person_found", "pose_body_px") if res["drift"][k]["met"] is not None]
    res["met"], res["checked"] = sum(map(bool, checks)), len(checks)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="rendered clips, tiny sizes (CI, about 2 min)")
    ap.add_argument("--out", type=Path, required=True, help="folder for scale.md and scale.json")
    ap.add_argument("--work", type=Path, help="keep the videos and the runs here (default: a temporary folder)")
    ap.add_argument("--clips", type=Path, default=CLIPS, help="real clips (model_target.mp4, dancer_source.mp4)")
    ap.add_argument("--steps", type=int, help="train.global_steps of the cpu run (default 300; --quick 20)")
    ap.add_argument("--face-steps", type=int, help="face.steps (default 100; --quick 4; 0: no face GAN)")
    ap.add_argument("--cores", type=int, default=2)
    a = ap.parse_args(argv)
    if not a.quick and not all((a.clips / c).exists() for c in ("model_target.mp4", "dancer_source.mp4")):
        print(f"skipped: the real clips (model_target.mp4, dancer_source.mp4) are not in {a.clips}; "
              "--quick renders its own")
        return
    plan, t0 = make_plan(a), time.perf_counter()
    work = a.work or Path(tempfile.mkdtemp(prefix="edn-scale-"))
    try:
        res = run_all(a, plan, work.resolve())
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    res["total_s"] = time.perf_counter() - t0
    write_results(a.out, "scale", res, markdown(res))


def write_results(out: Path, name: str, res: dict, md: str) -> None:
    """out/<name>.md (the table) and out/<name>.json (every figure); the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
    print(md + f"\ntotal {res['total_s']:.0f} s; wrote {out / f'{name}.md'} and {out / f'{name}.json'}")


if __name__ == "__main__":
    main()
