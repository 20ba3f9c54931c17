"""walt.diffusion: schedule (vs diffusers), conversions, and the training loss (with a spy network)."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from walt.config import config_from_dict, config_to_dict
from walt.diffusion import (
    DiffusionConfig,
    DiffusionLossConfig,
    DiffusionSchedule,
    diffusion_loss,
    eps_from_v,
    eps_from_x0,
    v_from_eps,
    v_from_x0,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)

# ------------------------------------------------------------------------------------ schedule


def test_schedule_matches_diffusers_zero_snr():
    diffusers = pytest.importorskip("diffusers")
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    s = DiffusionSchedule()
    ref = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        rescale_betas_zero_snr=True,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    # diffusers works in float32: agreement to float32 precision.
    torch.testing.assert_close(s.betas, ref.betas.double(), rtol=1e-3, atol=2e-6)
    torch.testing.assert_close(s.alphas_cumprod, ref.alphas_cumprod.double(), rtol=1e-4, atol=1e-6)
    # The same algorithm run in float64 agrees to the last bits.
    b64 = rescale_zero_terminal_snr(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    torch.testing.assert_close(s.betas, b64, rtol=0, atol=1e-15)
    # Trailing timesteps equal diffusers' for several step counts.
    for n in (1, 10, 13, 50, 1000):
        ref.set_timesteps(n)
        assert s.timesteps(n) == ref.timesteps.tolist()


def test_zero_terminal_snr_exact():
    s = DiffusionSchedule()
    assert s.betas.dtype == torch.float64
    assert s.alphas_cumprod[-1].item() == 0.0
    assert s.snr[-1].item() == 0.0
    assert s.betas[-1].item() == 1.0
    assert torch.all(s.snr[:-1] > 0) and torch.all(torch.isfinite(s.snr))
    assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1])  # strictly decreasing
    # The first step keeps its original alpha_bar (Lin et al. Alg. 1 preserves sqrt(a_0)).
    assert abs(s.alphas_cumprod[0].item() - (1 - 1e-4)) < 1e-12
    assert s.timesteps(50)[0] == 999 and s.timesteps(50)[-1] == 19


def test_ablation_flag_keeps_nonzero_snr():
    s = DiffusionSchedule.from_config(zero_terminal_snr=False)
    assert s.snr[-1].item() > 1e-5  # the flawed schedule: x_T still carries signal
    torch.testing.assert_close(s.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))


def test_snr_shift_multiplies_every_snr_and_keeps_zero_terminal():
    base, k = DiffusionSchedule(), 8.0
    s = DiffusionSchedule.from_config(snr_shift=k)
    torch.testing.assert_close(s.snr[:-1], k * base.snr[:-1], rtol=1e-9, atol=0)
    assert s.alphas_cumprod[-1].item() == 0.0 and s.betas[-1].item() == 1.0
    assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]) and torch.all((s.betas > 0) & (s.betas <= 1))
    # betas and alpha_bar agree: alpha_bar = cumprod(1 - beta), the tables the samplers read
    torch.testing.assert_close(torch.cumprod(1 - s.betas, 0)[:-1], s.alphas_cumprod[:-1], rtol=1e-12, atol=0)
    assert torch.equal(DiffusionSchedule.from_config(snr_shift=1.0).betas, base.betas)  # 1 = the paper's schedule
    assert "snr_shift=8" in repr(s) and "snr_shift" not in repr(base)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="snr_shift"):
            DiffusionConfig(snr_shift=bad)


def test_config_roundtrip_and_validation():
    cfg = DiffusionConfig(num_timesteps=500)
    assert config_from_dict(DiffusionConfig, config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError):
        DiffusionConfig(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError):
        DiffusionConfig(prediction="eps")
    with pytest.raises(ValueError, match="unknown key"):
        DiffusionSchedule.from_config(num_steps=10)
    with pytest.raises(ValueError):
        DiffusionSchedule().timesteps(0)
    with pytest.raises(ValueError):
        DiffusionSchedule().alpha_bar(torch.tensor([1000]))


def test_alpha_bar_clean_index_and_q_sample():
    s = DiffusionSchedule()
    assert s.alpha_bar(-1).item() == 1.0
    x0, eps = torch.randn(3, 2, 2, 4, 4), torch.randn(3, 2, 2, 4, 4)
    t = torch.tensor([0, 500, 999])
    xt = s.q_sample(x0, t, eps)
    torch.testing.assert_close(xt[2], eps[2])  # terminal step: pure noise
    a = s.alphas_cumprod[500].item()
    torch.testing.assert_close(xt[1], a**0.5 * x0[1] + (1 - a) ** 0.5 * eps[1])


# ------------------------------------------------------------------------------------ conversions


def test_conversions_roundtrip():
    s = DiffusionSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 2, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 600, 999])
    a = s.alpha_bar(t)
    xt = s.q_sample(x0, t, eps)
    v = v_from_x0_eps(x0, eps, a)
    # Formulas that are finite everywhere, terminal step included.
    torch.testing.assert_close(x0_from_v(xt, v, a), x0)
    torch.testing.assert_close(eps_from_v(xt, v, a), eps)
    torch.testing.assert_close(v_from_x0(xt, x0, a), v)
    torch.testing.assert_close(eps_from_x0(xt, x0, a), eps)
    # At the terminal step the x0 estimate is -v.
    torch.testing.assert_close(x0_from_v(xt, v, a)[3], -v[3])
    # eps -> x0 / v divide by sqrt(a): exact away from the terminal step, infinite on it.
    k = slice(0, 3)
    torch.testing.assert_close(x0_from_eps(xt[k], eps[k], a[k]), x0[k])
    torch.testing.assert_close(v_from_eps(xt[k], eps[k], a[k]), v[k])
    assert not torch.isfinite(x0_from_eps(xt[3:], eps[3:], a[3:])).all()


# ------------------------------------------------------------------------------------ loss


@dataclass(frozen=True)
class _Cfg:
    self_conditioning: bool = False
    frame_conditioning: bool = False
    num_classes: int = 0


class SpyNet(nn.Module):
    """A tiny linear 'denoiser' that records every call's keyword arguments."""

    def __init__(self, channels=2, **cfg):
        super().__init__()
        self.config = _Cfg(**cfg)
        self.null_class = self.config.num_classes
        self.proj = nn.Conv3d(channels, channels, 1)
        self.calls = []

    def forward(self, x, t, y=None, cond_frames=None, cond_mask=None, self_cond=None, **kw):
        self.calls.append(
            dict(x=x, t=t, y=y, cond_frames=cond_frames, cond_mask=cond_mask, self_cond=self_cond, grad=torch.is_grad_enabled())
        )
        out = self.proj(x)
        if self_cond is not None:
            out = out + 0.1 * self_cond
        return out


