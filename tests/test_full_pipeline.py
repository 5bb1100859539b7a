"""The demo end to end at its smallest settings: the demo's .test/demo/config/config.yaml (two rendered
dancers) with shorter clips, a smaller frame size and a few training steps. Videos -> frames ->
poses -> statistics -> normalization -> generator -> face GAN -> transfer video -> evaluation
table -> `snakemake --report`, through the project's own Snakefile.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, snakemake
from steps.prepare.framestore import open_frames
from test_workflow import job_counts

FRAMES = {"fps": 10, "width": 192, "height": 192}
RESOURCES = dict(gpus=0, threads=1, mem_mb=1000, runtime=10)
TRAIN = dict(global_steps=30, width=96, height=96, model=dict(ngf=8, n_down=2, n_blocks=2, ndf=8, n_layers_D=2, num_D=1),
             vgg=False, workers=0, val_fraction=0.25, val_samples=2, val_every=0, checkpoint_every=0,
             channels_last=False, device="cpu", min_train_frames=2, min_val_frames=1,
             resources={**RESOURCES, "cpus_per_task": 1})
FACE = dict(steps=10, batch_size=2, model=dict(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1), vgg=True,
            val_every=0, checkpoint_every=0, device="cpu", resources={**RESOURCES, "cpus_per_task": 1})


def run_snakemake(snakefile: Path, work: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    return snakemake(work, *args, snakefile=snakefile, timeout=timeout)


def smallest_demo_config() -> dict:
    """The demo's config with 3-4 s clips at 192 px and toy GANs; subjects renamed src/tgt."""
    demo = yaml.safe_load((ROOT / ".test/demo/config/config.yaml").read_text())
    (source, target), = [(t["source"], t["target"]) for t in demo["transfers"]]
    cfg = {**demo,
           "synth": {"src": {**demo["synth"][source], "seconds": 3}, "tgt": {**demo["synth"][target], "seconds": 4}},
           "subjects": {"src": {"video": "results/synth/src.mp4"}, "tgt": {"video": "results/synth/tgt.mp4"}},
           "transfers": [{"source": "src", "target": "tgt"}],
           "frames": {**demo["frames"], **FRAMES}, "pose": {**demo["pose"], "chunk_frames": 20},
           "train": {**demo["train"], **TRAIN}, "face": {**demo["face"], **FACE},
           "transfer": {**demo["transfer"], "resources": RESOURCES},
           "evaluate": {**demo["evaluate"], "ablation": True, "resources": RESOURCES}}
    return cfg


