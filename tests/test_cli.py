"""The `walt` command line: --help, the train-vae -> encode -> train -> sample chain, and bad input.

Every bad-input case must exit with code 2 and ONE line on stderr ("walt CMD: error: ..."), no
traceback, and must not create its output folder. The chain runs once per module with the
smallest sizes (9 frames of 32x32, tiny presets, a few steps), so the whole file stays fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from walt.cli import main

CHAIN_SAMPLES = 8  # built-in clips encoded into the cache (one per motion class)


def cli(argv) -> int:
    """main(argv) with every argument as a string (paths and numbers are convenient to write)."""
    return main([str(a) for a in argv])


def run_cli(argv, capsys):
    """main(argv) in-process -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, stderr: {err}"
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("walt ") and ": error: " in lines[0], lines[0]
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"


# ----------------------------------------------------------------------------- the chain


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """train-vae -> encode -> train (frame-conditioned, so sample can extend) with tiny settings."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("cli")
    vae, cache, run = root / "vae", root / "cache", root / "walt"
    assert cli(["train-vae", "--data", "builtin", "--out", vae, "--steps", "2", "--batch-size", "2",
                 "--frames", "9", "--resolution", "32", "--num-samples", "16", "--stats-batches", "1",
                 "--log-every", "1", "--no-progress"]) == 0
    assert cli(["encode", "--vae", vae, "--data", "builtin", "--out", cache, "--frames", "9", "--resolution", "32",
                 "--num-samples", CHAIN_SAMPLES, "--shard-size", "4", "--batch-size", "4", "--no-progress"]) == 0
    assert cli(["train", "--cache", cache, "--out", run, "--preset", "tiny", "--steps", "2", "--batch-size", "4",
                 "--set", "frame_conditioning=true", "--set", "hidden_size=32", "--set", "depth=2",
                 "--fps", "10", "--log-every", "1", "--no-progress"]) == 0
    # A real clip to condition on: the built-in dataset written as MP4 (the test of frame prediction).
    from walt.data import SyntheticVideos, write_mp4

    ctx = write_mp4(root / "ctx.mp4", SyntheticVideos(1, num_frames=9, resolution=32, seed=3)[0]["video"], fps=8)
    return {"root": root, "vae": vae, "cache": cache, "run": run, "ctx": ctx}


def test_help_for_every_subcommand(capsys):
    for cmd in ("train-vae", "encode", "train", "sample"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: walt {cmd}") and "--out" in out


def test_chain_writes_every_stage(chain, capsys, tmp_path):
    from walt.autoencoder import CausalVAE
    from walt.checkpoint import load_checkpoint

    vae, extra = CausalVAE.load(chain["vae"] / "vae_ema.safetensors", with_extra=True)
    assert extra["latent_stats"]["std"].shape == (vae.config.latent_channels,)
    assert (chain["vae"] / "vae.safetensors").is_file() and any((chain["vae"] / "checkpoints").iterdir())
    assert (chain["cache"] / "index.json").is_file()
    state = load_checkpoint(chain["run"] / "walt_ema.safetensors")
    assert state["fps"] == 10.0 and len(state["class_names"]) == CHAIN_SAMPLES
    assert state["config"]["in_channels"] == vae.config.latent_channels and state["config"]["input_size"] == [3, 4, 4]

    # encode again: resumes (nothing to redo); train-vae continues its run with --resume.
    code, out, _ = run_cli(["encode", "--vae", chain["vae"], "--data", "builtin", "--out", chain["cache"],
                            "--frames", 9, "--resolution", 32, "--num-samples", CHAIN_SAMPLES, "--shard-size", 4,
                            "--batch-size", 4, "--no-progress"], capsys)
    assert code == 0 and "0 encoded now, 2 already done" in out
    run_copy = tmp_path / "vae_run"  # a copy: the chain's autoencoder must stay the cache's
    shutil.copytree(chain["vae"], run_copy)
    code, out, _ = run_cli(["train-vae", "--data", "builtin", "--out", run_copy, "--steps", 3, "--batch-size", 2,
                            "--frames", 9, "--resolution", 32, "--num-samples", 16, "--stats-batches", 0,
                            "--resume", "--no-progress"], capsys)
    assert code == 0 and "done at step 3" in out


def test_sample_class_conditional_writes_mp4_and_grid(chain, capsys, tmp_path):
    from walt.data import read_video, video_info

    out = tmp_path / "samples"
    code, stdout, err = run_cli(["sample", "--ckpt", chain["run"], "--vae", chain["vae"], "--out", out,
                                 "--class-label", "rotating", "--seeds", "5,6", "--steps", 2, "--no-progress"], capsys)
    assert code == 0, err
    mp4s = sorted(out.glob("*.mp4"))
    assert [p.name for p in mp4s] == ["sample_000_rotating_seed5.mp4", "sample_001_rotating_seed6.mp4"]
    info = video_info(mp4s[0])
    assert (info.num_frames, info.height, info.width) == (9, 32, 32) and info.fps == pytest.approx(10.0)
    assert (out / "grid.png").stat().st_size > 0 and str(out) in stdout
    # Sample i depends on its seed only: the same seed alone gives the same video.
    code, _, _ = run_cli(["sample", "--ckpt", chain["run"], "--vae", chain["vae"], "--out", tmp_path / "again",
                          "--class-label", 1, "--seed", 6, "--steps", 2, "--no-progress"], capsys)
    assert code == 0
    a = read_video(mp4s[1], output="float")
    b = read_video(tmp_path / "again" / "sample_000_rotating_seed6.mp4", output="float")
    assert torch.equal(a, b)


def test_sample_frame_prediction_and_long_video(chain, capsys, tmp_path):
    from walt.data import read_video

    out = tmp_path / "pred"
    code, _, err = run_cli(["sample", "--ckpt", chain["run"], "--vae", chain["vae"], "--out", out,
                            "--context-video", chain["ctx"], "--context-frames", 2, "--frames", 29,
                            "--class-label", 0, "--steps", 1, "--gif", "--no-progress"], capsys)
    assert code == 0, err
    (mp4,) = out.glob("*.mp4")
    assert len(list(out.glob("*.gif"))) == 1 and (out / "grid.png").is_file()
    video = read_video(mp4, output="float")  # (3, 29, 32, 32)
    assert video.shape == (3, 29, 32, 32)
    # The 5 context frames are kept (up to two H.264 round trips); generated frames differ from them.
    ctx = read_video(chain["ctx"], list(range(5)), output="float")
    err_ctx = (video[:, :5] - ctx).abs().mean().item()
    err_gen = (video[:, 5:10] - ctx).abs().mean().item()
    assert err_ctx < 0.05 < err_gen, (err_ctx, err_gen)


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_files(chain):
    """Checkpoints and data that do not fit the chain's, made without training."""
    from walt.autoencoder import CausalVAE
    from walt.denoiser import WALT

    root = chain["root"] / "bad"
    root.mkdir()
    (root / "corrupt.safetensors").write_bytes(b"definitely not a safetensors file")
    torch.manual_seed(1)
    CausalVAE.from_preset("tiny", latent_channels=8).save(root / "vae_c8.safetensors")
    CausalVAE.from_preset("tiny").save(root / "vae_other.safetensors")  # same shapes, other weights
    WALT.from_preset("tiny", hidden_size=32, depth=2, input_size=(3, 4, 4), num_classes=8).save(root / "no_fp.safetensors")
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "clip.mp4").write_bytes(b"\x00" * 100)
    (root / "a_file").write_text("x")
    return root