def _x0(b=4, c=2, t=3, hw=4, seed=0):
    return torch.randn(b, c, t, hw, hw, generator=torch.Generator().manual_seed(seed))


def test_loss_is_unweighted_v_mse():
    s, net, x0 = DiffusionSchedule(), SpyNet(), _x0()
    t = torch.tensor([0, 300, 700, 999])
    noise = torch.randn_like(x0)
    loss, stats = diffusion_loss(net, x0, s, t=t, noise=noise)
    with torch.no_grad():
        target = v_from_x0_eps(x0, noise, s.alpha_bar(t))
        ref = ((net.proj(s.q_sample(x0, t, noise)) - target) ** 2).mean()
    torch.testing.assert_close(loss.detach(), ref)
    assert loss.requires_grad and stats["loss"].item() == pytest.approx(loss.item())
    loss.backward()
    assert net.proj.weight.grad is not None


def test_loss_min_snr_weighting():
    """weighting='min_snr': each sample's v-MSE times min(SNR, gamma) / (SNR + 1); SNR 0 keeps weight 1."""
    s, net, x0 = DiffusionSchedule(), SpyNet(), _x0()
    t = torch.tensor([0, 300, 700, 999])  # SNR >> 5, ~0.6, ~0.007, exactly 0 (zero terminal SNR)
    noise = torch.randn_like(x0)
    cfg = DiffusionLossConfig(weighting="min_snr", min_snr_gamma=5.0)
    loss, _ = diffusion_loss(net, x0, s, cfg=cfg, t=t, noise=noise)
    with torch.no_grad():
        a = s.alpha_bar(t)
        per_sample = ((net.proj(s.q_sample(x0, t, noise)) - v_from_x0_eps(x0, noise, a)) ** 2).mean(dim=(1, 2, 3, 4))
        snr = a / (1 - a)
        w = torch.tensor([5.0 / (snr[0] + 1), snr[1] / (snr[1] + 1), snr[2] / (snr[2] + 1), 1.0])
    assert snr[0] > 5 and snr[3] == 0
    torch.testing.assert_close(loss.detach().double(), (per_sample.double() * w).mean())
    plain, _ = diffusion_loss(net, x0, s, t=t, noise=noise)
    assert loss.item() < plain.item()  # every weight is <= 1, the first three < 1
    with pytest.raises(ValueError, match="weighting"):
        DiffusionLossConfig(weighting="snr")


