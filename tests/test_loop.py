"""The one fit loop (steps.gan.loop.fit) and what a rerun reads back (steps.gan.checkpoints, steps.atomic):
each way a training ends, damaged files, a full disk, changed settings, too little data."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from steps.atomic import DamagedFile, save_torch, torch_to_file
from steps.render.inference import load_generator, read_meta
from steps.gan.pairs import split_frames
from steps.gan.train import TrainConfig, train
from test_train import TINY, _cli, _env, _sd_equal, cfg, read_csv, tiny_render, write_data
from conftest import ROOT


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


def ckpt_steps(folder) -> list[int]:
    return [int(p.stem.split("_")[1]) for p in sorted(folder.glob("step_*.pt"))]


# --- every exit of the loop ---------------------------------------------------------------------

def test_exit_at_the_end_and_at_max_steps(data, tmp_path):
    """max_steps: a checkpoint where the call stops, no model file; end: the model file."""
    frames_path, _, pose = data
    c = cfg(global_steps=5)
    r = train(c, frames_path, pose, tmp_path / "o", tmp_path / "ck", render=tiny_render, progress=False, max_steps=2)
    assert (r["ended"], r["step"], r["done"], r["signal"]) == ("max_steps", 2, False, 0)
    assert ckpt_steps(tmp_path / "ck") == [2] and not (tmp_path / "o" / "generator.pt").exists()
    r = train(c, frames_path, pose, tmp_path / "o", tmp_path / "ck", render=tiny_render, progress=False)
    assert (r["ended"], r["step"], r["done"]) == ("end", 5, True)
    assert read_meta(tmp_path / "o" / "generator.pt")["last_step"] == 5


def test_exit_on_the_collapse_guard_keeps_the_best(data, tmp_path):
    frames_path, _, pose = data
    c = cfg(global_steps=60, val_every=5, select_by="l1", lr_G=2e-2, lr_D=2e-2, decay_from=1.0,
            guard={"d_floor": 10.0, "window": 5, "patience": 1, "max_returns": 0, "lr_factor": 0.5})
    r = train(c, frames_path, pose, tmp_path / "o", tmp_path / "ck", render=tiny_render, progress=False)
    assert r["ended"] == "guard" and r["done"] and "best model" in r["stopped"]
    assert r["step"] < 60 and ckpt_steps(tmp_path / "ck")[-1] == r["step"]  # checkpointed where it stopped
    assert read_meta(tmp_path / "o" / "generator.pt")["step"] == r["best_step"]


class SignalAt:
    """A label renderer that sends this process `sig` when frame-pair sampling reaches a call:
    a preemption that arrives in the middle of a step, like SLURM's."""

    def __init__(self, sig, at: int):
        self.sig, self.at, self.calls = sig, at, 0

    def __call__(self, pose, i, h, w):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.sig)
        return tiny_render(pose, i, h, w)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGINT], ids=["SIGUSR1", "SIGINT"])
def test_exit_on_a_preemption_signal_checkpoints_the_step_and_resumes_exactly(data, tmp_path, sig):
    frames_path, _, pose = data
    c = cfg(global_steps=8, sync_every=4)
    straight = train(c, frames_path, pose, tmp_path / "a", tmp_path / "a_ck", render=tiny_render, progress=False)
    # each step renders the 2 label maps of its pair (batch 1): the 10th call is while step 5 loads
    handler = signal.getsignal(sig)
    r = train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=SignalAt(sig, 10), progress=False)
    assert (r["ended"], r["signal"], r["done"], r["step"]) == ("signal", sig, False, 5)
    assert ckpt_steps(tmp_path / "b_ck") == [5] and len(read_csv(tmp_path / "b_ck" / "loss.csv")) == 5
    assert signal.getsignal(sig) is handler  # the loop's handlers are gone again
    resumed = train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=tiny_render, progress=False)
    assert resumed["step"] == 8
    _sd_equal(straight["generator"].state_dict(), resumed["generator"].state_dict())


@pytest.mark.slow
def test_ctrl_c_on_the_cli_saves_a_checkpoint_and_exits_130(data, tmp_path):
    frames_path, pose_path, _ = data
    ckpt = tmp_path / "ckpt"
    p = subprocess.Popen(_cli(frames_path, pose_path, tmp_path / "out", ckpt, {**TINY, "global_steps": 100000},
                              "--threads", "1"), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 90
    while not ((ckpt / "loss.csv").exists() and len(read_csv(ckpt / "loss.csv")) >= 3):
        assert p.poll() is None and time.time() < deadline, p.communicate()[0][-3000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT, out[-3000:]
    assert "stopped by SIGINT" in out and "Traceback" not in out
    (saved,) = ckpt_steps(ckpt)
    assert saved >= 3 and saved == len(read_csv(ckpt / "loss.csv"))


# --- damaged files, a full disk -------------------------------------------------------------------

def truncate(path, keep: float = 0.5):
    b = path.read_bytes()
    path.write_bytes(b[: int(len(b) * keep)])


def test_a_truncated_model_file_is_named_with_what_to_do(data, tmp_path):
    frames_path, _, pose = data
    train(cfg(global_steps=1), frames_path, pose, tmp_path / "o", tmp_path / "ck", render=tiny_render, progress=False)
    gen = tmp_path / "o" / "generator.pt"
    truncate(gen)
    for load in (load_generator, read_meta):
        with pytest.raises(DamagedFile) as e:
            load(gen)
        assert str(gen) in str(e.value) and "rerun train_generator" in str(e.value)
        assert "PytorchStreamReader" not in str(e.value).split(";")[-1]  # torch's words only as the cause


def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before(data, tmp_path, caplog):
    frames_path, _, pose = data
    c = cfg(global_steps=6, checkpoint_every=2)
    straight = train(c, frames_path, pose, tmp_path / "a", tmp_path / "a_ck", render=tiny_render, progress=False)
    train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=tiny_render, progress=False, max_steps=4)
    assert ckpt_steps(tmp_path / "b_ck") == [2, 4]
    truncate(tmp_path / "b_ck" / "step_00000004.pt")  # a crash or a full disk while it was written
    with caplog.at_level(logging.WARNING):
        r = train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=tiny_render, progress=False)
    assert "step_00000004.pt is not a readable file" in caplog.text and "newest intact checkpoint" in caplog.text
    assert r["done"] and (tmp_path / "b_ck" / "step_00000004.pt.damaged").exists()
    _sd_equal(straight["generator"].state_dict(), r["generator"].state_dict())  # steps 3-6 again, the same
    assert [int(x["step"]) for x in read_csv(tmp_path / "b" / "loss.csv")] == list(range(1, 7))


