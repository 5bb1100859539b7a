"""benchmarks/scale.py (long videos, issue 27): its --quick run end to end (rendered clips, real
Snakemake runs of both presets), and the pieces that read the runs back."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("scale", ROOT / "benchmarks" / "scale.py")
scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale)

STAGES = [("decode_frames", "paper"), ("extract_pose", "paper"), ("merge_pose", "paper"), ("smooth_pose", "paper"),
          ("subject_stats", "paper"), ("render_labels", "paper"), ("decode_frames", "cpu"), ("extract_pose", "cpu"),
          ("merge_pose", "cpu"), ("smooth_pose", "cpu"), ("subject_stats", "cpu"), ("train_generator", "cpu"),
          ("train_face", "cpu"), ("normalize_pose", "cpu"), ("transfer", "cpu"), ("score_transfer", "cpu")]


def positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.mark.slow
def test_the_scale_benchmark_runs_quick(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/scale.py"), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads((tmp_path / "scale.json").read_text())
    assert [(x["stage"], x["preset"]) for x in res["rows"]] == STAGES
    for row in res["rows"]:
        for video in ("short", "long"):
            fig = row[video]
            if fig is None:  # training: the short target only
                assert row["stage"] in ("train_generator", "train_face") and video == "long"
                continue
            for key in ("s_per_min", "peak_mb", "disk_mb_per_min", "minutes"):
                assert positive(fig[key]), (row["stage"], row["preset"], video, key, fig)
            # a peak of a few MB would be the job's shell, not the stage (a job Snakemake sampled too late)
            assert fig["peak_mb"] > 50, (row["stage"], fig)
        if row["long"]:
            assert positive(row["time_ratio"]) and positive(row["memory_ratio"]), row
            assert set(row["goals"]) >= {"memory"} and all(isinstance(g[2], bool) for g in row["goals"].values())
    assert res["rows"][0]["long"]["minutes"] == pytest.approx(3 * res["rows"][0]["short"]["minutes"])  # 6 s, 18 s
    assert res["transfer"]["frames"] == 120 and positive(res["transfer"]["fps"])  # the 12 s source at 10 fps
    assert res["drift"]["first"] == 1 and res["checked"] >= len(res["rows"])
    # the printed table: a row per stage, every cell of a figure a number, the goals column filled
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| stage")]
    assert [tuple(c.strip() for c in ln.strip("|").split("|")[:2]) for ln in lines] == STAGES
    for ln in lines:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert all(float(c) > 0 for c in cells[3:6]), ln
        assert cells[-1] == "–" if cells[6] == "–" else cells[-1].startswith(("yes", "no: ")), ln
    assert (tmp_path / "scale.md").read_text().count("\n| ") == len(STAGES) + 1
    assert "real time" in r.stdout and "Drift" in r.stdout and "estimated time" in r.stdout


def test_jobs_are_named_from_their_logs_and_benchmarks():
    assert scale.job_name("extract_pose", "tlong_0012") == ("extract_pose", "tlong")
    assert scale.job_name("extract_pose", "my_subject/0003") == ("extract_pose", "my_subject")
    assert scale.job_name("render_labels", "a__b") == ("render_labels_normalized", "a__b")
    assert scale.job_name("train", "t") == ("train_generator", "t")
    assert scale.job_name("decode_frames", "t") == ("decode_frames", "t")
    assert math.isnan(scale.number("NA")) and math.isnan(scale.number("–")) and scale.number("1.5e+02") == 150


def test_drift_compares_the_last_full_minute_with_the_first(tmp_path):
    md = tmp_path / "x_transfer.md"
    rows = [(1, 900, 0.90, 10.0), (2, 900, 0.88, 10.5), (3, 900, 0.85, 11.5), (4, 30, 0.10, 40.0)]
    md.write_text("# T\n\n| row | frames |\n|---|---|\n| transfer | 2730 |\n\nMinute by minute (the transfer):\n\n"
                  "| minute | frames | person_found | pose_body_px | pose_outside |\n|---|---|---|---|---|\n"
                  + "".join(f"| {m} | {n} | {f:.3f} | {px:.2f} | 0.00 |\n" for m, n, f, px in rows))
    d = scale.drift(md)
    assert (d["first"], d["last"]) == (1, 3)  # minute 4 has 30 frames: not a minute to judge by
    assert d["person_found"]["met"] is True and d["person_found"]["change"] == pytest.approx(0.05 / 0.9)
    assert d["pose_body_px"]["met"] is False and d["pose_body_px"]["change"] == pytest.approx(0.15)
    md.write_text(md.read_text().split("| 2 |")[0])  # one minute: nothing to compare
    assert scale.drift(md)["person_found"]["met"] is None
