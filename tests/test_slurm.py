"""The workflow on a real one-node SLURM cluster through `--profile profiles/slurm`.

The cluster (munged + slurmctld + slurmd, no accounting, two fake GPUs) comes from
tests/cluster/slurm.py; tests/cluster/install_slurm.sh installs Debian's slurm-wlm and munge
beforehand (make test, .ci/run). Without them, or without root, the cluster tests skip and say
why; with EDN_REQUIRE_SLURM=1 they fail instead of skipping.
"""

from __future__ import annotations

import filecmp
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CLIPS, ROOT, write_config

PROFILE_SLURM = ROOT / "profiles" / "slurm"
PROFILE_LOCAL = ROOT / "profiles" / "local"
PLUGIN_MISSING = importlib.util.find_spec("snakemake_executor_plugin_slurm") is None


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location(
        "edn_test_slurm_cluster", Path(__file__).parent / "cluster" / "slurm.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


slurm = _load_cluster_module()


# -- helpers -----------------------------------------------------------------------------
def start_snakemake(workdir: Path, *args: str, snakefile: Path = ROOT / "Snakefile",
                    env: dict | None = None) -> subprocess.Popen:
    """Snakemake on `snakefile` in `workdir` (with workdir/config.yaml if there), started."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir)]
    if (workdir / "config.yaml").exists():
        cmd += ["--configfile", str(workdir / "config.yaml")]
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*cmd, *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    proc.args_shown = " ".join(args)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 170) -> str:
    """Wait for a started snakemake; its output (it must succeed)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"snakemake {proc.args_shown} timed out:\n{out[-8000:]}")
    assert proc.returncode == 0, f"snakemake {proc.args_shown} failed:\n{out[-8000:]}"
    return out


def run_on_cluster(workdir: Path, *args: str, **kwargs) -> str:
    return finish(start_snakemake(workdir, *args, **kwargs))


def profile_key(profile: Path, key: str) -> dict:
    return yaml.safe_load((profile / "config.yaml").read_text()).get(key) or {}


def slurm_args(cluster, fit: dict) -> list[str]:
    """The command-line additions that point profiles/slurm at the test cluster.

    --default-resources and --set-resources on the command line replace the profile's whole
    key, so the profile's own values are passed along, with the partition added and the GPU
    rules' CPU/memory requests shrunk to fit a small node (they keep their `gpu`)."""
    defaults = [f"{k}={v}" for k, v in profile_key(PROFILE_SLURM, "default-resources").items()]
    per_rule = [
        f"{rule}:{k}={fit.get(k, v)}"
        for rule, resources in profile_key(PROFILE_SLURM, "set-resources").items()
        for k, v in resources.items()
    ]
    return [
        "--profile", str(PROFILE_SLURM),
        "--default-resources", *defaults, f"slurm_partition={cluster.partition}",
        "--set-resources", *per_rule,
        # the profile's 40 s before the first status check suits a real cluster; the test's
        # jobs take 5-10 s. (The plugin keeps squeue while MinJobAge=300 >= 3 x this.)
        "--slurm-init-seconds-before-status-checks", "10",
        "--jobs", "4",
        "--latency-wait", "5",
    ]


def submitted_jobs(log: str) -> dict[str, str]:
    """{snakemake job id: SLURM job id} from the executor's 'submitted' lines."""
    return dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))


def slurm_states(cluster) -> dict[str, str]:
    """{SLURM job id: 'STATE|partition'}; finished jobs stay visible for MinJobAge (300 s)."""
    rows = cluster.run("squeue", "--states=all", "-h", "-o", "%i|%T|%P").split()
    return dict(row.split("|", 1) for row in rows)


def result_files(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*")
                  if p.is_file())


def tiny_pipeline_config(workdir: Path) -> None:
    """One subject, 2 s at 10 fps (one pose chunk): every rule of the first half runs once.
    The dancer is rendered by steps.synth when the project has it, else a real clip is used."""
    workdir.mkdir(parents=True, exist_ok=True)
    frames = {"fps": 10, "width": 128, "height": 128}
    if importlib.util.find_spec("steps.synth") is not None:
        video = workdir / "tgt.mp4"
        subprocess.run([sys.executable, "-m", "steps.synth", "--preset", "target", "--seconds",
                        "2", "--fps", "10", "--width", "192", "--height", "192", "--seed", "2",
                        "--video", str(video), "--truth", str(video.with_suffix(".parquet"))],
                       check=True, cwd=ROOT, capture_output=True)
        subject = {"video": str(video)}
    elif (CLIPS / "model_target_small.mp4").exists():
        subject = {"video": str(CLIPS / "model_target_small.mp4"), "end": 2}
    else:
        pytest.skip("no video: steps.synth is missing and ../shared/data/clips is absent")
    write_config(workdir, {"subjects": {"tgt": subject}, "frames": frames,
                           "pose": {"chunk_frames": 20}})


