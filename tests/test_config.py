"""The user's config/config.yaml, the presets, the CPU guard, and every rule's section reaching its step.

The dry runs plan the real workflow on two dancers the project renders itself (rule render_synth),
so no video is needed; what a job would run is read from Snakemake's printed shell commands.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, snakemake
from steps.settings import config_errors, deep_merge, preset, section, with_preset

# The CPU rules and the config section each one gets as --settings (with what else they read).
CPU_RULES = { "extract_pose": "pose", "merge_pose": "pose", "smooth_pose": "smooth",
             "subject_stats": "stats", "normalize_pose": "normalize", "render_labels": "labels",
             "render_labels_normalized": "labels"}  # decode_frames ran already; its test is the shipped config's


def users_config(tmp_path: Path, **change) -> dict:
    """config/config.yaml as shipped, its two subjects pointed at rendered dancers."""
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    names = sorted(cfg["subjects"])
    cfg["synth"] = {n: {"preset": p, "seconds": 2} for n, p in zip(names, ("source", "target"))}
    cfg["subjects"] = {n: {"video": f"results/synth/{n}.mp4"} for n in names}
    cfg = deep_merge(cfg, change)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def planned_jobs(tmp_path: Path) -> dict[str, dict]:
    """rule -> {"resources": {...}, "cmd": shell command} of one planned job of each rule (dry run)."""
    out = snakemake(tmp_path, "-n", "-p", "--cores", "8").stdout
    jobs = {}
    for block in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", out):
        m = re.match(r"(?:rule|checkpoint) (\w+):", block)
        cmd = re.search(r"Shell command: (.*)", block)
        if not m or not cmd:
            continue
        res = re.search(r"resources: (.*)", block)
        resources = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs.setdefault(m.group(1), {"resources": resources, "cmd": cmd.group(1)})
    return jobs


def flag_json(cmd: str, flag: str) -> dict:
    words = shlex.split(cmd.split(" > ")[0])
    return json.loads(words[words.index(flag) + 1])


def without_resources(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "resources"}


def test_shipped_config_trains_the_papers_networks_on_one_gpu(tmp_path):
    users_config(tmp_path)
    jobs = planned_jobs(tmp_path)
    train, face = jobs["train_generator"], jobs["train_face"]
    assert flag_json(train["cmd"], "--settings") == without_resources(section("train"))  # the schema's = the paper's
    assert flag_json(train["cmd"], "--settings")["model"]["ngf"] == 64
    assert flag_json(face["cmd"], "--settings") == without_resources(section("face"))
    assert train["resources"]["gpu"] == face["resources"]["gpu"] == jobs["transfer"]["resources"]["gpu"] == "1"
    assert flag_json(jobs["decode_frames"]["cmd"], "--settings") == without_resources(
        section("frames", {"fps": 30, "width": 384, "height": 512}))


def test_cpu_preset_gives_the_cpu_sizes_and_explicit_keys_still_win(tmp_path):
    users_config(tmp_path, preset="cpu", train={"global_steps": 1234, "model": {"n_blocks": 5}})
    jobs = planned_jobs(tmp_path)
    train = flag_json(jobs["train_generator"]["cmd"], "--settings")
    cpu = preset("cpu")
    assert train["model"] == {**section("train")["model"], **cpu["train"]["model"], "n_blocks": 5}
    assert train["global_steps"] == 1234 and train["vgg"] is False and train["val_every"] == 100
    assert jobs["train_generator"]["resources"]["gpu"] == jobs["train_face"]["resources"]["gpu"] == "0"
    assert flag_json(jobs["train_face"]["cmd"], "--settings")["model"] == {**section("face")["model"], **cpu["face"]["model"]}
    frames = flag_json(jobs["decode_frames"]["cmd"], "--settings")
    assert (frames["width"], frames["height"], frames["fps"]) == (192, 256, 15)


def test_every_cpu_rule_hands_its_whole_section_to_its_step(tmp_path):
    """Each key of the section, the schema's defaults and a changed value alike, reaches the step:
    a new key cannot be dropped on the way. Resources stay with the rule and reach Snakemake."""
    changed = {"frames": {"fps": 12, "width": 96, "height": 128, "resources": {"mem_mb": 1234}},
               "pose": {"max_side": 999, "min_person_rate": 0.2}, "smooth": {"window": 7}, "stats": {"band": 0.03},
               "normalize": {"smooth_window": 3}, "labels": {"thickness": 3}}
    cfg = users_config(tmp_path, preset="cpu", **changed)
    # decoded first, so that the pose chunks (known from the frame count) are planned too
    snakemake(tmp_path, "--cores", "2", *(f"results/frames/{n}/frames.mjpeg" for n in cfg["subjects"]))
    jobs = planned_jobs(tmp_path)
    full = with_preset(cfg)
    for rule, name in CPU_RULES.items():
        job = jobs[rule]
        assert flag_json(job["cmd"], "--settings") == without_resources(section(name, full[name])), rule
        assert job["resources"]["mem_mb"] == str(section(name, full[name])["resources"]["mem_mb"]), rule
    assert flag_json(jobs["normalize_pose"]["cmd"], "--stats-settings") == without_resources(section("stats", full["stats"]))


@pytest.mark.parametrize("module,name", [("frames", "frames"), ("pose", "pose"), ("smooth", "smooth"), ("stats", "stats"),
                                         ("normalize", "normalize"), ("labels", "labels")])
def test_every_key_of_a_cpu_section_is_read_by_its_step(module, name):
    """A key in the schema that no code reads is a setting that silently does nothing."""
    readers = {"pose": ["steps/prepare/backends/options.py", "workflow/rules/common.smk"],
               "labels": ["workflow/rules/common.smk", "steps/gan/target.py", "steps/gan/train.py"]}
    text = "".join((ROOT / p).read_text() for p in [f"steps/prepare/{module}.py", *readers.get(name, [])])
    for key in section(name):
        if key != "resources":
            # read: section["key"], .get("key"), key=..., or named in a `for k in ("key", ...)` that reads [k]
            read = re.search(rf"""\[["']{key}["']\]|\.get\(["']{key}["']|\b{key}=|for \w+ in \([^)]*["']{key}["']""",
                             text)
            assert read, f"{name}.{key} is read nowhere in steps/prepare/{module}.py"


def test_every_rule_has_a_benchmark_and_a_log():
    rules = "".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    for block in re.split(r"\n(?=(?:rule|checkpoint) )", rules)[1:]:
        name = block.split()[1].rstrip(":")
        if name in ("all", "prepare"):
            continue
        assert "benchmark:" in block and "log:" in block and "conda:" in block, name
        assert "    shell:\n        logged(" in block, f"{name}: its command is not in the one shape (common.smk logged)"
        assert re.search(r"mem_mb=\d", block) is None, f"{name} hard-codes mem_mb"


def test_presets_are_valid_and_documented():
    doc = (ROOT / "config/README.md").read_text()
    for name in ("paper", "cpu"):
        assert f"`{name}`" in doc
        assert config_errors(with_preset({"preset": name, "subjects": {"a": {"video": "a.mp4"}}})) == []
    with pytest.raises(ValueError, match="'gpu' is not a preset"):
        with_preset({"preset": "gpu"})


# ---- the CPU guard: the paper's networks on a CPU stop before their first step -------------------

def tiny_store(tmp_path: Path, h: int, w: int, n: int = 6) -> Path:
    path = tmp_path / "frames.npy"
    np.save(path, np.zeros((n, h, w, 3), np.uint8))
    return path


def test_papers_networks_on_a_cpu_stop_with_the_estimate_and_the_key(tmp_path):
    frames = tiny_store(tmp_path, 512, 384)
    cmd = [sys.executable, "-m", "steps.gan.train", "--frames", str(frames), "--pose", str(tmp_path / "none.parquet"),
           "--out-dir", str(tmp_path / "out"), "--ckpt-dir", str(tmp_path / "ck"), "--settings", '{"device": "cpu"}']
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    m = re.search(r"about ([\d.]+) hours", r.stderr)
    assert m and float(m.group(1)) > 24, r.stderr[-2000:]  # 20,000 steps of the paper's networks: days
    assert "train.cpu_hours_limit = 8 h" in r.stderr and "preset: cpu" in r.stderr
    assert not (tmp_path / "ck").exists() and not (tmp_path / "out").exists()  # stopped before anything


def test_cpu_estimate_scales_with_steps_and_size_and_null_means_no_limit():
    from steps.gan.budget import TooSlowForCPU, check_cpu_hours, train_step_flops
    from steps.gan.models import ModelConfig

    paper = ModelConfig.paper()
    small = ModelConfig.paper(**preset("cpu")["train"]["model"])
    assert train_step_flops(paper, 512, 256) == pytest.approx(4 * train_step_flops(paper, 256, 128), rel=0.05)
    assert train_step_flops(paper, 256, 192) > 20 * train_step_flops(small, 256, 192)  # 24x
    assert "about 100.0 hours" in check_cpu_hours(100.0, None, "x", "train.cpu_hours_limit")
    assert "about 6.0 minutes" in check_cpu_hours(0.1, 8, "x", "train.cpu_hours_limit")
    with pytest.raises(TooSlowForCPU, match="face.cpu_hours_limit = 2 h"):
        check_cpu_hours(3.0, 2, "this face training", "face.cpu_hours_limit")


def test_face_gan_guard_reads_the_generators_size(tmp_path):
    gen = tmp_path / "generator.pt"
    torch.save({"height": 512, "width": 384, "state_dict": {}}, gen)
    from steps.gan.face import FaceTrainConfig, cpu_hours

    line = cpu_hours(FaceTrainConfig.from_dict({"device": "cpu"}), gen, None)
    assert "this face training on this CPU: about" in line
    small = FaceTrainConfig.from_dict({"steps": 10, "model": preset("cpu")["face"]["model"]})
    from steps.gan.budget import TooSlowForCPU

    with pytest.raises(TooSlowForCPU):
        cpu_hours(FaceTrainConfig.from_dict({}), gen, 0.01)
    assert cpu_hours(small, gen, 0.01)  # 10 small steps: well under the limit
