"""Checking the values of `walt` flags, before any work (one-line `UserError`s).

Every subcommand checks its arguments in the same order: numbers and flags (here), then the
files it reads, then their mutual consistency, and last the output folder (`walt.commands.files`).
A mistake is a `walt.errors.UserError`: one line on stderr, exit code 2, nothing written.
`--set key=value` overrides of frozen configs go through `config_from_dict`, so values are
coerced to the field types and an unknown key is named.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

from walt.errors import UserError


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


# ----------------------------------------------------------------------------- sampling


def sampling_numbers(args) -> tuple[int, int, list[int] | None]:
    """(steps, batch size, --seeds or None) of `walt sample`, with --num-samples, --guidance-scale,
    --fps and --seed checked too."""
    seeds = parse_int_list(args.seeds, "--seeds") if args.seeds is not None else None
    if args.num_samples is not None:
        positive_int(args.num_samples, "--num-samples")
    batch = positive_int(args.batch_size, "--batch-size")
    steps = positive_int(args.steps, "--steps")
    if not math.isfinite(args.guidance_scale) or args.guidance_scale < 0:
        raise UserError(f"--guidance-scale must be a finite number >= 0, got {args.guidance_scale}")
    if args.fps is not None:
        finite_float(args.fps, "--fps", 0.0, strict=True)
    if args.seed < 0 or (seeds and min(seeds) < 0):
        raise UserError("seeds must be >= 0")
    return steps, batch, seeds


def check_steps(steps: int, num_timesteps: int) -> int:
    if steps > num_timesteps:
        raise UserError(f"--steps {steps} exceeds the model's {num_timesteps} diffusion timesteps; "
                        f"use 1..{num_timesteps} (the paper uses 50)")
    return steps


def check_prompts(prompts: list[str]) -> list[str]:
    if any(not t.strip() for t in prompts):
        raise UserError("--prompt is empty; give a text such as --prompt 'a red ball bouncing around'")
    return prompts


def seeds_for(seed: int, seeds: list[int] | None, n: int) -> list[int]:
    """One seed per video: --seeds as given (exactly n of them), else seed, seed + 1, ..."""
    if seeds is None:
        return [seed + i for i in range(n)]
    if len(seeds) != n:
        raise UserError(f"--seeds has {len(seeds)} seed(s) for {n} video(s); give exactly one per video")
    return seeds


def fvd_protocol_arg(name: str, **overrides):
    """The named FVD protocol with the flags' overrides (None values are not overrides)."""
    from walt.eval.fvd import FVD_PROTOCOLS, fvd_protocol

    if name not in FVD_PROTOCOLS:
        raise UserError(f"unknown FVD protocol {name!r}; choose one of {', '.join(sorted(FVD_PROTOCOLS))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    with user_errors("FVD protocol: "):
        return fvd_protocol(name, **overrides)


# ----------------------------------------------------------------------------- training flags


def add_training_args(p, model: str, steps: int, steps_help: str, batch: int, batch_help: str, lr: float,
                      lr_help: str, warmup_help: str, parallel_help: str, compile_help: str) -> None:
    """The flags `walt train` and `walt train-vae` share: --set, the optimizer's, precision, parallelism."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config field: KEY for the {model}, train.KEY for training (repeatable)")
    p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps ({steps_help})")
    p.add_argument("--batch-size", type=int, default=batch, help=f"global clips per step ({batch_help})")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (gradient accumulation)")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate ({lr_help})")
    p.add_argument("--warmup-steps", type=int, default=None, help=f"linear warmup steps ({warmup_help})")
    p.add_argument("--parallel", default="none", choices=["none", "ddp", "fsdp"], help=parallel_help)
    p.add_argument("--compile", action="store_true", help=compile_help)
    p.add_argument("--grad-checkpointing", action="store_true", help="activation checkpointing (less memory, slower)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--fp32", action="store_true", help="force fp32 even on CUDA")
