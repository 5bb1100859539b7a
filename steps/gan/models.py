"""The networks of Everybody Dance Now, in one readable file (nanoGPT style).

Generator: pix2pixHD's "global" generator (a 7x7 stem, `n_down` strided 3x3 downsamplings,
`n_blocks` residual blocks, transposed-conv upsampling, a 7x7 head and tanh), with instance
normalisation (affine=False, as pix2pixHD). The local enhancer wraps a global generator for the
2x phase: it runs the global body on a 2x downsampled input and adds its features to its own
full-resolution branch.

Composite (ModelConfig.composite, with labels.background): the label map ends with the target's
static background, and the generator's head draws RGB and a mask that blends it over that
background (`over_background`, as vid2vid's foreground-background generator): the background is
exact from the first step, and a base trained on several people learns people, not rooms.

Temporal smoothing (the paper's section 3.2): the generator's input is the label map of frame t
concatenated with the previous generated frame (zeros for the first frame), so `in_ch` is
label channels + 3. `PairGenerator` runs the two steps of a training pair in one forward, so
DDP sees one forward per backward.

Discriminator: pix2pixHD's multi-scale PatchGAN (`num_D` copies of an `n_layers` PatchGAN, each
on a 2x further downsampled input), returning every layer's features for feature matching. For
the temporal model it sees (y_t, y_t+1, x_t, x_t+1) stacked on channels.

Losses: LSGAN and discriminator feature matching (pix2pixHD's weights). The VGG perceptual
loss is in steps/vgg.py.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LABEL_CH = 3  # label maps are RGB renders (steps.prepare.labels.render_label_map)
IUV_CH = 3    # labels.iuv concat adds DensePose's I, U, V (steps.prepare.backends.convert.label_map_with_iuv)
BG_CH = 3     # labels.background adds the target's static background (steps.prepare.labels.static_background)
REF_CH = 6    # labels.reference adds a reference frame of the person and its skeleton (steps.prepare.labels.reference)
IMG_CH = 3


def label_channels(iuv: bool, background: bool, reference: bool = False) -> int:
    """Channels of the generator's label maps: the skeleton, [I, U, V,] [the reference frame and
    its skeleton,] [the background] (last, where the composite head finds it)."""
    return LABEL_CH + (IUV_CH if iuv else 0) + (REF_CH if reference else 0) + (BG_CH if background else 0)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a generator from its state dict (stored in generator.pt).
    The config's train.model section fills the networks' fields (their defaults, the paper's
    networks, live in the schema: steps.settings); the trainer sets kind and label_ch."""

    temporal: bool                # condition on the previous generated frame
    ngf: int                      # global generator's stem width (local: the enhancer's width)
    n_down: int                   # strided downsamplings of the global generator
    n_blocks: int                 # residual blocks of the global generator
    n_blocks_local: int           # residual blocks of the local enhancer
    ndf: int
    n_layers_D: int
    num_D: int
    kind: str = "global"          # global | local
    label_ch: int = LABEL_CH      # label_channels(labels.iuv concat, labels.background, labels.reference)
    composite: bool = False       # labels.background: draw RGB and a mask over the input's background

    @property
    def background_at(self) -> int | None:
        """Where the background channels start in the generator's input (they end the label map)."""
        return self.label_ch - BG_CH if self.composite else None

    @classmethod
    def paper(cls, **kw) -> "ModelConfig":
        """The schema's defaults (the paper's networks), with `kw` changed."""
        from steps.settings import section

        return cls(**{**section("train")["model"], **kw})

    @property
    def g_in(self) -> int:
        return self.label_ch + (IMG_CH if self.temporal else 0)

    @property
    def d_in(self) -> int:
        # temporal: two consecutive frames and their labels; otherwise one of each
        return 2 * (self.label_ch + IMG_CH) if self.temporal else self.label_ch + IMG_CH

    def to_dict(self) -> dict:
        return asdict(self)


def norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=False)


class ResnetBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), norm(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), norm(ch),
        )

    def forward(self, x):
        return x + self.block(x)


def over_background(out: torch.Tensor, x: torch.Tensor, at: int | None) -> torch.Tensor:
    """A composite generator's image: its RGB (out[:, :3]) where its mask (out[:, 3], tanh range
    mapped to 0..1) says, the background channels x[:, at:at + 3] of its input elsewhere. So the
    background is exact from the first step and the network only learns to draw the person (as
    vid2vid's foreground-background model). at None: out is the image."""
    if at is None:
        return out
    m = (out[:, IMG_CH:] + 1) / 2
    return m * out[:, :IMG_CH] + (1 - m) * x[:, at:at + BG_CH]


