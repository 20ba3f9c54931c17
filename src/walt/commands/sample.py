"""`walt sample`: generate videos with a trained W.A.L.T transformer and its autoencoder.

    walt sample --ckpt runs/walt --vae runs/vae --out samples --classes all --num-samples 2
    walt sample --ckpt runs/walt --vae runs/vae --out samples --class-label 3 --seeds 0,1,2 --gif
    walt sample --ckpt runs/walt --vae runs/vae --out pred --context-video clip.mp4 --context-frames 2
    walt sample --ckpt runs/walt --vae runs/vae --out long --frames 41          # 17 -> 29 -> 41
    walt sample --ckpt runs/t2v --vae runs/vae --out t2v --prompt "a red star rotating in place" --guidance-scale 4

Modes (paper §3.2 / SPEC §2): class-conditional (`--class-label K` or `--classes all`, K may be a
class name stored with the model), unconditional (`--unconditional`, or a model without classes),
frame prediction (`--context-video FILE`: its first frame (`--context-frames 1`, image-to-video)
or first 5 frames (`--context-frames 2`, video prediction) are resized + centre-cropped to the
model's resolution, encoded, and condition the sample, which keeps them), and long videos
(`--frames` beyond one chunk: `walt.pipeline.extend_video` re-encodes the last 5 frames as the
context of the next chunk; any N >= 1 works: a length the chunks do not reach exactly is generated
at the next reachable one and cropped, with a note), and text-to-video (`--prompt TEXT`, repeatable, for a model trained
with `walt train --text`: the prompt is encoded by the model's text encoder, rebuilt from the spec
stored in the checkpoint (or `--text-encoder`) and checked by its weights hash; `--guidance-scale`
> 1 applies classifier-free guidance against the no-text branch). Sample i uses seed i of `--seeds` (default `--seed`, `--seed`+1, ...),
so a sample does not depend on the batch it ran in.

Writes one MP4 per sample at the model's fps (stored at training; default 8), optionally a GIF,
and `grid.png` (rows = samples, columns = frames), all atomically.
"""

from __future__ import annotations

import argparse

HELP = "generate videos: class-conditional, unconditional, frame prediction, long-video extension"

DEFAULT_FPS = 8.0  # the paper's output frame rate (SPEC §4)


def add_args(p: argparse.ArgumentParser) -> None:
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
    from walt.cascade.commands import add_sample_args

    add_sample_args(p)  # --cascade, --image, --sr-noise-level, --tile, --chunk-frames
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ----------------------------------------------------------------------------- loading


def load_walt(path, device="cpu", flag: str = "--ckpt"):
    """(WALT in eval mode, extras dict, resolved path) from a final checkpoint or a training state.

    A training state (`checkpoints/step_*.safetensors`) gives its EMA weights, so a run can be
    sampled before it finishes.
    """
    from walt.checkpoint import load_checkpoint
    from walt.commands import _common as C
    from walt.config import config_from_dict
    from walt.denoiser import WALT
    from walt.train.common import TRAINING_STATE_KIND

    p = C.resolve_checkpoint(path, flag, ("walt_ema.safetensors", "walt.safetensors"))
    with C.user_errors(f"{flag} {p}: "):
        state = load_checkpoint(p)
        if state.get("kind") == TRAINING_STATE_KIND:
            if "walt_config" not in state:
                raise ValueError("this training state is not a WALT run (no walt_config); pass a WALT checkpoint")
            net = WALT.from_checkpoint_state({"kind": "walt.denoiser.WALT", "config": state["walt_config"],
                                              "model": state["ema"]["shadow"]})
        else:
            net = WALT.from_checkpoint_state(state)
        extras = {k: v for k, v in state.items() if k not in ("model", "ema", "optimizer", "rng")}
        if isinstance(extras.get("diffusion_config"), dict):
            from walt.diffusion import DiffusionConfig

            extras["diffusion_config"] = config_from_dict(DiffusionConfig, extras["diffusion_config"])
    return net.to(device).eval().requires_grad_(False), extras, p


def _parse_class(text: str, num_classes: int, names: list[str] | None) -> int:
    from walt.cli import UserError

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


