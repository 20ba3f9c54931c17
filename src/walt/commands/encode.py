"""`walt encode`: run the autoencoder once over a dataset and write the latent cache (resumable).

    walt encode --vae runs/vae --data builtin --out cache/videos --frames 17 --resolution 64 --num-samples 2048
    walt encode --vae runs/vae --data builtin --frames 1 --out cache/images    # image latents (joint training)
    walt encode --vae runs/vae --data builtin --out cache/t2v --text-encoder minilm  # + caption features (text-to-video)
    walt encode --vae runs/vae --data builtin --out cache/sr1 --resolution 256x448 --text-encoder minilm   # HxW
    walt encode --vae runs/vae --data builtin --out cache/base --resolution 128x224 --downsample-from 256x448

Super-resolution pairs (`walt train --stage sr`, W.A.L.T §4): encode the high-res cache at HxW and
the low-res cache of the SAME clips with `--downsample-from HxW` (the recommended way): each clip
is loaded at the high resolution and its pixels are downsampled (`--downsample-mode`, default
area = box filter) before encoding, so the pair's low-res side is the high-res clip downsampled
(`walt.data.downsample`). Without it the built-in clips are re-rendered at the low resolution.

The transformer trains on the cache (`walt train --cache ...`), never on pixels. Re-running the
same command after an interruption skips every finished shard; a cache folder made by another
autoencoder (weights hash) or with other settings is refused before any work.
"""

from __future__ import annotations

import argparse

