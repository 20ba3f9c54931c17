"""walt.diffusion samplers and guidance: oracle denoisers, diffusers cross-checks, seeds, self-cond, CFG."""

import pytest
import torch

from walt.diffusion import (
    DiffusionSchedule,
    cfg_model_fn,
    combine_guidance,
    make_generators,
    replace_context_fn,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp,
    seeded_noise,
    v_from_x0,
    x0_from_v,
)

S = DiffusionSchedule()
SAMPLER_FNS = [sample_ddim, sample_ddpm, sample_dpmpp]


def noise_kwargs(fn, seeds):
    """Per-sample generators for the samplers that draw noise (DPM-Solver++ is deterministic)."""
    return {} if fn is sample_dpmpp else {"generator": make_generators(seeds)}


def point_oracle(x0):
    """The perfect denoiser of a one-point data distribution: E[x0 | x_t] = x0, so v = (sqrt(a) x_t - x0)/sqrt(1-a)."""

    def fn(x_t, t, self_cond=None):
        return v_from_x0(x_t, x0.to(x_t.dtype), S.alpha_bar(t, x_t.device))

    return fn


def gaussian_oracle(mu, sd):
    """Exact denoiser for data ~ N(mu, sd^2) per element: E[x0|x_t] = mu + sqrt(a) sd^2 / (a sd^2 + 1 - a) (x_t - sqrt(a) mu).

    Its probability-flow ODE maps x_T = z (pure noise, zero terminal SNR) to mu + sd z exactly,
    so deterministic samplers must converge to that map as the step count grows.
    """

    def fn(x_t, t, self_cond=None):
        a = S.alpha_bar(t[:1], x_t.device).view(-1, *[1] * (x_t.ndim - 1))  # one t per call
        x = x_t.double()
        x0 = mu + a.sqrt() * sd**2 / (a * sd**2 + 1 - a) * (x - a.sqrt() * mu)
        return ((a.sqrt() * x - x0) / (1 - a).sqrt()).to(x_t.dtype)

    return fn


def smooth_model(x, t, self_cond=None):
    """A deterministic, batch-independent nonlinear stand-in for a network."""
    return torch.tanh(1.3 * x) * torch.cos(t.double() / 300).view(-1, 1, 1, 1, 1).to(x.dtype) + 0.1


# ------------------------------------------------------------------------------------ correctness


