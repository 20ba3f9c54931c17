"""`walt sample --cascade BASE,SR1,SR2` and `walt sample --image FILE`: the text-to-video cascade.

    walt sample --prompt "a red star rotating in place" --cascade runs/base,runs/sr1,runs/sr2 --vae runs/vae --out t2v
    walt sample --prompt "..." --cascade runs/base,runs/sr1 --vae runs/vae --out long --frames 41   # 17 -> 29 -> 41
    walt sample --prompt "..." --ckpt runs/base --image first.png --vae runs/vae --out i2v          # image-to-video

`walt.commands.sample` hands over here when `--cascade` or `--image` is given (a single `--ckpt`
with `--image` is a one-stage cascade). The prompt is encoded once by the base stage's text
encoder (stored with it at training, or `--text-encoder`); every stage gets the same tokens.
Videos are written at the model's fps (default 8, the paper's). Large frames are decoded streamed
and tiled (`walt.cascade.tiling`; `--tile`, `--decode-chunk`).
"""

from __future__ import annotations

import argparse

__all__ = ["run_cascade"]


def run_cascade(args: argparse.Namespace) -> int:
    """Check the flags, load and chain the stages, then sample batch by batch and write."""
    from walt.commands import args as A, files as F
    from walt.data import VideoReadError, read_image
    from walt.errors import UserError

    flag, paths, levels = _flags(args)
    steps, batch, seeds_arg = A.sampling_numbers(args)
    chunk_frames = A.positive_int(args.decode_chunk, "--decode-chunk")
    tile = A.positive_int(args.tile, "--tile", minimum=0) if args.tile is not None else None
    device = F.pick_device(args.device)
    out = F.check_out_not_file(args.out)
    vae, _, vae_path = F.load_vae(args.vae, device)
    stages, path0 = _load_chain(paths, flag, vae, vae_path, device)
    noise_levels = _noise_levels(levels, stages, steps)
    prompts, seeds, encoder = _requests(args, stages[0], f"{flag} {path0}", seeds_arg, device)
    frames, lengths = _lengths(args, stages, vae)
    try:
        image = read_image(args.image) if args.image is not None else None
    except VideoReadError as e:
        raise UserError(f"--image {A.first_line(e)}") from None
    if (len(lengths) > 1 or image is not None) and not all(s.net.config.frame_conditioning for s in stages):
        what = "--image" if image is not None else f"--frames {frames}"
        raise UserError(f"{what} needs frame-conditioned stages (config.frame_conditioning); these are not")
    tile, how = _tiling(tile, stages[-1])

    existed = out.is_dir()
    F.writable_dir(out)
    fps = float(args.fps or stages[0].info.get("fps") or 8.0)
    _, h, w = stages[-1].net.config.input_size
    f_s = vae.config.spatial_factor
    print(f"walt sample: {len(prompts)} video(s) of {frames}x{h * f_s}x{w * f_s} through {len(stages)} stage(s) "
          f"({' -> '.join(s.name for s in stages)}), {'image-to-video, ' if image is not None else ''}"
          f"{args.sampler} {steps} steps, guidance {args.guidance_scale:g}, {len(lengths)} chunk(s), device {device}")
    print(f"walt sample: decoding {h}x{w} latents streamed {chunk_frames} latent frame(s) at a time, {how}")
    sample_kw = dict(num_frames=frames, steps=steps, sampler=args.sampler, guidance_scale=args.guidance_scale,
                     noise_levels=noise_levels, tile=tile, chunk_frames=chunk_frames, progress=not args.no_progress)
    with F.cleanup_if_empty(out, existed):
        videos = _sample(args, stages, vae, prompts, seeds, encoder, image, batch, sample_kw)
        tags = [F.slug(p) if p else "uncond" for p in prompts]
        written, grid = F.write_samples(out, videos, tags, seeds, fps, args.gif)
    print(f"walt sample: wrote {len(written)} MP4{' + GIF' if args.gif else ''} file(s) at {fps:g} fps to {out} "
          f"(e.g. {written[0].name}) and the frame grid {grid}")
    return 0


def _flags(args) -> tuple[str, list[str], list[int] | None]:
    """(--cascade or --ckpt, the stage paths, --sr-noise-level values or None)."""
    from walt.commands import args as A
    from walt.errors import UserError

    if args.cascade is not None and args.ckpt is not None:
        raise UserError("give either --ckpt (one model) or --cascade BASE,SR1,... (stages), not both")
    if args.cascade is None and args.ckpt is None:
        raise UserError("--image needs a model: give --ckpt CHECKPOINT or --cascade BASE,SR1,...")
    for flag, bad in (("--class-label", args.class_label is not None), ("--classes", args.classes is not None),
                      ("--context-video", args.context_video is not None)):
        if bad:
            raise UserError(f"{flag} does not apply to the text-to-video cascade; drop it")
    levels = A.parse_int_list(args.sr_noise_level, "--sr-noise-level") if args.sr_noise_level is not None else None
    if levels is not None and min(levels) < 0:
        raise UserError("--sr-noise-level must be >= 0 (a diffusion timestep)")
    paths = [s.strip() for s in (args.cascade.split(",") if args.cascade is not None else [args.ckpt]) if s.strip()]
    if not paths:
        raise UserError("--cascade is empty; give comma-separated checkpoints such as runs/base,runs/sr1,runs/sr2")
    return ("--cascade" if args.cascade is not None else "--ckpt"), paths, levels


