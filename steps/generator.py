"""Inference: the trained generator and face GAN as transfer and evaluate use them.

Like nanoGPT's sample.py, a model is rebuilt from the model config stored in its file and
imports only steps.models, never a trainer. generator.pt holds "model" (ModelConfig as a dict),
"state_dict", "height"/"width" (the size label maps must have), "labels" (the labels section it
was trained with), "held_out_from" (the first frame of the held-out tail), "step" and "best"
(the held-out metrics that chose it). face.pt holds "model" (FaceModelConfig), "state_dict",
"size", "boxes" (the face box settings), "height"/"width", "step", "generator_sha1".

`read_meta` reads those fields without the weights (the file is memory-mapped, so a 730 MB
paper-size generator costs a few kB to read).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
import torch.nn as nn

from .models import IMG_CH, LABEL_CH, FaceGenerator, FaceModelConfig, ModelConfig, build_generator


# --- tensors and images -----------------------------------------------------------------------

def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [-1, 1]."""
    img = np.ascontiguousarray(img)
    if not img.flags.writeable:  # a memory-mapped store: torch warns about read-only arrays
        img = img.copy()
    return torch.from_numpy(img).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    return ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def resize_frame(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """A frame at the generator's size (area interpolation when it shrinks)."""
    if img.shape[:2] == (height, width):
        return np.asarray(img)
    return cv2.resize(np.asarray(img), (width, height), interpolation=cv2.INTER_AREA)


def pick_device(want: str = "auto") -> torch.device:
    """auto: CUDA when torch sees a GPU."""
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {want} asked for, but torch sees no CUDA device")
    return torch.device(want)


# --- model files ------------------------------------------------------------------------------

def read_meta(path) -> dict:
    """Everything in a generator.pt / face.pt except the weights, without reading the weights."""
    ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {k: v for k, v in ck.items() if k != "state_dict"} | {"path": str(path)}


def load_generator(path, device="cpu") -> tuple[nn.Module, dict]:
    """generator.pt -> (model in eval mode on device with `.temporal` set, meta)."""
    ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    mcfg = ModelConfig(**ck["model"])
    g = build_generator(mcfg)
    g.load_state_dict(ck["state_dict"])
    g.temporal = mcfg.temporal
    g.eval().requires_grad_(False)
    return g.to(device), {k: v for k, v in ck.items() if k != "state_dict"} | {"path": str(path)}


def load_face(path, device="cpu") -> tuple[FaceGenerator, dict]:
    """face.pt -> (G_f in eval mode on device, meta)."""
    ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    g = FaceGenerator(FaceModelConfig(**ck["model"]))
    g.load_state_dict(ck["state_dict"])
    g.eval().requires_grad_(False)
    return g.to(device), {k: v for k, v in ck.items() if k != "state_dict"} | {"path": str(path)}


def uses_iuv(meta: dict) -> bool:
    """Whether a generator was trained with labels.iuv concat: its input channels decide."""
    return meta["model"].get("label_ch", LABEL_CH) > LABEL_CH


def label_renderer(meta: dict, iuv=None):
    """render(pose, i) -> the label map the generator was trained on, at its size. A generator
    trained with labels.iuv concat needs `iuv`: an IUV image per frame of the pose table."""
    from .labels import generator_renderer

    h, w = meta["height"], meta["width"]
    lab = meta["labels"]
    concat = uses_iuv(meta)
    if concat and iuv is None:
        raise ValueError(f"{meta.get('path', 'the generator')} was trained on label maps with DensePose IUV channels "
                         f"(labels.iuv: concat): it needs the IUV images of the poses it is given")
    r = generator_renderer(lab["thickness"], lab["face"], lab["hands"], iuv if concat else None)
    return lambda pose, i: r(pose, i, h, w)


# --- running them -----------------------------------------------------------------------------

@torch.no_grad()
def generate_sequence(model: nn.Module, label_maps: Iterable[np.ndarray], device=None,
                      temporal: bool | None = None, bf16: bool = False) -> Iterator[np.ndarray]:
    """Recurrent inference: label maps uint8 (H, W, C) in, frames uint8 (H, W, 3) out. With the
    temporal model each frame is conditioned on the previous output (zeros before the first).
    H and W must be the model's training size (meta height/width)."""
    device = torch.device(device) if device else next(model.parameters()).device
    temporal = getattr(model, "temporal", True) if temporal is None else temporal
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 and device.type == "cuda" else nullcontext()
    m = getattr(model, "multiple", 1)
    prev = None
    for lab in label_maps:
        y = to_tensor(lab)[None].to(device)
        if y.shape[2] % m or y.shape[3] % m:
            raise ValueError(f"label map {y.shape[3]}x{y.shape[2]} is not a multiple of {m}")
        if temporal:
            y = torch.cat([y, prev if prev is not None else torch.zeros_like(y[:, :IMG_CH])], 1)
        with amp:
            out = model(y).float()
        prev = out
        yield to_uint8(out[0])


@torch.no_grad()
def apply_face(face_g: FaceGenerator, frame: np.ndarray, label: np.ndarray, box) -> np.ndarray:
    """Paste G_f's refined face into a generated frame (uint8 (H, W, 3)); returns a new frame."""
    x0, y0, x1, y1 = (int(v) for v in box)
    dev = next(face_g.parameters()).device
    y = to_tensor(label[y0:y1, x0:x1, :LABEL_CH])[None].to(dev)  # the skeleton (no IUV channels)
    g = to_tensor(frame[y0:y1, x0:x1])[None].to(dev)
    out = frame.copy()
    out[y0:y1, x0:x1] = to_uint8(face_g.refine(y, g)[0])
    return out
