"""The GPU-speed paths of the training loop, on CPU: data held on the device, losses read back
every few steps, torch.compile with CUDA graphs and an on-disk cache. Each must give the same
training as the plain path (or fall back cleanly where CUDA is missing)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from steps.gan.compile import compile_mode
from steps.gan.pairs import DeviceData, FrameData, StepSampler, batches, data_fits_device
from steps.gan.train import train
from test_train import _sd_equal, cfg, read_csv, tiny_render, write_data

H = W = 64
LOSSES = ["loss_D", "loss_D_real", "loss_D_fake", "loss_G", "loss_G_gan", "loss_G_fm", "l1", "lr_G", "lr_D"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


def test_device_data_gives_the_loaders_batches(data):
    frames_path, _, pose = data
    fd = FrameData(frames_path, pose, H, W, tiny_render)
    n_train = 18
    dd = DeviceData(fd, n_train, torch.device("cpu"), torch.contiguous_format)
    assert dd.labels.dtype == torch.uint8 and dd.labels.shape == (n_train, H, W, 3)
    c = cfg(batch_size=3)
    sampler = StepSampler(n_train - 1, 3, 0, 5, 9)
    on_device = list(batches(fd, dd, sampler, c, torch.device("cpu"), torch.contiguous_format))
    loaded = list(batches(fd, None, sampler, c, torch.device("cpu"), torch.contiguous_format))
    assert len(on_device) == len(loaded) == 4
    for a, b in zip(on_device, loaded):
        assert [t.shape for t in a] == [(3, 3, H, W)] * 4
        for ta, tb in zip(a, b):
            torch.testing.assert_close(ta, tb, rtol=0, atol=0)


def test_data_on_device_auto_is_off_on_cpu_and_the_setting_wins():
    cpu = torch.device("cpu")
    assert not data_fits_device(10, 8, 8, 6, cpu, "auto")
    assert data_fits_device(10, 8, 8, 6, cpu, True)
    assert not data_fits_device(10, 8, 8, 6, cpu, False)


def test_device_data_and_sparse_read_back_train_exactly_as_the_loader(data, tmp_path):
    """7 steps reading the losses back every 3 with the data held as tensors, against every step
    with the loader: the same weights and the same loss.csv, row for row (with a validation at
    step 4, off the sync grid, and a checkpoint at 6)."""
    frames_path, _, pose = data
    base = dict(global_steps=7, val_every=4, checkpoint_every=6)
    a = train(cfg(**base, data_on_device=False, sync_every=1), frames_path, pose, tmp_path / "a", tmp_path / "a_ck",
              render=tiny_render, progress=False)
    b = train(cfg(**base, data_on_device=True, sync_every=3), frames_path, pose, tmp_path / "b", tmp_path / "b_ck",
              render=tiny_render, progress=False)
    _sd_equal(a["generator"].state_dict(), b["generator"].state_dict())
    _sd_equal(a["discriminator"].state_dict(), b["discriminator"].state_dict())
    la, lb = read_csv(tmp_path / "a" / "loss.csv"), read_csv(tmp_path / "b" / "loss.csv")
    assert [r["step"] for r in lb] == [str(i) for i in range(1, 8)]
    for ra, rb in zip(la, lb):
        assert {k: ra[k] for k in LOSSES + ["val_l1", "val_ssim"]} == {k: rb[k] for k in LOSSES + ["val_l1", "val_ssim"]}
    assert lb[3]["val_l1"] and not lb[4]["val_l1"]  # the validation row is step 4's
    assert sorted(p.name for p in (tmp_path / "b_ck").glob("step_*.pt")) == ["step_00000006.pt", "step_00000007.pt"]


def test_compile_setting_maps_to_torch_modes():
    assert compile_mode(False) is None and compile_mode("off") is None
    assert compile_mode(True) == "default"
    assert compile_mode("reduce-overhead") == "reduce-overhead"


@pytest.mark.slow
def test_compiled_training_with_cuda_graph_mode_falls_back_on_cpu_and_reuses_its_disk_cache(data, tmp_path, caplog):
    """compile reduce-overhead on CPU: Inductor compiles (CUDA graphs are skipped), the losses
    match eager's (weights are not compared: Adam's first steps turn rounding-size gradient
    differences into lr-size updates), the log says which mode and that the cache was cold; a second run
    in a fresh compile state finds it warm and takes its graphs from the disk cache."""
    frames_path, _, pose = data
    cache = tmp_path / "cache"
    base = dict(global_steps=2, model=dict(ngf=4, n_down=1, n_blocks=1, ndf=4, n_layers_D=1, num_D=1))
    train(cfg(**base), frames_path, pose, tmp_path / "e", tmp_path / "e_ck", render=tiny_render, progress=False)
    torch._dynamo.reset()
    with caplog.at_level(logging.INFO, logger="train"):
        train(cfg(**base, compile="reduce-overhead", compile_cache=str(cache)), frames_path, pose,
                      tmp_path / "c1", tmp_path / "c1_ck", render=tiny_render, progress=False)
    text = caplog.text
    assert "torch.compile mode reduce-overhead (CUDA graphs skipped on CPU)" in text
    assert "cold: the first steps compile" in text and "first compiled step took" in text
    assert any(cache.rglob("*")), "nothing was written to the compile cache"
    le, lc = read_csv(tmp_path / "e" / "loss.csv"), read_csv(tmp_path / "c1" / "loss.csv")
    np.testing.assert_allclose([float(r["loss_G"]) for r in lc], [float(r["loss_G"]) for r in le], rtol=1e-3)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train"):
        train(cfg(**base, compile=True, compile_cache=str(cache)), frames_path, pose, tmp_path / "c2", tmp_path / "c2_ck",
              render=tiny_render, progress=False)
    assert "warm: compiled graphs from an earlier run are reused" in caplog.text
    assert counters["inductor"]["fxgraph_cache_hit"] > 0, caplog.text
