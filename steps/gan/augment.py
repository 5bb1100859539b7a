"""Differentiable augmentation of the discriminator's inputs (DiffAugment, Zhao et al. 2020,
with ADA's per-sample probability p, Karras et al. 2020).

A target video gives only a few hundred frames, so D can memorise them and win outright. Here
both D's real and fake inputs are augmented with the SAME random parameters for pair i, and the
ops are differentiable, so G is trained through them and the augmentation does not leak into
the generated frames. Apply it wherever D sees an input during training (its own step and G's
adversarial/feature-matching terms), never at validation.

D's input is a (B, C, H, W) stack of label maps and RGB images in [-1, 1], e.g. temporal:
[label_t, label_t1, img_t, img_t1]. Ops, in DiffAugment's order:
- color: brightness, saturation, contrast; image channels only (a label map is a rendered code,
  not a photograph), with the same factors for every image of a sample so that consecutive
  frames keep their colours relative to each other.
- translation: an integer shift of up to `translation` * size, zero-padded, the same for all
  channels so the label and the image stay aligned.
- cutout: a box of `cutout` * size zeroed on all channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

OPS = ("color", "translation", "cutout")
IMG_CH = 3


@dataclass
class AugmentParams:
    """Random parameters of one batch; an op is applied to sample i where its mask is True."""

    ops: tuple[str, ...]   # ops in the policy
    color_on: Tensor       # (B,) bool
    translation_on: Tensor
    cutout_on: Tensor
    brightness: Tensor     # (B,) added, U(-0.5, 0.5)
    saturation: Tensor     # (B,) factor, U(0, 2)
    contrast: Tensor       # (B,) factor, U(0.5, 1.5)
    shift: Tensor          # (B, 2) long: (dy, dx); a pixel at (y, x) moves to (y + dy, x + dx)
    box: Tensor            # (B, 4) long: (y0, x0, y1, x1), may reach past the border


def parse_policy(policy: str) -> tuple[str, ...]:
    names = [s.strip() for s in policy.split(",") if s.strip() and s.strip() != "none"]
    unknown = sorted(set(names) - set(OPS))
    if unknown:
        raise ValueError(f"unknown augmentation {unknown} in policy {policy!r}; known: {', '.join(OPS)}")
    return tuple(op for op in OPS if op in names)


def d_image_channels(label_ch: int, temporal: bool) -> list[int]:
    """The image channels of steps.gan.models.d_input's stack: labels first, then the image(s)."""
    n_labels = 2 * label_ch if temporal else label_ch
    n_images = 2 * IMG_CH if temporal else IMG_CH
    return list(range(n_labels, n_labels + n_images))


def draw_params(batch: int, height: int, width: int, policy: str, p: float, translation: float = 0.125,
                cutout: float = 0.25, device=None, generator: torch.Generator | None = None) -> AugmentParams:
    """Draw one batch's parameters. `generator` must live on `device` (torch's rule)."""
    ops = parse_policy(policy)

    def uniform(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(batch, device=device, generator=generator)

    def on(op: str) -> Tensor:
        return (torch.rand(batch, device=device, generator=generator) < p) & (op in ops)

    def randint(lo: int, hi: int) -> Tensor:  # inclusive of both ends
        return torch.randint(lo, hi + 1, (batch,), device=device, generator=generator)

    sy, sx = int(translation * height + 0.5), int(translation * width + 0.5)
    ch, cw = int(cutout * height + 0.5), int(cutout * width + 0.5)
    # cutout centres anywhere in the image, so a box may be cut by the border (as DiffAugment)
    y0, x0 = randint(0, height - 1) - ch // 2, randint(0, width - 1) - cw // 2
    return AugmentParams(
        ops=ops, color_on=on("color"), translation_on=on("translation"), cutout_on=on("cutout"),
        brightness=uniform(-0.5, 0.5), saturation=uniform(0.0, 2.0), contrast=uniform(0.5, 1.5),
        shift=torch.stack([randint(-sy, sy), randint(-sx, sx)], 1),
        box=torch.stack([y0, x0, y0 + ch, x0 + cw], 1))


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """(B,) -> broadcastable against `like`'s leading batch axis, in its dtype."""
    return v.to(like.dtype).view(-1, *[1] * (like.dim() - 1))


def color(x: Tensor, params: AugmentParams, image_channels: list[int] | slice) -> Tensor:
    idx = torch.arange(x.shape[1], device=x.device)[image_channels]
    if len(idx) % IMG_CH:
        raise ValueError(f"image_channels must be whole RGB groups of {IMG_CH}, got {len(idx)} channels")
    b, _, h, w = x.shape
    img = x.index_select(1, idx).reshape(b, -1, IMG_CH, h, w)  # (B, groups, RGB, H, W)
    img = img + per_sample(params.brightness, img)
    mean = img.mean(2, keepdim=True)
    img = (img - mean) * per_sample(params.saturation, img) + mean
    mean = img.mean((2, 3, 4), keepdim=True)  # contrast is per image, not across the stack
    img = (img - mean) * per_sample(params.contrast, img) + mean
    return x.index_copy(1, idx, img.reshape(b, -1, h, w))


def translate(x: Tensor, params: AugmentParams) -> Tensor:
    b, _, h, w = x.shape
    # gather from one pixel of zero padding; sources off the image land on it
    pad = torch.nn.functional.pad(x, (1, 1, 1, 1))
    ys = (torch.arange(h, device=x.device) - params.shift[:, :1] + 1).clamp(0, h + 1)  # (B, H)
    xs = (torch.arange(w, device=x.device) - params.shift[:, 1:] + 1).clamp(0, w + 1)  # (B, W)
    rows = torch.arange(b, device=x.device)[:, None, None]
    return pad[rows, :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)  # (B,H,W,C) -> (B,C,H,W)


def cut(x: Tensor, params: AugmentParams) -> Tensor:
    _, _, h, w = x.shape
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    y0, x0, y1, x1 = (params.box[:, i:i + 1] for i in range(4))
    inside = ((ys >= y0) & (ys < y1))[:, :, None] & ((xs >= x0) & (xs < x1))[:, None, :]  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


def apply(x: Tensor, params: AugmentParams, image_channels: list[int] | slice) -> Tensor:
    """Augment x (B, C, H, W); samples whose op is off keep their values exactly."""
    if "color" in params.ops:
        x = torch.where(params.color_on.view(-1, 1, 1, 1), color(x, params, image_channels), x)
    if "translation" in params.ops:
        x = torch.where(params.translation_on.view(-1, 1, 1, 1), translate(x, params), x)
    if "cutout" in params.ops:
        x = torch.where(params.cutout_on.view(-1, 1, 1, 1), cut(x, params), x)
    return x


def augment_pair(real: Tensor, fake: Tensor, policy: str, p: float, image_channels: list[int] | slice,
                 translation: float = 0.125, cutout: float = 0.25,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Augment D's real and fake stacks with the same parameters for pair i. Identity (the very
    same tensors) for an empty policy or p <= 0."""
    if not parse_policy(policy) or p <= 0:
        return real, fake
    b, _, h, w = real.shape
    params = draw_params(b, h, w, policy, p, translation, cutout, real.device, generator)
    return apply(real, params, image_channels), apply(fake, params, image_channels)
