"""The pieces of a GAN step that the trainers share (steps.gan.train, steps.gan.face, the base):

- `GANSettings`: the settings every GAN config section has (learning rates, losses, validation,
  augmentation, the collapse guard, checkpoints, precision, where to start from);
- `learning_rate`: a pure schedule (warm-up, constant, then linear decay to 0);
- `adam`, `generator_adversarial`, `discriminator_step`: the optimizers and the LSGAN terms
  (with augmentation, feature matching and R1);
- `vgg_loss`, `perceptual_metric`, `augmenter`, `step_generator`: what a step and a validation use.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from steps.gan.models import feature_matching_loss, lsgan_loss


# --- settings ---------------------------------------------------------------------------------

@dataclass
class GANSettings:
    """The keys of the train and face sections that the shared loop pieces read (defaults: the
    schema, steps.settings)."""

    device: str
    seed: int
    init_std: float
    lambda_feat: float
    lambda_vgg: float
    vgg: bool
    vgg_weights: str | None
    lr_G: float
    lr_D: float
    beta1: float
    beta2: float
    decay_from: float
    augment: dict
    r1_gamma: float
    val_every: int
    val_samples: int
    select_by: str
    guard: dict
    checkpoint_every: int
    keep_checkpoints: int
    bf16: bool
    init_from: str | None  # a model file, a checkpoint or "base": the weights a new run starts from
    continue_: bool        # the section's `continue`: resume checkpoints of other settings on purpose

    @classmethod
    def from_section(cls, name: str, given: dict | None = None, drop=("resources",)):
        """The config section `name` (schema defaults filled in) as this dataclass."""
        from steps.settings import section

        s = section(name, given)
        s["continue_"] = s.pop("continue")  # a Python keyword
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in s.items() if k in names and k not in drop})

    def to_dict(self) -> dict:
        return asdict(self)


def learning_rate(base: float, step: int, start: int, end: int, decay_from: float, warmup: int = 0) -> float:
    """Constant `base` for the first `decay_from` of [start, end), then linear decay to 0; over
    the first `warmup` steps it rises linearly to `base` (a fine-tune's warm-up)."""
    n, k = end - start, step - start
    if k < warmup:
        return base * (k + 1) / (warmup + 1)
    flat = decay_from * n
    if k < flat or n <= flat:
        return base
    return base * max(0.0, (n - k) / (n - flat))


def adam(params, lr: float, s: GANSettings, device: torch.device) -> torch.optim.Adam:
    # fused Adam: one kernel for all parameters on CUDA
    return torch.optim.Adam(params, lr=lr, betas=(s.beta1, s.beta2), fused=device.type == "cuda" or None)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def vgg_loss(s: GANSettings, device, memory_format=torch.contiguous_format):
    """The VGG perceptual loss module, or None when it is off."""
    if not (s.vgg and s.lambda_vgg > 0):
        return None
    from steps.gan.vgg import VGGLoss

    return VGGLoss(s.vgg_weights).to(device, memory_format=memory_format)


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The RNG of one step's augmentation: a pure function of (seed, step), so resuming is exact."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, step, 7]).generate_state(1)[0]))
    return g


def augmenter(s: GANSettings, image_channels) -> Callable | None:
    """aug(real, fake, rng) -> (real, fake) with the same random change on both; None when off."""
    policy, p = s.augment["policy"], s.augment["p"]
    if policy in ("", "none") or p <= 0:
        return None
    from steps.gan.augment import augment_pair

    return lambda real, fake, rng: augment_pair(real, fake, policy, p, image_channels, generator=rng)


def generator_adversarial(d, real_in, fake_in, lambda_feat: float, aug=None, rng=None):
    """G's adversarial and feature-matching terms against a frozen D (fp32). The stacks are
    augmented once here, so the D step that follows sees the same pair. Returns
    (real_in, fake_in, loss_gan, loss_fm), the stacks as augmented."""
    if aug is not None:
        real_in, fake_in = aug(real_in, fake_in, rng)
    pred_fake = d(fake_in)
    with torch.no_grad():
        pred_real = d(real_in)
    loss_gan = lsgan_loss(pred_fake, True)
    loss_fm = (feature_matching_loss(pred_fake, pred_real) * lambda_feat if lambda_feat
               else torch.zeros((), device=fake_in.device))
    return real_in, fake_in, loss_gan, loss_fm


def discriminator_step(d, opt_d, real_in, fake_in, r1_gamma: float = 0.0) -> dict:
    """One LSGAN step of D (in fp32) on (condition, image) stacks, already augmented; real and
    fake in one forward (instance norm keeps the samples apart). R1 penalises D's gradient on
    the real inputs. Returns loss_D, loss_D_real, loss_D_fake, loss_D_r1 (tensors)."""
    real_in, fake_in = real_in.detach().float(), fake_in.detach().float()
    if r1_gamma > 0:
        real_in.requires_grad_(True)
    b = real_in.shape[0]
    preds = d(torch.cat([real_in, fake_in], 0))
    loss_real = lsgan_loss([[f[:b] for f in p] for p in preds], True)
    loss_fake = lsgan_loss([[f[b:] for f in p] for p in preds], False)
    loss_d = 0.5 * (loss_real + loss_fake)
    r1 = torch.zeros((), device=real_in.device)
    if r1_gamma > 0:
        out = sum(p[-1][:b].sum() for p in preds)
        (grad,) = torch.autograd.grad(out, real_in, create_graph=True)
        r1 = 0.5 * r1_gamma * grad.pow(2).flatten(1).sum(1).mean()
    opt_d.zero_grad(set_to_none=True)
    (loss_d + r1).backward()
    opt_d.step()
    return {"loss_D": loss_d, "loss_D_real": loss_real, "loss_D_fake": loss_fake, "loss_D_r1": r1}


def gan_update(run, d, real_in, fake_in, terms: dict, s: GANSettings, aug=None, rng=None) -> dict:
    """The update every GAN of the project makes (target generator, base, face GAN): G on LSGAN +
    feature matching against a frozen D plus its own `terms` (VGG, L1: 0-d tensors), then D on
    the same, augmented stacks. `run` holds the models and optimizers; `d` is D as called (DDP).
    Returns the losses as 0-d tensors (no host sync)."""
    run.d.requires_grad_(False)
    real_in, fake_in, loss_gan, loss_fm = generator_adversarial(d, real_in, fake_in, s.lambda_feat, aug, rng)
    loss_g = loss_gan + loss_fm
    for t in terms.values():
        loss_g = loss_g + t
    run.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_g.step()
    run.d.requires_grad_(True)
    d_losses = discriminator_step(d, run.opt_d, real_in, fake_in, s.r1_gamma)
    return {**d_losses, "loss_G": loss_g, "loss_G_gan": loss_gan, "loss_G_fm": loss_fm, **terms}


def perceptual_metric(s: GANSettings, device):
    """ST-LPIPS for validation when it selects the best model; None otherwise or without weights."""
    if s.select_by != "stlpips":
        return None
    from steps.evaluate.metrics import Perceptual

    p = Perceptual(device, s.vgg_weights)
    return p if p.net is not None else None