def test_loss_deterministic_with_generator_and_uniform_t():
    s, x0 = DiffusionSchedule(), _x0()
    l1, _ = diffusion_loss(SpyNet(), x0, s, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    net = SpyNet()
    l2, _ = diffusion_loss(net, x0, s, generator=torch.Generator().manual_seed(3))
    net2 = SpyNet()
    net2.load_state_dict(net.state_dict())
    l3, _ = diffusion_loss(net2, x0, s, generator=torch.Generator().manual_seed(3))
    assert l2.item() == l3.item()
    # t covers the whole range [0, 999] uniformly.
    net = SpyNet()
    diffusion_loss(net, _x0(b=4000, c=2, t=1, hw=1), s, generator=torch.Generator().manual_seed(0))
    t = net.calls[0]["t"]
    assert t.min() >= 0 and t.max() <= 999 and t.max() >= 990 and t.min() <= 10
    assert abs(t.float().mean().item() - 499.5) < 15


def test_loss_logit_normal_timesteps_concentrate_on_mid_noise():
    """timesteps='logit_normal': t / T = sigmoid(N(m, s)): median ~ T * sigmoid(m), fewer extreme t than
    uniform; the uniform default draws exactly (u * T).long() from the generator's first draw."""
    s = DiffusionSchedule()
    draws = {}
    for kind, mean in (("uniform", 0.0), ("logit_normal", 0.0), ("logit_normal", 1.0)):
        net = SpyNet()
        cfg = DiffusionLossConfig(timesteps=kind, logit_normal_mean=mean)
        diffusion_loss(net, _x0(b=4000, c=2, t=1, hw=1), s, cfg=cfg, generator=torch.Generator().manual_seed(0))
        draws[kind, mean] = net.calls[0]["t"].float()
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws["uniform", 0.0], (u * 1000).long().float())
    ln0, ln1 = draws["logit_normal", 0.0], draws["logit_normal", 1.0]
    assert abs(ln0.median().item() - 500) < 25 and abs(ln1.median().item() - 731) < 25  # sigmoid(1) = 0.731
    tails = lambda t: ((t < 100) | (t >= 900)).float().mean().item()  # noqa: E731
    assert tails(ln0) < 0.5 * tails(draws["uniform", 0.0])  # uniform: 0.2; logit-normal(0, 1): ~0.03
    assert ln0.min() >= 0 and ln0.max() <= 999
    with pytest.raises(ValueError, match="timesteps"):
        DiffusionLossConfig(timesteps="cosine")


def test_loss_self_conditioning():
    s, x0 = DiffusionSchedule(), _x0()
    net = SpyNet(self_conditioning=True)
    diffusion_loss(net, x0, s, DiffusionLossConfig(p_self_cond=1.0), generator=torch.Generator().manual_seed(0))
    assert len(net.calls) == 2
    first, second = net.calls
    assert not first["grad"] and torch.count_nonzero(first["self_cond"]) == 0  # zero self-cond, no grad
    a = s.alpha_bar(first["t"])
    with torch.no_grad():
        x0_est = x0_from_v(first["x"], net.proj(first["x"]), a)
    torch.testing.assert_close(second["self_cond"], x0_est)
    assert not second["self_cond"].requires_grad  # stop-grad
    # p_sc = 0: one call, zero self-cond.
    net = SpyNet(self_conditioning=True)
    diffusion_loss(net, x0, s, DiffusionLossConfig(p_self_cond=0.0))
    assert len(net.calls) == 1 and torch.count_nonzero(net.calls[0]["self_cond"]) == 0
    # A network without self-conditioning is never given a self_cond input.
    net = SpyNet()
    diffusion_loss(net, x0, s)
    assert len(net.calls) == 1 and net.calls[0]["self_cond"] is None