HELP = "encode a dataset into a latent cache with a trained autoencoder (resumable)"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vae", required=True, help="autoencoder checkpoint (or a train-vae run folder: uses vae_ema.safetensors)")
    p.add_argument("--data", required=True, help="'builtin' or a video folder / .csv / UCF-101 root (images with --frames 1)")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + 4k; 1 = images (default 17)")
    p.add_argument("--resolution", default="128", metavar="SIZE|HxW",
                   help="clip size in pixels: SIZE (square) or HxW, e.g. 128x224 (default 128)")
    p.add_argument("--downsample-from", default=None, metavar="SIZE|HxW",
                   help="load each clip at this larger size and downsample its pixels to --resolution before "
                        "encoding: the low-res side of super-resolution pairs (same clips as the HxW cache)")
    p.add_argument("--downsample-mode", default="area", choices=["area", "bilinear"],
                   help="filter of --downsample-from: area (box filter, default) or antialiased bilinear")
    p.add_argument("--num-samples", type=int, default=None,
                   help="clips to encode: built-in dataset size (default 1024) / first N files of a folder (default all)")
    p.add_argument("--shard-size", type=int, default=256, help="clips per shard file, the unit of resumption")
    p.add_argument("--batch-size", type=int, default=8, help="clips per autoencoder call")
    p.add_argument("--chunk-frames", type=int, default=None,
                   help="stream long clips through the causal cache in chunks of this many frames (multiple of 4)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32", "bfloat16"], help="stored latent dtype")
    p.add_argument("--seed", type=int, default=0, help="built-in dataset seed / clip-start seed of folders")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding the source videos")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--text-encoder", default=None, metavar="SPEC",
                   help="also cache caption features for text-to-video: minilm (offline all-MiniLM-L6-v2) or "
                        "t5:PATH (a local T5 folder); stored in OUT/text/")
    p.add_argument("--text-max-length", type=int, default=None, help="tokens per caption (default: the encoder's)")
    from walt.commands.args import add_clip_sampling_args

    add_clip_sampling_args(p)  # --frame-stride N | --fps F (frames of real videos)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_existing_cache(out, vae_hash: str, num_samples: int, args) -> None:
    """Refuse, before any work, a cache folder that this command cannot resume (another VAE / settings)."""
    import json

    from walt.errors import UserError

    plan = out / "plan.json"
    if not plan.is_file():
        if out.is_dir() and any(out.glob("shard_*.safetensors")):
            raise UserError(f"--out {out} holds shards but no plan.json: not a walt cache; use an empty folder")
        return
    try:
        old = json.loads(plan.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--out {out}: unreadable plan.json ({e}); use an empty folder") from None
    if old.get("vae_sha256") != vae_hash:
        raise UserError(f"--out {out} holds a latent cache made by a different autoencoder; "
                        "use another --out (or the --vae that made it)")
    for key, now in (("num_samples", num_samples), ("shard_size", args.shard_size), ("latent_dtype", args.dtype),
                     ("chunk_frames", args.chunk_frames)):
        if old.get(key) != now:
            raise UserError(f"--out {out} was started with {key}={old.get(key)!r}, now {now!r}; "
                            "use the same settings to resume, or another --out")
    for key in ("frame_stride", "fps"):  # clip sampling of real videos, recorded in plan["dataset"]
        if (old.get("dataset") or {}).get(key) != getattr(args, key):
            raise UserError(f"--out {out} was started with --{key.replace('_', '-')} {(old.get('dataset') or {}).get(key)}, "
                            f"now {getattr(args, key)}; use the same settings to resume, or another --out")


def run(args: argparse.Namespace) -> int:
    from walt.commands import args as A, files as F
    from walt.errors import UserError

    # ---- 1. numbers ----
    A.positive_int(args.shard_size, "--shard-size")
    A.positive_int(args.batch_size, "--batch-size")
    A.positive_int(args.workers, "--workers", minimum=0)
    if args.num_samples is not None:
        A.positive_int(args.num_samples, "--num-samples")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    device = F.pick_device(args.device)
    out = F.check_out_not_file(args.out)

    # ---- 2. autoencoder, then sizes that depend on it ----
    vae, _, vae_path = F.load_vae(args.vae, device)
    cfg = vae.config
    A.check_frames(args.frames, cfg.temporal_factor)
    res = A.parse_resolution(args.resolution, cfg.spatial_factor)
    src = A.parse_resolution(args.downsample_from, cfg.spatial_factor, "--downsample-from") if args.downsample_from else None
    if src is not None and (src[0] < res[0] or src[1] < res[1]):
        raise UserError(f"--downsample-from {args.downsample_from} must be at least --resolution {args.resolution} "
                        "in both height and width (it is the high-res size the clips are downsampled from)")
    if args.chunk_frames is not None:
        cf = A.positive_int(args.chunk_frames, "--chunk-frames")
        if cf % cfg.temporal_factor:
            raise UserError(f"--chunk-frames {cf} must be a multiple of the temporal factor {cfg.temporal_factor}")

    from walt.data.latent_cache import encode_dataset
    from walt.data.latent_dataset import vae_fingerprint

    # ---- 3. data; the existing cache (if any) must be resumable ----
    ds = F.dataset_from_arg(args.data, args.frames, src or res, args.num_samples, args.seed,
                            cfg.temporal_factor, frame_stride=args.frame_stride, fps=args.fps)
    description = None
    if src is not None:
        from walt.data.downsample import Downsampled

        with A.user_errors("--downsample-from: "):
            ds = Downsampled(ds, res, args.downsample_mode, source_resolution=src)
        description = ds.describe()
    _check_existing_cache(out, vae_fingerprint(vae), len(ds), args)
    text_encoder = _build_text_encoder(args, out, device) if args.text_encoder is not None else None

    # ---- 4. output folder, last ----
    existed = out.is_dir()
    F.writable_dir(out)
    lat = (cfg.latent_channels, 1 + (args.frames - 1) // cfg.temporal_factor,
           res[0] // cfg.spatial_factor, res[1] // cfg.spatial_factor)
    how = f" ({args.downsample_mode}-downsampled from {src[0]}x{src[1]})" if src is not None else ""
    print(f"walt encode: {F.describe_dataset(ds)} of {args.frames}x{res[0]}x{res[1]}{how} "
          f"-> latents {lat} (c, t, h, w) with {vae_path}, device {device}, into {out}")
    with F.cleanup_if_empty(out, existed):
        info = encode_dataset(vae, ds, out, shard_size=args.shard_size, batch_size=args.batch_size,
                              chunk_frames=args.chunk_frames, device=device, progress=not args.no_progress,
                              latent_dtype=args.dtype, num_workers=args.workers, description=description)
    idx = info.index
    resumed = f", {len(info.skipped_shards)} already done" if info.skipped_shards else ""
    print(f"walt encode: {idx['num_samples']} latents in {idx['num_shards']} shard(s) "
          f"({len(info.encoded_shards)} encoded now{resumed}); {idx['num_classes']} classes; "
          f"latent std per channel {[round(s, 3) for s in idx['latent_stats']['std']]}")
    print(f"walt encode: wrote {out / 'index.json'}")
    if text_encoder is not None:
        from walt.text import cache_text_embeddings

        with A.user_errors("--text-encoder: "):
            tinfo = cache_text_embeddings(out, text_encoder, progress=not args.no_progress)
        print(f"walt encode: text features {tinfo['encoder']['name']} ({tinfo['encoder']['dim']}-d, up to "
              f"{tinfo['max_tokens']} tokens, {len(tinfo['encoded_shards'])} shard(s) encoded now) in {out / 'text'}")
    return 0


def _build_text_encoder(args, out, device):
    """The frozen text encoder of --text-encoder, checked against a text sidecar already in --out."""
    import json

    from walt.commands import args as A
    from walt.errors import UserError
    from walt.text import build_text_encoder

    kwargs = {}
    if args.text_max_length is not None:
        kwargs["max_length"] = A.positive_int(args.text_max_length, "--text-max-length")
    with A.user_errors(f"--text-encoder {args.text_encoder}: "):
        enc = build_text_encoder(args.text_encoder, device=device, **kwargs)
    plan = out / "text" / "plan.json"
    if plan.is_file():
        try:
            old = json.loads(plan.read_text()).get("encoder", {})
        except (OSError, ValueError):
            old = {}
        if old.get("weights_id") != enc.weights_id:
            raise UserError(f"--out {out}/text holds caption features of another text encoder "
                            f"({old.get('name')!r}); delete {out}/text or use another --out")
    return enc