def _bad_cases(c, b):
    """(argv, words the one-line message must contain) for every kind of bad input of issue #4."""
    s = ["sample", "--ckpt", c["run"], "--vae", c["vae"], "--no-progress"]
    tv = ["train-vae", "--data", "builtin", "--steps", 1, "--batch-size", 1, "--frames", 9, "--resolution", 32]
    enc = ["encode", "--vae", c["vae"], "--frames", 9, "--resolution", 32, "--num-samples", 2]
    tr = ["train", "--cache", c["cache"], "--steps", 1, "--batch-size", 4]
    return {
        # missing / corrupt checkpoints
        "missing ckpt": (["sample", "--ckpt", b / "nope.safetensors", "--vae", c["vae"]], ["not found"]),
        "corrupt ckpt": (["sample", "--ckpt", b / "corrupt.safetensors", "--vae", c["vae"]], ["corrupt"]),
        "vae as walt ckpt": (["sample", "--ckpt", c["vae"] / "vae.safetensors", "--vae", c["vae"]], ["not a walt"]),
        "corrupt vae": (enc + ["--vae", b / "corrupt.safetensors", "--data", "builtin"], ["corrupt"]),
        # checkpoint / config mismatch
        "latent channels": (["sample", "--ckpt", c["run"], "--vae", b / "vae_c8.safetensors"], ["8-channel", "4-channel"]),
        "other vae for sample": (["sample", "--ckpt", c["run"], "--vae", b / "vae_other.safetensors"], ["not the autoencoder"]),
        "other vae for train": (tr + ["--vae", b / "vae_other.safetensors"], ["not the autoencoder"]),
        "cache of another vae": (enc + ["--vae", b / "vae_other.safetensors", "--data", "builtin", "--out", c["cache"]],
                                 ["different autoencoder"]),
        "cache vs network": (tr + ["--set", "in_channels=8"], ["channels"]),
        "no frame conditioning": (["sample", "--ckpt", b / "no_fp.safetensors", "--vae", c["vae"], "--frames", 29],
                                  ["frame_conditioning"]),
        # frame counts
        "encode frames": (enc + ["--data", "builtin", "--frames", 8], ["--frames 8", "1+4k"]),
        "train-vae frames": (tv + ["--frames", 10], ["--frames 10"]),
        "sample frames": (s + ["--frames", 10], ["--frames 10"]),
        "resolution": (enc + ["--data", "builtin", "--resolution", 30], ["--resolution 30"]),
        # datasets
        "empty folder": (enc + ["--data", b / "empty"], ["no video files"]),
        "unreadable videos": (enc + ["--data", b / "broken"], ["no readable"]),
        "missing data": (tv + ["--data", b / "nothing_here"], ["does not exist"]),
        "context video missing": (s + ["--context-video", b / "nope.mp4"], ["--context-video"]),
        "context video broken": (s + ["--context-video", b / "broken" / "clip.mp4"], ["--context-video"]),
        # sampling numbers
        "negative guidance": (s + ["--guidance-scale", -1], ["--guidance-scale"]),
        "nan guidance": (s + ["--guidance-scale", "nan"], ["--guidance-scale", "finite"]),
        "inf guidance": (s + ["--guidance-scale", "inf"], ["--guidance-scale"]),
        "zero steps": (s + ["--steps", 0], ["--steps"]),
        "too many steps": (s + ["--steps", 5000], ["--steps 5000", "1000"]),
        "class out of range": (s + ["--class-label", 8], ["--class-label 8"]),
        "unknown class name": (s + ["--class-label", "dancing"], ["dancing"]),
        "seed count": (s + ["--class-label", 0, "--num-samples", 2, "--seeds", "1,2,3"], ["--seeds"]),
        "guidance unconditional": (s + ["--unconditional", "--guidance-scale", 2], ["--guidance-scale"]),
        # presets and --set
        "unknown vae preset": (tv + ["--preset", "huge"], ["'huge'", "tiny"]),
        "unknown walt preset": (tr + ["--preset", "huge"], ["'huge'", "XL"]),
        "bad --set key": (tv + ["--set", "latent_chanels=8"], ["latent_chanels"]),
        "bad --set train key": (tr + ["--set", "train.loss.p_nonsense=0.1"], ["p_nonsense"]),
        "bad --set value": (tr + ["--set", "depth=many"], ["depth"]),
        "--set without =": (tv + ["--set", "latent_channels"], ["key=value"]),
        "zero train steps": (tv + ["--steps", 0], ["--steps"]),
        "existing run": (tr + ["--set", "frame_conditioning=true", "--set", "hidden_size=32", "--set", "depth=2",
                               "--out", c["run"]], ["--resume"]),
        # output folders (the generic --out is appended below when a case has none)
        "out is a file": (s + ["--out", b / "a_file"], ["not a folder"]),
        "out under a file": (s + ["--out", b / "a_file" / "sub"], ["not writable"]),
    }


