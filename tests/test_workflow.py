"""The Snakemake workflow end to end on generated dancers, reruns, lint, and bad input."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT, snakemake, write_config
from test_posetable import assert_pose_table_schema

FRAMES = {"fps": 10, "width": 192, "height": 192}


def render_dancer(path, preset: str, seconds: float = 3.0, seed: int = 0):
    """A rendered dancer video (steps.synth) that the real detector recognises."""
    subprocess.run([sys.executable, "-m", "steps.synth", "--preset", preset, "--seconds", str(seconds),
                    "--fps", str(FRAMES["fps"]), "--width", str(FRAMES["width"]),
                    "--height", str(FRAMES["height"]), "--seed", str(seed), "--video", str(path),
                    "--truth", str(path.with_suffix(".parquet"))], check=True, cwd=ROOT,
                   capture_output=True)
    return path


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table as {rule: count}."""
    block = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The first half of the pipeline run once with --cores 2 on two generated subjects."""
    work = tmp_path_factory.mktemp("pipeline")
    videos = {"src": render_dancer(work / "src.mp4", "source", seed=1),
              "tgt": render_dancer(work / "tgt.mp4", "target", seed=2)}
    write_config(work, {
        "subjects": {k: {"video": str(v)} for k, v in videos.items()},
        "transfers": [{"source": "src", "target": "tgt"}],
        "frames": FRAMES, "pose": {"chunk_frames": 12},
    })
    run = snakemake(work, "--cores", "2", "prepare")
    return work, run


@pytest.mark.slow
def test_end_to_end_outputs_and_logs(pipeline):
    work, run = pipeline
    counts = job_counts(run.stdout)
    assert counts["decode_frames"] == 2 and counts["normalize_pose"] == 1
    for subject in ("src", "tgt"):
        assert_pose_table_schema(work / f"results/pose/{subject}.parquet", 30)
        df = assert_pose_table_schema(work / f"results/pose_smooth/{subject}.parquet", 30)
        assert "filled" in df
        for out in (f"results/stats/{subject}.json", f"results/stats/{subject}.png",
                    f"results/stats/{subject}_frames.parquet", f"results/labels/{subject}.mp4",
                    f"logs/decode_frames/{subject}.log", f"logs/merge_pose/{subject}.log",
                    f"logs/subject_stats/{subject}.log"):
            assert (work / out).stat().st_size > 0, out
    # three chunks of 12 frames per subject ran as separate jobs; their files were temporary
    assert len(list((work / "logs/extract_pose/src").glob("*.log"))) == 3
    assert len(list((work / "logs/benchmarks/extract_pose").glob("src_*.tsv"))) == 3
    assert not list((work / "results/pose/chunks").rglob("*.npz"))
    assert_pose_table_schema(work / "results/normalized/src__tgt.parquet", 30)
    assert (work / "results/labels/normalized/src__tgt.mp4").stat().st_size > 0


@pytest.mark.slow
def test_nothing_to_do_then_forcerun_reruns_only_downstream(pipeline):
    work, _ = pipeline
    dry = snakemake(work, "-n", "prepare")
    assert "Nothing to be done" in dry.stdout
    # (the target first: --forcerun takes every name after it)
    run = snakemake(work, "prepare", "--cores", "2", "--forcerun", "normalize_pose")
    assert job_counts(run.stdout) == {"normalize_pose": 1, "render_labels_normalized": 1, "prepare": 1}
    # `all` goes on from there: training, face GAN, transfer, its score and evaluation are what is left
    left = job_counts(snakemake(work, "-n").stdout)
    assert left == {"train_generator": 1, "train_face": 1, "transfer": 1, "score_transfer": 1, "evaluate": 1,
                    "all": 1}, left


@pytest.mark.slow
def test_lint_is_clean(pipeline):
    work, _ = pipeline
    r = snakemake(work, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in r.stdout


def test_config_typo_is_named_in_a_few_lines(tmp_path):
    """A typo names the key, a near key and what is allowed, in a few lines (not the whole schema)."""
    write_config(tmp_path, {"subjects": {"a": {"video": "a.mp4"}}, "frames": {"fsp": 10}, "fames": {},
                            "smooth": {"method": "mean"}})
    r = snakemake(tmp_path, "-n", check=False)
    assert r.returncode != 0
    assert "config: unknown key 'fames' (did you mean 'frames'?)" in r.stdout
    assert "config.frames: unknown key 'fsp' (did you mean 'fps'?); allowed: fps, height, quality, resize, resources, width" in r.stdout
    assert "config.smooth.method: 'mean' is not allowed; one of: median, gaussian, one_euro, none" in r.stdout
    assert len(r.stdout.splitlines()) < 20 and "$schema" not in r.stdout


def test_unsafe_subject_name_is_rejected(tmp_path):
    write_config(tmp_path, {"subjects": {"a;rm -rf x": {"video": "a.mp4"}}})
    r = snakemake(tmp_path, "-n", check=False)
    assert r.returncode != 0 and "a;rm -rf x" in r.stdout


def test_transfer_with_unknown_subject_is_named(tmp_path):
    write_config(tmp_path, {"subjects": {"a": {"video": "a.mp4"}},
                            "transfers": [{"source": "a", "target": "bob"}]})
    r = snakemake(tmp_path, "-n", check=False)
    assert r.returncode != 0 and "transfers[0].target: subject 'bob'" in r.stdout


def test_missing_video_names_subject_and_file(tmp_path):
    write_config(tmp_path, {"subjects": {"alice": {"video": "videos/alice.mp4"}}})
    r = snakemake(tmp_path, "--cores", "1", check=False)
    assert r.returncode != 0
    assert "subject=alice" in r.stdout and "videos/alice.mp4" in r.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_not_a_video_names_subject_and_file_and_leaves_no_frames(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 100)
    write_config(tmp_path, {"subjects": {"carol": {"video": str(bad)}}})
    r = snakemake(tmp_path, "--cores", "1", check=False)
    assert r.returncode != 0
    log = (tmp_path / "logs/decode_frames/carol.log").read_text()
    assert "subject 'carol'" in log and str(bad) in log and "not a readable video" in log
    assert not list((tmp_path / "results").rglob("*.npy"))


@pytest.mark.slow
def test_video_without_a_person_fails_in_merge_pose_and_names_it(tmp_path, box_video):
    write_config(tmp_path, {"subjects": {"empty": {"video": str(box_video)}},
                            "frames": {"fps": 10, "width": 96, "height": 96}})
    r = snakemake(tmp_path, "--cores", "2", check=False)
    assert r.returncode != 0
    log = (tmp_path / "logs/merge_pose/empty.log").read_text()
    assert "subject 'empty': a person was detected in 0%" in log and str(box_video) in log
    assert not (tmp_path / "results/pose/empty.parquet").exists()


@pytest.mark.parametrize("example", ["real_clips.yaml", "gpu.yaml"])
def test_the_example_configs_plan_the_whole_pipeline(tmp_path, example):
    """config/examples/*.yaml, run as their headers say (their own working directory beside
    ../shared): schema-valid, only their own subjects, every stage planned."""
    wd = tmp_path / "edn-real"
    wd.mkdir()
    clips = tmp_path / "shared/data/clips"       # stand-ins: a dry run only needs the files to exist
    clips.mkdir(parents=True)
    for name in ("dancer_source.mp4", "model_target.mp4"):
        (clips / name).write_bytes(b"")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
           str(ROOT / "config/examples" / example), "--directory", str(wd), "-n"]
    r = subprocess.run(cmd, cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "../shared/data/clips/dancer_source.mp4" in r.stdout
    assert "demo_" not in r.stdout
    for rule in ("decode_frames", "train_generator", "train_face", "transfer", "evaluate"):
        assert re.search(rf"^{rule}\s+\d+$", r.stdout, re.M), rule


def test_config_readme_is_the_schema_and_every_key_is_described():
    """config/README.md is generated whole from the schema (one home for each default and its
    meaning): every section and every key has a description there, and the file is current."""
    from steps.settings import _rows, config_readme, schema

    for name, node in schema()["properties"].items():
        assert node.get("description", "").strip(), f"section {name} has no description in the schema"
        missing = [k for k, sub in _rows(node, "") if not sub.get("description", "").strip()]
        assert not missing, f"{name}: keys without a description in the schema: {missing}"
    assert (ROOT / "config/README.md").read_text() == config_readme(), \
        "config/README.md is stale: run `python -m steps.settings`"