TARGETS = ["all", "results/transfer/src__tgt.mp4", "results/eval/tgt.csv"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("full")
    snakefile = ROOT / "Snakefile"
    work = base / "work"
    work.mkdir()
    cfg = smallest_demo_config()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.perf_counter()
    run_snakemake(snakefile, work, "--cores", "2", *TARGETS)
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_snakemake(snakefile, work, "--report", "results/report.html", *TARGETS)
    report_wall = time.perf_counter() - t0
    print(f"\nfull pipeline: {wall:.0f} s; report: {report_wall:.0f} s")
    print((work / "results/eval/tgt.md").read_text())
    return work, snakefile


@pytest.mark.slow
def test_full_pipeline_ends_with_transfer_video_evaluation_and_report(full_run):
    import av

    from steps.prepare.video import probe

    work = full_run[0]
    # playable: every frame decodes, H.264 in yuv420p (what browsers and phones play)
    with av.open(str(work / "results/transfer/src__tgt.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert decoded and all(f.shape == (96, 96, 3) for f in decoded) and np.std(decoded) > 5
    info = probe(work / "results/transfer/src__tgt.mp4")
    n_src = len(open_frames(work / "results/frames/src"))
    assert (info.n_frames, info.fps, info.width, info.height) == (n_src, 10.0, 96, 96)
    sbs = probe(work / "results/transfer/src__tgt_side_by_side.mp4")
    assert sbs.n_frames == n_src and sbs.height == 96 and sbs.width == 3 * 96
    assert len(list((work / "results/transfer/src__tgt_stills").glob("still_*.png"))) == 4
    per_frame = pd.read_csv(work / "results/transfer/src__tgt_frames.csv")
    assert len(per_frame) == n_src and set(per_frame.columns) >= {"held", "pose_from"}
    for out in ("face.pt", "face_loss.csv", "face_loss.png", "face_samples.png", "generator.pt",
                "no_temporal/generator.pt"):
        assert (work / "results/models/tgt" / out).stat().st_size > 0, out


@pytest.mark.slow
def test_evaluation_table_has_the_papers_rows_and_sane_values(full_run):
    work = full_run[0]
    df = pd.read_csv(work / "results/eval/tgt.csv")
    assert list(df["model"]) == ["no temporal smoothing", "temporal smoothing", "temporal smoothing + face GAN",
                                 "real frames"]
    gen = df.iloc[:3]
    # even toy models beat noise by far (SSIM ~0.3-0.4, ~17 dB here); noise scores SSIM ~0 and
    # PSNR ~8.5 dB on these frames (test_evaluate)
    assert gen["ssim"].between(0.1, 1).all() and gen["psnr_db"].between(12, 100).all(), gen
    assert gen["stlpips_vgg"].notna().all() and (gen["stlpips_vgg"] >= 0).all()
    assert (df["n_body"] > 0).all() and (df["temporal_real"] > 0).all()
    # the detector finds the real figure in every held-out frame, close to the input poses
    real = df.iloc[3]
    assert real["missed_body"] == 0 and real["pose_body_px"] < 5
    md = (work / "results/eval/tgt.md").read_text()
    assert "| temporal smoothing + face GAN |" in md and "not the paper's LPIPS" in md
    assert (work / "results/eval/tgt_samples.png").stat().st_size > 0


def report_data(html: str, name: str):
    """The JSON that report.html embeds as `var <name> = ...;` (Snakemake 9's report template)."""
    m = re.search(rf"<script id=\"{name}\">\s*var {name} = (.*?);\s*</script>", html, re.S)
    assert m, f"report.html has no embedded {name}"
    return json.loads(m[1])


# report item -> (category, rule, words of its caption)
REPORT_ITEMS = {
    "results/stats/src.png": ("Subject statistics", "subject_stats", "subject src over time"),
    "results/stats/tgt.png": ("Subject statistics", "subject_stats", "subject tgt over time"),
    "results/stats/src_coverage.png": ("Subject statistics", "subject_stats", "each part of subject src"),
    "results/stats/tgt_coverage.png": ("Subject statistics", "subject_stats", "each part of subject tgt"),
    "results/labels/src.mp4": ("Label maps", "render_labels", "Label maps of subject src"),
    "results/labels/tgt.mp4": ("Label maps", "render_labels", "Label maps of subject tgt"),
    "results/labels/normalized/src__tgt.mp4": ("Label maps", "render_labels_normalized", "normalization to target tgt"),
    "results/models/tgt/loss.png": ("Training", "train_generator", "held-out tail"),
    "results/models/tgt/samples.png": ("Training", "train_generator", "generated recurrently"),
    "results/models/tgt/face_loss.png": ("Training", "train_face", "Face GAN losses of target tgt"),
    "results/models/tgt/face_samples.png": ("Training", "train_face", "Face GAN on held-out frames of target tgt"),
    "results/transfer/src__tgt_side_by_side.mp4": ("Transfer", "transfer", "Side by side for src"),
    "results/eval/tgt.csv": ("Evaluation", "evaluate", "Reconstruction of target tgt"),
    "results/eval/tgt_samples.png": ("Evaluation", "evaluate", "Held-out frames of target tgt"),
    "results/eval/src__tgt_transfer.csv": ("Evaluation", "score_transfer", "The transfer src → tgt scored"),
}


@pytest.mark.slow
def test_report_embeds_every_item_with_its_caption(full_run):
    work = full_run[0]
    html = (work / "results/report.html").read_text()
    results = report_data(html, "results")
    stills = sorted(f"results/transfer/src__tgt_stills/{p.name}"
                    for p in (work / "results/transfer/src__tgt_stills").glob("still_*.png"))
    assert len(stills) == 4 and set(results) == set(REPORT_ITEMS) | set(stills), sorted(results)
    categories = report_data(html, "categories")
    for path, item in results.items():
        category, rule, caption = REPORT_ITEMS.get(path, ("Transfer", "transfer", "Stills of the transfer src"))
        assert item["job_properties"]["rule"] == rule, path
        assert any(path in files for files in categories[category].values()), (path, category)
        if caption:
            assert caption in item["caption"], (path, item["caption"])
        # the file itself is in the report, byte for byte
        assert base64.b64decode(item["data_uri"].split(",", 1)[1]) == (work / path).read_bytes(), path


@pytest.mark.slow
def test_rerun_has_nothing_to_do(full_run):
    work, snakefile = full_run
    dry = run_snakemake(snakefile, work, "-n", *TARGETS)
    assert "Nothing to be done" in dry.stdout


@pytest.mark.slow
def test_lint_is_clean_for_the_new_rules(full_run):
    work, snakefile = full_run
    r = run_snakemake(snakefile, work, "--lint")
    for rule in ("train_face", "transfer", "evaluate", "train_generator_no_temporal"):
        assert not re.search(rf"Rule {rule}\b", r.stdout), r.stdout[-4000:]


def test_face_gan_and_ablation_are_optional(tmp_path):
    """face.enabled false: no train_face job and transfer/evaluate do without face.pt; the
    ablation generator is trained only with evaluate.ablation."""
    snakefile = ROOT / "Snakefile"
    work = tmp_path / "work"
    work.mkdir()
    for face, ablation in ((False, False), (True, True)):
        cfg = {"subjects": {"src": {"video": "a.mp4"}, "tgt": {"video": "b.mp4"}},
               "transfers": [{"source": "src", "target": "tgt"}],
               "train": TRAIN, "face": {**FACE, "enabled": face}, "evaluate": {"ablation": ablation}}
        (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        (work / "a.mp4").touch()
        (work / "b.mp4").touch()
        planned = job_counts(run_snakemake(snakefile, work, "-n", "--forceall", *TARGETS[1:]).stdout)
        gans = {rule: planned.get(rule, 0) for rule in
                ("train_generator", "train_face", "train_generator_no_temporal", "transfer", "evaluate")}
        assert gans == {"train_generator": 1, "train_face": int(face), "train_generator_no_temporal": int(ablation),
                        "transfer": 1, "evaluate": 1}, planned
