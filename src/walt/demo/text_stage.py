"""Text-to-video in miniature: prompts -> videos on the built-in captioned dataset, within a budget.

    walt demo --text                                       # the main demo + this stage (--text-minutes)
    from walt.demo.text_stage import text_demo
    summary = text_demo("runs/t2v-demo", minutes=15, device="cpu")      # standalone: trains its own autoencoder

Stages (the main demo's, with text conditioning in the denoiser):
  1. the causal autoencoder and the latent cache of the demo's clips: `walt demo --text` reuses the
     main demo's (`text_stage`); `text_demo` trains / encodes its own (or takes `vae=`);
  2. the cache's captions through the frozen text encoder (all-MiniLM-L6-v2 offline by default;
     T5-XL in the paper) into the cache's text sidecar (`walt.text.cache_text_embeddings`);
  3. a small W.A.L.T with text cross-attention in its spatial layers (SPEC §2), trained from scratch
     to a deadline on the cached latents + caption features, captions dropped with p = 0.1 for
     classifier-free guidance;
  4. DDIM samples for held-out captions (another dataset seed, the demo's appearance restriction:
     shape / colour / motion combinations the model did not see as such), without guidance and with
     `guidance_scale`, written as `text_samples/grid_guidance{g}.png` (rows: real held-out clip |
     sample, labelled with the prompt), one MP4 + GIF per prompt and scale, and prompts.json.

The synthetic captions name the motion class, the shape, its colours, texture and background,
so how well a sample follows its prompt can be judged by eye against the real clip beside it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from walt.demo.train_stages import build_walt, say, walt_train_config
from walt.experiment import recipes
from walt.experiment.budget import read_log
from walt.io import write_json

__all__ = ["text_demo", "text_stage", "heldout_prompts"]


def heldout_prompts(cfg, seed: int, per_class: int = 1):
    """(prompts, real clips (N, 3, T, H, W)): the first `per_class` held-out clips of every class.

    Drawn exactly like the demo's other clips (`walt.demo.clips.demo_videos` of the `DemoConfig`
    `cfg`: its classes, size, appearance restriction and speed) from the held-out seed `seed + 10_007`.
    """
    from walt.demo.clips import demo_videos

    ds = demo_videos(cfg, per_class * len(cfg.classes), seed + 10_007)
    items = [ds[i] for i in range(len(ds))]  # labels cycle through the classes: per_class of each
    return [it["caption"] for it in items], torch.stack([it["video"] for it in items])


def _resolve_vae(vae, device):
    from walt.autoencoder import CausalVAE

    if isinstance(vae, torch.nn.Module):
        return vae.to(device).eval().requires_grad_(False)
    p = Path(vae)
    for cand in (p, p / "vae.safetensors", p / "vae" / "vae.safetensors", p / "vae_ema.safetensors"):
        if cand.is_file():
            return CausalVAE.load(cand, map_location=device).eval().requires_grad_(False)
    raise ValueError(f"vae={vae}: no autoencoder checkpoint there; pass a .safetensors file or a demo folder")


def text_stage(cfg, out: str | Path, vae, device: str | torch.device, seed: int = 0, minutes: float = 5.0,
               encoder: Any = None, guidance_scale: float | None = None, progress: bool = False) -> dict[str, Any]:
    """Stages 2-4 above on an existing latent cache `out/cache` encoded by `vae` (`walt demo --text`).

    Args:
        cfg: the demo's `DemoConfig` (sizes, sampler, cfg.text_encoder, cfg.text_guidance_scale).
        out: the demo folder: reads cache/, writes cache/text/, walt_text/ and text_samples/.
        minutes: this stage's own budget: training ends at 1 - cfg.final_fraction of it.
        encoder: an already built text encoder (default: `build_text_encoder(cfg.text_encoder)`).
        guidance_scale: of the guided samples (default cfg.text_guidance_scale; unguided ones use 1).
    Returns: a JSON-able summary (also written to out/text_summary.json).
    """
    from walt.data.latent_dataset import LatentDataset
    from walt.text import TextEmbeddings, build_text_encoder, cache_text_embeddings

    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    t0, device, out = time.time(), torch.device(device), Path(out)
    guidance_scale = cfg.text_guidance_scale if guidance_scale is None else float(guidance_scale)
    vae_net = _resolve_vae(vae, device)
    enc = encoder if encoder is not None else build_text_encoder(cfg.text_encoder, device=device)
    summary: dict[str, Any] = {"minutes": minutes, "device": str(device), "text_encoder": enc.name,
                               "guidance_scale": guidance_scale}
    # caption features into the cache's sidecar (resumable; redone for another encoder)
    t = time.time()
    cache_text_embeddings(out / "cache", enc, progress=progress)
    summary["text_cache_seconds"] = time.time() - t
    ds, text = LatentDataset(out / "cache"), TextEmbeddings(out / "cache", weights_id=enc.weights_id)
    summary["text_features"] = {**text.encoder_info, "max_tokens": text.max_tokens}
    summary["walt"], schedule = _train(cfg, out, ds, text, device, seed, t0 + (1.0 - cfg.final_fraction) * minutes * 60,
                                       progress)
    t_sample = time.time()
    summary.update(_prompts_to_videos(cfg, out, vae_net, enc, ds.stats, schedule, seed, guidance_scale, device))
    summary.update(sample_seconds=time.time() - t_sample, seconds=time.time() - t0)
    write_json(out / "text_summary.json", summary, default=str)
    return summary


def _train(cfg, out: Path, ds, text, device, seed: int, deadline: float, progress: bool):
    """(stage record, diffusion schedule) of the text-conditioned denoiser, trained to `deadline`."""
    from walt.diffusion import DiffusionLossConfig, DiffusionSchedule

    torch.manual_seed(seed)
    net = build_walt(cfg, ds.latent_shape, num_classes=0, frame_conditioning=False, text_dim=text.dim).to(device)
    tcfg = walt_train_config(cfg, seed, min(cfg.walt_batch_size, len(ds)), DiffusionLossConfig(p_uncond_text=0.1))
    say(f"  text: training W.A.L.T with {text.encoder_name} text cross-attention")
    t0 = time.time()
    steps = recipes.train_walt_to_deadline(net, ds, out / "walt_text", tcfg, deadline, cfg.calibration_steps,
                                           cfg.walt_min_steps, progress, "text denoiser", say, text=text)
    rows = read_log(out / "walt_text" / "log.csv")
    record = {"seconds": time.time() - t0, "steps": steps, "params": sum(p.numel() for p in net.parameters()),
              "first_loss": rows[0]["loss"], "final_loss": sum(r["loss"] for r in rows[-5:]) / len(rows[-5:]),
              "clips_per_s": sorted(r["clips_per_s"] for r in rows)[len(rows) // 2]}
    return record, DiffusionSchedule(tcfg(1, 1).diffusion)


@torch.no_grad()
def _prompts_to_videos(cfg, out: Path, vae, enc, stats, schedule, seed: int, guidance_scale: float,
                       device) -> dict[str, Any]:
    """Held-out prompts -> videos of the EMA denoiser, unguided and guided; grids, MP4 / GIF, prompts.json."""
    from walt.cascade.stage import Stage
    from walt.demo.pictures import save_labelled_grid, side_by_side
    from walt.io import write_gif, write_mp4
    from walt.pipeline import generate
    from walt.text import null_text

    ema = Stage.load(out / "walt_text" / "walt_ema.safetensors").to(device).net
    prompts, real = heldout_prompts(cfg, seed)
    seeds = [seed * 100_003 + i for i in range(len(prompts))]
    tokens, mask = enc.encode(prompts)  # (N, L, D), (N, L); the no-text branch for the guided samples
    u_tok, u_mask = null_text(*tokens.shape, device=tokens.device)
    text = {"text": tokens, "text_mask": mask, "uncond_text": u_tok, "uncond_text_mask": u_mask}
    shape = (len(prompts), ema.config.in_channels, *ema.config.input_size)
    videos = {}
    for g in dict.fromkeys((1.0, guidance_scale)):
        z = generate(ema, schedule, shape, sampler=cfg.sampler, steps=cfg.sample_steps, seeds=seeds, guidance_scale=g,
                     latent_stats=stats, **text)  # (N, c, t, h, w) raw VAE space
        videos[g] = vae.decode(z.to(device)).float().clamp(-1, 1).cpu()  # (N, 3, T, H, W)
    samples = out / "text_samples"
    shutil.rmtree(samples, ignore_errors=True)
    samples.mkdir()
    width = min(720, int(5.5 * max(len(p) for p in prompts)) + 12)  # default Pillow font: ~5.5 px per char
    grids, files = [], [[] for _ in prompts]
    for g, vids in videos.items():
        grids.append(f"text_samples/grid_guidance{g:g}.png")
        save_labelled_grid(out / grids[-1], torch.stack([side_by_side(r, v) for r, v in zip(real, vids)]), prompts,
                           label_width=width)  # rows: real | sample
        for i, v in enumerate(vids):
            stem = f"prompt{i:02d}_guidance{g:g}"
            write_gif(samples / f"{stem}.gif", v, fps=cfg.fps)
            write_mp4(samples / f"{stem}.mp4", v, fps=cfg.fps)
            files[i] += [f"{stem}.gif", f"{stem}.mp4"]
    write_json(samples / "prompts.json", [{"prompt": p, "seed": s, "gifs": [f for f in fs if f.endswith(".gif")],
                                          "videos": fs} for p, s, fs in zip(prompts, seeds, files)])
    say(f"  text: wrote {len(prompts)} prompt(s) x {len(videos)} guidance scale(s) to {samples}")
    return {"prompts": prompts, "grids": grids, "samples": "text_samples", "guidance_scales": list(videos)}


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
    """Standalone: train (or take) an autoencoder, encode a cache, then `text_stage` in what is left.

    Args:
        out_dir: everything goes here (vae/, cache/ with cache/text/, walt_text/, text_samples/, text_summary.json).
        minutes: wall-clock budget of the whole run (the stages split it like `walt demo`).
        device: "cpu" / "cuda" / a torch.device.
        preset: `walt.demo.demo_config` preset for sizes ("cpu", "gpu", "smoke"); `overrides` change its fields.
        vae: None (train one, `vae_fraction` of the budget), a CausalVAE, or a checkpoint / demo folder.
        text_encoder: `walt.text.build_text_encoder` spec: "minilm" (default) or "t5:PATH".
        guidance_scale: classifier-free guidance of the guided samples (the unguided ones use 1).
    Returns: a summary dict (also written to out_dir/text_summary.json).
    """
    from walt.demo.demo_config import demo_config
    from walt.demo.train_stages import autoencoder_stage, cache_stage, load_demo_vae

    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    cfg = demo_config(preset, text_encoder=text_encoder, text_guidance_scale=guidance_scale, **overrides)
    device, out = torch.device(device), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0, budget = time.time(), minutes * 60.0
    first: dict[str, Any] = {"preset": preset}
    if vae is None:
        say("text demo: training the autoencoder")
        first["vae"] = autoencoder_stage(cfg, out, device, seed, t0 + cfg.vae_fraction * budget, progress)
        vae_net = load_demo_vae(out, device)
    else:
        vae_net = _resolve_vae(vae, device)
    say("text demo: encoding the latent cache and the captions")
    first["cache"] = cache_stage(cfg, out, vae_net, device, seed, progress)
    left = max(budget - (time.time() - t0), 1.0) / 60.0
    summary = {**first, **text_stage(cfg, out, vae_net, device, seed, minutes=left, progress=progress)}
    summary.update(minutes=minutes, seconds=time.time() - t0)
    write_json(out / "text_summary.json", summary, default=str)
    return summary
