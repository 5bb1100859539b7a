"""Starting from other weights (train.init_from) and the multi-subject base (steps.gan.base, train_base)."""
from __future__ import annotations

import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from steps.prepare.framestore import open_frames, save_frames
from steps.gan.base import base_config, train_base
from steps.gan.checkpoints import load_start
from steps.render.inference import read_meta
from steps.gan.pairs import FrameData, StepSampler, Subjects
from steps.gan.train import Phase, build_phase, train
from test_loop import SignalAt
from test_train import H, LABELS, TINY, W, _sd_equal, cfg, read_csv, tiny_render, write_data
from conftest import ROOT


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """A second subject: the same dance, other colours (the inverted frames)."""
    d = tmp_path_factory.mktemp("other")
    frames_path, pose_path, pose = write_data(d, n=20)
    save_frames(255 - open_frames(frames_path)[:], frames_path.parent, fps=10)
    return frames_path, pose_path, pose


@pytest.fixture(scope="module")
def donor(data, tmp_path_factory):
    """A generator trained 4 steps: the weights to start from."""
    d = tmp_path_factory.mktemp("donor")
    frames_path, _, pose = data
    train(cfg(global_steps=4), frames_path, pose, d, d / "ck", render=tiny_render, progress=False)
    return d / "generator.pt"


def test_init_from_loads_g_and_d_and_the_model_records_it(data, donor, tmp_path):
    frames_path, _, pose = data
    c = cfg(global_steps=100, init_from=str(donor), finetune={"steps": 3, "warmup": 2}, decay_from=1.0)
    start = load_start(c.init_from, "train", None)
    _, g, d, *_ = build_phase(c, Phase("global", 0, 3, H, W), 0, None, False, False, torch.device("cpu"),
                              torch.contiguous_format, start)
    saved = torch.load(donor, weights_only=True)
    _sd_equal(g.state_dict(), saved["state_dict"])
    _sd_equal(d.state_dict(), saved["D"])
    r = train(c, frames_path, pose, tmp_path, tmp_path / "ck", render=tiny_render, progress=False)
    meta = read_meta(tmp_path / "generator.pt")
    assert r["done"] and meta["last_step"] == 3  # the fine-tune's steps, not global_steps
    assert meta["init_from"]["path"] == str(donor) and meta["init_from"]["step"] == saved["step"]
    lr = [float(x["lr_G"]) for x in read_csv(tmp_path / "loss.csv")]
    assert lr == pytest.approx([4e-4 / 3, 8e-4 / 3, 4e-4], rel=1e-5)  # warm-up over 2 steps, then train.lr_G


def test_a_checkpoint_is_a_starting_point_too(data, donor, tmp_path):
    frames_path, _, pose = data
    ck = sorted((donor.parent / "ck").glob("step_*.pt"))[-1]
    r = train(cfg(init_from=str(ck), finetune={"steps": 2}), frames_path, pose, tmp_path, tmp_path / "ck",
              render=tiny_render, progress=False)
    assert r["done"] and read_meta(tmp_path / "generator.pt")["init_from"]["path"] == str(ck)


def test_a_start_that_does_not_fit_names_both_settings(data, donor, tmp_path):
    frames_path, _, pose = data
    wider = {**TINY["model"], "ngf": 16}
    with pytest.raises(ValueError) as e:
        train(cfg(model=wider, init_from=str(donor)), frames_path, pose, tmp_path, tmp_path / "ck",
              render=tiny_render, progress=False)
    assert str(donor) in str(e.value) and "train.model.ngf: 8 there, 16 here" in str(e.value)
    with pytest.raises(ValueError, match="labels.face: True there, False here"):  # the donor: the schema's labels
        train(cfg(init_from=str(donor)), frames_path, pose, tmp_path, tmp_path / "ck", labels={"face": False},
              render=tiny_render, progress=False)
    assert not list((tmp_path / "ck").glob("step_*.pt"))  # refused before training


def test_a_fine_tune_resumes_exactly_after_a_kill(data, donor, tmp_path):
    frames_path, _, pose = data
    c = cfg(init_from=str(donor), finetune={"steps": 6, "warmup": 3, "lr_G": 1e-3})
    straight = train(c, frames_path, pose, tmp_path / "a", tmp_path / "a_ck", render=tiny_render, progress=False)
    r = train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=SignalAt(signal.SIGTERM, 6),
              progress=False)
    assert r["ended"] == "signal" and r["step"] == 3
    resumed = train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=tiny_render, progress=False)
    assert resumed["step"] == 6
    _sd_equal(straight["generator"].state_dict(), resumed["generator"].state_dict())
    _sd_equal(straight["discriminator"].state_dict(), resumed["discriminator"].state_dict())
    # the resumed model still says where it started from
    assert read_meta(tmp_path / "b" / "generator.pt")["init_from"]["path"] == str(donor)


