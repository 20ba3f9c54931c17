"""`walt sample`: generate videos with a trained W.A.L.T transformer and its autoencoder.

    walt sample --ckpt runs/walt --vae runs/vae --out samples --classes all --num-samples 2
    walt sample --ckpt runs/walt --vae runs/vae --out samples --class-label 3 --seeds 0,1,2 --gif
    walt sample --ckpt runs/walt --vae runs/vae --out pred --context-video clip.mp4 --context-frames 2
    walt sample --ckpt runs/walt --vae runs/vae --out long --frames 41          # 17 -> 29 -> 41
    walt sample --ckpt runs/t2v --vae runs/vae --out t2v --prompt "a red star rotating in place" --guidance-scale 4
    walt sample --cascade runs/base,runs/sr1,runs/sr2 --vae runs/vae --out t2v --prompt "..."   # walt.commands.sample_cascade

Modes (paper §3.2 / SPEC §2): class-conditional (`--class-label K` or `--classes all`, K may be a
class name stored with the model), unconditional (`--unconditional`, or a model without classes),
frame prediction (`--context-video FILE`: its first frame or first 5 frames, resized and centre-
cropped, condition the sample, which keeps them), long videos (`--frames` beyond one chunk:
`walt.pipeline.extend_video`; a length the chunks do not reach exactly is generated at the next
reachable one and cropped), and text-to-video (`--prompt TEXT`, encoded by the model's own text
encoder; `--guidance-scale` > 1 guides against the no-text branch). Sample i uses seed i of
`--seeds` (default `--seed`, `--seed`+1, ...), so a sample does not depend on the batch it ran in.

Writes one MP4 per sample at the model's fps (stored at training; default 8), optionally a GIF,
and `grid.png` (rows = samples, columns = frames), all atomically.
"""

from __future__ import annotations

import argparse

HELP = "generate videos: class-conditional, unconditional, frame prediction, long-video extension"

DEFAULT_FPS = 8.0  # the paper's output frame rate (SPEC §4)


def add_args(p: argparse.ArgumentParser) -> None:
    from walt.cascade.tiling import AUTO_TILE, AUTO_TILE_AREA

    p.add_argument("--ckpt", default=None,
                   help="WALT checkpoint (or a `walt train` run folder: uses walt_ema.safetensors); required without --cascade")
    p.add_argument("--vae", required=True, help="autoencoder checkpoint (or a train-vae run folder)")
    p.add_argument("--out", required=True, help="output folder for the videos and grid.png")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--class-label", default=None, help="class index (or name) to generate")
    g.add_argument("--classes", default=None, choices=["all"], help="'all': --num-samples videos of every class")
    g.add_argument("--unconditional", action="store_true", help="no class label (the null class) / no text")
    g.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="text-to-video prompt (repeatable; --num-samples videos each) for a text-conditioned model")
    p.add_argument("--text-encoder", default=None, metavar="SPEC",
                   help="text encoder of a --prompt model (default: the one stored with it, e.g. minilm or t5:PATH)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="videos (per class with --classes all); default 1, or one per --seeds entry")
    p.add_argument("--batch-size", type=int, default=8, help="videos sampled together (default 8)")
    s = p.add_mutually_exclusive_group()
    s.add_argument("--seeds", default=None, help="comma-separated seeds, one per video (e.g. 0,1,2)")
    s.add_argument("--seed", type=int, default=0, help="seed of the first video; the next ones count up (default 0)")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm", "dpmpp"], help="default ddim (paper)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50, paper)")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance on the class or prompt; 1 = none (paper, UCF-101)")
    p.add_argument("--context-video", default=None, help="video file whose first frames condition the samples")
    p.add_argument("--context-frames", type=int, default=1, choices=[1, 2],
                   help="latent frames of context: 1 = first frame (image-to-video), 2 = first 5 frames")
    p.add_argument("--frames", type=int, default=None,
                   help="output length, any N >= 1; default one chunk (17 for 5 latent frames); longer = autoregressive "
                        "extension (17 -> 29 -> 41 ...); other lengths are generated at the next reachable one and cropped")
    p.add_argument("--fps", type=float, default=None, help="frame rate of the written videos (default: the model's, else 8)")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF per video")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    # The text-to-video cascade and image-to-video (walt.commands.sample_cascade).
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from walt.errors import UserError

    if args.cascade is not None or args.image is not None:  # text-to-video cascade / image-to-video
        from walt.commands.sample_cascade import run_cascade

        return run_cascade(args)
    if args.ckpt is None:
        raise UserError("give --ckpt CHECKPOINT (or --cascade BASE,SR1,SR2 for the text-to-video cascade)")
    return _run_model(args)


# ----------------------------------------------------------------------------- one model


