"""DiffAugment of the discriminator's inputs: same parameters on real and fake, labels and images
moved together, colour on images only, gradients reach the generator."""
from __future__ import annotations

import pytest
import torch

from steps.gan.augment import apply, augment_pair, d_image_channels, draw_params

POLICY = "color,translation,cutout"
IMAGES = [6, 7, 8, 9, 10, 11]  # the temporal stack: [label_t, label_t1, img_t, img_t1]


def stack(b: int = 4, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 12, h, w, generator=g) * 2 - 1


def params(policy: str, p: float = 1.0, seed: int = 0, b: int = 4, **kw):
    return draw_params(b, 16, 16, policy, p, generator=torch.Generator().manual_seed(seed), **kw)


def test_identical_real_and_fake_stay_identical():
    x = stack()
    real, fake = augment_pair(x, x.clone(), POLICY, 1.0, IMAGES, generator=torch.Generator().manual_seed(1))
    assert torch.equal(real, fake)
    assert not torch.equal(real, x)


@pytest.mark.parametrize("policy", ["", "none"])
def test_no_policy_is_the_identity_without_a_copy(policy):
    real, fake = stack(), stack(seed=1)
    assert augment_pair(real, fake, policy, 1.0, IMAGES) == (real, fake)
    assert apply(real, params(policy), IMAGES) is real


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="flip"):
        params("color,flip")


@pytest.mark.parametrize("op", ["color", "translation", "cutout"])
def test_p_one_changes_every_sample_and_p_zero_none(op):
    x = stack()
    on = apply(x, params(op, 1.0, translation=0.5), IMAGES)  # a big shift: never a zero one in 4 samples
    assert all(not torch.equal(on[i], x[i]) for i in range(len(x)))
    assert torch.equal(apply(x, params(op, 0.0), IMAGES), x)


def test_translation_moves_a_pixel_in_labels_and_images_alike():
    x = torch.zeros(3, 12, 16, 16)
    x[:, :, 8, 5] = 1.0
    prm = params("translation", seed=3, b=3)
    out = apply(x, prm, IMAGES)
    for i, (dy, dx) in enumerate(prm.shift.tolist()):
        assert abs(dy) <= 2 and abs(dx) <= 2  # 0.125 * 16
        assert (out[i, :, 8 + dy, 5 + dx] == 1).all()      # every channel, labels and images
        assert out[i].sum() == 12                          # moved, not copied
    # a pixel shifted off the image is gone, not wrapped
    prm.shift[:] = torch.tensor([0, 16])
    assert apply(x, prm, IMAGES).abs().sum() == 0


def test_cutout_zeroes_a_box_on_all_channels():
    x = torch.ones(2, 12, 16, 16)
    prm = params("cutout", seed=4, b=2)
    out = apply(x, prm, IMAGES)
    for i, (y0, x0, y1, x1) in enumerate(prm.box.tolist()):
        inside = torch.zeros(16, 16, dtype=torch.bool)
        inside[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        assert (y1 - y0, x1 - x0) == (4, 4) and inside.any()
        assert (out[i][:, inside] == 0).all() and (out[i][:, ~inside] == 1).all()


def test_colour_changes_images_only():
    x = stack()
    out = apply(x, params("color"), IMAGES)
    assert torch.equal(out[:, :6], x[:, :6])
    assert (out[:, 6:] - x[:, 6:]).abs().amax((1, 2, 3)).min() > 1e-3
    # a slice names the same channels
    assert torch.equal(apply(x, params("color"), slice(6, 12)), out)


def test_colour_needs_whole_rgb_groups():
    with pytest.raises(ValueError, match="RGB groups"):
        apply(stack(), params("color"), [6, 7])


def test_gradient_flows_to_fake():
    real, fake = stack(), stack(seed=1).requires_grad_()
    _, out = augment_pair(real, fake, POLICY, 1.0, IMAGES, generator=torch.Generator().manual_seed(0))
    out.square().sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert torch.isfinite(fake.grad).all()


def test_seeded_generator_is_deterministic():
    x, y = stack(), stack(seed=1)
    a = augment_pair(x, y, POLICY, 0.5, IMAGES, generator=torch.Generator().manual_seed(7))
    b = augment_pair(x, y, POLICY, 0.5, IMAGES, generator=torch.Generator().manual_seed(7))
    c = augment_pair(x, y, POLICY, 0.5, IMAGES, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_dtype_and_channels_last_kept(dtype):
    x = stack(b=2, h=8, w=12).to(dtype).contiguous(memory_format=torch.channels_last)
    fake = x.clone().requires_grad_()
    real, out = augment_pair(x, fake, POLICY, 1.0, IMAGES, generator=torch.Generator().manual_seed(0))
    assert real.shape == out.shape == x.shape and real.dtype == out.dtype == dtype
    assert torch.equal(real, out)
    out.float().sum().backward()
    assert fake.grad.dtype == dtype


def test_d_image_channels_match_the_d_input_stack():
    assert d_image_channels(3, temporal=True) == IMAGES
    assert d_image_channels(6, temporal=True) == list(range(12, 18))  # with DensePose IUV
    assert d_image_channels(3, temporal=False) == [3, 4, 5]
