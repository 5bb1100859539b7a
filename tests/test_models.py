"""Architecture tests: shapes and parameter counts at the default config (on the meta device, so
nothing is allocated), the local enhancer, losses, the learning-rate schedule and the VGG16."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steps.gan.models import (GlobalGenerator, LocalEnhancer, ModelConfig, MultiscaleDiscriminator,
                          PairGenerator, build_discriminator, build_generator, count_params, d_input,
                          feature_matching_loss, lsgan_loss)
from steps.gan.step import learning_rate
from steps.gan.train import TrainConfig, plan_phases

ROOT = Path(__file__).resolve().parents[1]


def conv(cin, cout, k):
    return cin * cout * k * k + cout


def global_g_params(in_ch, ngf=64, n_down=4, n_blocks=9, out_ch=3):
    """Closed form of pix2pixHD's global generator (instance norm without affine parameters)."""
    n = conv(in_ch, ngf, 7) + conv(ngf, out_ch, 7)
    for i in range(n_down):
        c = ngf * 2**i
        n += conv(c, 2 * c, 3) + conv(2 * c, c, 3)  # down, and its transposed twin
    return n + n_blocks * 2 * conv(ngf * 2**n_down, ngf * 2**n_down, 3)


def patchgan_params(in_ch, ndf=64, n_layers=3):
    chans = [in_ch] + [min(ndf * 2**i, 512) for i in range(n_layers + 1)] + [1]
    return sum(conv(a, b, 4) for a, b in zip(chans, chans[1:]))


def test_default_generator_parameter_count_and_shapes():
    c = ModelConfig.paper()  # ngf 64, 4 downsamplings, 9 blocks, temporal: label (3) + previous frame (3) in
    with torch.device("meta"):
        g = build_generator(c)
        y = g(torch.empty(2, c.g_in, 256, 512))
    assert c.g_in == 6
    assert count_params(g) == global_g_params(6) == 182_452_675
    assert y.shape == (2, 3, 256, 512)
    # pix2pixHD's own global generator (Cityscapes: 35 labels + 1 edge map in): 182.5 M
    # parameters, a 730 MB fp32 file, as its users report (~700 MB latest_net_G.pth)
    with torch.device("meta"):
        assert count_params(GlobalGenerator(36)) == global_g_params(36) == 182_546_755
        # pix2pix/CycleGAN's resnet_9blocks (2 downsamplings, 3 in) prints 11,388,675 parameters
        # with affine instance norm; without the 2 * 5248 norm parameters that is ours
        assert count_params(GlobalGenerator(3, 3, 64, 2, 9)) == 11_388_675 - 2 * 5248


def test_local_enhancer_count_shapes_and_global_loading():
    c = ModelConfig.paper(kind="local")
    with torch.device("meta"):
        g = build_generator(c)
        assert g(torch.empty(1, 6, 512, 1024)).shape == (1, 3, 512, 1024)
    enh = 2 * (conv(6, 32, 7)) - conv(6, 32, 7) + conv(32, 64, 3) + 3 * 2 * conv(64, 64, 3) + conv(64, 32, 3) + conv(32, 3, 7)
    assert count_params(g) == global_g_params(6) - conv(64, 3, 7) + enh == 182_715_939
    # the enhancer's global part loads the weights of a trained global generator
    torch.manual_seed(0)
    small = GlobalGenerator(6, 3, ngf=8, n_down=2, n_blocks=1)
    local = LocalEnhancer(6, 3, ngf=4, n_down=2, n_blocks=1, n_blocks_local=1)
    local.load_global(small.state_dict())
    for k, v in local.global_body.state_dict().items():
        assert torch.equal(v, small.body.state_dict()[k])
    assert local(torch.randn(1, 6, 32, 48)).shape == (1, 3, 32, 48)


