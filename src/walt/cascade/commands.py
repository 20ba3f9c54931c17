"""Command-line glue of the cascade: `walt sample --cascade BASE,SR1,SR2` and `walt sample --image FILE`.

    walt sample --prompt "a red star rotating in place" --cascade runs/base,runs/sr1,runs/sr2 --vae runs/vae --out t2v
    walt sample --prompt "..." --cascade runs/base,runs/sr1 --vae runs/vae --out long --frames 41   # 17 -> 29 -> 41
    walt sample --prompt "..." --ckpt runs/base --image first.png --vae runs/vae --out i2v          # image-to-video

`walt.commands.sample` adds these arguments and hands over to `run_cascade_sample` when
`--cascade` or `--image` is given (a single `--ckpt` with `--image` is a one-stage cascade).
The prompt is encoded once by the base stage's text encoder (stored with it at training, or
`--text-encoder`); every stage gets the same tokens. Videos are written at the model's fps
(default 8, the paper's). Heavy imports stay inside the functions.
"""

from __future__ import annotations

import argparse

__all__ = ["add_sample_args", "run_cascade_sample", "read_image"]

# Measured (benchmarks/bench_cascade.py, ucf101-size VAE, fp32, 1 latent frame per chunk): decoding whole
# 512x896 frames peaks at ~18 GB RSS; tiles bound it by one tile's activations. Frames whose latent is
# larger than 32x56 (256x448 pixels) are therefore decoded streamed AND tiled by default, in AUTO_TILE x
# AUTO_TILE latent tiles: a 64x112 latent -> 2 blended 64x64 tiles, the tiling `walt.bench.cascade`
# measures the peak RSS of (its default `tile`; keep the two equal).
AUTO_TILE_AREA = 32 * 56
AUTO_TILE = 64


def add_sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cascade", default=None, metavar="BASE,SR1,...",
                   help="text-to-video cascade: comma-separated stage checkpoints (or run folders), base first")
    p.add_argument("--image", default=None, metavar="FILE",
                   help="image-to-video: the image (resized + centre-cropped per stage) is the first frame")
    p.add_argument("--sr-noise-level", default=None, metavar="S[,S...]",
                   help="SR noise-conditioning augmentation timestep(s), one value or one per SR stage "
                        "(default: each stage's own, 50)")
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help=f"decode the last stage in N x N latent-pixel tiles, blended (default: {AUTO_TILE} when a "
                        f"frame's latent exceeds {AUTO_TILE_AREA} pixels, e.g. 512x896 video; 0: never tile)")
    p.add_argument("--decode-chunk", type=int, default=1, metavar="K",
                   help="latent frames per streamed decode chunk (default 1: least memory)")


