"""What the `walt` subcommands read and write: devices, output folders, checkpoints, datasets, samples.

Heavy imports (torch, models, datasets) stay inside the functions so that `walt --help` is fast.
The output folder is created and probed last (`writable_dir`), after every other check, so a
refused command writes nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from walt.commands.args import check_clip_sampling, first_line, user_errors
from walt.errors import UserError

VIDEO_FILE_HINT = "a folder of videos (class sub-folders optional), a .csv list, a UCF-101 root, or 'builtin'"
WALT_FILES = ("walt_ema.safetensors", "walt.safetensors")  # what a `walt train` run folder exports


# ----------------------------------------------------------------------------- device


def pick_device(arg: str = "auto"):
    """'auto' -> cuda if available else cpu; 'cpu' / 'cuda' / 'cuda:N' as given (checked)."""
    import torch

    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(arg)
    except RuntimeError:
        raise UserError(f"--device {arg!r} is not a device; use auto, cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {arg} was asked for but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {arg}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise UserError(f"--device {arg!r} is not supported; use auto, cpu or cuda")
    return dev


# ----------------------------------------------------------------------------- output folders


def writable_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create `path` (and parents) if needed and prove it is writable with a probe file.

    Call it after every other validation: on failure nothing else has been written.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p} exists and is not a folder; choose a folder path")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".walt-write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{flag} {p} is not writable ({e.strerror or first_line(e)}); choose another folder") from None
    return p


@contextlib.contextmanager
def cleanup_if_empty(path: Path, existed: bool) -> Iterator[None]:
    """Remove the output folder again if this command created it and failed before writing to it."""
    try:
        yield
    except BaseException:
        if not existed and path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path, ignore_errors=True)
        raise


def check_out_not_file(path: str | Path, flag: str = "--out") -> Path:
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p} exists and is not a folder; choose a folder path")
    return p


# ----------------------------------------------------------------------------- checkpoints


def resolve_checkpoint(path: str | Path, flag: str, names: tuple[str, ...]) -> Path:
    """A checkpoint file, or a run folder holding one of `names` (first found wins)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in names:
            if (p / name).is_file():
                return p / name
        raise UserError(f"{flag} {p} is a folder without {' or '.join(names)}; pass the checkpoint file")
    if not p.exists():
        raise UserError(f"{flag} {p}: checkpoint not found; check the path")
    return p


def load_vae(path: str | Path, device: Any = "cpu", flag: str = "--vae"):
    """(CausalVAE in eval mode on `device`, extra dict, resolved path); a run folder picks vae_ema.safetensors."""
    from walt.autoencoder import CausalVAE

    p = resolve_checkpoint(path, flag, ("vae_ema.safetensors", "vae.safetensors"))
    with user_errors(f"{flag} {p}: "):
        vae, extra = CausalVAE.load(p, map_location="cpu", with_extra=True)
    return vae.to(device).eval().requires_grad_(False), extra, p


# ----------------------------------------------------------------------------- datasets


def _is_ucf101_root(p: Path) -> bool:
    return (p / "UCF-101").is_dir() or (p / "ucfTrainTestlist").is_dir() or (p / "classInd.txt").is_file()


