"""Shared training utilities and the autoencoder training loop (resume, NaN stop, signals, grad
accumulation, clipping, reconstruction samples, overfitting)."""

import csv
import math
import os
import random
import signal

import numpy as np
import pytest
import torch
import torch.nn as nn

from walt.autoencoder import CausalVAE
from walt.autoencoder.discriminator import DiscriminatorConfig
from walt.autoencoder.losses import VAELossConfig
from walt.checkpoint import load_checkpoint, save_checkpoint
from walt.config import config_from_dict, config_to_dict
from walt.eval.metrics import psnr
from walt.train.common import (
    EMA,
    NonFiniteLossError,
    capture_rng_state,
    check_finite,
    list_checkpoints,
    load_training_state,
    restore_rng_state,
    save_training_state,
    warmup_cosine_lr,
    warmup_cosine_scheduler,
)
from walt.train.vae import VAETrainConfig, train_vae

TINY_D = DiscriminatorConfig(base_channels=4, channel_multipliers=(1, 2), pool_size=(1, 2, 2))


# ----------------------------------------------------------------------------- common utilities


def test_warmup_cosine_endpoints_and_scheduler():
    peak, warm, total, low = 1e-3, 10, 110, 1e-5
    lr = lambda s: warmup_cosine_lr(s, peak, warm, total, low)
    assert lr(0) == pytest.approx(peak / warm)
    assert lr(warm - 1) == pytest.approx(peak) and lr(warm) == pytest.approx(peak)
    assert lr(warm + (total - warm) // 2) == pytest.approx((peak + low) / 2)
    assert lr(total) == pytest.approx(low) and lr(total + 50) == pytest.approx(low)
    assert all(lr(s) >= lr(s + 1) for s in range(warm, total + 5))
    assert warmup_cosine_lr(0, peak, 0, total) == pytest.approx(peak)  # no warmup
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    sched = warmup_cosine_scheduler(opt, warm, total, low / peak)
    seen = []
    for _ in range(total + 2):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr(s) for s in range(total + 2)], rel=1e-9)


def test_ema_update_copy_and_state():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(4, 2))  # changes running stats and the int counter
    ema.update(model)
    for k, v in model.state_dict().items():
        expected = before[k] * 0.9 + v * 0.1 if v.dtype.is_floating_point else v
        torch.testing.assert_close(ema.module.state_dict()[k], expected.to(v.dtype))
    assert not any(p.requires_grad for p in ema.module.parameters())
    target = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema.copy_to(target)
    for k, v in ema.module.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)
    other = EMA(target, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and other.num_updates == 1
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_check_finite():
    check_finite(torch.tensor(1.5), step=3)
    check_finite({"a": 1.0, "b": torch.tensor(2.0)}, step=3)
    with pytest.raises(NonFiniteLossError, match="step 7"):
        check_finite(torch.tensor(float("nan")), step=7)
    with pytest.raises(NonFiniteLossError, match="non-finite b"):
        check_finite({"a": 1.0, "b": float("inf")}, step=0)


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    state = capture_rng_state()
    first = (random.random(), np.random.randn(3), torch.rand(3))
    save_checkpoint(tmp_path / "rng.safetensors", {"rng": state})
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "rng.safetensors")["rng"])
    again = (random.random(), np.random.randn(3), torch.rand(3))
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])
    assert torch.equal(first[2], again[2])


def test_training_state_keep_last_and_kind(tmp_path):
    for step in (1, 2, 3):
        save_training_state(tmp_path / f"step_{step:08d}.safetensors", {"step": step}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert load_training_state(tmp_path / "step_00000003.safetensors")["step"] == 3
    save_checkpoint(tmp_path / "other.safetensors", {"kind": "something-else"})
    with pytest.raises(ValueError, match="not a walt training state"):
        load_training_state(tmp_path / "other.safetensors")


# ----------------------------------------------------------------------------- training loop


def _clip(frames=5, size=16):
    """A moving colour gradient (a smooth travelling wave per channel) in [-0.8, 0.8]."""
    t = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1)
    h = torch.arange(size, dtype=torch.float32).view(1, size, 1) / size
    w = torch.arange(size, dtype=torch.float32).view(1, 1, size) / size
    return (0.8 * torch.stack([torch.sin(2 * math.pi * (h + 0.5 * w) + 0.6 * t + ph) for ph in (0, 2, 4)]))[None]


def _random_batches(step):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1


def _cfg(**kw):
    base = dict(steps=4, batch_size=1, lr=1e-3, warmup_steps=2, log_every=1, ckpt_every=2,
                discriminator=TINY_D, loss=VAELossConfig(adversarial_start_step=1), seed=5)
    base.update(kw)
    return VAETrainConfig(**base)