def _read_context(path: str, frames: int, resolution: tuple[int, int]):
    """First `frames` frames of a video file, resized + centre-cropped: (3, frames, H, W) in [-1, 1]."""
    from walt.cli import UserError
    from walt.data import VideoReadError, read_video, resize_center_crop, video_info

    try:
        info = video_info(path)
        if info.num_frames < frames:
            raise UserError(f"--context-video {path} has {info.num_frames} frame(s); --context-frames 2 needs "
                            f"{frames}: use --context-frames 1 or a longer video")
        video = read_video(path, list(range(frames)), output="float")  # (3, F, H0, W0)
    except (VideoReadError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        from walt.commands._common import first_line

        raise UserError(f"--context-video {path}: {first_line(e)}") from None
    return resize_center_crop(video, resolution)  # (3, F, H, W)


def _load_text_encoder(spec, extras: dict, text_dim: int, ckpt_path, device):
    """The model's frozen text encoder: --text-encoder SPEC or the one stored at training; weights hash checked."""
    from walt.cli import UserError
    from walt.commands import _common as C
    from walt.text import build_text_encoder

    stored = extras.get("text_encoder") or {}
    spec = spec or stored.get("name")
    if not spec:
        raise UserError(f"--ckpt {ckpt_path} does not say which text encoder it was trained with; "
                        "pass --text-encoder minilm or --text-encoder t5:PATH")
    kwargs = {"max_length": int(stored["max_length"])} if stored.get("max_length") else {}
    with C.user_errors(f"--text-encoder {spec}: "):
        enc = build_text_encoder(spec, device=device, **kwargs)
    if enc.dim != text_dim:
        raise UserError(f"--text-encoder {spec} gives {enc.dim}-d features but the model takes text_dim={text_dim}; "
                        "pass the encoder it was trained with")
    if stored.get("weights_id") and stored["weights_id"] != enc.weights_id:
        raise UserError(f"--text-encoder {spec} is not the text encoder --ckpt {ckpt_path} was trained with "
                        f"(weights hash {enc.weights_id[:12]} != {stored['weights_id'][:12]}); pass that one")
    return enc


def _text_kwargs(encoder, prompts, guidance_scale: float, device) -> dict:
    """generate() keyword arguments for `prompts`: text / text_mask, and the no-text branch for guidance."""
    from walt.text import null_text

    tokens, mask = encoder.encode(prompts)  # (b, L, D), (b, L)
    kw = {"text": tokens.to(device), "text_mask": mask.to(device)}
    if guidance_scale != 1.0:  # unconditional branch = no text tokens, as dropped captions in training
        kw["uncond_text"], kw["uncond_text_mask"] = null_text(*tokens.shape, device=device)
    return kw


def _slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "prompt"


# ----------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    import math

    from walt.cli import UserError
    from walt.commands import _common as C

    if args.cascade is not None or args.image is not None:  # text-to-video cascade / image-to-video
        from walt.cascade.commands import run_cascade_sample

        return run_cascade_sample(args)
    if args.ckpt is None:
        raise UserError("give --ckpt CHECKPOINT (or --cascade BASE,SR1,SR2 for the text-to-video cascade)")

    # ---- 1. numbers and flags ----
    seeds_arg = C.parse_int_list(args.seeds, "--seeds") if args.seeds is not None else None
    n_per = C.positive_int(args.num_samples, "--num-samples") if args.num_samples is not None else None
    batch = C.positive_int(args.batch_size, "--batch-size")
    steps = C.positive_int(args.steps, "--steps")
    if not math.isfinite(args.guidance_scale) or args.guidance_scale < 0:
        raise UserError(f"--guidance-scale must be a finite number >= 0, got {args.guidance_scale}")
    if args.fps is not None:
        C.finite_float(args.fps, "--fps", 0.0, strict=True)
    if args.frames is not None:
        C.output_frames(args.frames, 1)
    if args.seed < 0 or (seeds_arg and min(seeds_arg) < 0):
        raise UserError("seeds must be >= 0")
    device = C.pick_device(args.device)
    out = C.check_out_not_file(args.out)

    # ---- 2. checkpoints, and whether they belong together ----
    net, extras, ckpt_path = load_walt(args.ckpt, device)
    vae, _, vae_path = C.load_vae(args.vae, device)
    cfg, vcfg = net.config, vae.config
    if cfg.in_channels != vcfg.latent_channels:
        raise UserError(f"--ckpt {ckpt_path} works on {cfg.in_channels}-channel latents but --vae {vae_path} makes "
                        f"{vcfg.latent_channels}-channel latents; pass the autoencoder the model was trained with")
    want_hash = extras.get("vae_sha256") or extras.get("cache", {}).get("vae_sha256")
    if want_hash:
        from walt.data.latent_cache import vae_fingerprint

        if vae_fingerprint(vae) != want_hash:
            raise UserError(f"--vae {vae_path} is not the autoencoder whose latents --ckpt {ckpt_path} was trained on "
                            "(weights hash differs); pass that autoencoder")
    stats = C.latent_stats_from(extras, f"--ckpt {ckpt_path}")
    if stats is not None and stats.channels != cfg.in_channels:
        raise UserError(f"--ckpt {ckpt_path}: its latent stats have {stats.channels} channels, the model "
                        f"{cfg.in_channels}; the checkpoint is inconsistent")
    from walt.diffusion import DiffusionSchedule

    schedule = DiffusionSchedule(extras.get("diffusion_config"))
    if steps > schedule.num_timesteps:
        raise UserError(f"--steps {steps} exceeds the model's {schedule.num_timesteps} diffusion timesteps; "
                        f"use 1..{schedule.num_timesteps} (the paper uses 50)")

    # ---- 3. labels (or prompts) and seeds ----
    prompts_arg = [str(t) for t in args.prompt] if args.prompt is not None else None
    text_encoder = None
    if prompts_arg is not None:
        if cfg.text_dim == 0:
            raise UserError(f"--prompt: --ckpt {ckpt_path} is not text-conditioned (text_dim=0); "
                            "train one with `walt train --text`, or drop --prompt")
        if any(not t.strip() for t in prompts_arg):
            raise UserError("--prompt is empty; give a text such as --prompt 'a red ball bouncing around'")
        text_encoder = _load_text_encoder(args.text_encoder, extras, cfg.text_dim, ckpt_path, device)
    elif args.text_encoder is not None:
        raise UserError("--text-encoder is used only with --prompt; add --prompt TEXT or drop --text-encoder")
    elif cfg.text_dim > 0 and not args.unconditional:
        raise UserError(f"--ckpt {ckpt_path} is a text-to-video model: give --prompt TEXT (or --unconditional)")
    names = extras.get("class_names")
    names = list(names) if isinstance(names, (list, tuple)) and len(names) == cfg.num_classes else None
    all_classes = args.class_label is None and not args.unconditional and cfg.num_classes > 0 and not prompts_arg
    if n_per is None:  # one video per seed when one class (or none) is asked for
        n_per = len(seeds_arg) if seeds_arg is not None and not all_classes and not prompts_arg else 1
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
    n = len(labels)
    if seeds_arg is not None:
        if len(seeds_arg) != n:
            raise UserError(f"--seeds has {len(seeds_arg)} seed(s) for {n} video(s); give exactly one per video")
        seeds = seeds_arg
    else:
        seeds = [args.seed + i for i in range(n)]

    # ---- 4. lengths, context ----
    f_t, f_s = vcfg.temporal_factor, vcfg.spatial_factor
    T, h, w = cfg.input_size
    H, W = h * f_s, w * f_s
    chunk = 1 + f_t * (T - 1)  # pixel frames of one generated chunk (17 for 5 latent frames)
    frames = C.output_frames(args.frames, chunk)
    extend = frames > chunk or args.context_video is not None
    from walt.pipeline import plan_length

    # Any length: generate the next reachable one (1 + 4k below a chunk, 17 + 12k above) and crop.
    gen_frames, _ = plan_length(frames, chunk, 1 + f_t, f_t, short_clips=not extend)
    if extend:
        if not cfg.frame_conditioning:
            what = "--context-video" if args.context_video is not None else f"--frames {frames} (> one chunk of {chunk})"
            raise UserError(f"{what} needs a model trained with frame conditioning; this one has "
                            "frame_conditioning=False (train with --set frame_conditioning=true)")
        if args.context_frames >= T:
            raise UserError(f"--context-frames {args.context_frames} must be below the model's {T} latent frames")
        from walt.pipeline import extension_lengths

        with C.user_errors("--frames: "):
            lengths = extension_lengths(frames, chunk, overlap=1 + f_t, round_up=True)
    else:
        lengths = [gen_frames]
        import torch

        with C.user_errors(f"--frames {frames}: "):  # shorter than a chunk: the windows must still fit
            net._check_inputs(torch.zeros(1, cfg.in_channels, 1 + (gen_frames - 1) // f_t, h, w), torch.zeros(1))
    if gen_frames != frames:
        print(f"walt sample: --frames {frames} is not a length the model generates "
              f"({'1 + %dk' % f_t if not extend else '%d + %dk' % (chunk, chunk - 1 - f_t)} frames); "
              f"generating {gen_frames} and keeping the first {frames}")
    context = None
    if args.context_video is not None:
        context = _read_context(args.context_video, 1 + f_t * (args.context_frames - 1), (H, W))

    # ---- 5. output folder, last ----
    existed = out.is_dir()
    C.writable_dir(out)
    fps = float(args.fps or extras.get("fps") or DEFAULT_FPS)
    mode = ("frame prediction from " + args.context_video if context is not None else
            f"text-to-video ({len(prompts_arg)} prompt(s))" if prompts_arg else
            "unconditional" if labels[0] is None else f"class-conditional ({len(set(labels))} class(es))")
    print(f"walt sample: {n} video(s) of {frames}x{H}x{W}, {mode}, {args.sampler} {steps} steps, "
          f"guidance {args.guidance_scale:g}, {len(lengths)} chunk(s) each, device {device}")

    import torch

    from walt.data.video_io import write_frame_grid_png, write_gif, write_mp4
    from walt.pipeline import extend_video, generate

    videos = []
    with C.cleanup_if_empty(out, existed), torch.no_grad():
        for lo in range(0, n, batch):
            ys, ss = labels[lo:lo + batch], seeds[lo:lo + batch]
            b = len(ss)
            y = torch.tensor(ys, device=device) if ys[0] is not None else None
            common = dict(sampler=args.sampler, steps=steps, y=y, guidance_scale=args.guidance_scale, seeds=ss,
                          latent_stats=stats, progress=not args.no_progress)
            if text_encoder is not None:
                common.update(_text_kwargs(text_encoder, prompts[lo:lo + batch], args.guidance_scale, device))
            if extend:
                start = None if context is None else context[None].expand(b, -1, -1, -1, -1).to(device)
                video = extend_video(vae, net, schedule, start, frames, round_up=True, **common)  # (b, 3, frames, H, W)
            else:
                t_lat = 1 + (gen_frames - 1) // f_t
                z = generate(net, schedule, (b, cfg.in_channels, t_lat, h, w), **common)  # (b, c, t, h, w)
                # One video at a time: a convolution's kernel choice can depend on the batch size, so a
                # batched decode would make the frames depend (at ~1e-6) on --batch-size.
                video = torch.cat([vae.decode(z[i:i + 1]) for i in range(b)]).clamp(-1, 1)[:, :, :frames]
            videos.append(video.float().cpu())
            print(f"walt sample: {min(lo + batch, n)}/{n} videos sampled", flush=True)
        videos = torch.cat(videos)  # (N, 3, frames, H, W)

        # Written only once everything is sampled, each file atomically.
        paths = []
        for i, (label, seed) in enumerate(zip(labels, seeds)):
            tag = "uncond" if label is None else (names[label] if names else f"class{label}")
            if prompts[i] is not None:
                tag = _slug(prompts[i])
            stem = out / f"sample_{i:03d}_{tag}_seed{seed}"
            paths.append(write_mp4(stem.with_suffix(".mp4"), videos[i], fps=fps))
            if args.gif:
                write_gif(stem.with_suffix(".gif"), videos[i], fps=fps)
        grid = write_frame_grid_png(out / "grid.png", videos, max_frames=min(frames, 17))
    print(f"walt sample: wrote {len(paths)} MP4{' + GIF' if args.gif else ''} file(s) at {fps:g} fps to {out} "
          f"(e.g. {paths[0].name}) and the frame grid {grid}")
    return 0
