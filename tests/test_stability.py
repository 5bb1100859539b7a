"""Training that holds (issue: no collapse, the best model kept): pix2pixHD's initialisation,
the per-frame VGG weighting, separate learning rates, augmentation only in training, the best
held-out checkpoint as generator.pt, the collapse guard in a real run, resume with best/guard."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from steps.prepare.framestore import open_frames
from steps.render.inference import generate_sequence, load_generator
from steps.gan.train import train
from steps.gan.models import ModelConfig, build_discriminator, build_generator, init_weights
from test_train import H, W, cfg, tiny_render, write_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def conv_weights(m):
    return [mod.weight for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


def test_init_draws_every_conv_from_n_0_002_and_zero_biases():
    c = ModelConfig.paper(ngf=16, n_blocks=2, ndf=16)
    g, d = build_generator(c), build_discriminator(c)
    default_std = float(conv_weights(g)[1].detach().std())
    for m in (g, d):
        init_weights(m, 0.02)
        w = torch.cat([p.detach().flatten() for p in conv_weights(m)])
        assert abs(float(w.mean())) < 1e-3 and float(w.std()) == pytest.approx(0.02, rel=0.05)
        assert all(float(mod.bias.detach().abs().max()) == 0 for mod in m.modules()
                   if isinstance(mod, torch.nn.Conv2d) and mod.bias is not None)
    g2 = build_generator(c)
    init_weights(g2, 0.0)  # 0 keeps PyTorch's default
    assert float(conv_weights(g2)[1].detach().std()) == pytest.approx(default_std, rel=0.2) and default_std > 0.03


def test_vgg_over_a_pair_is_summed_per_frame_and_mean_is_half(data, tmp_path):
    pytest.importorskip("stlpips_pytorch")
    frames_path, _, pose = data
    first = {}
    for pair in ("sum", "mean"):
        train(cfg(global_steps=1, vgg=True, vgg_pair=pair), frames_path, pose, tmp_path / pair, tmp_path / pair / "ck",
              render=tiny_render, progress=False)
        first[pair] = float(rows(tmp_path / pair / "loss.csv")[0]["loss_G_vgg"])
    assert first["sum"] > 0 and first["sum"] == pytest.approx(2 * first["mean"], rel=1e-4)


def test_separate_learning_rates_are_logged_and_decay_together(data, tmp_path):
    frames_path, _, pose = data
    train(cfg(global_steps=10, lr_G=4e-4, lr_D=2e-4, decay_from=0.5), frames_path, pose, tmp_path, tmp_path / "ck",
          render=tiny_render, progress=False)
    r = rows(tmp_path / "loss.csv")
    lr_g, lr_d = (np.array([float(x[k]) for x in r]) for k in ("lr_G", "lr_D"))
    np.testing.assert_allclose(lr_g[:5], 4e-4)
    np.testing.assert_allclose(lr_g, 2 * lr_d)
    assert np.all(np.diff(lr_g[5:]) < 0) and lr_g[-1] == pytest.approx(4e-4 / 5)


def test_best_held_out_checkpoint_becomes_the_generator_and_validation_is_not_augmented(data, tmp_path):
    frames_path, _, pose = data
    c = cfg(global_steps=30, val_every=5, select_by="l1", augment={"policy": "color,translation,cutout", "p": 1.0})
    r = train(c, frames_path, pose, tmp_path / "out", tmp_path / "ck", render=tiny_render, progress=False)
    log = [x for x in rows(tmp_path / "out" / "loss.csv") if x["val_l1"]]
    assert [int(x["step"]) for x in log] == [5, 10, 15, 20, 25, 30]
    best = min(log, key=lambda x: float(x["val_l1"]))
    g, meta = load_generator(tmp_path / "out" / "generator.pt")
    assert meta["step"] == int(best["step"]) == r["best_step"] and meta["last_step"] == 30
    assert (tmp_path / "ck" / "best.pt").exists() and (tmp_path / "ck" / "step_00000030.pt").exists()
    # the logged held-out L1 is that of the plain generator on the whole tail: no augmentation
    frames = open_frames(frames_path)[:]
    tail = range(meta["held_out_from"], len(frames))
    out = list(generate_sequence(g, [tiny_render(pose, i, H, W) for i in tail]))
    l1 = np.mean([np.abs(o.astype(np.float32) - frames[i].astype(np.float32)).mean() / 255 for o, i in zip(out, tail)])
    assert l1 == pytest.approx(float(best["val_l1"]), rel=1e-4)


def collapse_cfg(**kw):
    # d_floor 10: the guard takes D as winning whenever it has seen `window` steps, so any
    # held-out setback triggers it (a real D winning outright is slow to provoke at toy size)
    return cfg(global_steps=60, val_every=5, select_by="l1", lr_G=2e-2, lr_D=2e-2, decay_from=1.0,
               guard={"d_floor": 10.0, "window": 5, "patience": 1, "max_returns": 1, "lr_factor": 0.5}, **kw)


def test_collapse_guard_goes_back_to_the_best_then_stops_keeping_it(data, tmp_path, caplog):
    frames_path, _, pose = data
    r = train(collapse_cfg(), frames_path, pose, tmp_path / "out", tmp_path / "ck", render=tiny_render, progress=False)
    assert r["done"] and "best model" in r["stopped"]
    log = rows(tmp_path / "out" / "loss.csv")
    events = [x for x in log if x["event"]]
    assert len(events) == 1 and events[0]["event"].startswith("back from step")
    back_to = int(events[0]["step"])
    after = [x for x in log if int(x["step"]) > back_to]
    assert after and float(after[0]["lr_G"]) == pytest.approx(2e-2 * 0.5)  # the learning rate was halved
    _, meta = load_generator(tmp_path / "out" / "generator.pt")
    vals = [x for x in log if x["val_l1"]]
    assert meta["step"] == int(min(vals, key=lambda x: float(x["val_l1"]))["step"])
    assert meta["stopped"] == r["stopped"] and "discriminator" in caplog.text.lower()
    assert meta["last_step"] < 60  # stopped early instead of training on


def test_resume_keeps_the_best_checkpoint_and_the_guards_state(data, tmp_path):
    frames_path, _, pose = data
    c = cfg(global_steps=20, val_every=5, checkpoint_every=5, select_by="l1",
            guard={"d_floor": 10.0, "window": 3, "patience": 3, "max_returns": 2})
    train(c, frames_path, pose, tmp_path / "a", tmp_path / "a_ck", render=tiny_render, progress=False)
    train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=tiny_render, progress=False, max_steps=12)
    mid = torch.load(tmp_path / "b_ck" / "step_00000012.pt", weights_only=True)
    assert mid["guard"]["best_step"] is not None and (tmp_path / "b_ck" / "best.pt").exists()
    train(c, frames_path, pose, tmp_path / "b", tmp_path / "b_ck", render=tiny_render, progress=False)
    a, b = (torch.load(p / "generator.pt", weights_only=True) for p in (tmp_path / "a", tmp_path / "b"))
    assert a["step"] == b["step"] and a["last_step"] == b["last_step"] == 20
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ga, gb = (torch.load(p / "step_00000020.pt", weights_only=True)["guard"] for p in (tmp_path / "a_ck", tmp_path / "b_ck"))
    assert ga == gb
