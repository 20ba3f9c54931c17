"""Text-to-video in miniature: prompts -> videos on the built-in captioned dataset, within a budget.

    from walt.text.demo import text_demo
    summary = text_demo("runs/t2v-demo", minutes=15, device="cpu")      # `walt demo --text` (wired by the CLI)

Stages (the main demo's machinery, `walt.demo.run`, with text conditioning in stage 3):
  1. the causal autoencoder (trained to a deadline, or reused: `vae=` a checkpoint or a demo folder);
  2. the latent cache of `SyntheticVideos` clips, then their captions through the frozen text
     encoder (all-MiniLM-L6-v2 offline by default; T5-XL in the paper) into the cache's text sidecar;
  3. a small W.A.L.T with text cross-attention in its spatial layers (SPEC §2), trained on the
     cached latents + caption features, captions dropped with p = 0.1 for classifier-free guidance;
  4. DDIM samples for held-out captions (another dataset seed, so shape / colour / motion
     combinations the model did not see as such), with and without guidance, written as
     `text_samples/grid.png` (rows: real held-out clip | sample), one GIF per prompt and prompts.json.

The synthetic captions name the motion class, the shape, its colours, texture and background,
so how well a sample follows its prompt can be judged by eye against the real clip beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["text_demo", "heldout_prompts"]


def heldout_prompts(classes, resolution: int, num_frames: int, seed: int, per_class: int = 1):
    """(prompts, real clips (N, 3, T, H, W)): the first `per_class` held-out clips of every class."""
    from walt.data import SyntheticVideos

    ds = SyntheticVideos(64 * len(classes), num_frames=num_frames, resolution=resolution, seed=seed + 10_007,
                         classes=tuple(classes))
    prompts, clips, count = [], [], {c: 0 for c in range(len(classes))}
    for i in range(len(ds)):
        item = ds[i]
        if count[item["label"]] < per_class:
            count[item["label"]] += 1
            prompts.append(item["caption"])
            clips.append(item["video"])
        if all(v >= per_class for v in count.values()):
            break
    return prompts, torch.stack(clips)


def _resolve_vae(vae, device):
    from walt.autoencoder import CausalVAE

    if isinstance(vae, torch.nn.Module):
        return vae.to(device).eval().requires_grad_(False)
    p = Path(vae)
    for cand in (p, p / "vae.safetensors", p / "vae" / "vae.safetensors", p / "vae_ema.safetensors"):
        if cand.is_file():
            return CausalVAE.load(cand, map_location=device).eval().requires_grad_(False)
    raise ValueError(f"vae={vae}: no autoencoder checkpoint there; pass a .safetensors file or a demo folder")


def text_demo(
    out_dir: str | Path,
    minutes: float = 15.0,
    device: str | torch.device = "cpu",
    preset: str = "cpu",
    vae: Any = None,
    text_encoder: str = "minilm",
    guidance_scale: float = 3.0,
    seed: int = 0,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a tiny text-conditioned W.A.L.T on captioned synthetic clips and write prompt -> video grids.

    Args:
        out_dir: everything goes here (vae/, cache/ with cache/text/, walt_text/, text_samples/, text_summary.json).
        minutes: wall-clock budget of the whole run (the stages split it like `walt demo`).
        device: "cpu" / "cuda" / a torch.device.
        preset: `walt.demo.config` preset for sizes ("cpu", "gpu", "smoke"); `overrides` change its fields.
        vae: None (train one, `vae_fraction` of the budget), a CausalVAE, or a checkpoint / demo folder.
        text_encoder: `walt.text.build_text_encoder` spec: "minilm" (default) or "t5:PATH".
        guidance_scale: classifier-free guidance of the guided samples (the unguided ones use 1).
    Returns: a summary dict (also written to out_dir/text_summary.json).
    """
    from walt.data.latent_cache import LatentDataset
    from walt.demo.config import demo_config
    from walt.demo.plots import save_labelled_grid, side_by_side
    from walt.demo.run import (
        _read_log,
        _say,
        _seconds_per_step,
        encode_stage,
        load_demo_vae,
        train_to_deadline,
        train_vae_stage,
    )
    from walt.data.video_io import write_gif
    from walt.denoiser import WALT
    from walt.diffusion import DiffusionLossConfig, DiffusionSchedule
    from walt.pipeline import generate
    from walt.text import TextEmbeddings, build_text_encoder, cache_text_embeddings, null_text
    from walt.train.denoiser import DenoiserTrainConfig, train_denoiser

    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    cfg = demo_config(preset, **overrides)
    device = torch.device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    budget = minutes * 60.0
    summary: dict[str, Any] = {"preset": preset, "minutes": minutes, "device": str(device),
                               "text_encoder": text_encoder, "guidance_scale": guidance_scale}

    # ---- 1-2: autoencoder, latent cache, caption features ----
    if vae is None:
        _say("text demo: training the autoencoder")
        summary["vae"] = train_vae_stage(cfg, out, device, seed, t0 + cfg.vae_fraction * budget, progress)
        vae_net = load_demo_vae(out, device)
    else:
        vae_net = _resolve_vae(vae, device)
    _say("text demo: encoding the latent cache and the captions")
    summary["cache"] = encode_stage(cfg, out, vae_net, device, seed, progress)
    t_text = time.time()
    enc = build_text_encoder(text_encoder, device=device)
    cache_text_embeddings(out / "cache", enc, progress=progress)
    summary["text_cache_seconds"] = time.time() - t_text
    ds, text = LatentDataset(out / "cache"), TextEmbeddings(out / "cache", weights_id=enc.weights_id)
    summary["text_features"] = {**text.encoder_info, "max_tokens": text.max_tokens}

    # ---- 3: the text-conditioned denoiser, trained to the deadline ----
    c, t_lat, h, w = ds.latent_shape
    torch.manual_seed(seed)
    net = WALT.from_preset(
        "tiny", input_size=(t_lat, h, w), in_channels=c, num_classes=0, text_dim=text.dim,
        spatial_window=(1, h, w), spatiotemporal_window=(t_lat, max(1, h // 2), max(1, w // 2)), **cfg.walt_kwargs(),
    ).to(device)
    folder = out / "walt_text"
    batch = min(cfg.walt_batch_size, len(ds))

    def tcfg(steps: int, log_every: int) -> DenoiserTrainConfig:
        return DenoiserTrainConfig(
            steps=steps, batch_size=batch, lr=cfg.walt_lr, warmup_steps=cfg.walt_warmup_steps,
            ema_decay=cfg.walt_ema_decay, log_every=log_every, ckpt_every=10**9, keep_checkpoints=1, seed=seed,
            tensorboard=False, loss=DiffusionLossConfig(p_uncond_text=0.1),
        )

    def train_until(total: int, stop_at: int | None) -> int:
        net.zero_grad(set_to_none=True)
        log_every = 1 if total >= 10**7 else max(1, min(10, total // 100))
        return train_denoiser(tcfg(total, log_every), net, ds, folder, progress=progress, stop_at=stop_at,
                              text_embeddings=text).step

    def pace(since: int) -> float:
        return _seconds_per_step([r for r in _read_log(folder / "log.csv") if r["step"] > since], batch,
                                 "sec_per_step")

    _say(f"text demo: training W.A.L.T with {text.encoder_name} text cross-attention")
    t_walt = time.time()
    deadline = t0 + (1.0 - cfg.final_fraction) * budget
    steps = train_to_deadline(train_until, pace, deadline, cfg.calibration_steps, cfg.walt_min_steps, "text denoiser")
    rows = _read_log(folder / "log.csv")
    summary["walt"] = {"seconds": time.time() - t_walt, "steps": steps, "params": sum(p.numel() for p in net.parameters()),
                       "first_loss": rows[0]["loss"], "final_loss": sum(r["loss"] for r in rows[-5:]) / len(rows[-5:])}

    # ---- 4: held-out prompts -> videos, unguided and guided ----
    ema = WALT.load(folder / "walt_ema.safetensors").to(device).eval()
    prompts, real = heldout_prompts(cfg.classes, cfg.resolution, cfg.num_frames, seed)
    tokens, mask = enc.encode(prompts)
    u_tok, u_mask = null_text(*tokens.shape, device=tokens.device)
    seeds = [seed * 100_003 + i for i in range(len(prompts))]
    schedule = DiffusionSchedule()
    shape = (len(prompts), c, t_lat, h, w)
    videos = {}
    for g in (1.0, float(guidance_scale)):
        z = generate(ema, schedule, shape, sampler=cfg.sampler, steps=cfg.sample_steps, seeds=seeds,
                     text=tokens, text_mask=mask, uncond_text=u_tok, uncond_text_mask=u_mask, guidance_scale=g,
                     latent_stats=ds.stats)  # (N, c, t, h, w) raw VAE space
        with torch.no_grad():
            videos[g] = vae_net.decode(z.to(device)).float().clamp(-1, 1).cpu()  # (N, 3, T, H, W)
    samples = out / "text_samples"
    samples.mkdir(exist_ok=True)
    width = min(720, int(5.5 * max(len(p) for p in prompts)) + 12)  # default Pillow font: ~5.5 px per char
    for g, vids in videos.items():
        rows_ = torch.stack([side_by_side(r, v) for r, v in zip(real, vids)])  # real | sample
        save_labelled_grid(samples / f"grid_guidance{g:g}.png", rows_, prompts, label_width=width)
        for i, v in enumerate(vids):
            write_gif(samples / f"prompt{i:02d}_guidance{g:g}.gif", v, fps=cfg.fps)
    (samples / "prompts.json").write_text(json.dumps(
        [{"prompt": p, "seed": s, "gifs": [f"prompt{i:02d}_guidance{g:g}.gif" for g in videos]}
         for i, (p, s) in enumerate(zip(prompts, seeds))], indent=2))
    summary.update(prompts=prompts, samples=str(samples), seconds=time.time() - t0)
    (out / "text_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _say(f"text demo: wrote {len(prompts)} prompt(s) x {len(videos)} guidance scale(s) to {samples} "
         f"in {summary['seconds'] / 60:.1f} min")
    return summary