def _load_chain(paths: list[str], flag: str, vae, vae_path, device):
    """(stages on `device`, the base stage's path): each checked against the autoencoder, then chained."""
    from walt.cascade.generate import check_chain
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    stages, path0 = [], None
    for raw in paths:
        stage, p = F.load_stage(raw, device, flag)
        F.check_same_vae(stage, f"{flag} {p}", vae, vae_path)
        stages.append(stage)
        path0 = path0 or p
    with A.user_errors(f"{flag}: "):
        check_chain(stages)
    base_dim = stages[0].net.config.text_dim
    for s in stages[1:]:
        if s.net.config.text_dim not in (0, base_dim):
            raise UserError(f"stage {s.name} takes {s.net.config.text_dim}-d text, the base {base_dim}-d")
    return stages, path0


def _noise_levels(levels: list[int] | None, stages, steps: int) -> list[int | None]:
    """One SR augmentation level per stage (None: the stage's own; the base's entry is ignored)."""
    from walt.commands import args as A
    from walt.errors import UserError

    n_sr = len(stages) - 1
    if levels is not None and len(levels) not in (1, n_sr):
        raise UserError(f"--sr-noise-level has {len(levels)} values for {n_sr} SR stage(s); give one or one per SR stage")
    out = [None] + ((levels * n_sr) if levels is not None and len(levels) == 1 else (levels or [None] * n_sr))
    A.check_steps(steps, min(s.schedule.num_timesteps for s in stages))
    for s, lv in zip(stages[1:], out[1:]):
        if lv is not None and lv >= s.schedule.num_timesteps:
            raise UserError(f"--sr-noise-level {lv} must be below {s.schedule.num_timesteps}")
    return out


def _requests(args, base, where: str, seeds_arg, device):
    """(one prompt or None per video, their seeds, the base stage's text encoder or None)."""
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    text_dim = base.net.config.text_dim
    prompts = A.check_prompts([str(t) for t in args.prompt]) if args.prompt else None
    if text_dim > 0 and prompts is None and not args.unconditional:
        raise UserError(f"{where} is a text-to-video model: give --prompt TEXT (or --unconditional)")
    if text_dim == 0 and prompts is not None:
        raise UserError(f"--prompt: {where} is not text-conditioned (text_dim=0); drop --prompt")
    if args.guidance_scale != 1.0 and prompts is None:
        raise UserError("--guidance-scale != 1 guides towards the prompt: give --prompt, or use --guidance-scale 1")
    n_per = A.positive_int(args.num_samples, "--num-samples") if args.num_samples is not None else (
        len(seeds_arg) if seeds_arg is not None and (prompts is None or len(prompts) == 1) else 1)
    items = [t for t in (prompts or [None]) for _ in range(n_per)]
    encoder = F.load_text_encoder(args.text_encoder, base, where, device) if prompts is not None else None
    return items, A.seeds_for(args.seed, seeds_arg, len(items)), encoder


def _lengths(args, stages, vae) -> tuple[int, list[int]]:
    """(frames to write, video length after each chunk): any length, generated at the next reachable one."""
    from walt.commands import args as A
    from walt.pipeline import plan_length

    f_t = vae.config.temporal_factor
    chunk = 1 + f_t * (stages[-1].net.config.input_size[0] - 1)
    frames = A.output_frames(args.frames, chunk)
    gen_frames, lengths = plan_length(frames, chunk, 1 + f_t, f_t, short_clips=False)
    if gen_frames != frames:
        print(f"walt sample: --frames {frames} is not a length the cascade generates ({chunk} + {chunk - 1 - f_t}k "
              f"frames); generating {gen_frames} and keeping the first {frames}")
    return frames, lengths


def _tiling(tile: int | None, last) -> tuple[int | None, str]:
    """(latent tile size or None, how the last stage is decoded): AUTO_TILE above AUTO_TILE_AREA latent pixels."""
    from walt.cascade.tiling import AUTO_TILE, AUTO_TILE_AREA
    from walt.errors import UserError

    _, h, w = last.net.config.input_size
    auto = tile is None
    if tile is None:
        tile = AUTO_TILE if h * w > AUTO_TILE_AREA else None
    elif tile == 0:
        tile = None
    elif tile <= 8:
        raise UserError(f"--tile {tile} must exceed the tiles' 8-latent-pixel overlap; use e.g. 16 or 32 (or 0: no tiling)")
    if tile is None or (h <= tile and w <= tile):
        return tile, "whole frames"
    return tile, f"in {tile}x{tile}-latent tiles" + (f" (auto: frames above {AUTO_TILE_AREA} latent pixels)" if auto else "")


def _sample(args, stages, vae, prompts, seeds, encoder, image, batch: int, sample_kw: dict):
    """(N, 3, frames, H, W) float videos in [-1, 1] on the CPU, `batch` at a time."""
    import torch

    from walt.cascade.generate import sample_cascade
    from walt.text import prompt_kwargs

    device = next(stages[0].net.parameters()).device
    n, videos = len(prompts), []
    with torch.no_grad():
        for lo in range(0, n, batch):
            ps, ss = prompts[lo:lo + batch], seeds[lo:lo + batch]
            # Stages without text (text_dim 0) cannot take tokens: such a cascade is unconditional above the base.
            kw = prompt_kwargs(encoder, ps, args.guidance_scale, device) if encoder is not None else {}
            img = image[None].expand(len(ss), -1, -1, -1).to(device) if image is not None else None
            res = sample_cascade(stages, vae, seeds=ss, image=img, log=print, **sample_kw, **kw)
            videos.append(res.video.float().cpu())
            print(f"walt sample: {min(lo + batch, n)}/{n} videos sampled", flush=True)
    return torch.cat(videos)  # (N, 3, frames, H, W)