CASE_NAMES = list(_bad_cases({k: Path("x") for k in ("run", "vae", "cache")}, Path("x")))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, chain, bad_files, capsys, tmp_path):
    argv, needles = _bad_cases(chain, bad_files)[case]
    out = tmp_path / "out"
    if "--out" not in argv:
        argv = argv + ["--out", out]
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, *needles)
    assert not out.exists(), "a failed command must not create its output folder"


def test_subprocess_bad_input_has_no_traceback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "walt", "sample", "--ckpt", str(tmp_path / "missing.safetensors"), "--vae",
         str(tmp_path / "missing_vae"), "--out", str(tmp_path / "o"), "--guidance-scale", "0.5"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("walt sample: error: --ckpt") and "not found" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_parse_sets_types_and_nested_overrides():
    from walt.autoencoder import preset_config
    from walt.cli import UserError
    from walt.commands._common import apply_sets, parse_sets, split_sets
    from walt.train.vae import VAETrainConfig

    sets = parse_sets(["latent_channels=16", "channel_multipliers=1,2", "kl=false", "train.lr=1e-4",
                       "train.loss.kl_weight=0", "train.precision=bf16", "train.betas=(0.5, 0.9)"])
    assert sets["latent_channels"] == 16 and sets["channel_multipliers"] == (1, 2) and sets["kl"] is False
    train, model = split_sets(sets, "train")
    cfg = apply_sets(preset_config("tiny"), model)
    assert (cfg.latent_channels, cfg.channel_multipliers, cfg.kl) == (16, (1, 2), False)
    tcfg = apply_sets(VAETrainConfig(), train)
    assert tcfg.lr == 1e-4 and tcfg.loss.kl_weight == 0.0 and tcfg.precision == "bf16" and tcfg.betas == (0.5, 0.9)
    with pytest.raises(UserError, match="'lr' is not a nested config"):
        apply_sets(VAETrainConfig(), {"lr.x": 1})