def _read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_config_roundtrip_and_validation():
    cfg = _cfg()
    assert config_from_dict(VAETrainConfig, config_to_dict(cfg)) == cfg
    nod = _cfg(discriminator=None)
    assert config_from_dict(VAETrainConfig, config_to_dict(nod)) == nod
    assert VAETrainConfig().betas == (0.0, 0.99) and VAETrainConfig().perceptual == "none"
    with pytest.raises(ValueError, match="perceptual"):
        VAETrainConfig(perceptual="vgg")
    with pytest.raises(ValueError, match="steps"):
        VAETrainConfig(steps=0)
    assert VAETrainConfig().precision == "auto" and VAETrainConfig().grad_accum == 1
    with pytest.raises(ValueError, match="not offered for the autoencoder"):
        VAETrainConfig(parallel="fsdp")
    with pytest.raises(ValueError, match="divisible by grad_accum"):
        VAETrainConfig(batch_size=6, grad_accum=4)


def test_resume_is_bit_identical(tmp_path):
    """Crash after the step-2 checkpoint, resume in a fresh model: equals the uninterrupted run."""
    cfg = _cfg()
    torch.manual_seed(0)
    ref_vae = CausalVAE.from_preset("tiny")
    ref = train_vae(cfg, ref_vae, _random_batches, tmp_path / "ref", progress=False)
    assert ref.step == 4

    class Crash(Exception):
        pass

    def crashing(step):
        if step == 2:
            raise Crash
        return _random_batches(step)

    torch.manual_seed(0)
    with pytest.raises(Crash):
        train_vae(cfg, CausalVAE.from_preset("tiny"), crashing, tmp_path / "run", progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [2]
    torch.manual_seed(123)  # a different init and global RNG: everything must come from the checkpoint
    vae = CausalVAE.from_preset("tiny")
    res = train_vae(cfg, vae, _random_batches, tmp_path / "run", progress=False)
    assert res.step == 4

    a = load_training_state(ref.checkpoint)
    b = load_training_state(res.checkpoint)
    for key in ("vae", "discriminator"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), f"{key}.{k} differs after resume"
    for k, v in a["ema"]["shadow"].items():
        assert torch.equal(v, b["ema"]["shadow"][k]), f"ema.{k} differs after resume"
    for opt in ("opt_g", "opt_d"):
        for idx, st in a[opt]["state"].items():
            for name, v in st.items():
                assert torch.equal(v, b[opt]["state"][idx][name]), f"{opt}[{idx}].{name} differs"
    assert a["lecam"] == b["lecam"] and a["sched_g"] == b["sched_g"] and a["sched_d"] == b["sched_d"]
    assert a["step"] == b["step"] == 4
    # The logs agree too (timing column aside), with no duplicated rows after the resume.
    la, lb = _read_log(tmp_path / "ref" / "log.csv"), _read_log(tmp_path / "run" / "log.csv")
    assert [r["step"] for r in lb] == ["1", "2", "3", "4"]
    for ra, rb in zip(la, lb):
        for timing in ("clips_per_s", "frames_per_s", "sec_per_step"):
            ra.pop(timing), rb.pop(timing)
        assert ra == rb
    assert la[0]["g_adv"] == "" and la[1]["g_adv"] != ""  # adversarial_start_step=1
    # The exported autoencoders load back with the public API.
    loaded = CausalVAE.load(res.ema_path)
    assert loaded.config == vae.config


def test_resume_refuses_a_different_run(tmp_path):
    cfg = _cfg(steps=2, discriminator=None)
    torch.manual_seed(0)
    train_vae(cfg, CausalVAE.from_preset("tiny"), _random_batches, tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr="):
        train_vae(_cfg(steps=2, discriminator=None, lr=5e-4), CausalVAE.from_preset("tiny"), _random_batches,
                  tmp_path, progress=False)
    with pytest.raises(ValueError, match="resume=True"):
        train_vae(cfg, CausalVAE.from_preset("tiny"), _random_batches, tmp_path, resume=False, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_vae(_cfg(batch_size=2), CausalVAE.from_preset("tiny"), _random_batches, tmp_path / "b", progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = _cfg(steps=6, discriminator=None)

    def poisoned(step):
        x = _random_batches(step)
        if step == 3:
            x[0, 0, 0, 0, 0] = float("nan")
        return x

    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny")
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train_vae(cfg, vae, poisoned, tmp_path, progress=False)
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [s for s, _ in ckpts] == [2]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files
    state = load_training_state(ckpts[-1][1])
    assert all(torch.isfinite(v).all() for v in state["vae"].values())
    # The run continues from the good checkpoint once the data is fixed.
    res = train_vae(cfg, CausalVAE.from_preset("tiny"), _random_batches, tmp_path, progress=False)
    assert res.step == 6 and math.isfinite(res.metrics["g_total"])
    assert [r["step"] for r in _read_log(tmp_path / "log.csv")] == [str(s) for s in range(1, 7)]


def test_bf16_autocast_step_with_discriminator(tmp_path):
    """One bf16-autocast step through every term (R1 double-backward included) stays finite."""
    torch.manual_seed(0)
    cfg = _cfg(steps=1, precision="bf16", loss=VAELossConfig())
    res = train_vae(cfg, CausalVAE.from_preset("tiny"), _random_batches, tmp_path, progress=False)
    for k in ("g_total", "g_adv", "d_total", "r1", "lecam"):
        assert math.isfinite(res.metrics[k]), k


def _overfit(tmp_path, frames, size, steps, lr):
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny")
    clip = _clip(frames, size)

    def recon_psnr():
        vae.eval()
        with torch.no_grad():
            return float(psnr(vae(clip, sample_posterior=False)[0].clamp(-1, 1), clip))

    before = recon_psnr()
    cfg = VAETrainConfig(steps=steps, batch_size=1, lr=lr, min_lr=lr / 10, warmup_steps=10, log_every=10,
                         ckpt_every=steps, discriminator=None, ema_decay=0.9)
    train_vae(cfg, vae, lambda step: clip, tmp_path, progress=False)
    return before, recon_psnr()


def test_overfit_one_clip_fast(tmp_path):
    """Tiny CausalVAE on one 5x16x16 moving gradient: PSNR rises by >= 8 dB in 40 steps."""
    before, after = _overfit(tmp_path, frames=5, size=16, steps=40, lr=3e-3)
    assert after >= before + 8.0, (before, after)


@pytest.mark.slow
def test_overfit_one_clip_9x32x32(tmp_path):
    """Tiny CausalVAE on one (1+4*2)x32x32 moving gradient: PSNR rises by >= 8 dB in 300 steps."""
    before, after = _overfit(tmp_path, frames=9, size=32, steps=300, lr=2e-3)
    assert after >= before + 8.0, (before, after)


# ----------------------------------------------------------------------------- loop design shared with `walt train`


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_stops(tmp_path, sig):
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny")
    calls = {"n": 0}

    def send(module, args, output):  # the signal arrives during the 3rd step (index 2)
        if module.training:
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), sig)
        return output

    vae.decoder.register_forward_hook(send)
    before = signal.getsignal(sig)
    res = train_vae(_cfg(steps=10, ckpt_every=100), vae, _random_batches, tmp_path, progress=False)
    assert res.interrupted and res.step == 3  # the current step was finished (both players), then saved
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [3]
    assert res.checkpoint.name == "step_00000003.safetensors" and res.vae_path is None
    assert load_training_state(res.checkpoint)["sched_d"]["last_epoch"] == 3
    assert signal.getsignal(sig) is before  # handlers restored
    assert not (tmp_path / "vae_ema.safetensors").exists()


def test_stop_at_then_resume_equals_one_run(tmp_path):
    """A dataset source (seeded sampler, position in the checkpoint), stopped at step 2 and resumed."""
    from walt.data import SyntheticVideos

    ds = SyntheticVideos(6, num_frames=5, resolution=16, seed=2)
    cfg = _cfg(steps=4, batch_size=2)
    torch.manual_seed(0)
    ref = train_vae(cfg, CausalVAE.from_preset("tiny"), ds, tmp_path / "ref", progress=False)
    torch.manual_seed(0)
    part = train_vae(cfg, CausalVAE.from_preset("tiny"), ds, tmp_path / "run", progress=False, stop_at=2)
    assert part.interrupted and part.step == 2
    assert load_training_state(part.checkpoint)["data"] == {"kind": "dataset", "epoch": 0, "position": 2,
                                                            "seed": 5, "num_samples": 6, "global_batch": 2}
    torch.manual_seed(9)
    vae = CausalVAE.from_preset("tiny")
    res = train_vae(cfg, vae, ds, tmp_path / "run", progress=False)
    assert res.step == 4 and not res.interrupted
    a, b = load_training_state(ref.checkpoint), load_training_state(res.checkpoint)
    assert a["data"]["epoch"] == 1  # 3 batches per epoch: step 4 is in the second epoch
    assert a["data"] == b["data"]
    for key in ("vae", "discriminator"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), f"{key}.{k} differs after resume"
    with pytest.raises(ValueError, match="batch_fn"):
        train_vae(replace_steps(cfg, 6), CausalVAE.from_preset("tiny"), _random_batches, tmp_path / "run",
                  progress=False)


def replace_steps(cfg, steps):
    from walt.config import replace_config

    return replace_config(cfg, steps=steps)


def test_grad_accumulation_equals_one_batch(tmp_path):
    """k=2 micro-batches of 2 clips == one batch of 4 (discriminator off; posterior noise drawn per global batch)."""

    def batches(step):
        g = torch.Generator().manual_seed(50 + step)
        return torch.rand(4, 3, 5, 16, 16, generator=g) * 2 - 1

    out = {}
    for k in (1, 2):
        torch.manual_seed(0)
        vae = CausalVAE.from_preset("tiny")
        res = train_vae(_cfg(steps=3, batch_size=4, grad_accum=k, discriminator=None, betas=(0.9, 0.99),
                             ckpt_every=3), vae, batches, tmp_path / f"k{k}", progress=False)
        out[k] = (vae.state_dict(), res.metrics)
    for name, v in out[1][0].items():
        torch.testing.assert_close(out[2][0][name], v, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    for key in ("g_total", "recon", "kl", "psnr", "grad_norm_g"):
        assert out[2][1][key] == pytest.approx(out[1][1][key], rel=1e-5), key
    # The trained weights moved: an accumulation that dropped micro-batches would not match.
    torch.manual_seed(0)
    init = CausalVAE.from_preset("tiny").state_dict()
    assert max((out[2][0][n] - init[n]).abs().max().item() for n in init) > 1e-3


def test_activation_checkpointing_matches_plain(tmp_path):
    cfg = _cfg(steps=2, discriminator=None, ckpt_every=2)
    runs = []
    for ac in (False, True):
        torch.manual_seed(0)
        vae = CausalVAE.from_preset("tiny")
        train_vae(replace_ac(cfg, ac), vae, _random_batches, tmp_path / str(ac), progress=False)
        assert vae.grad_checkpointing == ac
        runs.append(vae.state_dict())
    for name, v in runs[0].items():
        torch.testing.assert_close(runs[1][name], v, rtol=1e-5, atol=1e-7)


def replace_ac(cfg, ac):
    from walt.config import replace_config

    return replace_config(cfg, activation_checkpointing=ac)


def test_default_kl_weight_is_applied(tmp_path, monkeypatch):
    """The default kl_weight 1e-6 enters g_total (KL scaled up 1e6 here so float32 rounding cannot hide it)."""
    import walt.autoencoder.losses as losses

    assert VAETrainConfig().loss.kl_weight == 1e-6
    original = losses.kl_divergence
    monkeypatch.setattr(losses, "kl_divergence", lambda m, lv: 1e6 * original(m, lv))
    torch.manual_seed(0)
    cfg = VAETrainConfig(steps=1, batch_size=1, warmup_steps=0, log_every=1, discriminator=None)
    row = train_vae(cfg, CausalVAE.from_preset("tiny"), _random_batches, tmp_path, progress=False).metrics
    assert row["kl"] > 1e5
    assert row["g_total"] - 5.0 * row["recon"] == pytest.approx(1e-6 * row["kl"], rel=1e-4)


def test_gradient_clipping_is_applied(tmp_path):
    """The norm the optimiser sees is clipped to grad_clip; unclipped it equals the logged pre-clip norm."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = []

    def record(opt, args, kwargs):
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.append((len(params), float(torch.cat([p.grad.flatten() for p in params]).norm())))

    handle = register_optimizer_step_pre_hook(record)
    try:
        norms = {}
        for clip in (1e-3, 0.0):
            seen.clear()
            torch.manual_seed(0)
            vae = CausalVAE.from_preset("tiny")
            n_vae = len(list(vae.parameters()))
            res = train_vae(_cfg(steps=1, discriminator=None, grad_clip=clip), vae, _random_batches,
                            tmp_path / str(clip), progress=False)
            (count, norm), = [s for s in seen if s[0] == n_vae]
            norms[clip] = (norm, res.metrics["grad_norm_g"])
    finally:
        handle.remove()
    clipped, pre = norms[1e-3]
    assert pre > 1e-2 and clipped == pytest.approx(1e-3, rel=1e-3)
    unclipped, pre0 = norms[0.0]
    assert unclipped == pytest.approx(pre0, rel=1e-4) and pre0 == pytest.approx(pre, rel=1e-5)


def test_reconstruction_samples_and_logging(tmp_path):
    from PIL import Image

    holdout = torch.cat([_clip(5, 16), -_clip(5, 16), torch.zeros(1, 3, 5, 16, 16)])  # 3 clips, 2 shown
    cfg = _cfg(steps=4, sample_every=2, sample_clips=2, tensorboard=False)
    torch.manual_seed(0)
    train_vae(cfg, CausalVAE.from_preset("tiny"), _random_batches, tmp_path, progress=False, holdout=holdout)
    pngs = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert pngs == ["step_00000002.png", "step_00000004.png"]
    img = np.asarray(Image.open(tmp_path / "samples" / "step_00000004.png"))
    pad = 2
    assert img.shape == (4 * 16 + 5 * pad, 5 * 16 + 6 * pad, 3)  # rows: clip 0, its recon, clip 1, its recon
    orig_row = img[pad:pad + 16, pad:pad + 16].astype(np.float32) / 127.5 - 1
    want = _clip(5, 16)[0, :, 0].permute(1, 2, 0).numpy()
    assert np.abs(orig_row - want).max() < 0.02  # the first row is the held-out clip itself
    rows = _read_log(tmp_path / "log.csv")
    assert [bool(r["val_psnr"]) for r in rows] == [False, True, False, True]
    assert all(float(r["clips_per_s"]) > 0 and float(r["frames_per_s"]) == pytest.approx(5 * float(r["clips_per_s"]))
               for r in rows)
    with pytest.raises(ValueError, match="held-out clips"):
        train_vae(cfg, CausalVAE.from_preset("tiny"), _random_batches, tmp_path / "none", progress=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_signal_saves_and_exits_cleanly(tmp_path, capsys, sig):
    """`walt train-vae` on SIGTERM / Ctrl-C: finishes the step, writes a checkpoint, exits 0 with a resume hint."""
    import threading

    from walt.cli import main

    out = tmp_path / "run"
    done = threading.Event()

    def signal_once_training():  # another thread: the signal is delivered to the main thread's handler
        while not done.wait(0.05):
            log = out / "log.csv"
            if log.is_file() and len(log.read_text().splitlines()) >= 3:  # two steps logged: training is under way
                os.kill(os.getpid(), sig)
                return

    watcher = threading.Thread(target=signal_once_training, daemon=True)
    watcher.start()
    try:
        code = main(["train-vae", "--data", "builtin", "--num-samples", "8", "--frames", "5", "--resolution", "16",
                     "--batch-size", "1", "--steps", "100000", "--log-every", "1", "--ckpt-every", "100000",
                     "--discriminator", "none", "--stats-batches", "0", "--no-progress", "--out", str(out)])
    finally:
        done.set()
        watcher.join()
    stdout = capsys.readouterr().out
    assert code == 0, stdout[-2000:]
    assert "stopped at step" in stdout and "--resume" in stdout
    (step, path), = list_checkpoints(out / "checkpoints")
    assert step >= 2 and load_training_state(path)["step"] == step
    assert not (out / "vae_ema.safetensors").exists()


@pytest.mark.slow
def test_compile_matches_eager(tmp_path):
    """`compile=True` (torch.compile of the autoencoder, in place: same state-dict keys) trains like eager.

    ~1.5 min on 2 CPU cores (compiling forward and backward). Losses agree to float rounding; after
    2 Adam steps a rounding difference can move a near-zero-gradient weight by a fraction of lr.
    """
    from walt.config import replace_config

    cfg = _cfg(steps=2, ckpt_every=2, discriminator=None)
    runs, rows = [], []
    for compiled in (False, True):
        torch.manual_seed(0)
        vae = CausalVAE.from_preset("tiny")
        res = train_vae(replace_config(cfg, compile=compiled), vae, _random_batches, tmp_path / str(compiled),
                        progress=False)
        runs.append(vae.state_dict())
        rows.append(_read_log(tmp_path / str(compiled) / "log.csv")[0])
    assert runs[0].keys() == runs[1].keys()
    for key in ("g_total", "recon", "kl", "grad_norm_g"):
        assert float(rows[1][key]) == pytest.approx(float(rows[0][key]), rel=1e-5), key
    diffs = torch.cat([(runs[1][k] - v).abs().flatten() for k, v in runs[0].items()])
    assert diffs.max().item() < 5e-4 and diffs.mean().item() < 1e-7
    assert CausalVAE.load(res.ema_path).config == CausalVAE.from_preset("tiny").config