def dataset_from_arg(
    data: str,
    frames: int,
    resolution: int,
    num_samples: int | None = None,
    seed: int = 0,
    temporal_factor: int = 4,
    sampling: str = "deterministic",
    flag: str = "--data",
    frame_stride: int | None = None,
    fps: float | None = None,
    split: str = "train",
):
    """'builtin' -> SyntheticVideos; PATH -> UCF101 / VideoFolder (folder or .csv) / ImageFolder.

    Layout detection: a folder with `UCF-101/`, `ucfTrainTestlist/` or `classInd.txt` is a UCF-101
    root; a `.csv` file is a video list; a folder with video files is a VideoFolder; with
    `frames == 1`, a folder of images (and no videos) is an ImageFolder. `num_samples` caps a real
    dataset (first N files) and sizes the built-in one. Every file is probed up front, so an empty
    or unreadable dataset is a UserError before any work. `frame_stride` / `fps` (the flags of
    `add_clip_sampling_args`) pick a real video's clip frames: every N-th source frame, or the
    nearest source frame to each tick of a target frame rate (`walt.data.folders`).
    """
    import warnings

    from walt.data import IMAGE_EXTENSIONS, UCF101, VIDEO_EXTENSIONS, ImageFolder, SyntheticVideos, VideoFolder

    check_clip_sampling(frame_stride, fps)
    if data == "builtin":
        if frame_stride is not None or fps is not None:
            raise UserError(f"{'--frame-stride' if frame_stride is not None else '--fps'} picks frames of real videos; "
                            f"the built-in dataset renders every frame: drop it or give {flag} PATH")
        with user_errors(f"{flag} builtin: "):
            return SyntheticVideos(num_samples or 1024, num_frames=frames, resolution=resolution, seed=seed)
    p = Path(data).expanduser()
    if not p.exists():
        raise UserError(f"{flag} {p} does not exist; give {VIDEO_FILE_HINT}")
    common = dict(num_frames=frames, resolution=resolution, temporal_factor=temporal_factor,
                  sampling=sampling, seed=seed, frame_stride=frame_stride, fps=fps)
    with user_errors(f"{flag} {p}: "), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # skipped files are summarised below
        if p.is_file():
            if p.suffix.lower() != ".csv":
                raise UserError(f"{flag} {p} is a file but not a .csv list; give {VIDEO_FILE_HINT}")
            ds = VideoFolder(p, **common)
        elif _is_ucf101_root(p):
            ds = UCF101(p, split=split, **common)  # `split`: which official list (FVD real_split)
        else:
            has_video = any(q.suffix.lower() in VIDEO_EXTENSIONS for q in p.rglob("*") if q.is_file())
            has_image = any(q.suffix.lower() in IMAGE_EXTENSIONS for q in p.rglob("*") if q.is_file())
            if not has_video and has_image:
                if frames != 1:
                    raise UserError(f"{flag} {p} holds images, not videos; use --frames 1 to encode images")
                if frame_stride is not None or fps is not None:
                    raise UserError(f"{flag} {p} holds images: --frame-stride / --fps apply to videos; drop them")
                ds = ImageFolder(p, resolution=resolution)
            elif not has_video:
                raise UserError(f"{flag} {p} holds no video files ({', '.join(VIDEO_EXTENSIONS)}); give {VIDEO_FILE_HINT}")
            else:
                ds = VideoFolder(p, **common)
    if getattr(ds, "skipped", None):
        print(f"walt: {flag} {p}: skipped {len(ds.skipped)} unreadable file(s), e.g. {ds.skipped[0][0]}")
    if num_samples is not None and num_samples < len(ds):
        from torch.utils.data import Subset

        sub = Subset(ds, range(num_samples))
        for key in ("class_names", "frame_stride", "fps"):  # keep what encode_dataset describes
            setattr(sub, key, getattr(ds, key, None))
        return sub
    return ds


def describe_dataset(ds) -> str:
    name = type(ds).__name__
    base = getattr(ds, "dataset", None)
    if base is not None:
        name = f"{type(base).__name__} (first {len(ds)})"
    return f"{name}, {len(ds)} clips"


# ----------------------------------------------------------------------------- models


def load_stage(path: str | Path, device: Any = "cpu", flag: str = "--ckpt"):
    """(`walt.cascade.Stage` on `device`, resolved path) of a WALT checkpoint or a `walt train` run folder.

    A training state (`checkpoints/step_*.safetensors`) gives its EMA weights, so a run can be
    sampled before it finishes.
    """
    from walt.cascade.stage import Stage

    p = resolve_checkpoint(path, flag, WALT_FILES)
    with user_errors(f"{flag} {p}: "):
        stage = Stage.load(p)
    if stage.latent_stats is not None and stage.latent_stats.channels != stage.net.config.in_channels:
        raise UserError(f"{flag} {p}: its latent stats have {stage.latent_stats.channels} channels, the model "
                        f"{stage.net.config.in_channels}; the checkpoint is inconsistent")
    return stage.to(device), p


def check_same_vae(stage, where: str, vae, vae_path) -> None:
    """The autoencoder must be the one whose latents the stage was trained on (channels, weights hash)."""
    from walt.data.latent_dataset import vae_fingerprint

    c = stage.net.config.in_channels
    if c != vae.config.latent_channels:
        raise UserError(f"{where} works on {c}-channel latents but --vae {vae_path} makes "
                        f"{vae.config.latent_channels}-channel latents; pass the autoencoder the model was trained with")
    if stage.vae_sha256 and vae_fingerprint(vae) != stage.vae_sha256:
        raise UserError(f"--vae {vae_path} is not the autoencoder whose latents {where} was trained on "
                        "(weights hash differs); pass that autoencoder")