def test_default_discriminator_parameter_count_and_patch_shapes():
    c = ModelConfig.paper()  # ndf 64, 3 layers, 2 scales; temporal: (y_t, y_t1, x_t, x_t1) = 12 channels
    assert c.d_in == 12
    with torch.device("meta"):
        d = build_discriminator(c)
        out = d(torch.empty(1, 12, 256, 512))
    assert count_params(d) == 2 * patchgan_params(12) == 5_547_906
    assert len(out) == 2 and all(len(o) == 5 for o in out)
    assert [tuple(f.shape) for f in out[0]] == [(1, 64, 129, 257), (1, 128, 65, 129), (1, 256, 33, 65),
                                                (1, 512, 34, 66), (1, 1, 35, 67)]
    assert tuple(out[1][-1].shape) == (1, 1, 19, 35)  # the second scale sees a 2x smaller input
    assert ModelConfig.paper(temporal=False).d_in == 6 and ModelConfig.paper(temporal=False).g_in == 3


def test_temporal_pair_and_discriminator_input():
    torch.manual_seed(0)
    g = GlobalGenerator(6, 3, ngf=4, n_down=2, n_blocks=1)
    y0, y1, x0, x1 = (torch.randn(2, 3, 32, 32) for _ in range(4))
    f0, f1 = PairGenerator(g, temporal=True)(y0, y1)
    assert torch.allclose(f0, g(torch.cat([y0, torch.zeros_like(y0)], 1)))
    assert torch.allclose(f1, g(torch.cat([y1, f0], 1)))  # t+1 is conditioned on the generated t
    assert d_input(y0, y1, x0, x1, True).shape == (2, 12, 32, 32)
    assert d_input(y0, y1, x0, x1, False).shape == (4, 6, 32, 32)


def test_label_range_is_invisible_to_the_generator_without_temporal_input():
    """Why label maps stay in [-1, 1] where the official code feeds [0, 1]: the generator's first
    layer is reflection padding, a conv and an instance norm without affine parameters, so the
    map y -> 2y - 1 (a per-channel offset and a common scale) is normalised away. With the
    temporal input only the label channels are scaled, which equals doubling their first-layer
    weights (init std 0.04 instead of 0.02 for those); D, without a norm there, differs by the
    same reparameterisation plus its zero-padded border."""
    torch.manual_seed(0)
    g = GlobalGenerator(in_ch=3, ngf=8, n_down=2, n_blocks=1).eval()
    y01 = (torch.rand(1, 3, 32, 32) > 0.7).float()  # a sparse label map in [0, 1]
    with torch.no_grad():
        torch.testing.assert_close(g(y01 * 2 - 1), g(y01), rtol=0, atol=1e-4)
        gt = GlobalGenerator(in_ch=6, ngf=8, n_down=2, n_blocks=1).eval()
        prev = torch.rand(1, 3, 32, 32) * 2 - 1
        doubled = GlobalGenerator(in_ch=6, ngf=8, n_down=2, n_blocks=1).eval()
        doubled.load_state_dict(gt.state_dict())
        doubled.body[1].weight[:, :3] *= 2
        torch.testing.assert_close(gt(torch.cat([y01 * 2 - 1, prev], 1)), doubled(torch.cat([y01, prev], 1)),
                                   rtol=0, atol=1e-4)
        assert not torch.allclose(gt(torch.cat([y01 * 2 - 1, prev], 1)), gt(torch.cat([y01, prev], 1)), atol=1e-3)


def test_losses():
    d = MultiscaleDiscriminator(6, ndf=4, n_layers=2, num_D=2)
    feats = d(torch.randn(1, 6, 32, 32))
    ones = [[torch.ones_like(f) for f in o] for o in feats]
    assert lsgan_loss(ones, True).item() == 0 and lsgan_loss(ones, False).item() == pytest.approx(2.0)
    assert feature_matching_loss(feats, feats).item() == 0
    other = d(torch.randn(1, 6, 32, 32))
    assert feature_matching_loss(feats, other).item() > 0


