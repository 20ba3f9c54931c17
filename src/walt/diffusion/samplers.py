"""Samplers: pure functions over a denoise callable (k-diffusion / flux style).

The model protocol (`ModelFn`) is one call per step::

    v = model_fn(x_t, t, self_cond=None)     # x_t (B, C, T, H, W), t (B,) long in [0, T), -> v like x_t

Conditioning (class labels, context frames, text, guidance) is bound into `model_fn` by the
caller: see `walt.diffusion.guidance` and `walt.pipeline`. The samplers convert v to x0 / eps
with the float64 formulas of `schedule.py` and keep their running state in float64 (EDM style);
the network only ever sees `x_t` in the dtype of `noise`.

Self-conditioning (Chen et al. 2023, "Analog Bits"; SPEC §2): the x0 estimate of the previous
step is passed as `self_cond` to the next call (None at the first step), matching training where
the second forward pass is conditioned on the first pass's stop-grad x0 estimate.

Timesteps use TRAILING spacing (Lin et al. 2024): the first step is t = T-1 where alpha_bar = 0,
so `noise` is exactly x_T and the first x0 estimate is -v. The final step goes to 'clean'
(alpha_bar = 1), so every sampler returns its last x0 estimate.

Per-sample seeds: `seeded_noise(shape, seeds)` draws sample i from its own `torch.Generator`,
and the stochastic samplers draw their per-step noise from the same per-sample generators, so
sample i depends only on seed i whatever else is in the batch.

Why not diffusers' schedulers (reused wherever they do exactly this):
  * they are stateful objects stepped by a loop the caller writes (`set_timesteps`, `step`, an
    internal step index and model-output history); here a sampler is one pure function of
    (model_fn, noise, schedule), so self-conditioning (feeding the previous x0 estimate back) and
    frame-prediction context pinning (`guidance.replace_context_fn`) are plain wrappers of
    `model_fn`, and nothing can be stepped out of order;
  * the state and every coefficient are float64 here, and the coefficients are Python scalars
    computed on the host: nothing is copied to or read back from the device per step, so the
    deterministic loops (DDIM with eta = 0, DPM-Solver++) never synchronise a CUDA device (the
    stochastic ones copy each step's noise from the per-sample CPU generators: the price of
    seeds that give the same sample on any device). diffusers keeps float32 tables (DPM-Solver
    casts its sigmas to float32);
  * zero terminal SNR is taken exactly: alpha_bar_T = 0, the first x0 estimate is -v.
    `DPMSolverMultistepScheduler` instead clamps alpha_bar_T to 2^-24 (see `sample_dpmpp`);
  * diffusers is an optional dependency of walt (the `peers` / `dev` extras), not a runtime one.
The arithmetic is the same, and tests/test_samplers.py checks it: `test_ddim_matches_diffusers`
(DDIMScheduler, trailing spacing, v-prediction, zero-SNR rescale: agreement to 1e-5),
`test_dpmpp_matches_diffusers` and `test_dpmpp_with_diffusers_terminal_clamp_is_diffusers`
(DPMSolverMultistepScheduler: the whole ~2e-4 difference is its terminal clamp; with the same
clamp the two agree to ~1e-6).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from walt.diffusion.schedule import DiffusionSchedule

__all__ = [
    "ModelFn",
    "make_generators",
    "seeded_noise",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp",
    "SAMPLERS",
    "STOCHASTIC",
    "sample",
]

GeneratorLike = torch.Generator | Sequence[torch.Generator] | None


class ModelFn(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor, self_cond: Tensor | None = None) -> Tensor:
        """x_t (B, C, T, H, W), t (B,) long, self_cond (B, C, T, H, W) x0 estimate or None -> v."""
        ...


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample (CPU so that a seed gives the same noise on any device)."""
    gens = []
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool):
            raise ValueError(f"seeds must be Python ints, got {s!r}")
        gens.append(torch.Generator(device="cpu").manual_seed(s))
    return gens