# --- the base ------------------------------------------------------------------------------------

def test_the_bases_batches_come_from_every_subject_and_stay_within_one(data, other):
    (fa, _, pa), (fb, _, pb) = data, other
    datas = [FrameData(fa, pa, H, W, tiny_render), FrameData(fb, pb, H, W, tiny_render)]
    pairs = Subjects(datas, [18, 15])  # 24 and 20 frames, 20% held out: 19 and 16 to train on
    assert len(pairs) == 18 + 15
    assert pairs.locate(0) == (0, 0) and pairs.locate(17) == (0, 17) and pairs.locate(18) == (1, 0)
    seen = [pairs.locate(j)[0] for k in range(40) for j in StepSampler(pairs.sizes, 2, 0, k, k + 1).indices(k)]
    assert set(seen) == {0, 1} and 0.3 < np.mean(seen) < 0.7
    # pair 18 is subject 1's frames 0 and 1 (the inverted colours), never subject 0's last frame
    y_t, y_t1, x_t, x_t1 = pairs[18]
    expected = torch.from_numpy(open_frames(fb)[:][1]).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(x_t1, expected)


def test_a_base_validates_every_subject_and_a_target_starts_from_it(data, other, tmp_path):
    (fa, _, pa), (fb, _, pb) = data, other
    c = base_config({**TINY, "val_every": 2}, {"global_steps": 4})
    r = train_base(c, [fa, fb], [pa, pb], tmp_path / "_base", tmp_path / "_base/ck", LABELS, render=tiny_render,
                   progress=False)
    assert r["done"]
    base = torch.load(tmp_path / "_base" / "generator.pt", weights_only=True)
    assert "D" in base and base["last_step"] == 4
    import cv2
    grid = cv2.imread(str(tmp_path / "_base" / "samples.png"))
    assert grid.shape == (2 * 2 * H, 3 * W, 3)  # two held-out rows of each subject
    # a target starts from it with init_from: base; one of other settings is refused naming both
    t = train(cfg(init_from="base", finetune={"steps": 2}), fa, pa, tmp_path / "t", tmp_path / "t/ck", LABELS,
              render=tiny_render, progress=False, base_path=tmp_path / "_base" / "generator.pt")
    assert t["done"] and read_meta(tmp_path / "t" / "generator.pt")["init_from"]["init_from"] == "base"
    with pytest.raises(ValueError, match="train.model.n_blocks: 2 there, 3 here"):
        train(cfg(init_from="base", model={**TINY["model"], "n_blocks": 3}), fa, pa, tmp_path / "u",
              tmp_path / "u/ck", LABELS, render=tiny_render, progress=False,
              base_path=tmp_path / "_base" / "generator.pt")


def test_init_from_base_makes_train_generator_wait_for_train_base(data, tmp_path):
    """The rules on their own (common.smk, base.smk, train.smk), frames and poses in place."""
    import yaml

    frames_path, pose_path, _ = data
    for s in ("A", "B", "T"):
        (tmp_path / f"results/frames/{s}").mkdir(parents=True)
        for name in ("frames.mjpeg", "manifest.parquet"):
            (tmp_path / f"results/frames/{s}" / name).symlink_to(frames_path.parent / name)
        (tmp_path / "results/pose_smooth").mkdir(exist_ok=True)
        (tmp_path / f"results/pose_smooth/{s}.parquet").symlink_to(pose_path)
    config = {"subjects": {s: {"video": f"{s}.mp4"} for s in ("A", "B", "T")}, "labels": LABELS,
              "base": {"subjects": ["A", "B"]}, "train": {"init_from": "base"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text('configfile: "config.yaml"\n' + "".join(
        f'include: "{ROOT}/workflow/rules/{r}.smk"\n' for r in ("common", "base", "train")))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path),
           "-n", "-p", "results/models/T/generator.pt"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "rule train_base" in out and "rule train_generator" in out
    assert "--base results/models/_base/generator.pt" in out
    assert "results/frames/A/frames.mjpeg results/frames/B/frames.mjpeg" in out


def test_the_warm_start_benchmark_runs_quick(tmp_path):
    """benchmarks/warm_start.py --quick: synthetic dancers, a base of two, the third from the base
    and from scratch, the table, the curves, the transfer of a base subject's dance scored."""
    import json

    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/warm_start.py"), "--quick", "--out", str(tmp_path),
                        "--threads", "1", "--source", "dancer"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "warm_start.json").read_text())
    assert res["people"] == 2 and res["speedup"] >= 0 and 0 <= res["person_found"] <= 1
    assert res["keypoints_ratio"] > 0 or np.isnan(res["keypoints_ratio"])
    assert [x["step"] for x in res["curves"]["scratch"]] == [2, 4, 6, 8]
    assert [x["step"] for x in res["curves"]["warm"]] == [2, 4]
    assert all(np.isfinite(x["face_ssim"]) and 0 < x["ssim"] < 1 for c in res["curves"].values() for x in c)
    assert "from the base" in (tmp_path / "warm_start.md").read_text()
    assert (tmp_path / "warm_start.png").stat().st_size > 0
    assert read_meta(tmp_path / "warm" / "generator.pt")["init_from"]["init_from"] == "base"
    for run in ("scratch", "warm"):  # all 30 transfer frames scored (toy models: few, if any, with a person)
        t = res["info"]["transfer"][run]
        assert t["frames"] == 30 and 0 <= t["found"] <= 30 and t["temporal_ratio"] > 0
    assert "person found" in (tmp_path / "warm_start.md").read_text()
    still = cv2.imread(str(tmp_path / "transfer_stills.png"))
    assert still.shape[:2] == (4 * 64, 2 * 3 * 64)  # 4 stills (source | label | result), both runs side by side
    # the base alone on the new target, before any fine-tune step
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/warm_start.py"), "--quick", "--out", str(tmp_path),
                        "--threads", "1", "--base-model", str(tmp_path / "_base" / "generator.pt"), "--zero-shot-only"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    zs = json.loads((tmp_path / "zero_shot.json").read_text())
    assert 0 < zs["ssim"] < 1 and zs["l1"] > 0 and (tmp_path / "zero_shot.png").stat().st_size > 0


