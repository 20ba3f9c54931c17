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
                                 "--class-label", "rotating", "--seeds", "5,6", "--batch-size", 1, "--steps", 2,
                                 "--no-progress"], capsys)
    assert code == 0, err
    mp4s = sorted(out.glob("*.mp4"))
    assert [p.name for p in mp4s] == ["sample_000_rotating_seed5.mp4", "sample_001_rotating_seed6.mp4"]
    info = video_info(mp4s[0])
    assert (info.num_frames, info.height, info.width) == (9, 32, 32) and info.fps == pytest.approx(10.0)
    assert (out / "grid.png").stat().st_size > 0 and str(out) in stdout
    # Sample i depends on its seed only: the same seed alone gives the same video, up to H.264
    # turning a last-bit difference (GEMM blockings and thread splits differ between calls on some
    # CPUs) into a changed block; another seed differs by far more. Exact batch independence of
    # the latents, to 1e-5, is tested in test_pipeline.
    code, _, _ = run_cli(["sample", "--ckpt", chain["run"], "--vae", chain["vae"], "--out", tmp_path / "again",
                          "--class-label", 1, "--seed", 6, "--steps", 2, "--no-progress"], capsys)
    assert code == 0
    seed5, seed6 = (read_video(p, output="float") for p in mp4s)
    again = read_video(tmp_path / "again" / "sample_000_rotating_seed6.mp4", output="float")
    same, other = (again - seed6).abs().mean().item(), (seed5 - seed6).abs().mean().item()
    print(f"same seed {same:.4f}, other seed {other:.4f}")
    assert same < 0.04 and other > 2.5 * max(same, 0.02), (same, other)


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
        "sample frames": (s + ["--frames", 0], ["--frames 0"]),
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
    from walt.commands.args import apply_sets, parse_sets, split_sets
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
    from walt.data.latent_dataset import load_cache_index

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


# ----------------------------------------------------------------------------- argparse errors


def _walt_subprocess(argv, timeout=120, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "walt", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=timeout, **kw)


