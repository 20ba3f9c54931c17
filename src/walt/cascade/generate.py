"""Sampling the text-to-video cascade: base -> SR-1 -> SR-2 -> decode (W.A.L.T §4, SPEC §4).

    stages = [Stage.load(p) for p in ("base.safetensors", "sr1.safetensors", "sr2.safetensors")]
    out = sample_cascade(stages, vae, text=tokens, text_mask=mask, seeds=[0], num_frames=41)
    out.video        # (B, 3, 41, 512, 896) in [-1, 1]; out.latents[stage][chunk] (B, c, 5, h, w)

Each stage is a `walt.denoiser.WALT`; the first generates from text (and optionally an image),
every later one is an SR stage conditioned on the previous stage's latents (`walt.cascade.sr`).
Only the last stage is decoded to pixels (streamed in time, optionally tiled in space:
`walt.cascade.tiling`), except where long videos need pixels (below).

Long videos and image-to-video (paper §3.2 "autoregressive generation"; SPEC §2) run through the
WHOLE cascade chunk by chunk, each stage doing what `walt.pipeline.extend_video` does for one
model: chunk k of every stage is 5 latent frames = 17 pixel frames; chunk k > 0 is conditioned on
its own stage's video so far, whose last 5 frames are re-encoded into 2 latent frames (the frame
conditioning input), and chunk k of an SR stage is also conditioned on chunk k of the stage below
(the same 17 pixel frames at half the resolution). Each chunk adds 12 frames: 17 -> 29 -> 41.
So every stage of a long video is decoded (its tail re-encoded), not just the last one.
Image-to-video: the image, resized to each stage's resolution, is encoded into 1 latent frame
that conditions the first chunk of every stage.

Seeds: sample i of stage s draws from its own generator seeded with (seed_i, s), so a sample does
not depend on its batch, and the stages of one sample use different noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from walt.cascade.sr import super_resolve
from walt.cascade.stage import Stage
from walt.cascade.tiling import decode_video
from walt.data.transforms import resize_center_crop
from walt.pipeline import extension_lengths, generate, plan_length

__all__ = ["CascadeOutput", "Cascade", "sample_cascade", "cascade_lengths", "check_chain", "stage_seeds",
           "resize_image"]

@dataclass
class CascadeOutput:
    latents: list[list[Tensor]]  # [stage][chunk] raw latents (B, c, T, h, w)
    video: Tensor | None  # (B, 3, F, H, W) in [-1, 1] of the last stage (None with decode=False)
    lengths: list[int]  # video length after each chunk


def cascade_lengths(num_frames: int, chunk: int = 17, overlap: int = 5, first: int | None = None,
                    round_up: bool = False) -> list[int]:
    """Video length after each chunk: 17 -> 29 -> 41 ... (`walt.pipeline.extension_lengths`; with
    round_up an unreachable length continues to the next reachable one, which the caller crops)."""
    return extension_lengths(num_frames, chunk, overlap, first=first, round_up=round_up)


def check_chain(stages: Sequence[Stage]) -> None:
    """ValueError unless stage 0 is a base model and each later stage an SR of the one before it."""
    if not stages:
        raise ValueError("a cascade needs at least one stage")
    if stages[0].is_sr:
        raise ValueError(f"stage 0 ({stages[0].name or 'first'}) is an SR model; the first stage must be a base model")
    for prev, cur in zip(stages, stages[1:]):
        if not cur.is_sr:
            raise ValueError(f"stage {cur.name!r} is not an SR model (lowres_channels = 0) but follows {prev.name!r}")
        pc, cc = prev.net.config, cur.net.config
        s = cur.sr.scale
        want = (pc.input_size[0], pc.input_size[1] * s, pc.input_size[2] * s)
        if tuple(cc.input_size) != want or cc.lowres_channels != pc.in_channels:
            raise ValueError(
                f"stage {cur.name!r} (latent {tuple(cc.input_size)}, {cc.lowres_channels} low-res channels) cannot "
                f"follow {prev.name!r} (latent {tuple(pc.input_size)}, {pc.in_channels} channels): it needs latent "
                f"{want} = {s}x the previous one; use matching presets (t2v-base-9x16 -> sr1 -> sr2)"
            )


def stage_seeds(seeds: Sequence[int], stage: int) -> list[torch.Generator]:
    """Per-sample generators of one stage: seeded with seed + stage * 2^32 (independent per stage)."""
    return [torch.Generator().manual_seed(int(s) + (stage << 32)) for s in seeds]


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 3, H0, W0) or (B, 3, 1, H0, W0) in [-1, 1] -> (B, 3, 1, H, W): resize to cover + centre crop."""
    if image.ndim == 4:
        image = image[:, :, None]
    if image.ndim != 5 or image.shape[1] != 3 or image.shape[2] != 1:
        raise ValueError(f"image must be (B, 3, H, W) or (B, 3, 1, H, W), got {tuple(image.shape)}")
    return torch.stack([resize_center_crop(im.float(), size) for im in image])  # (B, 3, 1, H, W)


