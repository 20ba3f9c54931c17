"""Transformer training loop: loss decreases, exact resume, NaN stop, SIGTERM/SIGINT checkpoints, joint image-video."""

import csv
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from walt.autoencoder import CausalVAE
from walt.checkpoint import load_checkpoint
from walt.data import SyntheticImages, SyntheticVideos
from walt.data.latent_cache import encode_dataset
from walt.data.latent_dataset import LatentDataset
from walt.denoiser import WALT
from walt.diffusion import DiffusionLossConfig, DiffusionSchedule, diffusion_loss
from walt.train.batches import is_image_step
from walt.train.common import NonFiniteLossError, list_checkpoints, load_training_state
from walt.train.denoiser_loop import DenoiserTrainConfig, train_denoiser


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny ops on a shared 2-core machine: one thread is ~10-40x faster than two competing ones.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return CausalVAE.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def caches(vae, tmp_path_factory):
    """A video cache (12 clips -> latents 4x2x4x4) and an image cache (8 frames -> 4x1x4x4)."""
    root = tmp_path_factory.mktemp("caches")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    encode_dataset(vae, SyntheticVideos(12, num_frames=5, resolution=32), root / "v", shard_size=8, batch_size=4,
                   progress=False)
    encode_dataset(vae, SyntheticImages(8, resolution=32, seed=5), root / "i", shard_size=8, batch_size=4,
                   progress=False)
    torch.set_num_threads(old)
    return root / "v", root / "i"


def tiny_net(**kw):
    torch.manual_seed(0)
    return WALT.from_preset("tiny", input_size=(2, 4, 4), hidden_size=32, depth=2, num_heads=2,
                            spatial_window=(1, 4, 4), spatiotemporal_window=(2, 4, 4), num_classes=8, **kw)


def config(**kw):
    base = dict(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1, ckpt_every=3, ema_decay=0.9,
                tensorboard=False)
    return DenoiserTrainConfig(**{**base, **kw})


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_loss_decreases_on_tiny_cache(caches, tmp_path):
    ds = LatentDataset(caches[0])
    net = tiny_net()
    schedule = DiffusionSchedule()
    z, y = ds.latents(range(len(ds))), ds.labels
    fixed = DiffusionLossConfig(p_self_cond=0.0, p_uncond=0.0)

    @torch.no_grad()
    def eval_loss():  # the same timesteps / noise before and after training
        g = torch.Generator().manual_seed(123)
        return sum(float(diffusion_loss(net, z, schedule, fixed, y=y, generator=g)[0]) for _ in range(4)) / 4

    before = eval_loss()
    cfg = config(steps=150, lr=3e-3, warmup_steps=0, log_every=25, ckpt_every=1000, loss=fixed)
    result = train_denoiser(cfg, net, ds, tmp_path, progress=False)
    after = eval_loss()
    assert after < 0.92 * before, (before, after)
    rows = read_log(tmp_path / "log.csv")
    assert [int(r["step"]) for r in rows] == [25, 50, 75, 100, 125, 150]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[-1]["tokens_per_s"]) > 0 and int(rows[-1]["epoch"]) == 150 * 4 // 12 - 1
    assert result.step == 150 and not result.interrupted
    # Final exports load as WALT networks and carry what sampling needs.
    WALT.load(result.model_path)
    ema = load_checkpoint(result.ema_path)
    assert ema["ema"] is True and ema["vae_sha256"] == ds.vae_sha256
    torch.testing.assert_close(ema["latent_stats"]["mean"], ds.stats.mean)


