"""The forward (noising) process: beta schedule, zero terminal SNR, v / x0 / eps conversions.

W.A.L.T (SPEC §3, paper §5.1): 1000 steps, linear betas 1e-4 .. 0.02, **rescaled to zero terminal
SNR** (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1),
v-prediction (Salimans & Ho 2022). Without the rescale the paper measures UCF-101 FVD 91 vs 61.

Notation (alpha_bar = a = `alphas_cumprod[t]`):

    x_t = sqrt(a) x0 + sqrt(1-a) eps                    (forward process)
    v   = sqrt(a) eps - sqrt(1-a) x0                    (velocity target)
    x0  = sqrt(a) x_t - sqrt(1-a) v                     (finite for every a in [0, 1])
    eps = sqrt(1-a) x_t + sqrt(a) v                     (finite for every a in [0, 1])

With zero terminal SNR the last step has a = 0: x_T is pure noise and the x0 estimate is -v.
Conversions that divide by sqrt(a) (x0 from eps, v from eps) are infinite there; the functions
below say which ones are safe where. Everything is computed in float64 and cast to the
caller's dtype at the end: a float32 cumprod loses ~1e-6 of alpha_bar, which matters near t=0.

Why this is written out rather than taken from diffusers (`rescale_zero_terminal_snr`,
`DDIMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing")`): diffusers computes
the tables in float32 (its betas agree with these to ~2e-6 only), the last alpha_bar is exactly 0
here by construction (diffusers' DPM-Solver even moves it to 2^-24), the tables are plain tensors
with a sync-free `alpha_bar` gather on any device, and diffusers stays an optional dependency.
The algorithm is the same: tests/test_diffusion.py `test_schedule_matches_diffusers_zero_snr`
checks betas / alpha_bar against `DDIMScheduler`, the rescale against diffusers'
`rescale_zero_terminal_snr` run in float64 (equal to 1e-15), and the trailing timesteps against
`DDIMScheduler.set_timesteps` for several step counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass(frozen=True)
class DiffusionConfig:
    """The noise schedule and the network's prediction target.

    `zero_terminal_snr=False` exists only to reproduce the paper's ablation (FVD 91 vs 61); the
    default is the paper's (and the correct) behaviour.

    `snr_shift` (not in the paper; default 1 = the paper's schedule) multiplies the SNR of every
    step: alpha_bar' = k a / (1 + (k - 1) a), the "input scaling" of Chen 2023 ("On the
    Importance of Noise Scheduling for Diffusion Models") and SD3's resolution shift. The
    paper's schedule was made for 32x32+ inputs; on a tiny latent grid (the CPU demo's 8x8) a
    step of SNR 0.25 already hides a small object completely, so most training steps would be
    spent where nothing can be learnt. k > 1 keeps more signal at every t; zero terminal SNR
    stays zero.
    """

    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: Literal["linear", "scaled_linear"] = "linear"
    zero_terminal_snr: bool = True
    prediction: Literal["v"] = "v"
    snr_shift: float = 1.0

    def __post_init__(self):
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {self.num_timesteps}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start < beta_end < 1, got beta_start={self.beta_start}, beta_end={self.beta_end}"
            )
        if self.beta_schedule not in ("linear", "scaled_linear"):
            raise ValueError(f"beta_schedule must be 'linear' or 'scaled_linear', got {self.beta_schedule!r}")
        if not 0.0 < self.snr_shift < float("inf"):
            raise ValueError(f"snr_shift must be a positive finite factor, got {self.snr_shift}")
        if self.prediction != "v":
            raise ValueError(f"only v-prediction is implemented (paper §5.1), got prediction={self.prediction!r}")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024, Algorithm 1: shift/scale sqrt(alpha_bar) so its last value is exactly 0.

    sqrt(alpha_bar) is shifted down by its terminal value and rescaled so that the first step
    keeps its original value; betas are recovered from the ratio of consecutive alpha_bars.
    The last beta becomes exactly 1 (alpha_bar_T = 0, SNR_T = 0).
    """
    betas = betas.to(torch.float64)
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    s0, sT = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - sT) * (s0 / (s0 - sT))
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


