"""Image metrics of generated frames against real ones: SSIM, PSNR, ST-LPIPS (VGG) and the
change between consecutive frames. Used by evaluate (the paper's table) and by the trainers'
held-out validation, so both measure the same thing."""
from __future__ import annotations

import itertools
import logging
import math

import cv2
import numpy as np
import torch

from steps.render.inference import to_tensor

log = logging.getLogger("metrics")

PSNR_CAP_DB = 100.0


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two images (H, W[, C]); per channel, averaged (Wang et al. 2004)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} {b.shape}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, cap: float = PSNR_CAP_DB) -> float:
    """PSNR in dB, capped at `cap` (identical images)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse == 0:
        return cap
    return min(cap, 10 * math.log10(data_range**2 / mse))


class Perceptual:
    """ST-LPIPS (VGG) distances of uint8 image pairs, batched; NaN when the weights are missing
    or the images are smaller than the network's pyramid takes (MIN_SIDE)."""

    MIN_SIDE = 24

    def __init__(self, device="cpu", weights=None):
        self.device = torch.device(device)
        try:
            from steps.gan.vgg import STLPIPS
            self.net = STLPIPS(weights).to(self.device)
        except (FileNotFoundError, ImportError) as e:
            log.warning("no ST-LPIPS weights (%s): stlpips_vgg columns are NaN", e)
            self.net = None

    @torch.no_grad()
    def __call__(self, a: list[np.ndarray], b: list[np.ndarray], batch: int = 16) -> np.ndarray:
        if self.net is None or min(np.shape(a[0])[:2]) < self.MIN_SIDE:
            return np.full(len(a), np.nan)
        out = []
        for i in range(0, len(a), batch):
            x = torch.stack([to_tensor(v) for v in a[i:i + batch]]).to(self.device)
            y = torch.stack([to_tensor(v) for v in b[i:i + batch]]).to(self.device)
            out.append(self.net(x, y).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def temporal_change(frames) -> float:
    """Mean absolute difference between consecutive frames, 0..255 (NaN for fewer than 2). Any
    iterable, read once: a video streams through without being held in memory."""
    d = [np.abs(b.astype(np.int16) - a.astype(np.int16)).mean() for a, b in itertools.pairwise(frames)]
    return float(np.mean(d)) if d else float("nan")


def held_out_metrics(fake: list[np.ndarray], real: list[np.ndarray], perceptual: Perceptual | None) -> dict:
    """Means over uint8 frame pairs: l1 (0..1 units), ssim, stlpips (NaN without the weights)."""
    l1 = float(np.mean([np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255 for a, b in zip(fake, real)]))
    lp = float(np.mean(perceptual(fake, real))) if perceptual is not None else float("nan")
    return {"l1": l1, "ssim": float(np.mean([ssim(a, b) for a, b in zip(fake, real)])), "stlpips": lp}