def load_text_encoder(spec: str | None, stage, where: str, device: Any):
    """The stage's frozen text encoder: `spec` (--text-encoder) or the one stored at training; weights hash checked."""
    from walt.text import build_text_encoder

    stored = stage.info.get("text_encoder") or {}
    text_dim = stage.net.config.text_dim
    spec = spec or stored.get("name")
    if not spec:
        raise UserError(f"{where} does not say which text encoder it was trained with; "
                        "pass --text-encoder minilm or --text-encoder t5:PATH")
    kwargs = {"max_length": int(stored["max_length"])} if stored.get("max_length") else {}
    with user_errors(f"--text-encoder {spec}: "):
        enc = build_text_encoder(spec, device=device, **kwargs)
    if enc.dim != text_dim:
        raise UserError(f"--text-encoder {spec} gives {enc.dim}-d features but the model takes text_dim={text_dim}; "
                        "pass the encoder it was trained with")
    if stored.get("weights_id") and stored["weights_id"] != enc.weights_id:
        raise UserError(f"--text-encoder {spec} is not the text encoder {where} was trained with "
                        f"(weights hash {enc.weights_id[:12]} != {stored['weights_id'][:12]}); pass that one")
    return enc


# ----------------------------------------------------------------------------- samples


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "prompt"


def write_samples(out: Path, videos, tags: list[str], seeds: list[int], fps: float, gif: bool) -> tuple[list[Path], Path]:
    """`sample_{i}_{tag}_seed{seed}.mp4` (+ .gif) per video (N, 3, T, H, W) and grid.png; each atomically."""
    from walt.io import write_frame_grid_png, write_gif, write_mp4

    written = []
    for i, (tag, seed) in enumerate(zip(tags, seeds)):
        stem = out / f"sample_{i:03d}_{tag}_seed{seed}"
        written.append(write_mp4(stem.with_suffix(".mp4"), videos[i], fps=fps))
        if gif:
            write_gif(stem.with_suffix(".gif"), videos[i], fps=fps)
    grid = write_frame_grid_png(out / "grid.png", videos, max_frames=min(videos.shape[2], 17))
    return written, grid


# ----------------------------------------------------------------------------- evaluation


def load_fvd_network(path, device, allow_unverified: bool = False):
    """The FVD network, or a one-line UserError saying how to provide it."""
    from walt.eval import fvd_eval
    from walt.eval.i3d_weights import I3DWeightsError

    if allow_unverified and path is None:
        raise UserError("--allow-unverified-i3d applies to a file given with --i3d-weights PATH")
    # Only pass the flag when set, so a stand-in `load_fvd_i3d(path, device)` keeps working.
    extra = {"allow_unverified": True} if allow_unverified else {}
    try:
        with user_errors("--i3d-weights: "):
            return fvd_eval.load_fvd_i3d(path, device=device, **extra)
    except I3DWeightsError as e:
        raise UserError(f"cannot load the Kinetics-400 I3D for FVD ({first_line(e)}); pass --i3d-weights PATH"
                        ) from None


def real_dataset(args, proto, frames, resolution, n, seed, temporal_factor):
    """The real clips, read as the FVD protocol pins them (its real split and frame stride)."""
    from walt.eval.fvd_stats import check_real_dataset

    stride = proto.frame_stride if proto.frame_stride != 1 else None  # None: consecutive (builtin accepts it)
    ds = dataset_from_arg(args.data, frames, resolution, n, seed, temporal_factor, sampling="deterministic",
                            frame_stride=stride, split=proto.real_split)
    with user_errors(f"--data {args.data}: "):
        check_real_dataset(ds, proto)
    return ds


def write_eval_report(out, stem: str, result: dict, markdown: str, summary: str) -> None:
    """`stem`.json + `stem`.md in `out`, and the summary line."""
    from walt.eval.fvd_record import write_report

    j, m = write_report(out, stem, result, markdown)
    print(f"walt eval {stem}: {summary}")
    print(f"walt eval {stem}: wrote {j} and {m}")