def _run_model(args: argparse.Namespace) -> int:
    """Check everything (numbers, checkpoints, requests, lengths), then sample, then write."""
    from walt.commands import args as A, files as F

    steps, batch, seeds_arg = A.sampling_numbers(args)
    if args.frames is not None:
        A.output_frames(args.frames, 1)
    device = F.pick_device(args.device)
    out = F.check_out_not_file(args.out)
    stage, ckpt_path = F.load_stage(args.ckpt, device)
    vae, _, vae_path = F.load_vae(args.vae, device)
    F.check_same_vae(stage, f"--ckpt {ckpt_path}", vae, vae_path)
    A.check_steps(steps, stage.schedule.num_timesteps)
    labels, prompts, seeds, encoder, names = _requests(args, stage, ckpt_path, seeds_arg, device)
    frames, lengths, context = _lengths(args, stage, vae)

    existed = out.is_dir()
    F.writable_dir(out)
    fps = float(args.fps or stage.info.get("fps") or DEFAULT_FPS)
    T, h, w = stage.net.config.input_size
    f_s = vae.config.spatial_factor
    mode = ("frame prediction from " + args.context_video if context is not None else
            f"text-to-video ({len(args.prompt)} prompt(s))" if args.prompt else
            "unconditional" if labels[0] is None else f"class-conditional ({len(set(labels))} class(es))")
    print(f"walt sample: {len(labels)} video(s) of {frames}x{h * f_s}x{w * f_s}, {mode}, {args.sampler} {steps} steps, "
          f"guidance {args.guidance_scale:g}, {len(lengths)} chunk(s) each, device {device}")
    with F.cleanup_if_empty(out, existed):
        videos = _sample(args, stage, vae, labels, prompts, seeds, encoder, frames, lengths, context, steps, batch)
        tags = [F.slug(p) if p is not None else "uncond" if y is None else (names[y] if names else f"class{y}")
                for y, p in zip(labels, prompts)]
        paths, grid = F.write_samples(out, videos, tags, seeds, fps, args.gif)
    print(f"walt sample: wrote {len(paths)} MP4{' + GIF' if args.gif else ''} file(s) at {fps:g} fps to {out} "
          f"(e.g. {paths[0].name}) and the frame grid {grid}")
    return 0


def _requests(args, stage, ckpt_path, seeds_arg, device):
    """(labels, prompts, seeds, text encoder or None, class names or None): one entry per video."""
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    cfg = stage.net.config
    prompts_arg = [str(t) for t in args.prompt] if args.prompt is not None else None
    encoder = None
    if prompts_arg is not None:
        if cfg.text_dim == 0:
            raise UserError(f"--prompt: --ckpt {ckpt_path} is not text-conditioned (text_dim=0); "
                            "train one with `walt train --text`, or drop --prompt")
        A.check_prompts(prompts_arg)
        encoder = F.load_text_encoder(args.text_encoder, stage, f"--ckpt {ckpt_path}", device)
    elif args.text_encoder is not None:
        raise UserError("--text-encoder is used only with --prompt; add --prompt TEXT or drop --text-encoder")
    elif cfg.text_dim > 0 and not args.unconditional:
        raise UserError(f"--ckpt {ckpt_path} is a text-to-video model: give --prompt TEXT (or --unconditional)")
    names = stage.info.get("class_names")
    names = list(names) if isinstance(names, (list, tuple)) and len(names) == cfg.num_classes else None
    all_classes = args.class_label is None and not args.unconditional and cfg.num_classes > 0 and not prompts_arg
    n_per = A.positive_int(args.num_samples, "--num-samples") if args.num_samples is not None else (
        len(seeds_arg) if seeds_arg is not None and not all_classes and not prompts_arg else 1)
    if args.class_label is not None:
        labels = [_parse_class(args.class_label, cfg.num_classes, names)] * n_per
    elif not all_classes:
        labels = [None] * n_per
    else:  # --classes all (the default for a class-conditional model)
        labels = [k for k in range(cfg.num_classes) for _ in range(n_per)]
    prompts = [t for t in prompts_arg for _ in range(n_per)] if prompts_arg else [None] * len(labels)
    if prompts_arg:
        labels = [None] * len(prompts)
    if args.guidance_scale != 1.0 and labels[0] is None and prompts[0] is None:
        raise UserError("--guidance-scale != 1 guides towards a class: give --class-label or --classes all, "
                        "or use --guidance-scale 1 for unconditional samples")
    return labels, prompts, A.seeds_for(args.seed, seeds_arg, len(labels)), encoder, names


def _parse_class(text: str, num_classes: int, names: list[str] | None) -> int:
    from walt.errors import UserError

    if num_classes == 0:
        raise UserError("--class-label: this model is unconditional (num_classes=0); drop --class-label")
    try:
        k = int(text)
    except ValueError:
        if names and text in names:
            return names.index(text)
        known = f"one of {', '.join(names)} or " if names else ""
        raise UserError(f"--class-label {text!r} is not {known}an integer in [0, {num_classes - 1}]") from None
    if not 0 <= k < num_classes:
        raise UserError(f"--class-label {k} is out of range: the model has classes 0..{num_classes - 1}")
    return k