def _text_kwargs(stage: Stage, text, text_mask, uncond_text, uncond_text_mask, guidance: float) -> dict:
    cfg = stage.net.config
    if text is None or cfg.text_dim == 0:  # a stage trained without text ignores the prompt
        if guidance != 1.0:
            raise ValueError("guidance_scale != 1 needs text (and uncond_text) for a text-to-video cascade")
        return {}
    if cfg.text_dim != text.shape[-1]:
        raise ValueError(f"stage {stage.name!r} expects {cfg.text_dim}-d text features, got {text.shape[-1]}-d; "
                         "use the text encoder the stage was trained with")
    kw = {"text": text, "text_mask": text_mask}
    if guidance != 1.0:
        if uncond_text is None:
            raise ValueError("guidance needs uncond_text (e.g. the encoded empty prompt)")
        kw.update(uncond_text=uncond_text, uncond_text_mask=uncond_text_mask)
        # Guidance batches [cond; uncond]: both masks must be given or neither.
        if (text_mask is None) != (uncond_text_mask is None):
            kw["text_mask"] = text_mask if text_mask is not None else torch.ones(text.shape[:2], dtype=torch.bool)
            kw["uncond_text_mask"] = (uncond_text_mask if uncond_text_mask is not None
                                      else torch.ones(uncond_text.shape[:2], dtype=torch.bool))
    return kw