def seeded_noise(
    shape: Sequence[int],
    seeds: Sequence[int] | Sequence[torch.Generator] | torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise of `shape` = (B, ...).

    seeds: a list of B ints or B generators (sample i drawn from generator i only: the same seed
    gives the same sample whatever the batch), one generator (whole batch from it), or None
    (the global RNG). Generators are advanced, so repeated calls continue the per-sample streams.
    """
    shape = tuple(int(s) for s in shape)
    if seeds is None:
        return torch.randn(shape, device=device, dtype=dtype)
    if isinstance(seeds, torch.Generator):
        return torch.randn(shape, generator=seeds, device=seeds.device, dtype=torch.float32).to(device, dtype)
    seeds = list(seeds)
    if len(seeds) != shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {shape[0]}: pass one seed per sample")
    gens = seeds if all(isinstance(g, torch.Generator) for g in seeds) else make_generators(seeds)
    # Draw in float32 on the generator's device, then cast: the stream does not depend on dtype.
    out = torch.stack([torch.randn(shape[1:], generator=g, device=g.device, dtype=torch.float32) for g in gens])
    return out.to(device, dtype)


def _noise_like(x: Tensor, generator: GeneratorLike) -> Tensor:
    return seeded_noise(x.shape, generator, device=x.device, dtype=x.dtype)


# ---------------------------------------------------------------------------------------------
# Shared loop pieces
# ---------------------------------------------------------------------------------------------


def _check(noise: Tensor, schedule: DiffusionSchedule, steps: int, spacing: str) -> list[int]:
    if not isinstance(schedule, DiffusionSchedule):
        raise ValueError(f"schedule must be a walt.diffusion.DiffusionSchedule, got {type(schedule).__name__}")
    if noise.ndim < 2:
        raise ValueError(f"noise must be batched (B, ...), got shape {tuple(noise.shape)}")
    return schedule.timesteps(steps, spacing)


def _predict(
    model_fn: ModelFn, x: Tensor, t: int, a: float, self_cond: Tensor | None, dtype: torch.dtype
) -> Tensor:
    """One network call; returns the x0 estimate in float64. x is float64 state, a = alpha_bar_t."""
    tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    v = model_fn(x.to(dtype), tt, self_cond=self_cond)
    if v.shape != x.shape:
        raise ValueError(f"model_fn returned shape {tuple(v.shape)} for input {tuple(x.shape)}; it must return v like x_t")
    # x0 = sqrt(a) x_t - sqrt(1-a) v: finite at the terminal step, where it is -v.
    return math.sqrt(a) * x - math.sqrt(1.0 - a) * v.to(torch.float64)


def _ab(schedule: DiffusionSchedule, t: int) -> float:
    """alpha_bar_t as a Python float (float64) from the schedule's CPU table (t = -1: clean, 1.0).

    Per-step coefficients are Python scalars: multiplying device tensors by them needs no
    host-to-device copy, and nothing is read back from the device (no CUDA synchronisation).
    """
    return float(schedule.alpha_bar(t))


def _loop(schedule, ts, progress, desc):
    """Pairs (i, t, t_prev) with t_prev = -1 (clean, alpha_bar = 1) after the last step."""
    nxt = ts[1:] + [-1]
    return tqdm(list(enumerate(zip(ts, nxt))), desc=desc, disable=not progress, leave=False)


# ---------------------------------------------------------------------------------------------
# DDIM (Song et al. 2021, eq. 12) -- the paper's sampler: 50 steps, eta = 0, for every result.
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_ddim(
    model_fn: ModelFn,
    noise: Tensor,
    schedule: DiffusionSchedule,
    steps: int = 50,
    eta: float = 0.0,
    generator: GeneratorLike = None,
    spacing: str = "trailing",
    self_conditioning: bool = True,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """DDIM: x_prev = sqrt(a') x0 + sqrt(1 - a' - sigma^2) eps + sigma z (Song et al. 2021, eq. 12).

    sigma = eta * sqrt((1-a')/(1-a)) * sqrt(1 - a/a'); eta = 0 is deterministic (the paper's
    setting), eta = 1 is ancestral DDPM sampling on the sub-sequence of timesteps.

    Args:
        model_fn: `ModelFn` returning v.
        noise: x_T (B, C, T, H, W) (pure noise; use `seeded_noise`). Its dtype is the network's.
        schedule: the `DiffusionSchedule`.
        steps: number of network calls. eta: stochasticity in [0, 1].
        generator: per-sample generators (or one, or None) for the eta > 0 noise.
        self_conditioning: pass the previous x0 estimate as `self_cond` (None at the first step).
        callback: called after every step with {"i", "t", "x", "x0"}.
    Returns: the sample x0 (B, C, T, H, W) in noise's dtype.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    ts = _check(noise, schedule, steps, spacing)
    x = noise.to(torch.float64)  # (B, C, T, H, W) float64 state
    x0 = None
    for i, (t, t_prev) in _loop(schedule, ts, progress, "DDIM"):
        a, a_prev = _ab(schedule, t), _ab(schedule, t_prev)
        sc = x0.to(noise.dtype) if (self_conditioning and x0 is not None) else None
        x0 = _predict(model_fn, x, t, a, sc, noise.dtype)
        eps = _eps_from_x0(x, x0, a)
        sigma = eta * math.sqrt(max((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev), 0.0))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if eta > 0 and t_prev >= 0:
            x = x + sigma * _noise_like(x, generator).to(torch.float64)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x.to(noise.dtype)


def _eps_from_x0(x_t: Tensor, x0: Tensor, a: float) -> Tensor:
    """eps implied by (x_t, x0): (x_t - sqrt(a) x0) / sqrt(1-a); a < 1 at every sampled step."""
    return (x_t - math.sqrt(a) * x0) / math.sqrt(1.0 - a)


# ---------------------------------------------------------------------------------------------
# DDPM ancestral sampling (Ho et al. 2020, eq. 6-7) on a sub-sequence of timesteps
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_ddpm(
    model_fn: ModelFn,
    noise: Tensor,
    schedule: DiffusionSchedule,
    steps: int = 1000,
    generator: GeneratorLike = None,
    spacing: str = "trailing",
    self_conditioning: bool = True,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """Ancestral sampling from the true posterior q(x_prev | x_t, x0_hat) (Ho et al. 2020, eq. 7).

    Between visited steps t -> t' the effective beta is 1 - a/a', so

        mean = sqrt(a') (1 - a/a') / (1-a) * x0 + sqrt(a/a') (1-a') / (1-a) * x_t
        var  = (1 - a/a') (1-a') / (1-a)

    (the same distribution as DDIM with eta = 1). `steps=1000` is classic DDPM. The variance
    is 0 at the last step (a' = 1), so the result is the final x0 estimate. Arguments as
    `sample_ddim`; `generator` should be the per-sample generators for seed-determinism.
    """
    ts = _check(noise, schedule, steps, spacing)
    x = noise.to(torch.float64)  # (B, C, T, H, W) float64 state
    x0 = None
    for i, (t, t_prev) in _loop(schedule, ts, progress, "DDPM"):
        a, a_prev = _ab(schedule, t), _ab(schedule, t_prev)
        sc = x0.to(noise.dtype) if (self_conditioning and x0 is not None) else None
        x0 = _predict(model_fn, x, t, a, sc, noise.dtype)
        beta = 1.0 - a / a_prev
        mean = math.sqrt(a_prev) * beta / (1.0 - a) * x0 + math.sqrt(a / a_prev) * (1.0 - a_prev) / (1.0 - a) * x
        var = max(beta * (1.0 - a_prev) / (1.0 - a), 0.0)
        x = mean
        if t_prev >= 0:
            x = x + math.sqrt(var) * _noise_like(x, generator).to(torch.float64)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x.to(noise.dtype)


# ---------------------------------------------------------------------------------------------
# DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; data prediction, multistep)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_dpmpp(
    model_fn: ModelFn,
    noise: Tensor,
    schedule: DiffusionSchedule,
    steps: int = 20,
    spacing: str = "trailing",
    self_conditioning: bool = True,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Tensor:
    """DPM-Solver++(2M): a second-order multistep ODE solver in log-SNR time; good in 10-20 steps.

    With lambda = log(alpha/sigma), h = lambda' - lambda, alpha = sqrt(a), sigma = sqrt(1-a):

        x' = (sigma'/sigma) x_t - alpha' (e^{-h} - 1) D,
        D  = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1},   r = h_{i-1} / h_i.

    Zero terminal SNR puts the first step at lambda = -inf. The first-order update is still
    finite there (it is exactly DDIM: x' = sigma' x_T + alpha' x0), and the next step's ratio
    r = inf makes its correction vanish, so the solver is first order on its first two steps
    and second order afterwards. The last step goes to sigma' = 0 and is first order
    (x' = x0), as in k-diffusion and diffusers' `final_sigmas_type="zero"`.

    Difference from diffusers' `DPMSolverMultistepScheduler` (rescale_betas_zero_snr=True,
    final_sigmas_type="zero"), whose samples differ from these by ~2e-4: diffusers clamps
    alpha_bar_T from 0 to 2^-24 to keep lambda finite. Its first x0 estimate is then
    2^-12 x_T - sqrt(1 - 2^-24) v instead of -v, and its second step gets a second-order
    correction with weight 1/(2r) = h_1 / (2 h_0), h_0 ~ 0.5 ln(2^24), instead of none. On a schedule
    with the same clamp this function reproduces diffusers to float32 precision (~1e-6), and as
    the clamp eps goes to 0 it converges (like 1 / log(1/eps)) to this exact limit
    (tests/test_samplers.py, `test_dpmpp_with_diffusers_terminal_clamp_is_diffusers`).

    Deterministic: it draws no noise, so it takes no `generator` (`sample()` accepts one for
    every sampler and passes it only to the stochastic ones). Other arguments as `sample_ddim`.
    """
    ts = _check(noise, schedule, steps, spacing)
    x = noise.to(torch.float64)  # (B, C, T, H, W) float64 state
    x0 = x0_old = None
    h_old = None
    for i, (t, t_next) in _loop(schedule, ts, progress, "DPM++2M"):
        a, a_next = _ab(schedule, t), _ab(schedule, t_next)
        sc = x0.to(noise.dtype) if (self_conditioning and x0 is not None) else None
        x0_old, x0 = x0, _predict(model_fn, x, t, a, sc, noise.dtype)
        alpha, sigma = math.sqrt(a), math.sqrt(1.0 - a)
        alpha_n, sigma_n = math.sqrt(a_next), math.sqrt(1.0 - a_next)
        h = _log_snr_half(a_next) - _log_snr_half(a)  # +inf at the first (a = 0) and last (a_next = 1) steps
        if t_next < 0:
            x = x0  # sigma' = 0: the solution is the data prediction itself
        else:
            # alpha' (1 - e^{-h}) written without e^{-h}: alpha' - sigma' alpha / sigma (finite for a = 0).
            coef = alpha_n - sigma_n * alpha / sigma
            d = x0
            if x0_old is not None and h_old is not None and math.isfinite(h_old):
                r_inv_half = h / (2.0 * h_old)  # 1/(2r) = h_i / (2 h_{i-1})
                d = (1.0 + r_inv_half) * x0 - r_inv_half * x0_old
            x = (sigma_n / sigma) * x + coef * d
        h_old = h
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x.to(noise.dtype)


def _log_snr_half(a: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(a / (1-a)); -inf at a = 0, +inf at a = 1."""
    if a <= 0.0:
        return -math.inf
    if a >= 1.0:
        return math.inf
    return 0.5 * (math.log(a) - math.log1p(-a))


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "dpmpp": sample_dpmpp,
    "dpm++": sample_dpmpp,
}
STOCHASTIC = frozenset({"ddim", "ddpm"})  # the samplers that draw noise (DDIM when eta > 0)


def sample(name: str, model_fn: ModelFn, noise: Tensor, schedule: DiffusionSchedule, steps: int, **kwargs) -> Tensor:
    """Dispatch by name ("ddim", "ddpm", "dpmpp"); kwargs go to the sampler.

    `eta` is accepted by "ddim" only. `generator` is accepted for every name, so that a caller
    with per-sample generators need not know which samplers draw noise; it is passed on to the
    `STOCHASTIC` ones only (the deterministic "dpmpp" has nothing to draw).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    if "eta" in kwargs and name != "ddim":
        raise ValueError(f"eta applies to the 'ddim' sampler only, not {name!r}")
    if name not in STOCHASTIC:
        kwargs.pop("generator", None)
    return SAMPLERS[name](model_fn, noise, schedule, steps=steps, **kwargs)