def make_betas(cfg: DiffusionConfig) -> Tensor:
    """Betas `(num_timesteps,)` float64 for `cfg` (optionally rescaled to zero terminal SNR)."""
    n = cfg.num_timesteps
    if cfg.beta_schedule == "linear":
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float64)
    else:  # "scaled_linear" (Stable Diffusion): linear in sqrt(beta)
        betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n, dtype=torch.float64) ** 2
    if cfg.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    if cfg.snr_shift != 1.0:
        # SNR' = k SNR  <=>  alpha_bar' = k a / (1 + (k - 1) a); betas from consecutive ratios.
        ab = torch.cumprod(1.0 - betas, dim=0)
        ab = cfg.snr_shift * ab / (1.0 + (cfg.snr_shift - 1.0) * ab)
        betas = 1.0 - torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return betas


# ---------------------------------------------------------------------------------------------
# Conversions. `a` is alpha_bar: a tensor broadcastable to x after `expand_like` (a scalar, or
# (B,) for a batch with one timestep per sample).
# ---------------------------------------------------------------------------------------------


def expand_like(a: Tensor | float, x: Tensor) -> Tensor:
    """(B,) or scalar alpha_bar -> shape (B, 1, ..., 1) broadcastable against x, on x's device."""
    a = torch.as_tensor(a, device=x.device)
    if a.ndim == 1 and x.ndim > 1:
        a = a.reshape(-1, *([1] * (x.ndim - 1)))
    return a


def _coefs(a: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(a), sqrt(1-a)) computed in float64 then cast to x's dtype (a is clamped to [0, 1])."""
    a = expand_like(a, x).to(torch.float64).clamp(0.0, 1.0)
    return a.sqrt().to(x.dtype), (1.0 - a).sqrt().to(x.dtype)


def x0_from_v(x_t: Tensor, v: Tensor, a: Tensor | float) -> Tensor:
    """x0 = sqrt(a) x_t - sqrt(1-a) v. Finite everywhere; at a=0 it is -v."""
    sa, s1a = _coefs(a, x_t)
    return sa * x_t - s1a * v


def eps_from_v(x_t: Tensor, v: Tensor, a: Tensor | float) -> Tensor:
    """eps = sqrt(1-a) x_t + sqrt(a) v. Finite everywhere; at a=0 it is x_t."""
    sa, s1a = _coefs(a, x_t)
    return s1a * x_t + sa * v


def v_from_x0_eps(x0: Tensor, eps: Tensor, a: Tensor | float) -> Tensor:
    """The training target: v = sqrt(a) eps - sqrt(1-a) x0 (Salimans & Ho 2022, §4)."""
    sa, s1a = _coefs(a, x0)
    return sa * eps - s1a * x0


def v_from_x0(x_t: Tensor, x0: Tensor, a: Tensor | float) -> Tensor:
    """v = (sqrt(a) x_t - x0) / sqrt(1-a). Finite for a < 1 (every step of the schedule).

    This is what a perfect denoiser outputs when it knows x0; it is also how a sampler that
    edits the x0 estimate (frame-prediction context) maps back to the network's v-space.
    """
    sa, s1a = _coefs(a, x_t)
    return (sa * x_t - x0) / s1a


def eps_from_x0(x_t: Tensor, x0: Tensor, a: Tensor | float) -> Tensor:
    """eps = (x_t - sqrt(a) x0) / sqrt(1-a). Finite for a < 1."""
    sa, s1a = _coefs(a, x_t)
    return (x_t - sa * x0) / s1a


def x0_from_eps(x_t: Tensor, eps: Tensor, a: Tensor | float) -> Tensor:
    """x0 = (x_t - sqrt(1-a) eps) / sqrt(a). INFINITE at the terminal step (a=0): avoid there."""
    sa, s1a = _coefs(a, x_t)
    return (x_t - s1a * eps) / sa


def v_from_eps(x_t: Tensor, eps: Tensor, a: Tensor | float) -> Tensor:
    """v = (eps - sqrt(1-a) x_t) / sqrt(a). INFINITE at the terminal step (a=0): avoid there."""
    sa, s1a = _coefs(a, x_t)
    return (eps - s1a * x_t) / sa


# ---------------------------------------------------------------------------------------------