def test_resume_reproduces_the_uninterrupted_run(caches, tmp_path):
    ds = LatentDataset(caches[0])
    cfg = config(steps=6, grad_accum=2, ckpt_every=100)  # self-cond 0.9, label dropout 0.1, warmup + cosine
    train_denoiser(cfg, tiny_net(), ds, tmp_path / "full", progress=False)

    first = train_denoiser(cfg, tiny_net(), ds, tmp_path / "split", progress=False, stop_at=3)
    assert first.interrupted and first.step == 3 and first.model_path is None
    assert [s for s, _ in list_checkpoints(tmp_path / "split" / "checkpoints")] == [3]
    state = load_training_state(first.checkpoint)
    assert (state["data"]["video"]["epoch"], state["data"]["video"]["position"]) == (0, 3)  # 12 clips = 3 batches
    assert state["walt_config"]["hidden_size"] == 32 and state["diffusion_config"]["num_timesteps"] == 1000
    assert state["train_config"]["grad_accum"] == 2 and "mean" in state["latent_stats"]

    torch.manual_seed(1234)  # the resumed run must not depend on the global RNG of the new process
    net = WALT.from_preset("tiny", input_size=(2, 4, 4), hidden_size=32, depth=2, num_heads=2,
                           spatial_window=(1, 4, 4), spatiotemporal_window=(2, 4, 4), num_classes=8)
    second = train_denoiser(cfg, net, ds, tmp_path / "split", progress=False)
    assert second.step == 6 and not second.interrupted
    for name in ("walt.safetensors", "walt_ema.safetensors"):
        a = load_checkpoint(tmp_path / "full" / name)["model"]
        b = load_checkpoint(tmp_path / "split" / name)["model"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
    # The log holds each step once, with the same losses.
    la, lb = read_log(tmp_path / "full" / "log.csv"), read_log(tmp_path / "split" / "log.csv")
    assert [r["step"] for r in lb] == [str(s) for s in range(1, 7)]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(caches, tmp_path):
    ds = LatentDataset(caches[0])
    net = tiny_net()
    calls = {"n": 0}

    def poison(module, args, output):  # the 5th training forward (step index 4) returns NaN
        if module.training:
            calls["n"] += 1
            if calls["n"] == 5:
                return output * float("nan")
        return output

    handle = net.final_layer.register_forward_hook(poison)
    cfg = config(steps=6, ckpt_every=2, loss=DiffusionLossConfig(p_self_cond=0.0))  # one forward per step
    with pytest.raises(NonFiniteLossError, match="non-finite diffusion loss .* at step 4"):
        train_denoiser(cfg, net, ds, tmp_path, progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [2, 4]
    good = load_training_state(tmp_path / "checkpoints" / "step_00000004.safetensors")
    assert all(torch.isfinite(v).all() for v in good["model"].values())
    assert not (tmp_path / "walt.safetensors").exists()
    handle.remove()
    # The run continues from the last good checkpoint.
    assert train_denoiser(cfg, tiny_net(), ds, tmp_path, progress=False).step == 6


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_stops(caches, tmp_path, sig):
    ds = LatentDataset(caches[0])
    net = tiny_net()
    calls = {"n": 0}

    def send(module, args, output):  # the signal arrives during the 3rd step (index 2)
        if module.training:
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), sig)
        return output

    net.final_layer.register_forward_hook(send)
    before = signal.getsignal(sig)
    cfg = config(steps=10, ckpt_every=100, loss=DiffusionLossConfig(p_self_cond=0.0))
    result = train_denoiser(cfg, net, ds, tmp_path, progress=False)
    assert result.interrupted and result.step == 3  # the current step was finished, then saved
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [3]
    assert result.checkpoint.name == "step_00000003.safetensors" and result.model_path is None
    assert signal.getsignal(sig) is before  # handlers restored


def test_joint_image_video_training_and_samples(caches, vae, tmp_path):
    videos, images = LatentDataset(caches[0]), LatentDataset(caches[1])
    assert [is_image_step(s, 0.5) for s in range(4)] == [False, True, False, True]
    assert sum(is_image_step(s, 0.25) for s in range(100)) == 25
    cfg = config(steps=4, image_ratio=0.5, image_batch_size=8, log_every=1, sample_every=4, sample_clips=2,
                 sample_steps=2, loss=DiffusionLossConfig(p_self_cond=0.0))
    result = train_denoiser(cfg, tiny_net(), videos, tmp_path, image_dataset=images, vae=vae, progress=False)
    rows = read_log(tmp_path / "log.csv")
    assert [bool(r["loss_image"]) for r in rows] == [False, True, False, True]
    assert [bool(r["loss_video"]) for r in rows] == [True, False, True, False]
    assert float(rows[1]["tokens_per_s"]) > 0
    state = load_training_state(result.checkpoint)
    assert state["data"]["image"]["position"] == 1 and state["data"]["video"]["epoch"] == 0
    z = load_file(str(tmp_path / "samples" / "step_00000004.safetensors"))["latents"]
    assert z.shape == (2, 4, 2, 4, 4) and torch.isfinite(z).all()
    assert (tmp_path / "samples" / "step_00000004.png").is_file()
    assert (tmp_path / "samples" / "step_00000004_1.gif").is_file()


