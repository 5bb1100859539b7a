"""Shared fixtures: generated videos, the real clips (skipped when absent), Snakemake runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "clips"


def clip(name: str) -> Path:
    """A real clip from ../shared/data/clips, or a clean skip when it is not there."""
    path = CLIPS / name
    if not path.exists():
        pytest.skip(f"real clip {path} not present (../shared/data/clips is absent)")
    return path


def moving_box_frames(n: int = 30, width: int = 160, height: int = 120) -> list[np.ndarray]:
    """Frames of a coloured box moving right: known content with no person in it."""
    frames = []
    for i in range(n):
        f = np.full((height, width, 3), 40, np.uint8)
        x = 10 + i * (width - 40) // max(1, n - 1)
        f[40:80, x:x + 20] = (200, 60, 30)
        frames.append(f)
    return frames


@pytest.fixture
def box_video(tmp_path) -> Path:
    from steps.prepare.video import write_video

    path = tmp_path / "box.mp4"
    write_video(path, moving_box_frames(), fps=10)
    return path


def write_config(workdir: Path, cfg: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, check: bool = True, snakefile: Path = ROOT / "Snakefile",
              timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a Snakefile (the project's) in `workdir` with workdir/config.yaml.

    stdout and stderr are captured together in `.stdout` (Snakemake writes to both); a failure
    (with check) shows the end of it and of every job log that holds an error."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile),
           "--configfile", str(workdir / "config.yaml"), "--directory", str(workdir), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                       timeout=timeout)
    if check and r.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2500:]}" for p in sorted((workdir / "logs").rglob("*.log"))
                         if "rror" in p.read_text())
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{r.stdout[-6000:]}\n{logs[-8000:]}")
    return r
