"""labels.reference: a reference frame of the person and its skeleton beside every pose, so that a
base of many people knows whose look to draw; kept in generator.pt and rendered again for transfer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from steps.gan.base import base_config, train_base
from steps.gan.train import train
from steps.prepare.labels import generator_renderer, reference_of
from steps.render.inference import label_renderer, load_generator, read_meta
from test_train import H, LABELS, TINY, W, cfg, make_frames, make_pose

REF_LABELS = {**LABELS, "background": True, "reference": True, "iuv": "none"}


def test_the_reference_is_the_frame_with_the_best_seen_body_and_its_skeleton():
    pose = make_pose(10)
    pose.parts["body"][:, :, 2] = 0.5
    pose.parts["body"][6, :, 2] = 0.9
    pose.parts["body"][8, :, 2] = 1.0  # the best, but in the held-out tail
    frames = make_frames(pose)
    ref = reference_of(frames, pose, 8, REF_LABELS)
    assert ref.shape == (H, W, 6) and ref.dtype == np.uint8
    np.testing.assert_array_equal(ref[..., :3], frames[6])
    np.testing.assert_array_equal(ref[..., 3:], generator_renderer(2, False, False)(pose, 6, H, W))


def test_the_renderer_puts_the_reference_before_the_background():
    pose = make_pose(4)
    ref = np.random.default_rng(0).integers(0, 255, (H, W, 6), dtype=np.uint8)
    bg = np.full((H, W, 3), 77, np.uint8)
    lab = generator_renderer(2, False, False, None, bg, ref)(pose, 1, H, W)
    assert lab.shape == (H, W, 12)
    np.testing.assert_array_equal(lab[..., 3:9], ref)
    np.testing.assert_array_equal(lab[..., 9:], bg)


@pytest.mark.slow
def test_a_base_with_references_and_a_target_from_it_transfer_with_the_targets_reference(tmp_path):
    poses = [make_pose(24), make_pose(20)]
    paths = []
    for k, (pose, tint) in enumerate(zip(poses, (0, 90))):
        frames = make_frames(pose)
        frames = np.clip(frames.astype(int) + tint, 0, 255).astype(np.uint8)  # two looks
        np.save(tmp_path / f"s{k}.npy", frames)
        paths.append(tmp_path / f"s{k}.npy")
    c = base_config({**TINY, "val_every": 2}, {"global_steps": 3, "val_subjects": 1})
    r = train_base(c, paths, poses, tmp_path / "_base", tmp_path / "_base/ck", REF_LABELS, progress=False)
    assert r["done"]
    base = read_meta(tmp_path / "_base/generator.pt")
    assert base["model"]["label_ch"] == 12 and base["reference"] is None  # a base keeps no one's reference
    with pytest.raises(ValueError, match="a base.*train a target from it"):
        label_renderer(base)
    target_pose = make_pose(24)
    np.save(tmp_path / "t.npy", make_frames(target_pose))
    t = train(cfg(init_from="base", finetune={"steps": 2}), tmp_path / "t.npy", target_pose, tmp_path / "t",
              tmp_path / "t/ck", REF_LABELS, progress=False, base_path=tmp_path / "_base/generator.pt")
    assert t["done"]
    g, meta = load_generator(tmp_path / "t/generator.pt")
    assert torch.is_tensor(meta["reference"]) and tuple(meta["reference"].shape) == (H, W, 6)
    lab = label_renderer(meta)(make_pose(3), 1)
    assert lab.shape == (meta["height"], meta["width"], 12)
    np.testing.assert_array_equal(lab[..., 3:6], np.asarray(meta["reference"])[..., :3])
    # a target without references cannot start from this base: named, both ways
    with pytest.raises(ValueError, match="labels.reference: True there, False here"):
        train(cfg(init_from="base", finetune={"steps": 2}), tmp_path / "t.npy", target_pose, tmp_path / "u",
              tmp_path / "u/ck", {**REF_LABELS, "reference": False}, progress=False,
              base_path=tmp_path / "_base/generator.pt")
