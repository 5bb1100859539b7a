"""Each benchmark once at its tiniest settings, as a subprocess: the printed Markdown table has
the expected rows and columns and finite numbers."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = "train.model={ngf: 8, n_down: 2, n_blocks: 1, ndf: 8, n_layers_D: 2, num_D: 1}"


def run(script: str, *args: str, timeout=300) -> str:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--threads", "2", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def table(out: str) -> list[dict]:
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "")) == {"-"}
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def test_quality(tmp_path):
    out = run("quality.py", "--synth", "1", "--fps", "10", "--size", "64x64", "--steps", "6", "--val-every", "2",
              "--set", "train.vgg=false", "--set", TINY_MODEL, "--set", "train.workers=0",
              "--set", "train.min_train_frames=2", "--set", "train.min_val_frames=1", "--out", str(tmp_path))
    rows = table(out)
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # one row per validation
    for r in rows:
        assert all(math.isfinite(float(r[c])) for c in ("val_l1", "val_ssim", "loss_D_mean"))
    assert "final generator: step" in out
    assert (tmp_path / "quality.csv").exists() and (tmp_path / "quality.md").exists()


def test_train_throughput():
    # torch.compile takes about a minute on two CPU cores: the compiled variant is left to GPU runs
    out = run("train.py", "--sizes", "64x32", "--steps", "1", "--only", "eager", "channels_last",
              "--set", TINY_MODEL, "--set", "train.vgg=false")
    rows = table(out)
    assert [r["variant"] for r in rows] == ["eager", "channels_last"]
    for r in rows:
        assert float(r["s/step"]) > 0 and math.isfinite(float(r["frames/s"])) and float(r["TFLOP/s"]) > 0
    assert float(rows[0]["vs eager"]) == 1


def test_transfer_throughput():
    out = run("transfer.py", "--size", "64x32", "--frames", "6", "--face")
    rows = table(out)
    assert [r["path"] for r in rows] == ["label maps", "generator", "generator + face", "encode transfer",
                                         "side-by-side", "end to end"]
    assert all(int(r["frames"]) == 6 and float(r["frames/s"]) > 0 for r in rows)
    assert float(rows[2]["vs generator"]) == 1  # end to end is compared with what it runs: G and G_f
    summary = re.search(r"end to end / generator \+ face alone: ([0-9.]+)", out)
    assert summary and abs(float(summary[1]) - float(rows[-1]["vs generator"])) <= 0.01


def test_store():
    """The raw and JPEG stores side by side: a tenth of the disk or less is not asserted on a
    rendered clip (flat colours compress anyway); the figures are finite and the SSIMs close."""
    out = run("store.py", "--quick")
    (row,) = table(out)
    assert int(row["frames"]) == 40 and float(row["x smaller"]) > 1 and 0.97 < float(row["SSIM vs raw"]) <= 1
    assert float(row["random frames/s"]) > 0 and float(row["pairs/s"]) > 0
    delta = float(re.search(r"delta ([+-][0-9.]+)", out).group(1))
    assert abs(delta) < 0.01


def test_montage_joins_clips_of_other_sizes_and_counts_the_cuts_found(tmp_path):
    """benchmarks/montage.py's own parts (its full run needs ../shared): two rendered clips of other
    sizes and rates fitted into one 3:4 frame at one rate, the join's time returned; a cut counts
    as found within 3 frames of a join, the others are counted apart."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.montage import match_cuts, make_montage
    from steps.prepare.video import probe, write_video
    from steps.synth import make_clip

    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_video(a, make_clip("source", 2, 10, 160, 96, seed=1).frames(), 10)
    write_video(b, make_clip("target", 1.5, 15, 96, 128, seed=2).frames(), 15)
    joins = make_montage([a, b], tmp_path / "m.mp4", width=72, height=96, fps=30)
    info = probe(tmp_path / "m.mp4")
    assert (info.width, info.height) == (72, 96) and joins == [2.0]
    assert abs(info.duration_s - 3.5) < 0.1, info
    found = match_cuts([30, 61, 200], [31, 90])
    assert found == {"joins": 2, "found": 1, "missed": [90], "extra": [61, 200]}
