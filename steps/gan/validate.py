"""Validation of a generator on held-out tails: generated recurrently from the tail's first frame,
as transfer does, and scored with the metrics evaluate uses."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from steps.gan.models import LABEL_CH
from steps.gan.pairs import FrameData
from steps.render.inference import generate_sequence
from steps.sampling import evenly_spaced


@torch.no_grad()
def validate(g: nn.Module, data: FrameData, tail: range, temporal: bool, device, bf16: bool, perceptual,
             n_grid: int) -> tuple[dict, np.ndarray]:
    """Generate the held-out frames `tail` recurrently from its first (as transfer does).
    Returns ({l1, ssim, stlpips}, grid uint8 with rows label | generated | real)."""
    from steps.evaluate.metrics import held_out_metrics

    was_training = g.training
    g.eval()
    labels = [data.label(i) for i in tail]
    fake = list(generate_sequence(g, labels, device=device, temporal=temporal, bf16=bf16))
    real = [data.frame(i) for i in tail]
    g.train(was_training)
    picks = evenly_spaced(len(tail), n_grid)
    grid = np.concatenate([np.concatenate([labels[k][..., :LABEL_CH], fake[k], real[k]], 1) for k in picks], 0)
    return held_out_metrics(fake, real, perceptual), grid


def validate_subjects(g: nn.Module, datas: list[FrameData], subjects: list, temporal: bool, device, bf16: bool,
                      perceptual, n_grid: int) -> tuple[dict, np.ndarray]:
    """`validate` on each subject's held-out tail: the mean of their metrics, their grids stacked."""
    results = [validate(g, d, s.tail, temporal, device, bf16, perceptual, n_grid) for d, s in zip(datas, subjects)]
    metrics = {k: float(np.mean([m[k] for m, _ in results])) for k in results[0][0]}
    return metrics, np.concatenate([grid for _, grid in results], 0)
