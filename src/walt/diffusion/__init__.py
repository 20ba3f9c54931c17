"""Stage 2's diffusion process: pure functions and small classes, no learned parts.

- `schedule`: DiffusionConfig, DiffusionSchedule (linear betas rescaled to zero terminal SNR),
  v / x0 / eps conversions, q_sample.
- `samplers`: sample_ddim / sample_ddpm / sample_dpmpp over a `model_fn(x_t, t, self_cond) -> v`,
  trailing timesteps, self-conditioning across steps, per-sample seeds (`seeded_noise`).
- `guidance`: classifier-free guidance and frame-prediction context wrappers of a model_fn.
- `loss`: DiffusionLossConfig, diffusion_loss (v-prediction, unweighted MSE, self-cond,
  frame prediction, label dropout).

This package never imports `walt.denoiser`; `walt.pipeline` joins the two.
"""

from walt.diffusion.guidance import cfg_model_fn, combine_guidance, replace_context_fn
from walt.diffusion.loss import DiffusionLossConfig, diffusion_loss
from walt.diffusion.samplers import (
    SAMPLERS,
    STOCHASTIC,
    ModelFn,
    make_generators,
    sample,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp,
    seeded_noise,
)
from walt.diffusion.schedule import (
    DiffusionConfig,
    DiffusionSchedule,
    eps_from_v,
    eps_from_x0,
    make_betas,
    rescale_zero_terminal_snr,
    v_from_eps,
    v_from_x0,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)

__all__ = [
    "DiffusionConfig",
    "DiffusionSchedule",
    "make_betas",
    "rescale_zero_terminal_snr",
    "x0_from_v",
    "eps_from_v",
    "v_from_x0_eps",
    "v_from_x0",
    "eps_from_x0",
    "x0_from_eps",
    "v_from_eps",
    "ModelFn",
    "SAMPLERS",
    "STOCHASTIC",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp",
    "seeded_noise",
    "make_generators",
    "cfg_model_fn",
    "combine_guidance",
    "replace_context_fn",
    "DiffusionLossConfig",
    "diffusion_loss",
]