class GlobalGenerator(nn.Module):
    """pix2pixHD global generator. `body` ends at ngf channels, full input resolution. With
    `background_at` (ModelConfig.composite) its head draws RGB and a mask (over_background)."""

    def __init__(self, in_ch: int, out_ch: int = IMG_CH, ngf: int = 64, n_down: int = 4, n_blocks: int = 9,
                 background_at: int | None = None):
        super().__init__()
        self.background_at = background_at
        out_ch += background_at is not None
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), norm(ngf), nn.ReLU(True)]
        for i in range(n_down):
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), norm(2 * c), nn.ReLU(True)]
        c = ngf * 2**n_down
        layers += [ResnetBlock(c) for _ in range(n_blocks)]
        for i in range(n_down):
            c = ngf * 2 ** (n_down - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                       norm(c // 2), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh())
        self.multiple = 2**n_down  # input height and width must be multiples of this

    def forward(self, x):
        return over_background(self.head(self.body(x)), x, self.background_at)


def downsample(x):
    """pix2pixHD's 2x downsampling between scales (3x3 average, stride 2, no padded zeros)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


class LocalEnhancer(nn.Module):
    """pix2pixHD local enhancer: a global generator (ngf*2 wide) on the half-size input, its
    features added to a full-resolution branch of width ngf. `global_body` has the same keys as
    GlobalGenerator.body, so the global phase's weights load into it (load_global)."""

    def __init__(self, in_ch: int, out_ch: int = IMG_CH, ngf: int = 32, n_down: int = 4,
                 n_blocks: int = 9, n_blocks_local: int = 3, background_at: int | None = None):
        super().__init__()
        self.background_at = background_at
        out_ch += background_at is not None
        self.global_body = GlobalGenerator(in_ch, out_ch, 2 * ngf, n_down, n_blocks).body
        self.down = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), norm(ngf), nn.ReLU(True),
            nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1), norm(2 * ngf), nn.ReLU(True),
        )
        self.up = nn.Sequential(
            *[ResnetBlock(2 * ngf) for _ in range(n_blocks_local)],
            nn.ConvTranspose2d(2 * ngf, ngf, 3, stride=2, padding=1, output_padding=1), norm(ngf), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh(),
        )
        self.multiple = 2 ** (n_down + 1)

    def load_global(self, global_state: dict) -> None:
        body = {k[len("body."):]: v for k, v in global_state.items() if k.startswith("body.")}
        self.global_body.load_state_dict(body)

    def forward(self, x):
        return over_background(self.up(self.down(x) + self.global_body(downsample(x))), x, self.background_at)


def build_generator(cfg: ModelConfig) -> nn.Module:
    if cfg.kind == "global":
        return GlobalGenerator(cfg.g_in, IMG_CH, cfg.ngf, cfg.n_down, cfg.n_blocks, cfg.background_at)
    if cfg.kind == "local":
        # the enhancer is half as wide as the global generator it wraps (pix2pixHD: 32 and 64)
        return LocalEnhancer(cfg.g_in, IMG_CH, cfg.ngf // 2, cfg.n_down, cfg.n_blocks, cfg.n_blocks_local,
                             cfg.background_at)
    raise ValueError(f"unknown generator kind {cfg.kind!r} (global or local)")


class PairGenerator(nn.Module):
    """Both steps of a temporal training pair in one forward (one forward per backward for DDP).

    temporal: fake_t = G(y_t, 0), fake_t1 = G(y_t1, fake_t) (gradients flow through fake_t);
    otherwise each frame is generated from its own label map alone."""

    def __init__(self, g: nn.Module, temporal: bool):
        super().__init__()
        self.g, self.temporal = g, temporal

    def forward(self, y_t, y_t1):
        if not self.temporal:
            return self.g(y_t), self.g(y_t1)
        fake_t = self.g(torch.cat([y_t, torch.zeros_like(y_t[:, :IMG_CH])], 1))
        fake_t1 = self.g(torch.cat([y_t1, fake_t], 1))
        return fake_t, fake_t1


def d_input(y_t, y_t1, x_t, x_t1, temporal: bool):
    """What the discriminator sees. temporal: one sample of (y_t, y_t1, x_t, x_t1) per pair;
    otherwise two samples (y, x) per pair, stacked on the batch axis."""
    if temporal:
        return torch.cat([y_t, y_t1, x_t, x_t1], 1)
    return torch.cat([torch.cat([y_t, x_t], 1), torch.cat([y_t1, x_t1], 1)], 0)


