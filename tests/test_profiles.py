"""profiles/default: Snakemake picks it up by itself and a failed job's error reaches the terminal."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, write_config

PLUGIN_MISSING = importlib.util.find_spec("snakemake_executor_plugin_slurm") is None


def plain_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """`snakemake --directory workdir ...` started from the clone, as the README says: no -s, no
    --profile. stdout and stderr together."""
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, timeout=300)


@pytest.fixture
def text_as_video(tmp_path) -> Path:
    video = tmp_path / "alice.mp4"
    video.write_text("this is a text file, not a video\n" * 50)
    write_config(tmp_path, {"subjects": {"alice": {"video": str(video)}}})
    return tmp_path


def test_failed_job_shows_its_log_on_the_terminal(text_as_video):
    target = "results/frames/alice/frames.mjpeg"
    run = plain_snakemake(text_as_video, "--cores", "1", target)
    assert run.returncode != 0
    assert "workflow specific profile" in run.stdout and "profiles/default" in run.stdout
    # the step's own message, from logs/decode_frames/alice.log, on the terminal
    assert "subject 'alice'" in run.stdout and "is not a readable video" in run.stdout
    assert not (text_as_video / target).exists()
    # without the profile Snakemake only points at the log: the profile is what shows it
    bare = plain_snakemake(text_as_video, "--cores", "1", "--workflow-profile", "none", target)
    assert bare.returncode != 0 and "is not a readable video" not in bare.stdout
    assert "is not a readable video" in (text_as_video / "logs/decode_frames/alice.log").read_text()


def test_default_profile_sets_only_what_every_run_wants():
    # It wins over --profile profiles/local or profiles/slurm key by key, so it must not set what
    # those choose differently (or --cores N / --jobs would be fought over).
    default = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    assert default["show-failed-logs"] is True
    for name in ("local", "slurm"):
        other = yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())
        for key, value in default.items():
            assert other.get(key, value) == value, (name, key)
    assert not {"cores", "jobs", "resources", "keep-going", "latency-wait", "executor"} & set(default)


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_default_profile_applies_with_a_user_profile(profile, text_as_video):
    if profile == "slurm" and PLUGIN_MISSING:
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
    run = plain_snakemake(text_as_video, "--profile", f"profiles/{profile}", "-n")
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"profiles/{profile} and workflow specific profile profiles/default" in run.stdout
    assert "decode_frames" in run.stdout
