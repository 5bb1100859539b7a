"""The workflow on a real one-node SLURM cluster through `--profile profiles/slurm`.

The cluster (munged + slurmctld + slurmd, no accounting, one fake GPU) comes from
tests/cluster/slurm.py; tests/cluster/install_slurm.sh installs Debian's slurm-wlm and munge
beforehand (make test, .ci/run). Without them, or without root, the cluster test skips and says
why; with EDN_REQUIRE_SLURM=1 it fails instead of skipping.
"""

from __future__ import annotations

import filecmp
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE_SLURM = REPO / "profiles" / "slurm"
PROFILE_LOCAL = REPO / "profiles" / "local"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location(
        "edn_test_slurm_cluster", Path(__file__).parent / "cluster" / "slurm.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


slurm = _load_cluster_module()
plugin_missing = importlib.util.find_spec("snakemake_executor_plugin_slurm") is None

# A tiny workflow with the shape of the real one: independent per-subject jobs, a reduction,
# and a GPU rule named like the pipeline's (so profiles/slurm's set-resources give it `gpu: 1`)
# that logs the CUDA_VISIBLE_DEVICES it saw. Its output does not depend on that value, so the
# outputs of a local run and a SLURM run must be identical.
SNAKEFILE = textwrap.dedent(
    """
    SUBJECTS = ["alice", "bob"]


    rule all:
        input:
            "results/models/generator.pt",
        default_target: True


    rule decode_frames:
        output:
            "results/frames/{subject}.txt",
        log:
            "logs/decode_frames/{subject}.log",
        shell:
            "(for i in $(seq 1 20); do echo {wildcards.subject} $i; done > {output}) 2> {log}"


    rule subject_stats:
        input:
            expand("results/frames/{subject}.txt", subject=SUBJECTS),
        output:
            "results/stats/all.txt",
        log:
            "logs/subject_stats.log",
        shell:
            "wc -l {input} | sort > {output} 2> {log}"


    rule train_generator:
        input:
            "results/stats/all.txt",
        output:
            "results/models/generator.pt",
        log:
            "logs/train_generator.log",
        run:
            import os
            with open(log[0], "w") as f:
                print("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), file=f)
                print("SLURM_JOB_ID=" + os.environ.get("SLURM_JOB_ID", "<unset>"), file=f)
            with open(input[0]) as src, open(output[0], "w") as dst:
                dst.write("trained on\\n" + src.read())
    """
)


def write_workflow(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Snakefile").write_text(SNAKEFILE)
    return directory


def run_snakemake(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 150):
    res = subprocess.run(
        SNAKEMAKE + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"snakemake {' '.join(args)} failed:\n{res.stderr[-6000:]}"
    return res


def profile_default_resources(profile: Path) -> list[str]:
    """The profile's default-resources as `name=value` arguments (to extend, not replace)."""
    config = yaml.safe_load((profile / "config.yaml").read_text())
    return [f"{k}={v}" for k, v in (config.get("default-resources") or {}).items()]


def profile_set_resources(profile: Path, fit: dict) -> list[str]:
    """The profile's set-resources as `rule:name=value` arguments, with the values in `fit`
    replacing the profile's wherever the profile sets them (so its GPU rules fit a small node
    but keep their `gpu`)."""
    config = yaml.safe_load((profile / "config.yaml").read_text())
    return [
        f"{rule}:{k}={fit.get(k, v)}"
        for rule, resources in (config.get("set-resources") or {}).items()
        for k, v in resources.items()
    ]


def outputs(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in (directory / "results").rglob("*") if p.is_file())


# -- profile checks that need no cluster -------------------------------------------------
def test_profiles_parse(tmp_path):
    wf = write_workflow(tmp_path / "wf")
    for profile in (PROFILE_LOCAL, PROFILE_SLURM):
        if profile == PROFILE_SLURM and plugin_missing:
            continue
        res = run_snakemake(["--profile", str(profile), "-n", "--quiet", "rules"], wf)
        assert "train_generator" in res.stdout + res.stderr


def test_slurm_profile_uses_squeue_and_asks_gpus():
    config = yaml.safe_load((PROFILE_SLURM / "config.yaml").read_text())
    assert config["executor"] == "slurm"
    # the option of snakemake-executor-plugin-slurm 2.x (ExecutorSettings.status_command)
    assert config["slurm-status-command"] == "squeue"
    for rule in ("train_generator", "train_face", "transfer"):
        assert config["set-resources"][rule]["gpu"] == 1
    if not plugin_missing:
        from snakemake_executor_plugin_slurm import ExecutorSettings

        assert "status_command" in ExecutorSettings.__dataclass_fields__
        assert "init_seconds_before_status_checks" in ExecutorSettings.__dataclass_fields__


# -- the real cluster --------------------------------------------------------------------
@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node SLURM cluster (partition `edntest`, one fake GPU); stopped after."""
    require = os.environ.get("EDN_REQUIRE_SLURM") == "1"
    reason = slurm.why_unavailable()
    if reason is None and plugin_missing:
        reason = "snakemake-executor-plugin-slurm is not installed"
    if reason:
        if require:
            pytest.fail(f"EDN_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    cluster = slurm.SlurmCluster()
    try:
        cluster.start()
    except slurm.SlurmUnavailable as e:
        if require:
            pytest.fail(f"EDN_REQUIRE_SLURM=1 but the cluster did not start: {e}")
        pytest.skip(f"one-node SLURM could not start here: {e}")
    print(f"\none-node SLURM started in {cluster.start_seconds:.1f} s ({cluster.root})")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_cluster_has_fake_gpu_and_no_accounting(slurm_cluster):
    info = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %T %G")
    assert info.split() == ["localhost", "idle", "gpu:1"]
    # the trap the profile avoids: no accounting, so sacct cannot report job states
    res = subprocess.run(["sacct", "-X", "-n"], env=slurm_cluster.env, capture_output=True, text=True)
    assert res.returncode != 0 and "disabled" in (res.stdout + res.stderr)


def test_workflow_on_slurm_matches_local_run(slurm_cluster, tmp_path):
    local = write_workflow(tmp_path / "local")
    t0 = time.monotonic()
    run_snakemake(["--profile", str(PROFILE_LOCAL), "--cores", "2"], local)
    local_seconds = time.monotonic() - t0

    wf = write_workflow(tmp_path / "slurm")
    args = [
        "--profile", str(PROFILE_SLURM),
        # the test cluster's partition is not a default one: this override must reach sbatch.
        # --default-resources replaces the profile's whole key, so the profile's own values are
        # passed along.
        "--default-resources", *profile_default_resources(PROFILE_SLURM),
        f"slurm_partition={slurm_cluster.partition}",
        # the profile's GPU rules ask for 8 CPUs and 32 GB: shrink them to fit the test node
        # (a job step re-evaluates its resources, so a cap by --resources would not reach srun)
        "--set-resources", *profile_set_resources(
            PROFILE_SLURM, {"cpus_per_task": 1, "mem_mb": 1000, "runtime": 10}
        ),
        "--slurm-init-seconds-before-status-checks", "2",
        "--jobs", "4",
        "--latency-wait", "5",
    ]
    t0 = time.monotonic()
    res = run_snakemake(args, wf, env=slurm_cluster.env)
    slurm_seconds = time.monotonic() - t0
    log = res.stdout + res.stderr
    print(f"local run {local_seconds:.1f} s, SLURM run {slurm_seconds:.1f} s")

    # every job went through sbatch: four jobs, four SLURM job ids, each with its own log
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    assert len(submitted) == 4, log[-4000:]
    job_ids = set(submitted.values())
    slurm_logs = {p.stem for p in (wf / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert job_ids <= slurm_logs, (job_ids, slurm_logs)
    # and SLURM itself ran them to completion, on the requested partition
    rows = slurm_cluster.run("squeue", "--states=all", "-h", "-o", "%i|%T|%P").split()
    states = dict(row.split("|", 1) for row in rows)  # finished jobs stay for MinJobAge
    for job_id in job_ids:
        assert states[job_id] == f"COMPLETED|{slurm_cluster.partition}", states

    # the GPU rule got the fake GPU through --gpus=1 (from the profile's set-resources)
    gpu_log = (wf / "logs" / "train_generator.log").read_text()
    assert "CUDA_VISIBLE_DEVICES=0" in gpu_log, gpu_log
    gpu_job = re.search(r"SLURM_JOB_ID=(\d+)", gpu_log).group(1)
    assert gpu_job in job_ids
    assert "gpu" in slurm_cluster.run("scontrol", "show", "job", gpu_job).lower()

    # same outputs as the local run, byte for byte
    assert outputs(wf) == outputs(local) and outputs(wf)
    for rel in outputs(local):
        assert filecmp.cmp(local / rel, wf / rel, shallow=False), rel

