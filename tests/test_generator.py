"""Inference (CPU, untrained tiny networks): the device pipeline of generate_sequence gives the
very frames of the plain per-frame host loop, face refinement included, and reads the precision
a model was trained in from its file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from steps.render.inference import FaceRefiner, apply_face, generate_sequence, to_tensor, to_uint8, trained_bf16
from steps.gan.models import IMG_CH, LABEL_CH, FaceGenerator, FaceModelConfig, ModelConfig, build_generator

H, W, N, FACE = 32, 64, 5, 16
TINY = dict(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1)


def host_loop(model, labels, temporal):
    """generate_sequence as it was before the device pipeline: one frame at a time through the
    host (the reference semantics)."""
    prev, out = None, []
    with torch.no_grad():
        for lab in labels:
            y = to_tensor(lab)[None]
            if temporal:
                y = torch.cat([y, prev if prev is not None else torch.zeros_like(y[:, :IMG_CH])], 1)
            prev = model(y).float()
            out.append(to_uint8(prev[0]))
    return out


def generator(temporal: bool, label_ch: int) -> nn.Module:
    torch.manual_seed(0)
    return build_generator(ModelConfig.paper(temporal=temporal, label_ch=label_ch, **TINY)).eval()


def face_generator() -> FaceGenerator:
    """G_f with a random head: an untrained one adds a zero residual, which would prove nothing."""
    torch.manual_seed(1)
    g = FaceGenerator(FaceModelConfig(**TINY)).eval()
    nn.init.normal_(g.net.head[1].weight, 0.0, 0.05)
    return g


def label_maps(label_ch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (H, W, label_ch), np.uint8) for _ in range(N)]


def face_boxes() -> np.ndarray:
    """A box per frame, moving, touching the frame's edges at both ends."""
    x0 = np.linspace(0, W - FACE, N).round().astype(int)
    y0 = np.linspace(H - FACE, 0, N).round().astype(int)
    return np.stack([x0, y0, x0 + FACE, y0 + FACE], 1)


@pytest.mark.parametrize("temporal", [True, False], ids=["temporal", "single-frame"])
@pytest.mark.parametrize("lag", [0, 2, N + 3])
def test_pipeline_gives_the_host_loops_frames(temporal, lag):
    g, labels = generator(temporal, LABEL_CH), label_maps(LABEL_CH)
    out = list(generate_sequence(g, labels, "cpu", temporal=temporal, lag=lag))
    ref = host_loop(g, labels, temporal)
    assert len(out) == N and out[0].shape == (H, W, 3) and out[0].dtype == np.uint8
    for a, b in zip(out, ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("temporal", [True, False], ids=["temporal", "single-frame"])
@pytest.mark.parametrize("label_ch", [LABEL_CH, LABEL_CH + 3], ids=["skeleton", "skeleton+iuv"])
def test_face_on_the_device_equals_apply_face_on_each_frame(temporal, label_ch):
    g, labels, face_g, boxes = generator(temporal, label_ch), label_maps(label_ch), face_generator(), face_boxes()
    out = list(generate_sequence(g, labels, "cpu", temporal=temporal, face=FaceRefiner(face_g, boxes)))
    plain = host_loop(g, labels, temporal)
    ref = [apply_face(face_g, f, lab, box) for f, lab, box in zip(plain, labels, boxes)]
    for a, b, p, (x0, y0, x1, y1) in zip(out, ref, plain, boxes):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, p)  # the face changed something ...
        outside = np.ones((H, W), bool)
        outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(a[outside], p[outside])  # ... in its box only


def test_recurrence_sees_the_unrefined_frame():
    """G is conditioned on its own previous output, not on the face-refined frame (as before)."""
    g, labels = generator(True, LABEL_CH), label_maps(LABEL_CH)
    with_face = list(generate_sequence(g, labels, "cpu", face=FaceRefiner(face_generator(), face_boxes())))
    without = list(generate_sequence(g, labels, "cpu"))
    x0, y0, x1, y1 = face_boxes()[-1]
    box = np.zeros((H, W), bool)
    box[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(with_face[-1][~box], without[-1][~box])


def test_precision_is_read_from_the_file():
    assert trained_bf16({"train": {"bf16": True}})
    assert not trained_bf16({"train": {"bf16": False}})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_cuda_pipeline_is_close_to_the_cpu_one(bf16):
    g, labels, face_g = generator(True, LABEL_CH), label_maps(LABEL_CH), face_generator()
    cpu = list(generate_sequence(g, labels, "cpu", face=FaceRefiner(face_g, face_boxes())))
    face = FaceRefiner(face_g.cuda(), face_boxes(), bf16)
    gpu = list(generate_sequence(g.cuda(), labels, "cuda", bf16=bf16, face=face))
    # TF32 / bf16 convolutions move pixels by a few levels; a misplaced face, a wrong layout or a
    # pinned buffer reused too early moves them by tens
    diff = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(cpu, gpu)]
    assert len(gpu) == N and max(diff) < (8 if bf16 else 3), diff
