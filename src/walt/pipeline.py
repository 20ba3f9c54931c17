"""Sampling pipeline: denoiser + diffusion (+ autoencoder for long videos).

    from walt.pipeline import generate, extend_video, extension_lengths
    z = generate(net, schedule, (B, C, T, H, W), sampler="ddim", steps=50, y=labels, seeds=[0, 1, ...])
    video = extend_video(vae, net, schedule, None, num_frames=41, seeds=[0])     # 17 -> 29 -> 41 frames

Paper (W.A.L.T §3.2 / SPEC §2-3): every reported result uses DDIM with 50 steps and no
classifier-free guidance (guidance is used for text-to-video). Frame prediction conditions the
network on 1 (image-to-video) or 2 (video prediction) clean latent frames; long videos are made
autoregressively: generate 17 frames (5 latent frames), decode, re-encode the LAST 5 frames into
2 latent frames, and generate the next chunk conditioned on them; each chunk adds 12 frames.

Latent spaces: the network works on *normalised* latents (SPEC §1). With `latent_stats` (any
object with `normalize` / `denormalize`, e.g. `walt.autoencoder.LatentStats`) every latent the
caller passes in (context) or gets back is in the autoencoder's raw space; without it, the
caller works in the network's space.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from walt.diffusion.guidance import cfg_model_fn, replace_context_fn
from walt.diffusion.samplers import ModelFn, make_generators, sample, seeded_noise
from walt.diffusion.schedule import DiffusionSchedule

__all__ = ["net_model_fn", "generate", "extend_video", "extension_lengths", "plan_length"]


def net_model_fn(net: nn.Module, **cond: Any) -> ModelFn:
    """Adapt a `walt.denoiser.WALT` (or anything with its keyword contract) to the sampler protocol.

    Returns `fn(x_t, t, self_cond=None, **more) -> v` calling `net(x_t, t, **cond, **more)`;
    `self_cond` is forwarded only to networks built with `config.self_conditioning`.
    """
    uses_sc = bool(getattr(getattr(net, "config", None), "self_conditioning", False))

    def fn(x_t: Tensor, t: Tensor, self_cond: Tensor | None = None, **more: Any) -> Tensor:
        kw = {**cond, **more}
        if uses_sc:
            kw["self_cond"] = self_cond
        return net(x_t, t, **kw)

    return fn


def _net_device_dtype(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(net.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _as_generators(seeds, batch: int) -> list[torch.Generator]:
    if seeds is None:
        seeds = list(range(batch))
    seeds = list(seeds)
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}: pass one seed per sample")
    if all(isinstance(s, torch.Generator) for s in seeds):
        return seeds
    return make_generators(seeds)


@torch.no_grad()
def _conditions(net, B, device, y, guidance_scale, text, text_mask, uncond_text, uncond_text_mask, extra_cond):
    """The network keyword arguments of the conditional and the unconditional guidance branch."""
    cfg = net.config
    cond: dict[str, Any] = {}
    uncond: dict[str, Any] = {}
    if y is not None:
        cond["y"] = y.to(device)
        uncond["y"] = torch.full_like(cond["y"], int(net.null_class))
    elif guidance_scale != 1.0 and getattr(cfg, "num_classes", 0):
        raise ValueError("guidance_scale != 1 needs labels y (the unconditional branch uses the null class)")
    if text is not None:
        cond["text"], cond["text_mask"] = text.to(device), None if text_mask is None else text_mask.to(device)
        if guidance_scale != 1.0:
            if uncond_text is None:
                raise ValueError("guidance with text needs uncond_text (e.g. the encoded empty prompt)")
            uncond["text"] = uncond_text.to(device)
            uncond["text_mask"] = None if uncond_text_mask is None else uncond_text_mask.to(device)
    if guidance_scale != 1.0 and not cond:
        raise ValueError("guidance_scale != 1 needs a condition (y or text); use guidance_scale=1.0")
    for key, value in (extra_cond or {}).items():
        if key in cond:
            raise ValueError(f"extra_cond[{key!r}] clashes with a condition generate() sets itself; pass it there")
        cond[key] = uncond[key] = value.to(device) if isinstance(value, Tensor) else value
    return cond, uncond


def _context_frames(cfg, context, shape, device, dtype, latent_stats):
    """Frame prediction: the clean context latents placed in a full-size tensor, and the frame mask."""
    B, C, T, H, W = shape
    if not getattr(cfg, "frame_conditioning", False):
        raise ValueError("context was given but the network has config.frame_conditioning=False")
    k = context.shape[2] if context.ndim == 5 else -1
    if context.ndim != 5 or (context.shape[0], context.shape[1], *context.shape[3:]) != (B, C, H, W) or not 1 <= k < T:
        raise ValueError(
            f"context must be (B, C, k, H, W) = ({B}, {C}, k, {H}, {W}) with 1 <= k < T={T}, got {tuple(context.shape)}"
        )
    context = context.to(device, dtype)
    if latent_stats is not None:
        context = latent_stats.normalize(context)
    ctx_full = torch.zeros(shape, device=device, dtype=dtype)  # (B, C, T, H, W)
    ctx_full[:, :, :k] = context
    mask = torch.zeros(B, T, device=device, dtype=dtype)  # (B, T)
    mask[:, :k] = 1
    return ctx_full, mask


def generate(
    net: nn.Module,
    schedule: DiffusionSchedule,
    shape: Sequence[int] | None = None,
    sampler: str = "ddim",
    steps: int = 50,
    y: Tensor | None = None,
    guidance_scale: float = 1.0,
    seeds: Sequence[int] | Sequence[torch.Generator] | None = None,
    context: Tensor | None = None,
    text: Tensor | None = None,
    text_mask: Tensor | None = None,
    uncond_text: Tensor | None = None,
    uncond_text_mask: Tensor | None = None,
    eta: float | None = None,
    latent_stats: Any = None,
    progress: bool = False,
    callback=None,
    extra_cond: dict[str, Any] | None = None,
) -> Tensor:
    """Sample latents with the denoiser `net`.

    Args:
        net: `walt.denoiser.WALT` (v-prediction). Run in eval mode for the call (restored after).
        schedule: the `DiffusionSchedule` it was trained with.
        shape: (B, C, T, H, W); None -> (B, *net latent size) with B from seeds / y / 1.
        sampler: "ddim" (paper), "ddpm" (ancestral) or "dpmpp" (DPM-Solver++ 2M, ~10-20 steps).
        steps: network evaluations (x2 batch with guidance). eta: DDIM stochasticity (ddim only).
        y: (B,) long class labels (None: unconditional / null class).
        guidance_scale: classifier-free guidance on the labels (and text); 1 = no guidance (paper).
        seeds: one int (or torch.Generator) per sample; sample i depends on seed i only. Default
            0..B-1. Generators are advanced, so reusing them continues each sample's stream.
        context: frame prediction: (B, C, k, H, W) clean latents of the first k latent frames
            (k = 1: image-to-video, k = 2: video prediction); needs config.frame_conditioning.
            The sample keeps them exactly in its first k frames.
        text, text_mask: (B, L, D) / (B, L) text tokens for a text-conditioned network; with
            guidance, uncond_text / uncond_text_mask are the unconditional (e.g. empty-prompt) tokens.
        latent_stats: object with normalize / denormalize: context is normalised on the way in
            and the result denormalised on the way out.
        extra_cond: more network keyword arguments given unchanged to BOTH guidance branches,
            batched like the sample (B, ...): e.g. the SR stages' `lowres` / `noise_level`
            (walt.cascade.sr). Guidance never drops them.
    Returns: latents (B, C, T, H, W) in the network's dtype (raw VAE space if latent_stats given).
    """
    cfg = net.config
    device, dtype = _net_device_dtype(net)
    if shape is None:
        b = len(seeds) if seeds is not None else (len(y) if y is not None else 1)
        shape = (b, cfg.in_channels, *cfg.input_size)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5:
        raise ValueError(f"shape must be (B, C, T, H, W), got {shape}")
    B = shape[0]  # shape is (B, C, T, H, W)
    if y is not None and tuple(y.shape) != (B,):
        raise ValueError(f"y must be (B,) = ({B},) labels, got shape {tuple(y.shape)}")
    gens = _as_generators(seeds, B)

    cond, uncond = _conditions(net, B, device, y, guidance_scale, text, text_mask, uncond_text, uncond_text_mask,
                               extra_cond)
    ctx_full = mask = None
    if context is not None:
        ctx_full, mask = _context_frames(cfg, context, shape, device, dtype, latent_stats)  # (B, C, T, H, W), (B, T)
        k = context.shape[2]
        # The context conditions both guidance branches (guidance acts on the labels / text only).
        cond.update(cond_frames=ctx_full, cond_mask=mask)
        uncond.update(cond_frames=ctx_full, cond_mask=mask)

    base = net_model_fn(net)
    if guidance_scale == 1.0:
        model_fn = cfg_model_fn(base, 1.0, cond, cond)
    else:
        model_fn = cfg_model_fn(base, guidance_scale, cond, uncond)
    if ctx_full is not None:
        model_fn = replace_context_fn(model_fn, schedule, ctx_full, mask)

    kwargs: dict[str, Any] = dict(generator=gens, progress=progress, callback=callback)
    if eta is not None:
        kwargs["eta"] = eta
    noise = seeded_noise(shape, gens, device=device, dtype=dtype)  # (B, C, T, H, W)
    was_training = net.training
    net.eval()
    try:
        z = sample(sampler, model_fn, noise, schedule, steps, **kwargs)
    finally:
        net.train(was_training)
    if ctx_full is not None:
        z[:, :, :k] = ctx_full[:, :, :k]  # exact, not just to solver precision
    if latent_stats is not None:
        z = latent_stats.denormalize(z)
    return z


# ---------------------------------------------------------------------------------------------
# Long videos (paper §3.2 "autoregressive generation"; SPEC §2)
# ---------------------------------------------------------------------------------------------


def extension_lengths(
    target_frames: int, chunk: int = 17, overlap: int = 5, first: int | None = None, round_up: bool = False
) -> list[int]:
    """Video length after each generated chunk: 17 -> 29 -> 41 -> ... (each chunk adds chunk - overlap).

    Args:
        target_frames: wanted length.
        chunk: pixel frames per generated chunk (17 = 5 latent frames).
        overlap: pixel frames re-encoded as context for the next chunk (5 = 2 latent frames).
        first: length after the first chunk (default `chunk`; e.g. an existing 20-frame video
            extended once gives 20 + 12 = 32).
        round_up: for a length the arithmetic cannot reach, continue to the next reachable length
            (the caller crops) instead of raising; a target shorter than the first chunk then
            gives [first] (one chunk, cropped).
    Returns: [first, first + step, ..., target_frames] (or the first reachable length above it).
    """
    first = chunk if first is None else first
    step = chunk - overlap
    if not 0 < overlap < chunk:
        raise ValueError(f"need 0 < overlap < chunk, got overlap={overlap}, chunk={chunk}")
    if target_frames < 1:
        raise ValueError(f"target of {target_frames} frames: a video needs at least 1 frame")
    if target_frames < first:
        if round_up:
            return [first]
        raise ValueError(f"target of {target_frames} frames is shorter than the first chunk ({first} frames)")
    n = -(-(target_frames - first) // step)  # ceil
    lengths = [first + i * step for i in range(n + 1)]
    if lengths[-1] != target_frames and not round_up:
        below = lengths[-2] if len(lengths) > 1 else first
        raise ValueError(
            f"{target_frames} frames is not reachable: lengths are {first} + {step}k; "
            f"use {below} or {lengths[-1]} (or round_up=True to generate {lengths[-1]} and crop)"
        )
    return lengths


def plan_length(
    target_frames: int, chunk: int = 17, overlap: int = 5, temporal_factor: int = 4, short_clips: bool = True
) -> tuple[int, list[int]]:
    """What to generate for a video of exactly `target_frames` frames (any length >= 1).

    The causal autoencoder decodes 1 + f_t k frames and the autoregressive extension produces
    first + (chunk - overlap) k frames (17, 29, 41, ...); any other length is generated at the
    next reachable length and cropped (the first `target_frames` frames are kept).

    Args:
        short_clips: a target shorter than one chunk is generated as the shortest 1 + f_t k clip
            that covers it (fewer latent frames, one network call per step); otherwise (e.g. a
            cascade, whose stages generate whole chunks) as one full chunk.
    Returns: (frames to generate, lengths after each chunk: [frames] for a single clip).
    """
    if isinstance(target_frames, bool) or int(target_frames) != target_frames or target_frames < 1:
        raise ValueError(f"{target_frames} frames: the output length must be an integer >= 1")
    target_frames = int(target_frames)
    if target_frames <= chunk:
        if not short_clips:
            return chunk, [chunk]
        n = 1 + temporal_factor * -(-(target_frames - 1) // temporal_factor)  # ceil to 1 + f_t k
        return n, [n]
    lengths = extension_lengths(target_frames, chunk, overlap, round_up=True)
    return lengths[-1], lengths


@torch.no_grad()
def extend_video(
    vae: nn.Module,
    net: nn.Module,
    schedule: DiffusionSchedule,
    start: Tensor | None,
    num_frames: int,
    y: Tensor | None = None,
    seeds: Sequence[int] | None = None,
    sampler: str = "ddim",
    steps: int = 50,
    guidance_scale: float = 1.0,
    context_latents: int = 2,
    latent_stats: Any = None,
    round_up: bool = False,
    progress: bool = False,
    **generate_kwargs: Any,
) -> Tensor:
    """Autoregressive long-video generation: chunks conditioned on the re-encoded tail of the video.

    Each chunk is `net.config.input_size[0]` latent frames (5 -> 17 pixel frames with f_t = 4);
    the last 1 + f_t (context_latents - 1) pixel frames (5) are re-encoded into `context_latents`
    (2) latent frames that condition the next chunk; its decoded first 5 frames are dropped (they
    re-decode the context) and the remaining 12 appended. So 17 -> 29 -> 41 frames.

    Args:
        vae: `walt.autoencoder.CausalVAE` (encode / decode, config.temporal_factor).
        net: frame-conditioned `WALT` (config.frame_conditioning=True).
        start: None (the first chunk is generated from scratch), a pixel video (B, 3, F, H, W) in
            [-1, 1] to extend (F = 1 is image-to-video; otherwise F >= the overlap), or first
            latents (B, c, k, h, w), k <= context_latents, that condition the first chunk (told
            apart from a video by their spatial size, the network's latent size).
        num_frames: length of the returned video; must be reachable (see `extension_lengths`)
            unless round_up=True, which generates the next reachable length and crops.
        y, seeds, sampler, steps, guidance_scale, latent_stats, **generate_kwargs: as `generate`;
            each sample's generator continues across chunks, so sample i depends on seed i only.
    Returns: video (B, 3, num_frames, H, W), decoded frames clamped to [-1, 1].
    """
    cfg = net.config
    if not getattr(cfg, "frame_conditioning", False):
        raise ValueError("extend_video needs a network trained with frame conditioning (config.frame_conditioning=True)")
    f_t = int(vae.config.temporal_factor)
    f_s = int(vae.config.spatial_factor)
    T, h, w = cfg.input_size
    C = cfg.in_channels
    if not 1 <= context_latents < T:
        raise ValueError(f"context_latents must be in [1, {T - 1}], got {context_latents}")
    chunk = 1 + f_t * (T - 1)  # pixel frames per generated chunk (17)
    overlap = 1 + f_t * (context_latents - 1)  # pixel frames re-encoded as context (5)
    device, dtype = _net_device_dtype(net)

    video = None  # (B, 3, F, H, W) frames so far
    context = None  # raw-space latents (B, C, k, h, w) conditioning the next chunk
    first = chunk
    if start is not None:
        if start.ndim != 5:
            raise ValueError(f"start must be a video (B, 3, F, H, W) or latents (B, C, k, h, w), got {tuple(start.shape)}")
        if tuple(start.shape[-2:]) == (h, w):  # latents
            if start.shape[1] != C or not 1 <= start.shape[2] <= context_latents:
                raise ValueError(
                    f"start latents must be (B, {C}, k, {h}, {w}) with 1 <= k <= {context_latents}, got {tuple(start.shape)}"
                )
            context = start
        elif tuple(start.shape[-2:]) == (h * f_s, w * f_s):  # pixels
            F = start.shape[2]
            if F == 1:
                tail = start  # image-to-video: one frame -> one context latent
            elif F >= overlap:
                tail = start[:, :, F - overlap :]
            else:
                raise ValueError(f"start video has {F} frames; give 1 frame or at least {overlap}")
            video = start.to(device, dtype)
            context = vae.encode(tail.to(device, dtype))
            first = F + chunk - tail.shape[2]
        else:
            raise ValueError(
                f"start is {start.shape[-2]}x{start.shape[-1]}: expected latents {h}x{w} or a video {h * f_s}x{w * f_s}"
            )
    lengths = extension_lengths(num_frames, chunk, overlap, first=first, round_up=round_up)

    B = start.shape[0] if start is not None else (len(seeds) if seeds is not None else (len(y) if y is not None else 1))
    gens = _as_generators(seeds, B)
    for i, _ in enumerate(lengths):
        z = generate(
            net, schedule, (B, C, T, h, w), sampler=sampler, steps=steps, y=y, guidance_scale=guidance_scale,
            seeds=gens, context=context, latent_stats=latent_stats, progress=progress, **generate_kwargs,
        )  # (B, C, T, h, w), raw VAE space when latent_stats is given
        frames = vae.decode(z).clamp(-1, 1)  # (B, 3, chunk, H, W)
        if video is None:
            video = frames
        else:
            drop = 1 + f_t * (context.shape[2] - 1)  # leading frames that re-decode the context
            video = torch.cat([video, frames[:, :, drop:]], dim=2)
        if i + 1 < len(lengths):  # the last chunk conditions nothing: no re-encode
            context = vae.encode(video[:, :, -overlap:])  # (B, C, context_latents, h, w)
    return video[:, :, :num_frames]