@pytest.mark.parametrize("argv, needle", [
    (["sample", "--steps", "abc"], "invalid int value: 'abc'"),
    (["train"], "--cache"),  # required arguments missing
    (["encode", "--vae", "v", "--data", "builtin", "--out", "o", "--dtype", "float8"], "invalid choice: 'float8'"),
    (["train-vae", "--data", "x", "--out", "o", "--frame-stride", "2", "--fps", "8"], "not allowed with"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_argparse_errors_are_one_line_with_a_pointer_to_help(argv, needle, tmp_path):
    proc = _walt_subprocess(argv, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    cmd = "walt" if argv[0] == "nonsense" else f"walt {argv[0]}"
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "usage:" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{cmd}: error: ") and lines[0].endswith(f"(see {cmd} --help)"), lines[0]
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- clip sampling of real videos


@pytest.fixture(scope="module")
def ramp_videos(tmp_path_factory):
    """A real video folder (PyAV H.264): 2 classes x 1 file of 33 frames at 16 fps whose grey level codes the frame index."""
    from walt.data import write_mp4

    root = tmp_path_factory.mktemp("ramp") / "videos"
    levels = torch.linspace(-0.9, 0.9, 33)  # step 0.05625 (~7 of 255 grey levels) per source frame
    for cls in ("up", "down"):
        (root / cls).mkdir(parents=True)
        ramp = levels if cls == "up" else levels.flip(0)
        write_mp4(root / cls / "clip.mp4", ramp.view(1, 33, 1, 1).expand(3, 33, 40, 40).contiguous(), fps=16)
    return root


def _frame_step(video):
    """Mean grey-level change between consecutive frames of (3, T, H, W), in units of source frames."""
    g = video.mean(dim=(0, 2, 3))  # (T,)
    return float((g[1:] - g[:-1]).abs().mean() / (1.8 / 32))


def test_frame_stride_and_fps_pick_source_frames(ramp_videos):
    from walt.cli import UserError
    from walt.commands.files import dataset_from_arg

    for kw, step in (({}, 1.0), ({"frame_stride": 3}, 3.0), ({"fps": 8.0}, 2.0), ({"fps": 16.0}, 1.0)):
        ds = dataset_from_arg(str(ramp_videos), 9, 32, **kw)
        assert type(ds).__name__ == "VideoFolder" and ds.class_names == ["down", "up"]
        for i in range(len(ds)):
            assert _frame_step(ds[i]["video"]) == pytest.approx(step, abs=0.15), (kw, i)
    for kw, needle in (({"frame_stride": 0}, "--frame-stride must be an integer >= 1"),
                       ({"fps": float("nan")}, "--fps must be a finite number"),
                       ({"fps": 0.0}, "--fps must be > 0"),
                       ({"frame_stride": 2, "fps": 8.0}, "give one of them")):
        with pytest.raises(UserError, match=needle):
            dataset_from_arg(str(ramp_videos), 9, 32, **kw)
    with pytest.raises(UserError, match="built-in dataset renders every frame"):
        dataset_from_arg("builtin", 9, 32, frame_stride=2)


def test_encode_and_train_vae_take_frame_stride_and_fps(chain, ramp_videos, capsys, tmp_path):
    import json

    enc = ["encode", "--vae", chain["vae"], "--data", ramp_videos, "--out", tmp_path / "cache", "--frames", 9,
           "--resolution", 32, "--no-progress"]
    code, _, err = run_cli(enc + ["--frame-stride", 2], capsys)
    assert code == 0, err
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["dataset"]["frame_stride"] == 2 and "fps" not in index["dataset"] and index["num_samples"] == 2
    # The same cache folder with another clip sampling is other latents: refused in one line.
    code, _, err = run_cli(enc + ["--fps", 8], capsys)
    assert_user_error(code, err, "--frame-stride 2", "another --out")
    code, out, err = run_cli(["train-vae", "--data", ramp_videos, "--out", tmp_path / "vae", "--steps", 1,
                              "--batch-size", 2, "--frames", 9, "--resolution", 32, "--fps", 8,
                              "--stats-batches", 0, "--no-progress"], capsys)
    assert code == 0, err
    assert "done at step 1" in out and (tmp_path / "vae" / "vae_ema.safetensors").is_file()
    code, _, err = run_cli(["train-vae", "--data", "builtin", "--out", tmp_path / "vae2", "--steps", 1,
                            "--frames", 9, "--resolution", 32, "--frame-stride", 2], capsys)
    assert_user_error(code, err, "--frame-stride", "built-in")
    assert not (tmp_path / "vae2").exists()


# ----------------------------------------------------------------------------- sample options


@pytest.fixture
def generate_calls(monkeypatch):
    """Record the keyword arguments `walt sample` passes to walt.pipeline.generate (which still runs)."""
    import walt.pipeline

    calls, real = [], walt.pipeline.generate

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(walt.pipeline, "generate", recording)
    return calls


def test_sample_unconditional_and_every_class(chain, capsys, tmp_path, generate_calls):
    from walt.data.synthetic import CLASS_NAMES

    base = ["sample", "--ckpt", chain["run"], "--vae", chain["vae"], "--steps", 1, "--no-progress"]
    code, out, err = run_cli(base + ["--out", tmp_path / "u", "--unconditional", "--seeds", "3,4"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "u").glob("*.mp4")) == ["sample_000_uncond_seed3.mp4",
                                                                       "sample_001_uncond_seed4.mp4"]
    assert "unconditional" in out and generate_calls[-1]["y"] is None and generate_calls[-1]["seeds"] == [3, 4]

    code, out, err = run_cli(base + ["--out", tmp_path / "all", "--classes", "all", "--batch-size", 8], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "all").glob("*.mp4"))
    assert names == sorted(f"sample_{i:03d}_{c}_seed{i}.mp4" for i, c in enumerate(CLASS_NAMES))
    assert "class-conditional (8 class(es))" in out
    assert generate_calls[-1]["y"].tolist() == list(range(8))


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp"])
def test_sample_other_samplers_with_guidance(sampler, chain, capsys, tmp_path, generate_calls):
    from walt.data import read_video

    code, out, err = run_cli(["sample", "--ckpt", chain["run"], "--vae", chain["vae"], "--out", tmp_path / sampler,
                              "--class-label", 2, "--seed", 1, "--steps", 3, "--sampler", sampler,
                              "--guidance-scale", 3, "--no-progress"], capsys)
    assert code == 0, err
    (mp4,) = (tmp_path / sampler).glob("*.mp4")
    video = read_video(mp4, output="float")
    assert video.shape == (3, 9, 32, 32) and torch.isfinite(video).all()
    (call,) = generate_calls
    assert (call["sampler"], call["steps"], call["guidance_scale"], call["y"].tolist()) == (sampler, 3, 3.0, [2])
    assert f"{sampler} 3 steps, guidance 3" in out


def _busy_copy(run: Path, dest: Path) -> Path:
    """The chain's denoiser with its zero-initialised outputs filled in, so it predicts non-zero v.

    After 2 training steps the real chain model still outputs ~1e-6 (DiT zero init), and latents
    that barely depend on the network would make a batch-invariance test pass trivially.
    """
    from walt.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(run / "walt_ema.safetensors")
    g = torch.Generator().manual_seed(0)
    state["model"] = {k: (torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() and not v.any() else v)
                      for k, v in state["model"].items()}
    dest.mkdir()
    save_checkpoint(dest / "walt_ema.safetensors", state)
    return dest


# fp32 batch-invariance bound. A kernel may pick its blocking and thread split by batch size (oneDNN
# convolutions, MKL GEMMs), which reorders the sums: each output then moves by ~sqrt(K) ulp for a
# K-term dot product (K <= 1024 here, ulp 1.2e-7 relative): <= 4e-6 relative per layer. Measured
# (2 threads, Xeon AVX-512 and ATEN_CPU_CAPABILITY=avx2): latents identical, the autoencoder's decode
# of a batch of 3 vs 2 + 1 within 3.8e-6. A batch-coupling bug (noise, labels or guidance mixed across
# samples) moves values by O(0.1-1). H.264 is not compared: it turns a 4e-6 change into a mean 0.008-
# 0.03 pixel change (a flipped rounding re-routes its motion search), which is why the MP4s may differ.
BATCH_INVARIANCE_RTOL = 1e-4


def test_sample_batch_size_splits_without_changing_the_videos(chain, capsys, tmp_path, generate_calls, monkeypatch):
    import walt.io
    import walt.pipeline

    latents, frames, real_generate, real_write = [], {}, walt.pipeline.generate, walt.io.write_mp4

    def recording_generate(*args, **kwargs):
        z = real_generate(*args, **kwargs)
        latents.append(z.clone())
        return z

    def recording_write(path, video, **kwargs):
        frames.setdefault(Path(path).name, []).append(video.clone())  # the frames H.264 is given
        return real_write(path, video, **kwargs)

    monkeypatch.setattr(walt.pipeline, "generate", recording_generate)
    monkeypatch.setattr(walt.io, "write_mp4", recording_write)
    ckpt = _busy_copy(chain["run"], tmp_path / "busy")
    base = ["sample", "--ckpt", ckpt, "--vae", chain["vae"], "--class-label", 5, "--seeds", "7,8,9",
            "--steps", 2, "--no-progress"]
    assert run_cli(base + ["--out", tmp_path / "one", "--batch-size", 3], capsys)[0] == 0
    assert run_cli(base + ["--out", tmp_path / "split", "--batch-size", 2], capsys)[0] == 0
    assert [c["seeds"] for c in generate_calls] == [[7, 8, 9], [7, 8], [9]]
    one, split = latents[0], torch.cat(latents[1:])  # (3, c, t, h, w) each
    scale = one.abs().max()
    assert scale > 0.1  # the network's output matters (see _busy_copy)
    assert (one - split).abs().max() <= BATCH_INVARIANCE_RTOL * scale
    assert sorted(frames) == sorted(p.name for p in (tmp_path / "one").glob("*.mp4"))
    for name, (a, b) in frames.items():  # frames in [-1, 1]; each video is decoded on its own
        assert (a - b).abs().max() <= BATCH_INVARIANCE_RTOL, name


# ----------------------------------------------------------------------------- train: compile, torchrun


def _compile_works() -> bool:
    import torch._dynamo

    return torch._dynamo.is_dynamo_supported() and shutil.which(os.environ.get("CXX", "g++")) is not None


@pytest.mark.slow  # torch.compile's first call takes ~20 s cold on CPU (SPEC §7)
def test_train_with_compile_two_steps(chain, capsys, tmp_path):
    if not _compile_works():
        pytest.skip("torch.compile needs dynamo support and a C++ compiler (g++) on this machine")
    code, out, err = run_cli(["train", "--cache", chain["cache"], "--out", tmp_path / "run", "--steps", 2,
                              "--batch-size", 4, "--set", "hidden_size=32", "--set", "depth=2", "--compile",
                              "--log-every", 1, "--no-progress"], capsys)
    assert code == 0, err
    assert "done at step 2" in out and (tmp_path / "run" / "walt_ema.safetensors").is_file()
    from walt.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "run" / "walt.safetensors")
    assert not any("_orig_mod" in k for k in state["model"])  # saved unwrapped: loads into a plain WALT


def test_train_under_torchrun_ddp_runs_the_cli_shutdown(chain, tmp_path):
    """`torchrun --nproc_per_node=2 -m walt train --parallel ddp` (gloo, CPU): rank 0 alone prints and writes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "walt",
           "train", "--cache", str(chain["cache"]), "--out", str(out), "--steps", "2", "--batch-size", "4",
           "--set", "hidden_size=32", "--set", "depth=2", "--parallel", "ddp", "--log-every", "1",
           "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.stdout.count("walt train: done at step 2") == 1, proc.stdout  # rank 0 only
    assert "2 process(es)" in proc.stdout and "Traceback" not in proc.stderr
    assert (out / "walt_ema.safetensors").is_file() and (out / "walt.safetensors").is_file()
    import csv

    with open(out / "log.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2"]  # one writer