# --- a base of many people: even draws, repeated frames, skipped subjects, bounded validation -----

def test_every_subject_is_drawn_evenly_however_long_its_clip():
    sampler = StepSampler([1000, 10, 50], 4, 0, 0, 500)
    drawn = np.array([j for k in range(500) for j in sampler.indices(k)])
    share = np.array([(drawn < 1000).mean(), ((drawn >= 1000) & (drawn < 1010)).mean(), (drawn >= 1010).mean()])
    np.testing.assert_allclose(share, 1 / 3, atol=0.04)
    assert drawn.min() >= 0 and drawn.max() < 1060
    assert len(set(drawn[(drawn >= 1000) & (drawn < 1010)].tolist())) == 10  # the short clip's every pair is used
    # one subject: the draws of a target are what they always were (resumes and old runs agree)
    one = StepSampler(1000, 4, 0, 0, 5)
    assert one.indices(3) == np.random.default_rng([0, 3]).integers(0, 1000, 4).tolist()


def test_repeated_frames_of_a_low_rate_video_make_no_pair():
    from steps.gan.pairs import temporal_pairs

    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    frames = np.repeat(distinct, [2, 2, 1, 3, 2], axis=0)  # 10 frames: a 8-fps video decoded at 15 fps
    pairs = temporal_pairs(frames, 10)
    np.testing.assert_array_equal(pairs, [[0, 2], [2, 4], [4, 5], [5, 8]])
    assert not any(np.array_equal(frames[a], frames[b]) for a, b in pairs)
    np.testing.assert_array_equal(temporal_pairs(distinct, 5), [[0, 1], [1, 2], [2, 3], [3, 4]])


def test_a_base_trains_on_the_distinct_pairs_skips_a_short_clip_and_validates_a_few(data, other, tmp_path, caplog):
    (fa, _, pa), (fb, _, _) = data, other
    slow = tmp_path / "slow.npy"  # subject b filmed at half the rate: every frame twice
    np.save(slow, np.repeat(open_frames(fb)[:], 2, axis=0)[:20])
    short = tmp_path / "short.npy"
    np.save(short, open_frames(fa)[:][:2])
    from steps.gan.target import open_target
    from test_train import make_pose

    c = base_config({**TINY, "min_train_frames": 4}, {"global_steps": 2, "val_max_frames": 3})
    with caplog.at_level("WARNING", logger="train"):
        t = open_target(c, {**LABELS, "background": False, "reference": False, "iuv": "none"},
                        [(fa, pa, None), (slow, make_pose(20), None), (short, make_pose(2), None)], tiny_render,
                        val_subjects=1)
    assert len(t.subjects) == 2 and "short.npy" in caplog.text and "skipped from the base" in caplog.text
    slow_pairs = t.subjects[1].pairs
    assert len(slow_pairs) == t.subjects[1].n_train // 2 - 1 + t.subjects[1].n_train % 2
    assert (np.diff(slow_pairs, axis=1) == 2).all()
    assert t.validated == [0] and len(t.subjects[0].tail) == 3