@torch.no_grad()
def sample_cascade(
    stages: Sequence[Stage],
    vae: nn.Module,
    text: Tensor | None = None,
    text_mask: Tensor | None = None,
    uncond_text: Tensor | None = None,
    uncond_text_mask: Tensor | None = None,
    seeds: Sequence[int] | None = None,
    num_frames: int | None = None,
    image: Tensor | None = None,
    steps: int | Sequence[int] = 50,
    sampler: str = "ddim",
    guidance_scale: float | Sequence[float] = 1.0,
    noise_levels: int | Sequence[int | None] | None = None,
    decode: bool = True,
    tile: int | None = None,
    chunk_frames: int | None = 1,
    context_latents: int = 2,
    progress: bool = False,
    log=None,
) -> CascadeOutput:
    """Run the cascade: text (+ image) -> base latents -> SR latents ... -> decoded video.

    Args:
        stages: base stage, then SR stages (`check_chain`).
        vae: the autoencoder all stages were trained with (every resolution shares it).
        text, text_mask: (B, L, D) / (B, L) text tokens (None: no text); uncond_*: the empty
            prompt's tokens for classifier-free guidance.
        seeds: one int per sample (default 0..B-1).
        num_frames: output length, any integer >= 1; default one chunk (17); longer goes through
            the autoregressive extension at every stage (`cascade_lengths`: 17, 29, 41, ...). A
            length in between is generated at the next of these (shorter: one chunk) and cropped
            to exactly `num_frames` (`CascadeOutput.lengths` shows what was generated).
        image: (B, 3, H, W) in [-1, 1]: image-to-video; its encoding is the first latent frame
            of every stage (the stages need config.frame_conditioning).
        steps / guidance_scale / noise_levels: one value for all stages or one per stage
            (noise_levels: the SR augmentation level per stage, None = the stage's default; the
            base's entry is ignored).
        decode: decode the last stage (streamed with `chunk_frames`, tiled with `tile` latent px).
        log: optional callable(str) for progress messages.
    Returns: `CascadeOutput`.
    """
    check_chain(stages)
    n_st = len(stages)

    def per_stage(v, what):
        vals = list(v) if isinstance(v, (list, tuple)) else [v] * n_st
        if len(vals) != n_st:
            raise ValueError(f"{what} has {len(vals)} entries for {n_st} stages; give one value or one per stage")
        return vals

    steps_l, guid_l, levels_l = per_stage(steps, "steps"), per_stage(guidance_scale, "guidance_scale"), per_stage(
        noise_levels, "noise_levels")
    base_cfg = stages[0].net.config
    T = base_cfg.input_size[0]
    if any(s.net.config.input_size[0] != T for s in stages):
        raise ValueError("every stage must generate the same number of latent frames per chunk")
    f_t = int(vae.config.temporal_factor)
    if any(s.net.config.in_channels != vae.config.latent_channels for s in stages):
        raise ValueError(f"the stages' latent channels do not match the autoencoder's {vae.config.latent_channels}")
    chunk = 1 + f_t * (T - 1)  # 17 pixel frames
    overlap = 1 + f_t * (context_latents - 1)  # 5 pixel frames re-encoded as context
    num_frames = chunk if num_frames is None else num_frames
    # Any length: generated at the next reachable one (17, 29, 41, ...; one chunk below 17), then cropped.
    _, lengths = plan_length(num_frames, chunk, overlap, f_t, short_clips=False)
    n_chunks = len(lengths)
    if (n_chunks > 1 or image is not None) and not all(s.net.config.frame_conditioning for s in stages):
        raise ValueError("long videos and image-to-video need frame-conditioned stages (config.frame_conditioning)")

    B = text.shape[0] if text is not None else (image.shape[0] if image is not None else len(seeds or [0]))
    seeds = list(range(B)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != B:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {B}: pass one seed per sample")
    say = log or (lambda s: None)
    all_latents: list[list[Tensor]] = []
    video, prev = None, None
    for si, stage in enumerate(stages):
        guidance = float(guid_l[si]) if stage.net.config.text_dim > 0 else 1.0  # guidance acts on the text only
        kw = dict(sampler=sampler, steps=int(steps_l[si]), guidance_scale=guidance, progress=progress,
                  latent_stats=stage.latent_stats,
                  **_text_kwargs(stage, text, text_mask, uncond_text, uncond_text_mask, guidance))
        last = si == n_st - 1
        prev, video = _sample_stage(stage, si, vae, prev, image, seeds, levels_l[si], n_chunks, overlap,
                                    pixels=n_chunks > 1 or (last and decode), tile=tile if last else None,
                                    chunk_frames=chunk_frames, say=lambda m, si=si: say(f"stage {si + 1}/{n_st} {m}"),
                                    **kw)
        all_latents.append(prev)
    out_video = video[:, :, :num_frames] if (decode and video is not None) else None
    return CascadeOutput(all_latents, out_video, lengths)


def _sample_stage(stage: Stage, si: int, vae: nn.Module, prev: list[Tensor] | None, image: Tensor | None,
                  seeds: list[int], noise_level, n_chunks: int, overlap: int, pixels: bool, tile, chunk_frames,
                  say, **kw) -> tuple[list[Tensor], Tensor | None]:
    """One stage's chunks -> (raw latents (B, c, T, h, w) per chunk, its video so far or None).

    Chunk k > 0 is conditioned on the stage's own video so far (its last `overlap` frames
    re-encoded); an SR stage's chunk k also on chunk k of the stage below (`prev[k]`).
    """
    cfg, vae_p = stage.net.config, next(vae.parameters())
    T, h, w = cfg.input_size
    f_t, f_s = int(vae.config.temporal_factor), int(vae.config.spatial_factor)
    gens = stage_seeds(seeds, si)
    first_ctx = None
    if image is not None:
        first_ctx = vae.encode(resize_image(image, (h * f_s, w * f_s)).to(vae_p.device, vae_p.dtype))  # (B, c, 1, h, w)
    video, chunks = None, []
    for k in range(n_chunks):
        ctx = first_ctx if k == 0 else vae.encode(video[:, :, -overlap:].to(vae_p.dtype))  # (B, c, k_ctx, h, w)
        if stage.is_sr:
            z = super_resolve(stage.net, stage.schedule, prev[k], noise_level=noise_level, sr=stage.sr,
                              lowres_stats=stage.lowres_stats, seeds=gens, context=ctx, **kw)
        else:
            z = generate(stage.net, stage.schedule, (len(seeds), cfg.in_channels, T, h, w), seeds=gens, context=ctx,
                         **kw)
        chunks.append(z)  # (B, c, T, h, w) raw
        say(f"({stage.name or ('sr' if stage.is_sr else 'base')}): chunk {k + 1}/{n_chunks} latents {tuple(z.shape)}")
        if pixels:
            frames = decode_video(vae, z.to(vae_p.dtype), chunk_frames=chunk_frames, tile=tile)  # (B, 3, chunk, H, W)
            drop = 0 if k == 0 else 1 + f_t * (ctx.shape[2] - 1)  # frames that re-decode the context
            video = frames if k == 0 else torch.cat([video, frames[:, :, drop:]], dim=2)
    return chunks, video


class Cascade:
    """Stages + autoencoder bundled: `Cascade.load([base, sr1, sr2], vae)(text=..., seeds=[0])`."""

    def __init__(self, stages: Sequence[Stage], vae: nn.Module):
        check_chain(stages)
        self.stages, self.vae = list(stages), vae

    @classmethod
    def load(cls, paths: Sequence[str | Path], vae: nn.Module, map_location: str | torch.device = "cpu") -> "Cascade":
        return cls([Stage.load(p, map_location) for p in paths], vae)

    def __call__(self, **kwargs: Any) -> CascadeOutput:
        return sample_cascade(self.stages, self.vae, **kwargs)