def test_loss_frame_prediction_masks_context():
    s, x0 = DiffusionSchedule(), _x0(b=16, t=3)
    net = SpyNet(frame_conditioning=True)
    cfg = DiffusionLossConfig(p_frame_pred=1.0)
    diffusion_loss(net, x0, s, cfg, generator=torch.Generator().manual_seed(0))
    mask, frames = net.calls[0]["cond_mask"], net.calls[0]["cond_frames"]
    k = mask.sum(1)
    assert set(k.tolist()) == {1.0, 2.0}  # 1 or 2 context latent frames, both drawn
    for i in range(16):
        n = int(k[i])
        assert mask[i, :n].eq(1).all() and mask[i, n:].eq(0).all()
        torch.testing.assert_close(frames[i, :, :n], x0[i, :, :n])
        assert frames[i, :, n:].abs().sum() == 0
    # The loss ignores context frames: changing the prediction there changes nothing.
    t, noise = torch.full((16,), 500), torch.randn_like(x0)

    class Poke(SpyNet):
        def forward(self, x, t, **kw):
            out = super().forward(x, t, **kw)
            return out + 100.0 * kw["cond_mask"][:, None, :, None, None]

    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    p = Poke(frame_conditioning=True)
    p.load_state_dict(net.state_dict())
    l_poke, st = diffusion_loss(p, x0, s, cfg, t=t, noise=noise, generator=g())
    l_ref, _ = diffusion_loss(net, x0, s, cfg, t=t, noise=noise, generator=g())
    torch.testing.assert_close(l_poke, l_ref)
    assert st["frac_frame_pred"].item() == 1.0
    l_all, _ = diffusion_loss(p, x0, s, DiffusionLossConfig(p_frame_pred=1.0, loss_on_context=True), t=t, noise=noise, generator=g())
    assert l_all.item() > 10 * l_ref.item()
    # Images (T = 1) are never given context.
    net = SpyNet(frame_conditioning=True)
    diffusion_loss(net, _x0(t=1), s, cfg)
    assert net.calls[0]["cond_mask"].sum() == 0


def test_loss_label_dropout():
    s, x0 = DiffusionSchedule(), _x0(b=8)
    y = torch.arange(8) % 5
    net = SpyNet(num_classes=5)
    diffusion_loss(net, x0, s, DiffusionLossConfig(p_uncond=1.0), y=y)
    assert net.calls[0]["y"].eq(5).all()
    net = SpyNet(num_classes=5)
    _, st = diffusion_loss(net, x0, s, DiffusionLossConfig(p_uncond=0.0), y=y)
    assert net.calls[0]["y"].equal(y) and st["frac_uncond"].item() == 0
    net = SpyNet(num_classes=5)
    diffusion_loss(net, _x0(b=2000, c=2, t=1, hw=1), s, y=torch.zeros(2000, dtype=torch.long), generator=torch.Generator().manual_seed(0))
    frac = net.calls[0]["y"].eq(5).float().mean().item()
    assert 0.07 < frac < 0.13  # default p_uncond = 0.1


def test_loss_default_probabilities_p_sc_and_p_fp():
    """Defaults live in DiffusionLossConfig: p_sc = 0.9 (paper Table 3), p_fp = 0.5 (a project
    choice: the paper does not state it), 1 or 2 context latent frames; the loss draws with them."""
    cfg = DiffusionLossConfig()
    assert cfg.p_self_cond == 0.9 and cfg.p_frame_pred == 0.5 and cfg.context_frames == (1, 2)
    assert cfg.p_uncond == 0.1
    net = SpyNet(self_conditioning=True, frame_conditioning=True)
    _, stats = diffusion_loss(net, _x0(b=4000, c=2, t=3, hw=1), DiffusionSchedule(), generator=torch.Generator().manual_seed(0))
    first, second = net.calls  # zero self-cond pass, then the trained pass
    used_sc = second["self_cond"].flatten(1).abs().sum(1) > 0
    assert 0.88 < used_sc.float().mean().item() < 0.92
    assert stats["frac_self_cond"].item() == pytest.approx(used_sc.float().mean().item())
    k = second["cond_mask"].sum(1)  # context frames per sample
    assert 0.47 < (k > 0).float().mean().item() < 0.53
    assert 0.45 < (k == 1).float().sum().item() / (k > 0).float().sum().item() < 0.55
    assert torch.equal(first["cond_mask"], second["cond_mask"])  # both passes see the same context


def test_loss_config_validation():
    with pytest.raises(ValueError):
        DiffusionLossConfig(p_self_cond=1.5)
    with pytest.raises(ValueError):
        DiffusionLossConfig(context_frames=())
    with pytest.raises(ValueError, match="not class-conditional"):
        diffusion_loss(SpyNet(), _x0(), DiffusionSchedule(), y=torch.zeros(4, dtype=torch.long), cfg=DiffusionLossConfig())