class NLayerDiscriminator(nn.Module):
    """pix2pixHD PatchGAN: 4x4 convs, n_layers strided, then two stride-1 layers. Returns the
    output of every layer (the last one is the patch prediction)."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        kw, pw = 4, 2
        layers = [nn.Sequential(nn.Conv2d(in_ch, ndf, kw, 2, pw), nn.LeakyReLU(0.2, True))]
        nf = ndf
        for _ in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            layers.append(nn.Sequential(nn.Conv2d(prev, nf, kw, 2, pw), norm(nf), nn.LeakyReLU(0.2, True)))
        prev, nf = nf, min(nf * 2, 512)
        layers.append(nn.Sequential(nn.Conv2d(prev, nf, kw, 1, pw), norm(nf), nn.LeakyReLU(0.2, True)))
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, kw, 1, pw)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """num_D PatchGANs; D_i sees the input downsampled i times. Returns [[features] per D]."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, num_D: int = 2):
        super().__init__()
        self.ds = nn.ModuleList(NLayerDiscriminator(in_ch, ndf, n_layers) for _ in range(num_D))

    def forward(self, x):
        out = []
        for i, d in enumerate(self.ds):
            if i:
                x = downsample(x)
            out.append(d(x))
        return out


def build_discriminator(cfg: ModelConfig) -> MultiscaleDiscriminator:
    return MultiscaleDiscriminator(cfg.d_in, cfg.ndf, cfg.n_layers_D, cfg.num_D)


# --- the face GAN's networks (paper, section 3.4) ---------------------------------------------

@dataclass
class FaceModelConfig:
    """The face networks (config face.model; stored in face.pt)."""

    ngf: int
    n_down: int
    n_blocks: int
    ndf: int
    n_layers_D: int
    num_D: int

    def to_dict(self) -> dict:
        return asdict(self)


class FaceGenerator(nn.Module):
    """G_f: (label crop, G crop) -> residual in [-1, 1]; `refine` adds it and clamps. Its last
    convolution starts at zero, so an untrained G_f changes nothing."""

    def __init__(self, cfg: FaceModelConfig):
        super().__init__()
        self.net = GlobalGenerator(LABEL_CH + IMG_CH, IMG_CH, cfg.ngf, cfg.n_down, cfg.n_blocks)
        self.zero_head()
        self.multiple = self.net.multiple

    def zero_head(self) -> None:
        last = self.net.head[1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, label, gen):
        return self.net(torch.cat([label, gen], 1))

    def refine(self, label, gen):
        return (gen + self(label, gen)).clamp(-1, 1)


def build_face_models(cfg: FaceModelConfig) -> tuple[FaceGenerator, MultiscaleDiscriminator]:
    return FaceGenerator(cfg), MultiscaleDiscriminator(LABEL_CH + IMG_CH, cfg.ndf, cfg.n_layers_D, cfg.num_D)


def init_weights(m: nn.Module, std: float) -> None:
    """pix2pixHD's initialisation: every (transposed) convolution's weight from N(0, std), biases
    0. std 0 keeps PyTorch's default. (Our norms have no affine parameters.)"""
    if std <= 0:
        return
    for mod in m.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(mod.weight, 0.0, std)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


# --- losses -----------------------------------------------------------------------------------

def lsgan_loss(preds: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    """LSGAN: mean squared distance of each D's patch prediction to 1 (real) or 0 (fake),
    summed over the scales (pix2pixHD's GANLoss with use_lsgan)."""
    target = 1.0 if real else 0.0
    return sum(F.mse_loss(p[-1].float(), torch.full_like(p[-1].float(), target)) for p in preds)


def feature_matching_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """pix2pixHD's discriminator feature matching: L1 between the features of every
    intermediate layer on fake and real inputs, weighted 4/(n_layers+1) per layer and 1/num_D per
    scale (the caller multiplies by lambda_feat)."""
    num_D, n_layers = len(fake), len(fake[0]) - 1
    w = 4.0 / (n_layers + 1) / num_D
    loss = 0.0
    for fd, rd in zip(fake, real):
        for f, r in zip(fd[:-1], rd[:-1]):
            loss = loss + w * F.l1_loss(f.float(), r.detach().float())
    return loss


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