def test_learning_rate_schedule_and_phase_plan():
    assert learning_rate(2e-4, 0, 0, 100, 0.5) == learning_rate(2e-4, 49, 0, 100, 0.5) == 2e-4
    assert learning_rate(2e-4, 75, 0, 100, 0.5) == pytest.approx(1e-4)
    assert learning_rate(2e-4, 99, 0, 100, 0.5) == pytest.approx(2e-4 / 50)
    assert learning_rate(1e-3, 150, 100, 200, 1.0) == 1e-3       # decay_from 1: constant
    assert learning_rate(1e-3, 175, 100, 200, 0.5) == pytest.approx(5e-4)  # a later phase decays on its own steps
    plan = plan_phases(TrainConfig.from_dict({"global_steps": 10, "local_steps": 5}), 512, 1024)
    assert [(p.kind, p.start, p.end, p.height, p.width) for p in plan] == [
        ("global", 0, 10, 256, 512), ("local", 10, 15, 512, 1024)]
    with pytest.raises(ValueError, match="multiple of 16"):
        plan_phases(TrainConfig.from_dict(), 250, 256)


# --- VGG16 ------------------------------------------------------------------------------------

vgg = pytest.importorskip("steps.gan.vgg")


@pytest.fixture(scope="module")
def trunk():
    try:
        return vgg.load_vgg16()
    except vgg.VGGWeightsMissing as e:
        pytest.skip(str(e))


def test_vgg_weights_load_and_differ_from_random_init(trunk):
    sd = vgg.read_stlpips_state()
    conv_params = sum(v.numel() for k, v in sd.items() if k.startswith("net.") and not k.endswith("filt"))
    assert conv_params == 14_714_688  # VGG16's 13 conv layers, the whole trunk
    assert count_params(trunk) == 14_714_688
    assert all(p.requires_grad is False for p in trunk.parameters())
    torch.manual_seed(0)
    rand = vgg.VGG16Features().eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        fp, fr = trunk(x), rand(x)
    assert [f.shape[1] for f in fp] == list(vgg.CHANNELS)
    for a, b in zip(fp, fr):
        assert a.shape == b.shape
        rel = (a - b).norm() / (a.norm() + b.norm())
        assert rel > 0.3, rel
    # trained, not initialised: biases are set, and conv1_1 filters are smooth colour/edge detectors
    assert trunk.convs[0].bias.abs().mean() > 0.01


def test_vgg_loss_and_stlpips_distance():
    try:
        loss = vgg.VGGLoss()
        dist = vgg.STLPIPS()
    except vgg.VGGWeightsMissing as e:
        pytest.skip(str(e))
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert loss(x, x).item() == 0 and loss(x, y).item() > 0
    xg = x.clone().requires_grad_(True)
    loss(xg, y).backward()
    assert xg.grad.abs().sum() > 0
    z = (x + 0.8 * torch.randn_like(x)).clamp(-1, 1)
    d0, d1, d2 = dist(x, x), dist(x, y), dist(x, z)
    assert d0.item() == pytest.approx(0, abs=1e-7) and 0 < d1.item() < d2.item()


REFERENCE = """
import sys, types, torch
for name in ("torchvision", "torchvision.models", "IPython", "torchsummary"):
    sys.modules[name] = types.ModuleType(name)  # the reference code imports these; the VGG path never uses them
sys.modules["torchvision"].models = sys.modules["torchvision.models"]
sys.modules["IPython"].embed = lambda *a, **k: None
sys.modules["torchsummary"].summary = lambda *a, **k: None
from stlpips_pytorch import stlpips
from steps.gan.vgg import STLPIPS
ref = stlpips.LPIPS(net="vgg", variant="shift_tolerant", verbose=False)
ours = STLPIPS()
torch.manual_seed(0)
x, y = torch.rand(2, 3, 48, 40) * 2 - 1, torch.rand(2, 3, 48, 40) * 2 - 1
with torch.no_grad():
    for a, b in zip(ref.net(ref.scaling_layer(x)), ours.vgg(x)):
        assert a.shape == b.shape and torch.equal(a, b)
    assert torch.allclose(ref(x, y).flatten(), ours(x, y), atol=1e-6)
print("same")
"""


def test_vgg_matches_the_reference_stlpips_network():
    """Our module, loading the file by position, gives the reference implementation's features
    bit for bit (run in a subprocess: the reference needs stand-ins for torchvision imports)."""
    pytest.importorskip("stlpips_pytorch")
    r = subprocess.run([sys.executable, "-c", REFERENCE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "same" in r.stdout, r.stderr[-2000:]
