"""labels.background: the target's static background as 3 more input channels of the generator,
estimated from its training frames, kept in generator.pt, and rendered again for transfer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from steps.render.inference import label_renderer, load_generator, read_meta
from steps.prepare.labels import generator_renderer, static_background
from steps.gan.train import train
from test_train import H, LABELS, W, cfg, make_frames, make_pose

BG_LABELS = {**LABELS, "background": True}


def true_background() -> np.ndarray:
    """make_frames' background: a gradient the person moves over."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([60 + xx, 80 + yy // 2, 120 + 0 * xx], -1).astype(np.uint8)


def test_the_background_is_the_scene_without_the_person():
    pose = make_pose(24)
    frames = make_frames(pose)
    est = static_background(frames, pose, 20)
    err = np.abs(est.astype(int) - true_background()).max(-1)
    plain = np.abs(np.median(frames[:20], 0) - true_background()).max(-1)
    # measured: mean 0.4, max 9 (the strip the swaying figure never leaves is inpainted);
    # a plain median keeps the figure there (mean 27, max 145)
    assert err.mean() < 2 and err.max() < 20
    assert plain.max() > 100


def test_only_the_training_frames_are_read():
    pose = make_pose(24)
    frames = make_frames(pose)
    spoiled = frames.copy()
    spoiled[20:] = 255  # the held-out tail
    np.testing.assert_array_equal(static_background(frames, pose, 20), static_background(spoiled, pose, 20))


def test_the_renderer_appends_the_background_at_the_label_maps_size():
    pose = make_pose(4)
    bg = true_background()
    r = generator_renderer(2, False, False, None, bg)
    lab = r(pose, 1, H // 2, W // 2)
    assert lab.shape == (H // 2, W // 2, 6)
    np.testing.assert_array_equal(lab[..., :3], generator_renderer(2, False, False)(pose, 1, H // 2, W // 2))
    assert np.abs(lab[..., 3:].astype(int) - bg[::2, ::2]).max() <= 2  # area-resized gradient


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("bg")
    pose = make_pose(24)
    frames = make_frames(pose)
    np.save(d / "frames.npy", frames)
    r = train(cfg(global_steps=3), d / "frames.npy", pose, d / "out", d / "ck", BG_LABELS, progress=False)
    return d, frames, pose, r


def test_the_model_keeps_its_background_and_transfer_renders_it(trained):
    d, frames, pose, r = trained
    assert r["done"]
    g, meta = load_generator(d / "out" / "generator.pt")
    assert meta["model"]["label_ch"] == 6 and g.body[1].weight.shape[1] == 6 + 3  # + the previous frame
    n_train = meta["held_out_from"]
    kept = np.asarray(meta["background"])
    np.testing.assert_array_equal(kept, static_background(frames, pose, n_train))
    lab = label_renderer(meta)(pose, 5)  # what evaluate, the face GAN and transfer render
    assert lab.shape == (H, W, 6)
    np.testing.assert_array_equal(lab[..., 3:], kept)


def test_a_base_keeps_no_background_and_says_so(trained):
    d, *_ = trained
    meta = read_meta(d / "out" / "generator.pt")
    with pytest.raises(ValueError, match="labels.background on several subjects"):
        label_renderer({**meta, "background": None})


def test_a_start_without_the_background_names_labels_background(trained, tmp_path):
    d, frames, pose, _ = trained
    with pytest.raises(ValueError) as e:
        train(cfg(init_from=str(d / "out" / "generator.pt")), d / "frames.npy", pose, tmp_path, tmp_path / "ck",
              {**LABELS, "background": False}, progress=False)
    msg = str(e.value)
    assert "labels.background: True there, False here" in msg
    assert "label_ch" not in msg or "labels.iuv and labels.background" in msg


def test_the_background_is_stored_loadable_with_weights_only(trained):
    d, *_ = trained
    assert torch.is_tensor(read_meta(d / "out" / "generator.pt")["background"])


@pytest.mark.parametrize("kind", ["global", "local"])
def test_a_composite_generator_shows_the_background_where_its_mask_is_off(kind):
    from steps.gan.models import ModelConfig, build_generator, label_channels

    mc = ModelConfig.paper(ngf=8, n_down=2, n_blocks=1, n_blocks_local=1, kind=kind,
                           label_ch=label_channels(False, True), composite=True)
    g = build_generator(mc).eval()
    head = g.head[1] if kind == "global" else g.up[-2]
    assert head.out_channels == 4 and mc.background_at == 3
    x = torch.rand(1, mc.g_in, 32, 32) * 2 - 1
    with torch.no_grad():
        head.weight[3].zero_()
        head.bias[3] = -20.0   # mask 0: the background channels of the input, exactly
        np.testing.assert_allclose(g(x), x[:, 3:6], atol=1e-6)
        head.bias[3] = 20.0    # mask 1: the drawn RGB
        assert (g(x) - x[:, 3:6]).abs().mean() > 0.05


def test_a_moving_background_is_a_warning_naming_the_frames(caplog):
    pose = make_pose(24)
    frames = make_frames(pose)
    with caplog.at_level("WARNING", logger="labels"):
        static_background(frames, pose, 20, what="static.npy")
    assert not caplog.records  # the figure moves, the gradient does not
    panned = np.stack([np.roll(f, 5 * i, axis=1) for i, f in enumerate(frames)])  # a camera panning
    with caplog.at_level("WARNING", logger="labels"):
        static_background(panned, pose, 20, what="panned.npy")
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert msg.startswith("panned.npy:") and "labels.background: false" in msg