def test_bad_settings_are_refused(caches, tmp_path):
    ds = LatentDataset(caches[0])
    with pytest.raises(ValueError, match="divisible"):
        train_denoiser(config(batch_size=4, grad_accum=3), tiny_net(), ds, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="input_size"):
        net = WALT.from_preset("tiny")  # 8x8 latents, the cache has 4x4
        train_denoiser(config(), net, ds, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train_denoiser(config(batch_size=16), tiny_net(), ds, tmp_path / "c", progress=False)
    torch.manual_seed(7)
    with pytest.raises(ValueError, match="not the autoencoder"):
        train_denoiser(config(), tiny_net(), ds, tmp_path / "d", vae=CausalVAE.from_preset("tiny"), progress=False)
    with pytest.raises(ValueError, match="must be"):
        DenoiserTrainConfig(parallel="tp")
    # Resuming with a changed hyper-parameter is refused by name.
    train_denoiser(config(steps=2, ckpt_every=1), tiny_net(), ds, tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="lr="):
        train_denoiser(config(steps=4, lr=5e-3), tiny_net(), ds, tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_denoiser(config(steps=4), tiny_net(), ds, tmp_path / "e", resume=False, progress=False)


def test_activation_checkpointing_keeps_the_math_and_bf16_runs(caches, tmp_path):
    ds = LatentDataset(caches[0])
    cfg = config(steps=2, ckpt_every=100)
    plain = train_denoiser(cfg, tiny_net(), ds, tmp_path / "plain", progress=False)
    ckpt = train_denoiser(replace_cfg(cfg, activation_checkpointing=True), tiny_net(), ds, tmp_path / "ac",
                          progress=False)
    a, b = load_checkpoint(plain.model_path)["model"], load_checkpoint(ckpt.model_path)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    bf16 = train_denoiser(replace_cfg(cfg, precision="bf16"), tiny_net(), ds, tmp_path / "bf16", progress=False)
    assert bf16.step == 2 and 0 < bf16.metrics["loss"] < 10
    c = load_checkpoint(bf16.model_path)["model"]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in c.values())  # fp32 master weights


def replace_cfg(cfg, **kw):
    from walt.config import replace_config

    return replace_config(cfg, **kw)


def test_gradient_accumulation_matches_one_big_batch(caches, tmp_path, monkeypatch):
    """k micro-batches of B/k clips give the gradient of one batch of B clips (the loop's accumulation arithmetic).

    The loop seeds one loss generator per micro-batch (`_loss_seed(seed, step, rank, micro)`), so with
    k micro-batches the timesteps, noise and coin flips (self-conditioning p 0.9, label dropout 0.1)
    are other draws than with one batch, and the gradients could not match. Here the loss draws its
    randomness per CLIP instead, from a generator seeded by the clip's latent bytes: the same clip gets
    the same t / noise / coins whichever micro-batch it lands in, and the default probabilities stay on.
    """
    import hashlib

    import walt.train.denoiser_loop as loop

    real_loss, real_clip = loop.diffusion_loss, loop.clip_grad_norm

    def per_clip_loss(net, z, schedule, cfg, y=None, generator=None, **kw):
        losses, stats = [], {}
        for i in range(z.shape[0]):
            seed = int.from_bytes(hashlib.sha256(z[i].detach().cpu().numpy().tobytes()).digest()[:7], "little")
            loss, st = real_loss(net, z[i:i + 1], schedule, cfg, y=None if y is None else y[i:i + 1],
                                 generator=torch.Generator().manual_seed(seed), **kw)
            losses.append(loss)
            for k, v in st.items():
                stats[k] = stats.get(k, 0.0) + float(v) / z.shape[0]
        return torch.stack(losses).mean(), stats

    grads = {}

    def recording_clip(parameters, max_norm):
        params = list(parameters)
        grads[current] = [p.grad.detach().clone() for p in params if p.grad is not None]
        return real_clip(params, max_norm)

    monkeypatch.setattr(loop, "diffusion_loss", per_clip_loss)
    monkeypatch.setattr(loop, "clip_grad_norm", recording_clip)
    ds = LatentDataset(caches[0])
    losses = {}
    for current in (1, 2, 4):
        cfg = config(steps=1, batch_size=4, grad_accum=current, ckpt_every=100)
        result = train_denoiser(cfg, tiny_net(), ds, tmp_path / f"k{current}", progress=False)
        losses[current] = result.metrics["loss"]
    assert len(grads[1]) == len(grads[2]) == len(grads[4]) > 0
    assert sum(float(g.abs().sum()) for g in grads[1]) > 0
    for k in (2, 4):
        assert losses[k] == pytest.approx(losses[1], rel=1e-5)
        for a, b in zip(grads[1], grads[k]):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_progress_bar_shows_loss_and_throughput(caches, tmp_path, capsys):
    ds = LatentDataset(caches[0])
    cfg = config(steps=2, ckpt_every=100, log_every=1, loss=DiffusionLossConfig(p_self_cond=0.0))
    train_denoiser(cfg, tiny_net(), ds, tmp_path, progress=True)
    err = capsys.readouterr().err  # tqdm writes to stderr
    assert "train" in err and "2/2" in err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    for key in ("loss=", "tok_s=", "clips_s="):
        assert key in last, last
    loss = float(last.split("loss=")[1].split(",")[0].rstrip("]"))
    assert 0 < loss < 10


def test_sr_stage_trains_in_the_same_loop_and_resumes(vae, tmp_path):
    """An SR stage (PairBatches + SuperResolution) gets the loop's exact resume and its exports carry the SR entries."""
    from walt.cascade.sr import SRConfig
    from walt.cascade.stage import Stage
    from walt.data.downsample import Downsampled
    from walt.train.batches import PairBatches
    from walt.train.denoiser_loop import SuperResolution

    clips = SyntheticVideos(8, num_frames=5, resolution=64)
    encode_dataset(vae, clips, tmp_path / "hi", shard_size=8, batch_size=4, progress=False)
    encode_dataset(vae, Downsampled(clips, (32, 32)), tmp_path / "lo", shard_size=8, batch_size=4, progress=False,
                   description=Downsampled(clips, (32, 32)).describe())
    hi, lo = LatentDataset(tmp_path / "hi"), LatentDataset(tmp_path / "lo")

    def sr_net():
        torch.manual_seed(0)
        return WALT.from_preset("sr1-tiny", input_size=(2, 8, 8), hidden_size=32, depth=2, num_heads=2, text_dim=0,
                                spatial_window=(1, 4, 4), spatiotemporal_window=(2, 4, 4))

    cfg = config(steps=4, ckpt_every=100, loss=DiffusionLossConfig(p_self_cond=0.5))
    objective = SuperResolution(SRConfig(max_noise_level=100))
    full = train_denoiser(cfg, sr_net(), PairBatches(hi, lo, cfg), tmp_path / "full", objective=objective,
                          progress=False)
    first = train_denoiser(cfg, sr_net(), PairBatches(hi, lo, cfg), tmp_path / "split", objective=objective,
                           progress=False, stop_at=2)
    assert first.interrupted and first.step == 2
    second = train_denoiser(cfg, sr_net(), PairBatches(hi, lo, cfg), tmp_path / "split", objective=objective,
                            progress=False)
    a, b = load_checkpoint(full.ema_path), load_checkpoint(second.ema_path)
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=0)
    assert a["stage"] == "sr" and a["sr_config"]["max_noise_level"] == 100 and a["lowres_latent_stats"]
    stage = Stage.load(full.ema_path)
    assert stage.is_sr and stage.sr.max_noise_level == 100 and stage.lowres_stats is not None
    assert float(read_log(tmp_path / "full" / "log.csv")[-1]["noise_level"]) >= 0
    with pytest.raises(ValueError, match="another objective"):
        train_denoiser(cfg, sr_net(), PairBatches(hi, lo, cfg), tmp_path / "split", progress=False,
                       objective=SuperResolution(SRConfig()))