def read_image(path: str):
    """(3, H, W) float in [-1, 1] from an image file (UserError when it cannot be read)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from walt.cli import UserError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"--image {path}: cannot read it as an image ({' '.join(str(e).split())}); give a PNG or JPEG") from None
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def _write_outputs(out, videos, prompts, seeds, fps: float, gif: bool):
    """One MP4 (and optionally GIF) per video, named by prompt and seed, plus grid.png; each atomically."""
    from walt.commands.sample import _slug
    from walt.data.video_io import write_frame_grid_png, write_gif, write_mp4

    written = []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        stem = out / f"sample_{i:03d}_{_slug(prompt) if prompt else 'uncond'}_seed{seed}"
        written.append(write_mp4(stem.with_suffix(".mp4"), videos[i], fps=fps))
        if gif:
            write_gif(stem.with_suffix(".gif"), videos[i], fps=fps)
    grid = write_frame_grid_png(out / "grid.png", videos, max_frames=min(videos.shape[2], 17))
    return written, grid


def run_cascade_sample(args: argparse.Namespace) -> int:
    import math

    from walt.cli import UserError
    from walt.commands import _common as C

    # ---- 1. numbers and flags ----
    if args.cascade is not None and args.ckpt is not None:
        raise UserError("give either --ckpt (one model) or --cascade BASE,SR1,... (stages), not both")
    if args.cascade is None and args.ckpt is None:
        raise UserError("--image needs a model: give --ckpt CHECKPOINT or --cascade BASE,SR1,...")
    for flag, bad in (("--class-label", args.class_label is not None), ("--classes", args.classes is not None),
                      ("--context-video", args.context_video is not None)):
        if bad:
            raise UserError(f"{flag} does not apply to the text-to-video cascade; drop it")
    steps = C.positive_int(args.steps, "--steps")
    batch = C.positive_int(args.batch_size, "--batch-size")
    chunk_frames = C.positive_int(args.decode_chunk, "--decode-chunk")
    tile = C.positive_int(args.tile, "--tile", minimum=0) if args.tile is not None else None
    if not math.isfinite(args.guidance_scale) or args.guidance_scale < 0:
        raise UserError(f"--guidance-scale must be a finite number >= 0, got {args.guidance_scale}")
    if args.fps is not None:
        C.finite_float(args.fps, "--fps", 0.0, strict=True)
    seeds_arg = C.parse_int_list(args.seeds, "--seeds") if args.seeds is not None else None
    if args.seed < 0 or (seeds_arg and min(seeds_arg) < 0):
        raise UserError("seeds must be >= 0")
    levels = C.parse_int_list(args.sr_noise_level, "--sr-noise-level") if args.sr_noise_level is not None else None
    if levels is not None and min(levels) < 0:
        raise UserError("--sr-noise-level must be >= 0 (a diffusion timestep)")
    paths = [s.strip() for s in (args.cascade.split(",") if args.cascade is not None else [args.ckpt]) if s.strip()]
    if not paths:
        raise UserError("--cascade is empty; give comma-separated checkpoints such as runs/base,runs/sr1,runs/sr2")
    flag = "--cascade" if args.cascade is not None else "--ckpt"
    device = C.pick_device(args.device)
    out = C.check_out_not_file(args.out)

    # ---- 2. checkpoints, autoencoder, and whether they belong together ----
    from walt.cascade.pipeline import CascadeStage, check_chain
    from walt.checkpoint import load_checkpoint
    from walt.data.latent_cache import vae_fingerprint

    vae, _, vae_path = C.load_vae(args.vae, device)
    vae_hash = vae_fingerprint(vae)
    stages, extras0, path0 = [], None, None
    for i, raw in enumerate(paths):
        p = C.resolve_checkpoint(raw, flag, ("walt_ema.safetensors", "walt.safetensors"))
        with C.user_errors(f"{flag} {p}: "):
            state = load_checkpoint(p)
            stage = CascadeStage.from_state(state, name=p.parent.name if p.name.startswith("walt") else p.stem)
        want = state.get("vae_sha256") or (state.get("cache") or {}).get("vae_sha256")
        if want and want != vae_hash:
            raise UserError(f"--vae {vae_path} is not the autoencoder {flag} {p} was trained on (weights hash differs)")
        if stage.net.config.in_channels != vae.config.latent_channels:
            raise UserError(f"{flag} {p} works on {stage.net.config.in_channels}-channel latents but --vae makes "
                            f"{vae.config.latent_channels}-channel latents; pass the matching autoencoder")
        if i == 0:
            extras0 = {k: v for k, v in state.items() if k not in ("model", "ema", "optimizer", "rng")}
            path0 = p
        stage.net.to(device)
        stages.append(stage)
    with C.user_errors(f"{flag}: "):
        check_chain(stages)
    n_sr = len(stages) - 1
    if levels is not None and len(levels) not in (1, n_sr):
        raise UserError(f"--sr-noise-level has {len(levels)} values for {n_sr} SR stage(s); give one or one per SR stage")
    noise_levels = [None] + ((levels * n_sr) if levels is not None and len(levels) == 1 else (levels or [None] * n_sr))
    if steps > min(s.schedule.num_timesteps for s in stages):
        raise UserError(f"--steps {steps} exceeds the models' diffusion timesteps")
    for s, lv in zip(stages[1:], noise_levels[1:]):
        if lv is not None and lv >= s.schedule.num_timesteps:
            raise UserError(f"--sr-noise-level {lv} must be below {s.schedule.num_timesteps}")

    # ---- 3. prompts, seeds, image, length ----
    base_cfg = stages[0].net.config
    prompts = [str(t) for t in args.prompt] if args.prompt else None
    if prompts is not None and any(not t.strip() for t in prompts):
        raise UserError("--prompt is empty; give a text such as --prompt 'a red ball bouncing around'")
    if base_cfg.text_dim > 0 and prompts is None and not args.unconditional:
        raise UserError(f"{flag} {path0} is a text-to-video model: give --prompt TEXT (or --unconditional)")
    if base_cfg.text_dim == 0 and prompts is not None:
        raise UserError(f"--prompt: {flag} {path0} is not text-conditioned (text_dim=0); drop --prompt")
    if args.guidance_scale != 1.0 and prompts is None:
        raise UserError("--guidance-scale != 1 guides towards the prompt: give --prompt, or use --guidance-scale 1")
    n_per = C.positive_int(args.num_samples, "--num-samples") if args.num_samples is not None else (
        len(seeds_arg) if seeds_arg is not None and (prompts is None or len(prompts) == 1) else 1)
    items = [t for t in (prompts or [None]) for _ in range(n_per)]
    n = len(items)
    if seeds_arg is not None and len(seeds_arg) != n:
        raise UserError(f"--seeds has {len(seeds_arg)} seed(s) for {n} video(s); give exactly one per video")
    seeds = seeds_arg if seeds_arg is not None else [args.seed + i for i in range(n)]
    f_t, f_s = vae.config.temporal_factor, vae.config.spatial_factor
    T, h, w = stages[-1].net.config.input_size
    chunk = 1 + f_t * (T - 1)
    frames = C.output_frames(args.frames, chunk)
    from walt.pipeline import plan_length

    gen_frames, lengths = plan_length(frames, chunk, 1 + f_t, f_t, short_clips=False)
    if gen_frames != frames:
        print(f"walt sample: --frames {frames} is not a length the cascade generates ({chunk} + {chunk - 1 - f_t}k "
              f"frames); generating {gen_frames} and keeping the first {frames}")
    image = read_image(args.image) if args.image is not None else None
    if (len(lengths) > 1 or image is not None) and not all(s.net.config.frame_conditioning for s in stages):
        what = "--image" if image is not None else f"--frames {frames}"
        raise UserError(f"{what} needs frame-conditioned stages (config.frame_conditioning); these are not")
    encoder = None
    if prompts is not None:
        from walt.commands.sample import _load_text_encoder

        encoder = _load_text_encoder(args.text_encoder, extras0, base_cfg.text_dim, path0, device)
        for s in stages[1:]:
            if s.net.config.text_dim not in (0, base_cfg.text_dim):
                raise UserError(f"stage {s.name} takes {s.net.config.text_dim}-d text, the base {base_cfg.text_dim}-d")

    # ---- 4. output folder, last ----
    auto_tile = tile is None
    if tile is None:
        tile = AUTO_TILE if h * w > AUTO_TILE_AREA else None
    elif tile == 0:
        tile = None
    elif tile <= 8:
        raise UserError(f"--tile {tile} must exceed the tiles' 8-latent-pixel overlap; use e.g. 16 or 32 (or 0: no tiling)")
    tiled = tile is not None and (h > tile or w > tile)
    existed = out.is_dir()
    C.writable_dir(out)
    fps = float(args.fps or extras0.get("fps") or 8.0)
    H, W = h * f_s, w * f_s
    print(f"walt sample: {n} video(s) of {frames}x{H}x{W} through {len(stages)} stage(s) "
          f"({' -> '.join(s.name for s in stages)}), {'image-to-video, ' if image is not None else ''}"
          f"{args.sampler} {steps} steps, guidance {args.guidance_scale:g}, {len(lengths)} chunk(s), device {device}")
    how = "whole frames"
    if tiled:
        how = f"in {tile}x{tile}-latent tiles" + (f" (auto: frames above {AUTO_TILE_AREA} latent pixels)" if auto_tile else "")
    print(f"walt sample: decoding {h}x{w} latents streamed {chunk_frames} latent frame(s) at a time, {how}")

    import torch

    from walt.cascade.pipeline import sample_cascade

    videos = []
    with C.cleanup_if_empty(out, existed), torch.no_grad():
        for lo in range(0, n, batch):
            ps, ss = items[lo:lo + batch], seeds[lo:lo + batch]
            b = len(ss)
            kw = {}
            if encoder is not None:
                from walt.text import null_text

                tokens, mask = encoder.encode(ps)
                kw = {"text": tokens.to(device), "text_mask": mask.to(device)}
                if args.guidance_scale != 1.0:
                    kw["uncond_text"], kw["uncond_text_mask"] = null_text(*tokens.shape, device=device)
                # Stages without text (text_dim 0) cannot take tokens: such a cascade is unconditional above the base.
            img = image[None].expand(b, -1, -1, -1).to(device) if image is not None else None
            res = sample_cascade(stages, vae, seeds=ss, num_frames=frames, image=img, steps=steps, sampler=args.sampler,
                                 guidance_scale=args.guidance_scale, noise_levels=noise_levels, tile=tile,
                                 chunk_frames=chunk_frames, progress=not args.no_progress, log=print, **kw)
            videos.append(res.video.float().cpu())
            print(f"walt sample: {min(lo + batch, n)}/{n} videos sampled", flush=True)
        videos = torch.cat(videos)  # (N, 3, frames, H, W)
        written, grid = _write_outputs(out, videos, items, seeds, fps, args.gif)
    print(f"walt sample: wrote {len(written)} MP4{' + GIF' if args.gif else ''} file(s) at {fps:g} fps to {out} "
          f"(e.g. {written[0].name}) and the frame grid {grid}")
    return 0