def test_a_write_to_a_full_disk_names_the_path(tmp_path):
    """/dev/full answers every write with ENOSPC, as a full disk does; torch's own file writer
    would say "unexpected pos 163968 vs 163856"."""
    with open("/dev/full", "wb", buffering=0) as f, pytest.raises(OSError) as e:
        torch_to_file({"w": torch.zeros(100_000)}, f, tmp_path / "ck" / "step_00000004.pt")
    assert "no space left" in str(e.value) and "step_00000004.pt" in str(e.value)
    # and nothing is left under the real name when saving fails
    with pytest.raises(AttributeError):  # a local function cannot be pickled
        save_torch(tmp_path / "x.pt", {"f": lambda: 0})
    assert list(tmp_path.glob("*x*")) == []


# --- settings are part of a checkpoint's identity ---------------------------------------------------

def test_changed_settings_stop_before_training_and_a_bigger_budget_continues(data, tmp_path, caplog):
    frames_path, _, pose = data
    args = (frames_path, pose, tmp_path / "o", tmp_path / "ck")
    train(cfg(global_steps=3, lambda_l1=100.0), *args, render=tiny_render, progress=False)
    before = (tmp_path / "ck" / "step_00000003.pt").read_bytes()
    with pytest.raises(ValueError) as e:
        train(cfg(global_steps=3, lambda_l1=0.0, lr_G=1e-3), *args, render=tiny_render, progress=False)
    msg = str(e.value)
    assert "train.lambda_l1: 100.0 -> 0.0" in msg and "train.lr_G: 0.0004 -> 0.001" in msg
    assert str(tmp_path / "ck") in msg and "train.continue: true" in msg
    assert (tmp_path / "ck" / "step_00000003.pt").read_bytes() == before  # nothing trained
    # where and how often it runs do not count; the step budget continues the run
    r = train(cfg(global_steps=5, lambda_l1=100.0, sync_every=2, val_every=2, checkpoint_every=1), *args,
              render=tiny_render, progress=False)
    assert r["done"] and r["step"] == 5
    # continue: true goes on on purpose, with a warning listing the change, and records the new settings
    with caplog.at_level(logging.WARNING):
        r = train(cfg(global_steps=7, lambda_l1=0.0, **{"continue": True}), *args, render=tiny_render, progress=False)
    assert r["step"] == 7 and "train.lambda_l1: 100.0 -> 0.0" in caplog.text
    assert read_meta(tmp_path / "o" / "generator.pt")["train"]["lambda_l1"] == 0.0


# --- too little data ---------------------------------------------------------------------------------

def test_too_little_data_is_an_error_and_little_a_warning(caplog):
    c = TrainConfig.from_dict({"val_fraction": 0.1})  # the defaults: 50 training and 5 held-out frames
    with pytest.raises(ValueError) as e:
        split_frames(40, c, "results/frames/T/frames.npy")
    msg = str(e.value)
    assert all(s in msg for s in ("results/frames/T/frames.npy has 40 frames", "36 to train on", "4 held out",
                                  "train.min_train_frames = 50", "8 to 17 minutes"))
    with caplog.at_level(logging.WARNING):
        assert split_frames(80, c, "f.npy") == (72, 8)
    assert "little data" in caplog.text and "8 to 17 minutes" in caplog.text
    caplog.clear()
    assert split_frames(200, c, "f.npy") == (180, 20) and "little data" not in caplog.text


def test_a_five_frame_target_is_refused_before_training(tmp_path):
    frames_path, _, pose = write_data(tmp_path / "d", n=5)
    c = TrainConfig.from_dict({**TINY, "min_train_frames": 50, "min_val_frames": 5})
    with pytest.raises(ValueError, match="has 5 frames"):
        train(c, frames_path, pose, tmp_path / "o", tmp_path / "ck", render=tiny_render, progress=False)
    assert not (tmp_path / "ck").exists()


def test_the_loss_log_after_a_signal_matches_the_straight_run(data, tmp_path):
    """The rows of an interrupted-and-resumed run are the straight run's (read-back every 4 steps,
    the signal between read-backs)."""
    frames_path, _, pose = data
    c = cfg(global_steps=6, sync_every=4)
    train(c, frames_path, pose, tmp_path / "a", tmp_path / "a_ck", render=tiny_render, progress=False)
    train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=SignalAt(signal.SIGTERM, 6), progress=False)
    train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=tiny_render, progress=False)
    la, lb = read_csv(tmp_path / "a" / "loss.csv"), read_csv(tmp_path / "b" / "loss.csv")
    np.testing.assert_allclose([float(r["loss_G"]) for r in la], [float(r["loss_G"]) for r in lb], rtol=1e-5)