class DiffusionSchedule:
    """Tables of the discrete forward process (no learned parts) plus `q_sample`.

    Attributes (all float64 CPU tensors of shape (num_timesteps,)):
        betas, alphas_cumprod, snr = alpha_bar / (1 - alpha_bar) (exactly 0 at the last step
        with zero terminal SNR; `inf` nowhere since alpha_bar_0 < 1).
    """

    def __init__(self, config: DiffusionConfig | None = None):
        self.config = config or DiffusionConfig()
        self.betas = make_betas(self.config)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        if self.config.zero_terminal_snr:
            # The rescale gives exactly 0 already; make it robust to any last-ulp rounding.
            self.alphas_cumprod[-1] = 0.0
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        # alpha_bar indexed by t + 1, so that t = -1 ('clean', after the last sampler step) is 1.
        self._ab_table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        self._tables: dict[str, Tensor] = {}  # per-device copies of _ab_table

    @classmethod
    def from_config(cls, config: DiffusionConfig | None = None, **overrides) -> "DiffusionSchedule":
        """`DiffusionSchedule.from_config(num_timesteps=..., zero_terminal_snr=False, ...)`."""
        from walt.config import replace_config

        cfg = config or DiffusionConfig()
        return cls(replace_config(cfg, **overrides) if overrides else cfg)

    @property
    def num_timesteps(self) -> int:
        return self.config.num_timesteps

    def alpha_bar(self, t: Tensor | int, device: torch.device | str | None = None) -> Tensor:
        """alpha_bar at integer timesteps t (any shape); t = -1 means 'clean' (alpha_bar = 1).

        Returned in float64 on `device` (default: t's device, or CPU for a Python int). The
        gather happens on t's device from a cached copy of the table, so a training step on a
        GPU does not synchronise; range checks run for CPU timesteps only.
        """
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point:
            raise ValueError(f"timesteps must be integers, got dtype {t.dtype}")
        if t.device.type == "cpu" and t.numel() and (t.min() < -1 or t.max() >= self.num_timesteps):
            raise ValueError(f"timesteps must lie in [-1, {self.num_timesteps - 1}], got {t.tolist()}")
        key = str(t.device)
        if key not in self._tables:
            self._tables[key] = self._ab_table.to(t.device)
        out = self._tables[key][t.long() + 1]
        return out if device is None else out.to(device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward process x_t = sqrt(a_t) x0 + sqrt(1-a_t) eps; x0, noise (B, ...), t (B,) long."""
        sa, s1a = _coefs(self.alpha_bar(t, x0.device), x0)
        return sa * x0 + s1a * noise

    def timesteps(self, steps: int, spacing: Literal["trailing", "leading", "linspace"] = "trailing") -> list[int]:
        """The `steps` integer timesteps a sampler visits, descending.

        "trailing" (Lin et al. 2024, §3.4; the default) starts at the last step t = T-1, where
        alpha_bar = 0 so the sampler starts from pure noise exactly like training did:
        T=1000, 50 steps -> [999, 979, ..., 19]. "leading" (the old DDIM default; starts at 980 and
        never sees the terminal step) and "linspace" are kept for comparison only.
        """
        n = self.num_timesteps
        if not isinstance(steps, int) or not 1 <= steps <= n:
            raise ValueError(f"steps must be an integer in [1, {n}], got {steps!r}")
        if spacing == "trailing":
            ts = torch.round(torch.arange(n, 0, -n / steps, dtype=torch.float64)).long() - 1
        elif spacing == "leading":
            ts = (torch.arange(steps, dtype=torch.float64) * (n // steps)).round().long().flip(0)
        elif spacing == "linspace":
            ts = torch.linspace(0, n - 1, steps, dtype=torch.float64).round().long().flip(0)
        else:
            raise ValueError(f"spacing must be 'trailing', 'leading' or 'linspace', got {spacing!r}")
        return ts.tolist()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"DiffusionSchedule(T={c.num_timesteps}, {c.beta_schedule} {c.beta_start}..{c.beta_end}, "
            f"zero_terminal_snr={c.zero_terminal_snr}, prediction={c.prediction!r}"
            + (f", snr_shift={c.snr_shift:g})" if c.snr_shift != 1.0 else ")")
        )
