"""Validation helpers shared by the `walt` subcommands (issue #4 "Bad input").

Every subcommand checks its arguments *before* any work, in the same order: numbers and flags,
then the files it reads (checkpoints, datasets, caches), then their mutual consistency (latent
channels, frame counts, VAE fingerprints), and last the output folder (created and probed with
a test file). A mistake found on the way is a `walt.cli.UserError`: one line on stderr, exit
code 2, no traceback, and nothing written.

Heavy imports (torch, models, datasets) stay inside the functions so that `walt --help` is fast.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from walt.cli import UserError

VIDEO_FILE_HINT = "a folder of videos (class sub-folders optional), a .csv list, a UCF-101 root, or 'builtin'"


# ----------------------------------------------------------------------------- errors


@contextlib.contextmanager
def user_errors(prefix: str = "") -> Iterator[None]:
    """Turn the errors a user can cause (ValueError incl. ConfigError, CheckpointError) into UserError.

    Used only around validation and loading, never around long work, so a genuine bug inside
    training still shows its traceback.
    """
    from walt.checkpoint import CheckpointError

    try:
        yield
    except UserError:
        raise
    except (ValueError, CheckpointError) as e:
        msg = " ".join(str(e).split())  # one line, whatever the message looked like
        raise UserError(f"{prefix}{msg}") from None


def first_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ----------------------------------------------------------------------------- numbers


def positive_int(value: Any, flag: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise UserError(f"{flag} must be an integer >= {minimum}, got {value}")
    return int(value)


def finite_float(value: float, flag: str, minimum: float | None = None, strict: bool = False) -> float:
    """A finite float, optionally >= minimum (or > minimum with strict)."""
    if not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise UserError(f"{flag} must be {'>' if strict else '>='} {minimum}, got {value}")
    return float(value)


def check_frames(frames: int, temporal_factor: int, flag: str = "--frames") -> int:
    """`frames` must be 1 + temporal_factor * k (the causal autoencoder's clip lengths, SPEC §1)."""
    f = temporal_factor
    if frames < 1 or (frames - 1) % f:
        lo = 1 + max(0, (frames - 1) // f) * f
        raise UserError(
            f"{flag} {frames} is not 1+{f}k (the autoencoder maps 1+{f}k frames to 1+k latent frames); "
            f"use {lo} or {lo + f}"
        )
    return frames


def check_resolution(resolution: int, spatial_factor: int, flag: str = "--resolution") -> int:
    if resolution < spatial_factor or resolution % spatial_factor:
        lo = max(spatial_factor, resolution // spatial_factor * spatial_factor)
        raise UserError(
            f"{flag} {resolution} must be a positive multiple of the autoencoder's spatial factor "
            f"{spatial_factor}; use e.g. {lo}"
        )
    return resolution


def parse_int_list(text: str, flag: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] (UserError naming the flag otherwise)."""
    try:
        values = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers such as 0,1,2; got {text!r}") from None
    if not values:
        raise UserError(f"{flag} is empty; give comma-separated integers such as 0,1,2")
    return values


# ----------------------------------------------------------------------------- --set key=value


def parse_value(text: str) -> Any:
    """Command-line text -> bool / None / int / float / tuple / str.

    'true'/'false' -> bool, 'none'/'null' -> None, '1,2,2' or '(1,2,2)' or '[1,2,2]' -> tuple of
    parsed items, numbers -> int or float ('1e-4' is a float), anything else a string.
    """
    s = text.strip()
    low = s.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    if (s[:1], s[-1:]) in (("(", ")"), ("[", "]")):
        inner = s[1:-1].strip()
        return tuple(parse_value(p) for p in inner.split(",") if p.strip()) if inner else ()
    if "," in s:
        return tuple(parse_value(p) for p in s.split(",") if p.strip())
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def parse_sets(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """["key=value", "a.b=1,2"] -> {"key": value, "a.b": (1, 2)} (values through `parse_value`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{flag} {item!r} is not key=value; write e.g. {flag} latent_channels=8")
        out[key] = parse_value(value)
    return out


def apply_sets(cfg: Any, sets: dict[str, Any], flag: str = "--set") -> Any:
    """A copy of the frozen dataclass `cfg` with dotted-key overrides ("loss.kl_weight": 1e-5).

    Goes through `config_from_dict`, so values are coerced to the field types (tuples, floats)
    and an unknown key is a ConfigError naming it -> UserError.
    """
    if not sets:
        return cfg
    from walt.config import config_from_dict, config_to_dict

    data = config_to_dict(cfg)
    for key, value in sets.items():
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                what = "is not a nested config" if part in node else "is not a key"
                raise UserError(
                    f"{flag} {key}=...: {part!r} {what} of {type(cfg).__name__}; valid keys are: {', '.join(sorted(node))}"
                )
            node = node[part]
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    with user_errors(f"{flag}: "):
        return config_from_dict(type(cfg), data)


def split_sets(sets: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split {"train.lr": .., "latent_channels": ..} by `prefix` -> ({"lr": ..}, {"latent_channels": ..})."""
    pre = prefix + "."
    inside = {k[len(pre):]: v for k, v in sets.items() if k.startswith(pre)}
    rest = {k: v for k, v in sets.items() if not k.startswith(pre)}
    return inside, rest


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


def latent_stats_from(extra: dict[str, Any], where: str):
    """LatentStats stored under "latent_stats" in checkpoint extras (None when absent)."""
    from walt.autoencoder import LatentStats

    d = extra.get("latent_stats")
    if d is None:
        return None
    if isinstance(d, LatentStats):
        return d
    with user_errors(f"{where}: invalid latent_stats: "):
        return LatentStats.from_dict(d)


# ----------------------------------------------------------------------------- datasets


def add_clip_sampling_args(p) -> None:
    """`--frame-stride N` | `--fps F`: how a clip's frames are picked from a real video (exclusive)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frame-stride", type=int, default=None, metavar="N",
                   help="real videos: a clip takes every N-th source frame (default 1: consecutive frames)")
    g.add_argument("--fps", type=float, default=None, metavar="F",
                   help="real videos: resample clips to F frames per second (nearest source frame), whatever "
                        "each file's own rate; instead of --frame-stride")


def check_clip_sampling(frame_stride: int | None, fps: float | None) -> None:
    """UserError unless frame_stride is an integer >= 1, fps a finite number > 0, and not both are given."""
    if frame_stride is not None and fps is not None:
        raise UserError("--frame-stride and --fps both pick the clip's frames; give one of them")
    if frame_stride is not None:
        positive_int(frame_stride, "--frame-stride")
    if fps is not None:
        finite_float(fps, "--fps", 0.0, strict=True)


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



# ----------------------------------------------------------------------------- sizes (cascade / long videos)


def output_frames(frames: Any, default: int, flag: str = "--frames") -> int:
    """The wanted output length: any integer >= 1 (None -> `default`).

    Long-video sampling reaches any length by generating the next reachable one and cropping
    (`walt.pipeline.plan_length`), so only non-positive values are refused.
    """
    if frames is None:
        return int(default)
    if isinstance(frames, bool) or int(frames) != frames or frames < 1:
        raise UserError(f"{flag} {frames} must be an integer >= 1 (the number of frames to write)")
    return int(frames)


def parse_resolution(text: Any, spatial_factor: int, flag: str = "--resolution") -> tuple[int, int]:
    """'128' -> (128, 128), '128x224' (HxW, also 'HXW' / 'H,W') -> (128, 224); both multiples of the
    autoencoder's spatial factor (UserError naming the flag otherwise)."""
    s = str(text).strip().lower().replace(",", "x").replace("*", "x")
    parts = [p.strip() for p in s.split("x")]
    try:
        hw = [int(p) for p in parts]
    except ValueError:
        hw = []
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2:
        raise UserError(f"{flag} {text} is not a size; give SIZE (square) or HxW in pixels, e.g. 128 or 128x224")
    for v in hw:
        if v < spatial_factor or v % spatial_factor:
            lo = max(spatial_factor, v // spatial_factor * spatial_factor)
            raise UserError(f"{flag} {text}: {v} must be a positive multiple of the autoencoder's spatial factor "
                            f"{spatial_factor}; use e.g. {lo}")
    return hw[0], hw[1]