def _lengths(args, stage, vae):
    """(frames to write, chunk lengths, context clip or None); long videos need frame conditioning."""
    import torch

    from walt.commands import args as A
    from walt.errors import UserError
    from walt.pipeline import extension_lengths, plan_length

    cfg = stage.net.config
    f_t, f_s = vae.config.temporal_factor, vae.config.spatial_factor
    T, h, w = cfg.input_size
    chunk = 1 + f_t * (T - 1)  # pixel frames of one generated chunk (17 for 5 latent frames)
    frames = A.output_frames(args.frames, chunk)
    extend = frames > chunk or args.context_video is not None
    # Any length: generate the next reachable one (1 + 4k below a chunk, 17 + 12k above) and crop.
    gen_frames, _ = plan_length(frames, chunk, 1 + f_t, f_t, short_clips=not extend)
    if extend:
        if not cfg.frame_conditioning:
            what = "--context-video" if args.context_video is not None else f"--frames {frames} (> one chunk of {chunk})"
            raise UserError(f"{what} needs a model trained with frame conditioning; this one has "
                            "frame_conditioning=False (train with --set frame_conditioning=true)")
        if args.context_frames >= T:
            raise UserError(f"--context-frames {args.context_frames} must be below the model's {T} latent frames")
        with A.user_errors("--frames: "):
            lengths = extension_lengths(frames, chunk, overlap=1 + f_t, round_up=True)
    else:
        lengths = [gen_frames]
        with A.user_errors(f"--frames {frames}: "):  # shorter than a chunk: the windows must still fit
            stage.net._check_inputs(torch.zeros(1, cfg.in_channels, 1 + (gen_frames - 1) // f_t, h, w), torch.zeros(1))
    if gen_frames != frames:
        print(f"walt sample: --frames {frames} is not a length the model generates "
              f"({'1 + %dk' % f_t if not extend else '%d + %dk' % (chunk, chunk - 1 - f_t)} frames); "
              f"generating {gen_frames} and keeping the first {frames}")
    context = None
    if args.context_video is not None:
        context = _read_context(args.context_video, 1 + f_t * (args.context_frames - 1), (h * f_s, w * f_s))
    return frames, lengths, context


def _read_context(path: str, frames: int, resolution: tuple[int, int]):
    """First `frames` frames of a video file, resized + centre-cropped: (3, frames, H, W) in [-1, 1]."""
    from walt.commands.args import first_line
    from walt.data import VideoReadError, read_video, resize_center_crop, video_info
    from walt.errors import UserError

    try:
        info = video_info(path)
        if info.num_frames < frames:
            raise UserError(f"--context-video {path} has {info.num_frames} frame(s); --context-frames 2 needs "
                            f"{frames}: use --context-frames 1 or a longer video")
        video = read_video(path, list(range(frames)), output="float")  # (3, F, H0, W0)
    except (VideoReadError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"--context-video {path}: {first_line(e)}") from None
    return resize_center_crop(video, resolution)  # (3, F, H, W)


def _sample(args, stage, vae, labels, prompts, seeds, encoder, frames, lengths, context, steps, batch):
    """(N, 3, frames, H, W) float videos in [-1, 1] on the CPU, `batch` at a time."""
    import torch

    from walt.pipeline import extend_video, generate
    from walt.text import prompt_kwargs

    net, cfg, device = stage.net, stage.net.config, next(stage.net.parameters()).device
    T, h, w = cfg.input_size
    f_t = vae.config.temporal_factor
    n, videos = len(labels), []
    with torch.no_grad():
        for lo in range(0, n, batch):
            ys, ss = labels[lo:lo + batch], seeds[lo:lo + batch]
            b = len(ss)
            y = torch.tensor(ys, device=device) if ys[0] is not None else None
            common = dict(sampler=args.sampler, steps=steps, y=y, guidance_scale=args.guidance_scale, seeds=ss,
                          latent_stats=stage.latent_stats, progress=not args.no_progress)
            if encoder is not None:
                common.update(prompt_kwargs(encoder, prompts[lo:lo + batch], args.guidance_scale, device))
            if len(lengths) > 1 or context is not None:
                start = None if context is None else context[None].expand(b, -1, -1, -1, -1).to(device)
                video = extend_video(vae, net, stage.schedule, start, frames, round_up=True, **common)  # (b, 3, F, H, W)
            else:
                t_lat = 1 + (lengths[0] - 1) // f_t
                z = generate(net, stage.schedule, (b, cfg.in_channels, t_lat, h, w), **common)  # (b, c, t, h, w)
                # One video at a time: a convolution's kernel choice can depend on the batch size, so a
                # batched decode would make the frames depend (at ~1e-6) on --batch-size.
                video = torch.cat([vae.decode(z[i:i + 1]) for i in range(b)]).clamp(-1, 1)[:, :, :frames]
            videos.append(video.float().cpu())
            print(f"walt sample: {min(lo + batch, n)}/{n} videos sampled", flush=True)
    return torch.cat(videos)  # (N, 3, frames, H, W)