@pytest.mark.parametrize("fn", SAMPLER_FNS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_point_oracle_returns_its_data(fn, steps):
    x0 = torch.randn(3, 2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    out = fn(point_oracle(x0), seeded_noise(x0.shape, [1, 2, 3]), S, steps=steps, **noise_kwargs(fn, [4, 5, 6]))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def test_gaussian_oracle_ode_convergence():
    mu, sd = 0.3, 0.5
    z = seeded_noise((4, 1, 2, 8, 8), [0, 1, 2, 3]).double()
    target = mu + sd * z
    err = lambda out: (out - target).abs().max().item()  # noqa: E731
    ddim20, ddim100 = (err(sample_ddim(gaussian_oracle(mu, sd), z, S, n)) for n in (20, 100))
    dpm20 = err(sample_dpmpp(gaussian_oracle(mu, sd), z, S, 20))
    dpm50 = err(sample_dpmpp(gaussian_oracle(mu, sd), z, S, 50))
    assert ddim100 < 0.6 * ddim20 and ddim100 < 0.06  # first order: error shrinks with steps
    assert dpm20 < 0.5 * ddim20  # second order beats DDIM at equal cost
    assert dpm50 < 5e-3


def test_ddpm_ancestral_statistics():
    mu, sd = 0.3, 0.5
    z = seeded_noise((10000, 1, 1, 1, 1), torch.Generator().manual_seed(0))
    # Plugging E[x0|x_t] into the posterior under-disperses with few steps; 250 steps is close.
    out = sample_ddpm(gaussian_oracle(mu, sd), z, S, steps=250, generator=torch.Generator().manual_seed(1))
    assert abs(out.mean().item() - mu) < 0.02
    assert abs(out.std().item() - sd) < 0.03


def test_ddim_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    z = seeded_noise((2, 2, 2, 4, 4), [0, 1]).double()
    for n in (1, 10, 50):
        ref = diffusers.DDIMScheduler(
            beta_schedule="linear", rescale_betas_zero_snr=True, prediction_type="v_prediction",
            timestep_spacing="trailing", clip_sample=False,
        )
        ref.set_timesteps(n)
        x = z.clone()
        for t in ref.timesteps:
            x = ref.step(smooth_model(x, t.repeat(2)), t, x).prev_sample
        torch.testing.assert_close(sample_ddim(smooth_model, z, S, n), x, atol=1e-5, rtol=1e-5)


class TerminalClampSchedule(DiffusionSchedule):
    """The zero-SNR schedule with alpha_bar_T moved from 0 to `eps`, as diffusers'
    DPMSolverMultistepScheduler does (eps = 2^-24) to keep log-SNR finite at t = T."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def alpha_bar(self, t, device=None):
        a = super().alpha_bar(t, device)
        last = torch.as_tensor(t, device=a.device) == self.num_timesteps - 1
        return torch.where(last, torch.full_like(a, self.eps), a)


def _diffusers_dpmpp(diffusers, z, n, **kw):
    ref = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="linear", rescale_betas_zero_snr=True, prediction_type="v_prediction",
        timestep_spacing="trailing", final_sigmas_type="zero", **kw,
    )
    ref.set_timesteps(n)
    x = z.clone()
    for t in ref.timesteps:
        x = ref.step(smooth_model(x, t.repeat(z.shape[0])), t, x).prev_sample
    return x


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dpmpp_matches_diffusers():
    """diffusers' DPMSolverMultistepScheduler vs the exact zero-SNR solver: measured 2.3e-4 (20
    steps) and 1.5e-4 (10 steps) apart; the next test shows that all of it is diffusers' clamp."""
    diffusers = pytest.importorskip("diffusers")
    z = seeded_noise((2, 2, 2, 4, 4), [0, 1]).double()
    for n in (10, 20):
        diff = (sample_dpmpp(smooth_model, z, S, n) - _diffusers_dpmpp(diffusers, z, n)).abs().max().item()
        assert diff < 5e-4, (n, diff)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dpmpp_with_diffusers_terminal_clamp_is_diffusers():
    """The whole DPM-Solver++ difference from diffusers is its alpha_bar_T = 2^-24 clamp.

    With the same clamp this solver reproduces DPMSolverMultistepScheduler to float32 precision
    (diffusers keeps its sigmas in float32; measured 1.2e-6), 100x closer than without it. The
    clamp changes the first x0 estimate by ~2^-12 x_T, and it makes the second step's ratio
    h_1 / h_0 finite, so that step gets a second-order correction of relative size ~h_1 / h_0,
    with h_0 ~ 0.5 ln(1/eps): the clamped solver approaches the exact one only like
    1 / log(1/eps) (measured: the distance halves each time log2(1/eps) doubles, 100 -> 800).
    The exact solver is the eps -> 0 limit of diffusers' clamped one.
    """
    diffusers = pytest.importorskip("diffusers")
    z = seeded_noise((2, 2, 2, 4, 4), [0, 1]).double()
    clamped = TerminalClampSchedule(2.0**-24)
    assert clamped.alpha_bar(999).item() == 2.0**-24 and clamped.alpha_bar(998).item() == S.alpha_bar(998).item()
    for n in (10, 20):
        ref = _diffusers_dpmpp(diffusers, z, n)
        gap_exact = (sample_dpmpp(smooth_model, z, S, n) - ref).abs().max().item()
        gap_clamped = (sample_dpmpp(smooth_model, z, clamped, n) - ref).abs().max().item()
        assert gap_clamped < 5e-6 and gap_clamped < gap_exact / 50, (n, gap_clamped, gap_exact)
    # eps = 2^-k -> 0: the distance to the exact solver falls like 1 / k.
    exact = sample_dpmpp(smooth_model, z, S, 10)
    dist = [(sample_dpmpp(smooth_model, z, TerminalClampSchedule(2.0**-k), 10) - exact).abs().max().item()
            for k in (100, 200, 400, 800)]
    for d, d_next in zip(dist, dist[1:]):
        assert 1.8 < d / d_next < 2.3, dist


def test_first_step_is_pure_noise():
    seen = []
    v = torch.randn(1, 2, 2, 4, 4)
    sample_ddim(lambda x, t, self_cond=None: v, torch.randn_like(v), S, steps=5, callback=seen.append)
    assert seen[0]["t"] == 999
    torch.testing.assert_close(seen[0]["x0"], -v.double())  # alpha_bar = 0: x0 estimate is -v


def test_dispatch_and_validation():
    z = torch.randn(1, 1, 1, 2, 2)
    torch.testing.assert_close(sample("ddim", smooth_model, z, S, 5), sample_ddim(smooth_model, z, S, 5))
    with pytest.raises(ValueError, match="unknown sampler"):
        sample("euler", smooth_model, z, S, 5)
    with pytest.raises(ValueError, match="eta"):
        sample("dpmpp", smooth_model, z, S, 5, eta=0.5)
    # `generator` is accepted for every sampler name; the deterministic DPM-Solver++ ignores it.
    torch.testing.assert_close(
        sample("dpmpp", smooth_model, z, S, 5, generator=make_generators([0])), sample_dpmpp(smooth_model, z, S, 5)
    )
    with pytest.raises(TypeError):
        sample_dpmpp(smooth_model, z, S, 5, generator=make_generators([0]))  # nothing to draw
    with pytest.raises(ValueError, match="steps"):
        sample_ddim(smooth_model, z, S, steps=0)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(smooth_model, z, S, eta=2.0)
    with pytest.raises(ValueError, match="seeds"):
        seeded_noise((3, 2), [1, 2])
    with pytest.raises(ValueError, match="return v"):
        sample_ddim(lambda x, t, self_cond=None: x[:, :1], torch.randn(1, 2, 1, 2, 2), S, 2)


# ------------------------------------------------------------------------------------ seeds


def test_seeded_noise_per_sample():
    a = seeded_noise((3, 2, 1, 4, 4), [7, 8, 9])
    b = seeded_noise((1, 2, 1, 4, 4), [8])
    torch.testing.assert_close(a[1:2], b)  # sample i depends on seed i only
    assert not torch.equal(a[0], a[1])
    torch.testing.assert_close(seeded_noise((3, 2, 1, 4, 4), [7, 8, 9]), a)


@pytest.mark.parametrize("name,kw", [("ddim", {"eta": 0.7}), ("ddpm", {}), ("dpmpp", {})])
def test_sampling_determinism_and_batch_independence(name, kw):
    shape = (1, 2, 2, 4, 4)

    def run(seeds):
        gens = make_generators(seeds)
        noise = seeded_noise((len(seeds), *shape[1:]), gens)  # the same streams continue in the sampler
        return sample(name, smooth_model, noise, S, 8, generator=gens, **kw)

    batch = run([11, 5, 42])
    torch.testing.assert_close(run([11, 5, 42]), batch, atol=0, rtol=0)
    torch.testing.assert_close(run([5]), batch[1:2], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(run([6]), batch[1:2])


# ------------------------------------------------------------------------------------ self-cond


@pytest.mark.parametrize("fn", SAMPLER_FNS, ids=lambda f: f.__name__)
def test_self_conditioning_carried_across_steps(fn):
    calls = []

    def spy(x, t, self_cond=None):
        v = smooth_model(x, t) + (0.0 if self_cond is None else 0.05 * self_cond)
        calls.append((x.clone(), t.clone(), None if self_cond is None else self_cond.clone(), v.clone()))
        return v

    fn(spy, torch.randn(2, 2, 2, 4, 4), S, steps=6)
    assert len(calls) == 6 and calls[0][2] is None
    for (x, t, _, v), nxt in zip(calls[:-1], calls[1:]):
        x0_prev = x0_from_v(x.double(), v.double(), S.alpha_bar(t))
        torch.testing.assert_close(nxt[2].double(), x0_prev, atol=1e-6, rtol=1e-6)
    calls.clear()
    fn(spy, torch.randn(2, 2, 2, 4, 4), S, steps=3, self_conditioning=False)
    assert all(c[2] is None for c in calls)


# ------------------------------------------------------------------------------------ guidance


def _cond_model(x, t, self_cond=None, y=None):
    return smooth_model(x, t) + y.view(-1, 1, 1, 1, 1).to(x.dtype) * 0.3 * x


def test_cfg_scale_one_is_conditional_exactly():
    x, t, y = torch.randn(3, 2, 2, 4, 4), torch.full((3,), 500), torch.tensor([1, 2, 3])
    null = torch.full_like(y, 10)
    g = cfg_model_fn(_cond_model, 1.0, {"y": y}, {"y": null})
    assert torch.equal(g(x, t), _cond_model(x, t, y=y))
    g0 = cfg_model_fn(_cond_model, 0.0, {"y": y}, {"y": null})
    assert torch.equal(g0(x, t), _cond_model(x, t, y=null))


def test_cfg_scale_one_through_the_general_combination_is_conditional():
    """w = 1 without the shortcut: the batched [cond; uncond] call, split and combined, is v_c."""
    x, t, y = torch.randn(3, 2, 2, 4, 4), torch.full((3,), 500), torch.tensor([1, 2, 3])
    null = torch.full_like(y, 10)
    calls = []

    def counting(x, t, self_cond=None, y=None):
        calls.append(x.shape[0])
        return _cond_model(x, t, self_cond=self_cond, y=y)

    vc, vu = _cond_model(x, t, y=y), _cond_model(x, t, y=null)
    assert (vc - vu).abs().max() > 0.1  # the unconditional branch really differs
    for batched in (True, False):
        calls.clear()
        g = cfg_model_fn(counting, 1.0, {"y": y}, {"y": null}, batched=batched, shortcut=False)
        torch.testing.assert_close(g(x, t), vc, atol=1e-6, rtol=1e-6)
        assert calls == ([6] if batched else [3, 3])  # both branches were evaluated
    torch.testing.assert_close(combine_guidance(vc, vu, 1.0), vc, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(combine_guidance(vc, vu, 0.0), vu, atol=0, rtol=0)
    torch.testing.assert_close(cfg_model_fn(counting, 0.0, {"y": y}, {"y": null}, shortcut=False)(x, t), vu)


def test_cfg_combination_and_single_batched_call():
    x, t, y = torch.randn(3, 2, 2, 4, 4), torch.full((3,), 500), torch.tensor([1, 2, 3])
    null = torch.full_like(y, 10)
    calls = []

    def counting(x, t, self_cond=None, y=None):
        calls.append(x.shape[0])
        return _cond_model(x, t, y=y)

    g = cfg_model_fn(counting, 4.0, {"y": y}, {"y": null})
    out = g(x, t)
    assert calls == [6]  # one call over [cond; uncond]
    vc, vu = _cond_model(x, t, y=y), _cond_model(x, t, y=null)
    torch.testing.assert_close(out, vu + 4.0 * (vc - vu))
    torch.testing.assert_close(cfg_model_fn(_cond_model, 4.0, {"y": y}, {"y": null}, batched=False)(x, t), out)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="guidance scale"):
            cfg_model_fn(_cond_model, bad, {"y": y}, {"y": null})
    with pytest.raises(ValueError, match="same keys"):
        cfg_model_fn(_cond_model, 2.0, {"y": y}, {})


def test_replace_context_keeps_context_frames():
    ctx = torch.randn(2, 2, 3, 4, 4)
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]])
    fn = replace_context_fn(smooth_model, S, ctx, mask)
    for sampler in SAMPLER_FNS:
        out = sampler(fn, seeded_noise(ctx.shape, [0, 1]), S, steps=10, **noise_kwargs(sampler, [2, 3]))
        torch.testing.assert_close(out[0, :, :1], ctx[0, :, :1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[1, :, :2], ctx[1, :, :2], atol=1e-5, rtol=1e-5)
        assert (out[0, :, 1:] - ctx[0, :, 1:]).abs().mean() > 0.1  # generated frames are free
    with pytest.raises(ValueError):
        replace_context_fn(smooth_model, S, ctx, mask[:, :2])
