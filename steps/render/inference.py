"""Inference: the trained generator and face GAN as transfer and evaluate use them.

Like nanoGPT's sample.py, a model is rebuilt from the model config stored in its file and
imports only steps.gan.models, never a trainer. generator.pt holds "model" (ModelConfig as a dict),
"state_dict", "height"/"width" (the size label maps must have), "labels" (the labels section it
was trained with), "held_out_from" (the first frame of the held-out tail), "step" and "best"
(the held-out metrics that chose it), "train" (the train section it was trained with). face.pt
holds "model" (FaceModelConfig), "state_dict", "size", "boxes" (the face box settings),
"height"/"width", "step", "generator_sha1", "train" (the face section; older files lack it).

Precision: transfer and evaluate run each model under bf16 autocast on CUDA when it was trained
under it (`trained_bf16`: the file's train.bf16; fp32 for files without it), so it sees the
numerics it learned with; on the CPU inference is always fp32.

`read_meta` reads those fields without the weights (the file is memory-mapped, so a 730 MB
paper-size generator costs a few kB to read).
"""
from __future__ import annotations

from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
import torch.nn as nn

from steps.atomic import load_torch
from steps.gan.models import IMG_CH, LABEL_CH, FaceGenerator, FaceModelConfig, ModelConfig, build_generator


# --- tensors and images -----------------------------------------------------------------------

def host_tensor(img: np.ndarray) -> torch.Tensor:
    """A numpy image as a CPU tensor (a contiguous copy where torch could not share it)."""
    img = np.ascontiguousarray(img)
    if not img.flags.writeable:  # a memory-mapped store: torch warns about read-only arrays
        img = img.copy()
    return torch.from_numpy(img)