# -- profile checks that need no cluster -------------------------------------------------
@pytest.mark.slow
def test_profiles_parse_with_the_project_workflow(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")  # a dry run only needs the file to exist
    write_config(tmp_path, {"subjects": {"a": {"video": str(tmp_path / "a.mp4")}}})
    for profile in (PROFILE_LOCAL, PROFILE_SLURM):
        if profile == PROFILE_SLURM and PLUGIN_MISSING:
            continue
        out = run_on_cluster(tmp_path, "--profile", str(profile), "-n")
        assert "decode_frames" in out
    if not PLUGIN_MISSING:
        out = run_on_cluster(tmp_path, "--profile", str(PROFILE_SLURM), "--lint")
        assert "Congratulations, your workflow is in a good condition!" in out


def test_slurm_profile_uses_squeue_and_leaves_gpus_to_the_rules():
    config = yaml.safe_load((PROFILE_SLURM / "config.yaml").read_text())
    assert config["executor"] == "slurm"
    # the option of snakemake-executor-plugin-slurm 2.x (ExecutorSettings.status_command)
    assert config["slurm-status-command"] == "squeue"
    # the GPU count is each rule's own (train_generator starts one torchrun process per GPU of
    # train.gpus): the profile must not override it
    for rule, resources in config["set-resources"].items():
        assert not {"gpu", "gres"} & set(resources), rule
    # a default cpus_per_task would override every rule's threads
    assert "cpus_per_task" not in config["default-resources"]
    if not PLUGIN_MISSING:
        from snakemake_executor_plugin_slurm import ExecutorSettings

        fields = ExecutorSettings.__dataclass_fields__
        assert {"status_command", "init_seconds_before_status_checks", "requeue"} <= set(fields)


# -- the real cluster --------------------------------------------------------------------
@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node SLURM cluster (partition `edntest`, two fake GPUs); stopped after."""
    require = os.environ.get("EDN_REQUIRE_SLURM") == "1"
    reason = slurm.why_unavailable()
    if reason is None and PLUGIN_MISSING:
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


@pytest.mark.cluster
@pytest.mark.slow
def test_cluster_has_two_fake_gpus_and_no_accounting(slurm_cluster):
    info = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %T %G")
    assert info.split() == ["localhost", "idle", "gpu:2"]
    # the trap the profile avoids: without accounting sacct cannot report any job state
    res = subprocess.run(["sacct", "-X", "-n"], env=slurm_cluster.env, capture_output=True,
                         text=True)
    assert res.returncode != 0 and "disabled" in res.stdout + res.stderr


@pytest.mark.cluster
@pytest.mark.slow
def test_pipeline_on_slurm_matches_local_run(slurm_cluster, gpu_workflow_run, tmp_path):
    # (gpu_workflow_run: the GPU rule's run starts first and overlaps with this one)
    local = tmp_path / "local"
    tiny_pipeline_config(local)
    remote = tmp_path / "slurm"
    remote.mkdir()
    (remote / "config.yaml").write_text((local / "config.yaml").read_text())

    t0 = time.monotonic()
    on_slurm = start_snakemake(remote, *slurm_args(slurm_cluster, {}), env=slurm_cluster.env)
    run_on_cluster(local, "--profile", str(PROFILE_LOCAL), "--cores", "1")
    log = finish(on_slurm)
    print(f"pipeline on SLURM (with a local run beside it): {time.monotonic() - t0:.1f} s")

    # every job but the local `all` went through sbatch, each with its SLURM log kept
    jobs = submitted_jobs(log)
    rules = {m[1] for m in re.finditer(r"slurm_logs/rule_(\w+?)/", log)}
    assert {"decode_frames", "extract_pose", "merge_pose", "smooth_pose",
            "subject_stats"} <= rules, log[-4000:]
    slurm_logs = {p.stem for p in (remote / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(jobs.values()) <= slurm_logs
    # and SLURM ran them all to completion on the partition the test asked for
    states = slurm_states(slurm_cluster)
    for job_id in jobs.values():
        assert states[job_id] == f"COMPLETED|{slurm_cluster.partition}", (job_id, states)

    # the same results, byte for byte
    assert result_files(remote) == result_files(local) and result_files(local)
    for rel in result_files(local):
        assert filecmp.cmp(local / rel, remote / rel, shallow=False), rel


# The generator's training at toy size: enough for the real train_generator rule to run as a
# SLURM GPU job (the fake GPU has no CUDA behind it, so torch trains on the CPU). train.smk asks
# SLURM for train.resources.gpus GPUs: `gpus=1` is the one place here that names that key.
TINY_TRAIN = dict(global_steps=3, width=64, height=64, model=dict(ngf=4, n_down=2, n_blocks=1, ndf=4, n_layers_D=1,
                  num_D=1), vgg=False, workers=0, val_samples=1, val_every=0, checkpoint_every=0,
                  channels_last=False, min_train_frames=2, min_val_frames=1, resources=dict(gpus=1, threads=1))
# GPU rules' CPU, memory and time requests shrunk to fit the test node
SMALL = {"cpus_per_task": 1, "mem_mb": 1000, "runtime": 10}


@pytest.fixture(scope="module")
def gpu_workflow_run(slurm_cluster, tmp_path_factory):
    """The project's workflow up to train_generator, started on the cluster in the background:
    (workdir, process)."""
    work = tmp_path_factory.mktemp("gpu")
    tiny_pipeline_config(work)
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    write_config(work, {**cfg, "train": TINY_TRAIN})
    args = slurm_args(slurm_cluster, SMALL)
    proc = start_snakemake(work, *args, "results/models/tgt/generator.pt", env=slurm_cluster.env)
    yield work, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.mark.cluster
@pytest.mark.slow
def test_gpu_rule_gets_a_gpu_on_slurm(slurm_cluster, gpu_workflow_run):
    work, proc = gpu_workflow_run
    log = finish(proc, timeout=300)
    jobs = submitted_jobs(log)
    (job_dir,) = (work / ".snakemake" / "slurm_logs" / "rule_train_generator").iterdir()
    (job_log,) = job_dir.glob("*.log")
    job_id = job_log.stem
    assert job_id in jobs.values(), (job_id, jobs)
    # the training process saw the GPU SLURM gave the job (and trained, on the CPU, since the
    # test cluster's GPU is a fake one)
    train_log = (work / "logs" / "train" / "tgt.log").read_text()
    assert "CUDA_VISIBLE_DEVICES=0 device=cpu" in train_log, train_log[-3000:]
    assert (work / "results" / "models" / "tgt" / "generator.pt").stat().st_size > 0
    # the request reached SLURM as a GPU (sbatch --gpus=1) on the requested partition
    job = slurm_cluster.run("scontrol", "show", "job", job_id)
    assert "gres:gpu:1" in job and f"Partition={slurm_cluster.partition}" in job, job
    assert slurm_states(slurm_cluster)[job_id] == f"COMPLETED|{slurm_cluster.partition}"


@pytest.mark.cluster
@pytest.mark.slow
def test_a_rule_asking_two_gpus_gets_two_through_the_profile(slurm_cluster, tmp_path):
    """A one-rule workflow whose rule bears train_generator's name, so that the profile's settings
    for it apply, asks for 2 GPUs (as train.smk does with train.gpus: 2, starting two torchrun
    processes): the job must get both, not the 1 a profile-wide `gpu: 1` would give it."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        "rule train_generator:\n"
        "    output: 'gpus.txt'\n"
        "    resources: gpu=2\n"
        "    shell: 'echo $CUDA_VISIBLE_DEVICES $SLURM_GPUS_ON_NODE > {output}'\n"
    )
    log = run_on_cluster(tmp_path, *slurm_args(slurm_cluster, SMALL), snakefile=snakefile, env=slurm_cluster.env)
    (job_id,) = submitted_jobs(log).values()
    # what the job's process saw: both GPUs' indices, and SLURM's count of them
    assert (tmp_path / "gpus.txt").read_text().split() == ["0,1", "2"]
    job = slurm_cluster.run("scontrol", "show", "job", job_id)
    assert "gres:gpu:2" in job, job