def test_encode_and_train_from_a_video_folder(chain, capsys, tmp_path):
    """PATH data: a folder with class sub-folders is a labelled VideoFolder; train fits num_classes to it."""
    from walt.data import SyntheticVideos, write_mp4
    from walt.data.latent_cache import load_cache_index

    for i, cls in enumerate(["jumping", "jumping", "waving"]):
        (tmp_path / "videos" / cls).mkdir(parents=True, exist_ok=True)
        write_mp4(tmp_path / "videos" / cls / f"{i}.mp4", SyntheticVideos(3, num_frames=9, resolution=40)[i]["video"])
    code, _, err = run_cli(["encode", "--vae", chain["vae"], "--data", tmp_path / "videos", "--out", tmp_path / "cache",
                            "--frames", 9, "--resolution", 32, "--no-progress"], capsys)
    assert code == 0, err
    index = load_cache_index(tmp_path / "cache")
    assert index["num_samples"] == 3 and index["num_classes"] == 2 and index["latent_shape"] == [4, 3, 4, 4]
    code, out, err = run_cli(["train", "--cache", tmp_path / "cache", "--out", tmp_path / "run", "--steps", 1,
                              "--batch-size", 3, "--set", "hidden_size=32", "--set", "depth=1", "--no-progress"], capsys)
    assert code == 0, err
    assert "2 classes" in out and (tmp_path / "run" / "walt_ema.safetensors").is_file()