def hwc_to_float(t: torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [-1, 1], on t's device. The result keeps the
    (H, W, C) memory order, so host and device conversions feed the networks the same layout."""
    return t.permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def float_to_hwc(t: torch.Tensor) -> torch.Tensor:
    """float (3, H, W) in [-1, 1] -> uint8 (H, W, 3), on t's device."""
    return ((t.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [-1, 1]."""
    return hwc_to_float(host_tensor(img))


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    return float_to_hwc(t).cpu().numpy()


def resize_frame(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """A frame at the generator's size (area interpolation when it shrinks)."""
    if img.shape[:2] == (height, width):
        return np.asarray(img)
    return cv2.resize(np.asarray(img), (width, height), interpolation=cv2.INTER_AREA)


def pick_device(want: str = "auto", local_rank: int = 0) -> torch.device:
    """The one device choice of every stage. auto: CUDA when torch sees a GPU; "cuda" means the
    GPU of this process (`local_rank` under torchrun), "cuda:N" that one; the CUDA device is made
    current, so kernels launched without an explicit device go there too."""
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {want} asked for, but torch sees no CUDA device")
        dev = torch.device(want) if ":" in want else torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        return dev
    return torch.device(want)


# --- model files ------------------------------------------------------------------------------

def remedy(path) -> str:
    """What to do about a damaged model file: rerun the rule that writes it."""
    name = str(path)
    rule = "train_face" if name.endswith("face.pt") else "train_base" if "_base" in name else "train_generator"
    return (f"rerun {rule} to write it again (snakemake --forcerun {rule}, or delete it and run snakemake; "
            f"its checkpoints are kept, so training resumes from them instead of starting over)")


def load_model_file(path, mmap: bool = True) -> dict:
    """A generator.pt / face.pt, read through steps.atomic.load_torch: a damaged file is an
    error naming it and the rule that writes it again."""
    return load_torch(path, remedy(path), mmap=mmap)


def read_meta(path) -> dict:
    """Everything in a generator.pt / face.pt except the weights, without reading the weights."""
    ck = load_model_file(path)
    return {k: v for k, v in ck.items() if k not in ("state_dict", "D")} | {"path": str(path)}


def load_generator(path, device="cpu") -> tuple[nn.Module, dict]:
    """generator.pt -> (model in eval mode on device with `.temporal` set, meta)."""
    ck = load_model_file(path)
    mcfg = ModelConfig(**ck["model"])
    g = build_generator(mcfg)
    g.load_state_dict(ck["state_dict"])
    g.temporal = mcfg.temporal
    g.eval().requires_grad_(False)
    return g.to(device), {k: v for k, v in ck.items() if k not in ("state_dict", "D")} | {"path": str(path)}


def load_face(path, device="cpu") -> tuple[FaceGenerator, dict]:
    """face.pt -> (G_f in eval mode on device, meta)."""
    ck = load_model_file(path)
    g = FaceGenerator(FaceModelConfig(**ck["model"]))
    g.load_state_dict(ck["state_dict"])
    g.eval().requires_grad_(False)
    return g.to(device), {k: v for k, v in ck.items() if k not in ("state_dict", "D")} | {"path": str(path)}


def trained_bf16(meta: dict) -> bool:
    """Whether a model file says it was trained under bf16 autocast (train.bf16)."""
    return bool(meta["train"]["bf16"])


def uses_background(meta: dict) -> bool:
    """Whether a generator was trained with labels.background."""
    return bool(meta["labels"]["background"])


def uses_iuv(meta: dict) -> bool:
    """Whether a generator was trained with labels.iuv concat."""
    return meta["labels"]["iuv"] == "concat"


def uses_reference(meta: dict) -> bool:
    """Whether a generator was trained with labels.reference."""
    return bool(meta["labels"].get("reference", False))


def label_renderer(meta: dict, iuv=None):
    """render(pose, i) -> the label map the generator was trained on, at its size. A generator
    trained with labels.iuv concat needs `iuv`: an IUV image per frame of the pose table; one
    trained with labels.background gets the background kept in its file."""
    from steps.prepare.labels import generator_renderer

    h, w = meta["height"], meta["width"]
    lab, name = meta["labels"], meta.get("path", "the generator")
    concat = uses_iuv(meta)
    if concat and iuv is None:
        raise ValueError(f"{name} was trained on label maps with DensePose IUV channels "
                         f"(labels.iuv: concat): it needs the IUV images of the poses it is given")
    with_bg = uses_background(meta)
    bg = meta.get("background") if with_bg else None
    if with_bg and bg is None:
        raise ValueError(f"{name} was trained with labels.background on several subjects (a base) and keeps no "
                         f"background of one target: train a target from it (train.init_from: base) and use that")
    ref = meta.get("reference") if uses_reference(meta) else None
    if uses_reference(meta) and ref is None:
        raise ValueError(f"{name} was trained with labels.reference on several subjects (a base) and keeps no "
                         f"reference of one target: train a target from it (train.init_from: base) and use that")
    r = generator_renderer(lab["thickness"], lab["face"], lab["hands"], iuv if concat else None,
                           None if bg is None else np.asarray(bg), None if ref is None else np.asarray(ref))
    return lambda pose, i: r(pose, i, h, w)


# --- running them -----------------------------------------------------------------------------

@dataclass
class FaceRefiner:
    """G_f and the face box (x0, y0, x1, y1) of each frame of a sequence, applied on the device to
    each generated frame before it is downloaded (generate_sequence's `face`)."""

    g: FaceGenerator
    boxes: np.ndarray  # (N, 4): row k is the box of the sequence's k-th frame
    bf16: bool = False


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked for; fp32 otherwise (CPU autocast would change results)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device.type == "cuda" else nullcontext()


def upload(lab: np.ndarray, device: torch.device) -> torch.Tensor:
    """A uint8 label map on the device, still uint8 (a quarter of float's bytes to copy). On CUDA
    it goes through pinned memory with a non-blocking copy, so the host does not wait for it."""
    t = host_tensor(lab)
    if device.type != "cuda":
        return t.to(device)
    pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    pinned.copy_(t)
    return pinned.to(device, non_blocking=True)


def refine_face(face: FaceRefiner, frame: torch.Tensor, label: torch.Tensor, k: int) -> torch.Tensor:
    """apply_face on the device: uint8 frame (H, W, 3) and label (H, W, C) tensors -> a new frame."""
    x0, y0, x1, y1 = (int(v) for v in face.boxes[k])
    y = hwc_to_float(label[y0:y1, x0:x1, :LABEL_CH].contiguous())[None]  # the skeleton (no IUV channels)
    g = hwc_to_float(frame[y0:y1, x0:x1].contiguous())[None]
    with autocast(frame.device, face.bf16):
        refined = face.g.refine(y, g)
    out = frame.clone()
    out[y0:y1, x0:x1] = float_to_hwc(refined[0])
    return out


class _Download:
    """A device frame on its way to the host: on CUDA a non-blocking copy into pinned memory and
    an event to wait on; on the CPU the frame itself."""

    def __init__(self, frame: torch.Tensor):
        if frame.device.type != "cuda":
            self.host, self.done = frame, None
            return
        self.host = torch.empty(frame.shape, dtype=frame.dtype, pin_memory=True)  # a fresh buffer: the caller keeps it
        self.host.copy_(frame, non_blocking=True)
        self.done = torch.cuda.Event()
        self.done.record()

    def wait(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.host.numpy()


@torch.no_grad()
def generate_sequence(model: nn.Module, label_maps: Iterable[np.ndarray], device=None,
                      temporal: bool | None = None, bf16: bool = False, face: FaceRefiner | None = None,
                      lag: int = 2) -> Iterator[np.ndarray]:
    """Recurrent inference: label maps uint8 (H, W, C) in, frames uint8 (H, W, 3) out. With the
    temporal model each frame is conditioned on the previous output (zeros before the first).
    H and W must be the model's training size (meta height/width). With `face`, G_f refines each
    frame's face box (the same frames as apply_face on each output).

    Everything between the uint8 label upload and the uint8 frame download stays on the device.
    Frame i is handed out only once frame i + lag has been queued, so on CUDA the GPU works on
    later frames while the caller encodes this one; the label maps are read up to `lag` ahead."""
    device = torch.device(device) if device else next(model.parameters()).device
    temporal = getattr(model, "temporal", True) if temporal is None else temporal
    m = getattr(model, "multiple", 1)
    prev = None
    pending: deque[_Download] = deque()
    for k, lab in enumerate(label_maps):
        lab = upload(lab, device)
        if lab.shape[0] % m or lab.shape[1] % m:
            raise ValueError(f"label map {lab.shape[1]}x{lab.shape[0]} is not a multiple of {m}")
        y = hwc_to_float(lab)[None]
        if temporal:
            y = torch.cat([y, prev if prev is not None else torch.zeros_like(y[:, :IMG_CH])], 1)
        with autocast(device, bf16):
            prev = model(y).float()
        frame = float_to_hwc(prev[0])
        if face is not None:
            frame = refine_face(face, frame, lab, k)
        pending.append(_Download(frame))
        if len(pending) > lag:
            yield pending.popleft().wait()
    while pending:
        yield pending.popleft().wait()


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
