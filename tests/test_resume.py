"""Resume equals a straight run, for every trainer through the one fit loop: the target's generator
across its two phases, the base of several subjects, and the face GAN. A run stopped twice and
resumed ends with the same G and D, bit for bit, and the same loss log, as one that never stopped."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from steps.gan.base import base_config, train_base
from steps.gan.face import FaceTrainConfig, train_face
from steps.gan.train import train
from test_face import TINY as FACE_TINY
from test_face import dancer  # noqa: F401 (a fixture)
from test_warm_start import other  # noqa: F401 (a fixture)
from test_train import LABELS, TINY, cfg, data, read_csv, tiny_render, write_data  # noqa: F401 (data: a fixture)


def trainer(kind: str, request):
    """(run(out, ckpt, max_steps), total steps, model file name, loss log name) of one trainer."""
    if kind == "target":  # 4 global steps at half size, then 4 of the local enhancer
        frames_path, _, pose = request.getfixturevalue("data")
        c = cfg(global_steps=4, local_steps=4, checkpoint_every=2)
        return (lambda out, ck, n: train(c, frames_path, pose, out, ck, render=tiny_render, progress=False,
                                         max_steps=n)), 8, "generator.pt", "loss.csv"
    if kind == "base":
        (fa, _, pa), (fb, _, pb) = request.getfixturevalue("data"), request.getfixturevalue("other")
        c = base_config(TINY, {"global_steps": 6, "val_max_frames": 3})
        return (lambda out, ck, n: train_base(c, [fa, fb], [pa, pb], out, ck, LABELS, render=tiny_render,
                                              progress=False, max_steps=n)), 6, "generator.pt", "loss.csv"
    d, _, pose = request.getfixturevalue("dancer")
    c = FaceTrainConfig.from_dict({**FACE_TINY, "steps": 6})
    return (lambda out, ck, n: train_face(c, d / "frames.npy", pose, d / "g/generator.pt", out, ck, max_steps=n,
                                          progress=False)), 6, "face.pt", "face_loss.csv"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["target", "base", "face"])
def test_resume_equals_a_straight_run(kind, request, tmp_path):
    run, steps, model, losses = trainer(kind, request)
    straight = run(tmp_path / "a", tmp_path / "a/ck", None)
    assert straight["done"] and straight["step"] == steps
    first = run(tmp_path / "b", tmp_path / "b/ck", 3)
    assert not first["done"] and first["step"] == 3 and not (tmp_path / "b" / model).exists()
    assert run(tmp_path / "b", tmp_path / "b/ck", 2)["step"] == 5
    resumed = run(tmp_path / "b", tmp_path / "b/ck", None)
    assert resumed["done"] and resumed["step"] == steps
    a, b = (torch.load(tmp_path / x / model, weights_only=True) for x in ("a", "b"))
    for part in ("state_dict", "D"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    la, lb = read_csv(tmp_path / "a" / losses), read_csv(tmp_path / "b" / losses)
    assert [r["step"] for r in lb] == [str(i) for i in range(1, steps + 1)]
    np.testing.assert_allclose([float(r["loss_G"]) for r in la], [float(r["loss_G"]) for r in lb], rtol=1e-6)
