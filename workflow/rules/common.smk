# Shared by the stages' files: the config's validation, the environment jobs run in, the input
# functions several stages use, the list of final targets, and the shape of a rule's command (logged).
import os
import sys

import pyarrow.parquet as pq

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from steps.prepare.pose import chunk_ranges
from steps.prepare.video import fingerprint
from steps.settings import config_errors, with_preset


def checked_config():
    """The config with its preset applied, or a short error naming each bad key (the schema
    validator's own message prints the whole schema). Then validate() fills the schema's defaults."""
    full = with_preset(config)
    errors = config_errors(full)
    if errors:
        raise WorkflowError("\n".join(["The configuration has errors (config/README.md documents every key):", *errors]))
    config.clear()
    config.update(full)
    validate(config, "../schemas/config.schema.yaml")


checked_config()

SUBJECTS = sorted(config["subjects"])
for _i, _t in enumerate(config.get("transfers", [])):
    for _role in ("source", "target"):
        if _t[_role] not in config["subjects"]:
            raise ValueError(
                f"config transfers[{_i}].{_role}: subject {_t[_role]!r} is not under 'subjects' "
                f"(known: {', '.join(SUBJECTS)})"
            )
import json

DENSEPOSE = config["pose"]["backend"] == "densepose"
if config["labels"]["iuv"] != "none" and not DENSEPOSE:
    raise ValueError(
        f"config labels.iuv: {config['labels']['iuv']!r} needs DensePose's IUV images, "
        f"but pose.backend is {config['pose']['backend']!r} (set it to 'densepose', or labels.iuv to 'none')"
    )
# labels.iuv concat: the generator's label maps carry DensePose's I, U, V, so every rule that
# renders them for the generator also reads the subject's IUV store.
IUV_CONCAT = config["labels"]["iuv"] == "concat"


def iuv_input(role):
    """Input function: {"iuv": the IUV store of the subject in wildcard `role`} with labels.iuv
    concat, else nothing."""
    return lambda wildcards: {"iuv": f"results/densepose/{wildcards[role]}/iuv.npy"} if IUV_CONCAT else {}


def iuv_flag(wildcards, input):
    """--iuv for steps.gan.train/face/evaluate when the rule has an IUV input."""
    return f"--iuv {input.iuv}" if "iuv" in input.keys() else ""


PAIRS = [f"{t['source']}__{t['target']}" for t in config.get("transfers", [])]
TARGETS = sorted({t["target"] for t in config.get("transfers", [])})

def job_environment():
    """PATH for `python -m steps.<stage>` in every job, and EDN_PROJECT_DIR for the conda envs.

    The steps package is installed (pyproject.toml) into the environment that runs Snakemake
    and into each conda env, so jobs need no PYTHONPATH. envs/*.post-deploy.sh install it from
    EDN_PROJECT_DIR: Snakemake runs them from a copy under .snakemake/conda/, where nothing tells
    where the project is. Under --sdm conda each rule's env puts its own python first on PATH;
    otherwise the interpreter running Snakemake (the project's .venv) must come first, or a job
    would run whatever `python` the user's shell finds, one without the project's packages.
    """
    env = os.environ  # through a name: snakemake --lint takes os.environ[...] for a missing `envvars:`
    env["EDN_PROJECT_DIR"] = workflow.basedir
    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])


job_environment()


wildcard_constraints:
    subject="[A-Za-z0-9][A-Za-z0-9_-]*",
    chunk=r"\d+",
    source="[A-Za-z0-9][A-Za-z0-9_-]*",
    target="[A-Za-z0-9][A-Za-z0-9_-]*",


def subject_cfg(wildcards):
    return config["subjects"][wildcards.subject]


def subject_video(wildcards):
    return subject_cfg(wildcards)["video"]


def video_identity(path):
    """The video's content fingerprint (steps.prepare.video.fingerprint); a missing video is left
    to Snakemake's own missing-input error."""
    return fingerprint(path) if os.path.exists(path) else "missing"


def pose_chunk_files(wildcards):
    """One chunk file per `pose.chunk_frames` frames; known once the frames are decoded."""
    manifest = checkpoints.decode_frames.get(subject=wildcards.subject).output.manifest
    n = pq.read_metadata(manifest).num_rows
    return [
        f"results/pose/chunks/{wildcards.subject}/{i:04d}.npz"
        for i, _ in enumerate(chunk_ranges(n, config["pose"]["chunk_frames"]))
    ]


def chunk_bounds(wildcards):
    start = int(wildcards.chunk) * config["pose"]["chunk_frames"]
    return {"start": start, "end": start + config["pose"]["chunk_frames"]}


def prepare_targets():
    """Everything before training: poses, statistics, normalized poses, label-map previews."""
    targets = expand("results/stats/{subject}.json", subject=SUBJECTS)
    targets += expand("results/labels/{subject}.mp4", subject=SUBJECTS)
    targets += expand("results/normalized/{pair}.parquet", pair=PAIRS)
    targets += expand("results/labels/normalized/{pair}.mp4", pair=PAIRS)
    if DENSEPOSE:
        targets += expand("results/densepose/{subject}/index.parquet", subject=SUBJECTS)
    return targets


def all_targets():
    targets = prepare_targets()
    targets += expand("results/transfer/{pair}.mp4", pair=PAIRS)
    targets += expand("results/eval/{target}.csv", target=TARGETS)
    targets += expand("results/eval/{pair}_transfer.csv", pair=PAIRS)
    return targets


def settings(name, **change):
    """The config section `name` as one JSON argument (--settings) for its step, without the
    job's resources: every step reads its own section the same way (steps.settings fills the
    schema's defaults for keys a caller leaves out)."""
    return json.dumps({**{k: v for k, v in config[name].items() if k != "resources"}, **change})


def resources(name):
    """The `resources` sub-section of a stage's config section (threads, mem_mb, runtime; gpus, ...)."""
    return config[name]["resources"]


def logged(command):
    """A rule's shell command with its output in the rule's log, and the log's warnings (one
    format for every step: steps.logs) repeated on the terminal, since a job that warns succeeds.
    Snakemake's bash strict mode ends a failed command before the grep."""
    return command + " > {log} 2>&1; grep -h ' WARNING ' {log} >&2 || true"
