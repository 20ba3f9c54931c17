"""Reconstruction quality of an autoencoder: PSNR, SSIM (per frame, and per frame index) and rFVD.

    from walt.eval.recon import reconstruction_metrics
    res = reconstruction_metrics(vae, dataset, num_samples=64, protocol="smoke", i3d=load_i3d())
    res["psnr"]["mean"], res["ssim"]["per_frame_index"], res["rfvd"]["fvd"]

W.A.L.T picks its autoencoder by reconstruction (SPEC §1, §5: rFVD 37.7 / 17.1 / 8.2 / 3.5 for
c = 4 / 8 / 16 / 32 latent channels). Every clip x (B, 3, T, H, W) in [-1, 1] goes through
`vae.decode(vae.encode(x))` (posterior mean, clamped to [-1, 1] like a written video) and is scored
against x:

* PSNR and SSIM per frame (`walt.eval.metrics`), averaged over all N * T frames; the curve over the
  frame index t shows the causal encoder at work (frame 0 is encoded alone and is usually the best).
* rFVD: FVD (Unterthiner et al. 2018) between the first `protocol.num_fake` real clips and their
  reconstructions, with the Kinetics-400 I3D. The reconstructions play the role of the generated
  set; both sets hold the same clips, so the number measures only what the autoencoder changes.
  It is deterministic given the clips, so the protocol's repeats do not apply (one evaluation).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from walt.eval.fvd import FVDProtocol, feature_stats, frechet_distance, i3d_features
from walt.eval.fvd_record import as_protocol, i3d_weights_hash, protocol_label, protocol_record, short_hash
from walt.eval.fvd_stats import clips_to_i3d_input, describe_dataset_for_cache, network_device, progress_bar
from walt.eval.metrics import psnr, ssim

SSIM_MIN_SIZE = 11  # the 11x11 Gaussian window must fit in a frame


def _curve(table: torch.Tensor) -> dict[str, Any]:
    """(N, T) per-frame values -> mean over frames, std over clips of the clip means, per-index mean."""
    clip_means = table.mean(dim=1)  # (N,)
    finite = torch.isfinite(clip_means)
    std = float(clip_means.std()) if finite.all() and len(clip_means) > 1 else (0.0 if finite.all() else float("nan"))
    return {
        "mean": float(table.mean()),
        "std_over_clips": std,
        "per_frame_index": [float(v) for v in table.mean(dim=0)],  # (T,) averaged over clips
    }


@torch.no_grad()
def reconstruction_metrics(vae, dataset, num_samples: int | None = None, batch_size: int = 4,
                           chunk_frames: int | None = None, protocol: FVDProtocol | str | None = None,
                           i3d=None, device=None, progress: bool = True) -> dict[str, Any]:
    """PSNR / SSIM per frame and rFVD of `vae` on the first `num_samples` clips of `dataset`.

    Args:
        vae: anything with `encode(x, chunk_frames)` / `decode(z, chunk_frames)` (a CausalVAE).
        dataset: returns {"video": (3, T, H, W) in [-1, 1], ...}.
        num_samples: clips scored (default: `protocol.num_fake` with rFVD, else the whole dataset).
        chunk_frames: stream encode/decode in chunks (CausalVAE's causal cache); None = whole clip.
        protocol: FVD protocol (or preset name) for rFVD; None skips rFVD. Needs
            num_samples >= protocol.num_fake and clips of >= protocol.num_frames frames.
        i3d: the FVD network (default `walt.eval.fvd_eval.load_fvd_i3d()` when a protocol is given).
        device: where the autoencoder runs (default: its parameters' device).
    Returns:
        JSON-ready dict with "psnr" / "ssim" ({"mean", "std_over_clips", "per_frame_index"}; ssim is
        None for frames under 11x11), "rfvd" (value + protocol record, or None), sample counts,
        clip shape, dataset description and timings. PSNR of an exact reconstruction is inf.
    """
    proto = as_protocol(protocol) if protocol is not None else None
    n, n_fvd = _counts(num_samples, proto, len(dataset), batch_size)
    device = network_device(vae, device)
    if proto is not None and i3d is None:
        from walt.eval import fvd_eval

        i3d = fvd_eval.load_fvd_i3d(device=device)
    i3d_device = network_device(i3d) if i3d is not None else None

    psnr_rows, ssim_rows, real_in, fake_in = [], [], [], []
    real_feats, fake_feats = [], []
    shape = None
    t_ae = t_i3d = 0.0
    with progress_bar(n, "reconstruct", progress) as bar:
        for lo in range(0, n, batch_size):
            idx = range(lo, min(lo + batch_size, n))
            x = torch.stack([dataset[i]["video"] for i in idx]).to(device)  # (B, 3, T, H, W)
            if shape is None:
                shape = tuple(x.shape[1:])
                if proto is not None and shape[1] < proto.num_frames:
                    raise ValueError(f"rFVD with protocol {proto.name!r} needs clips of >= {proto.num_frames} "
                                     f"frames, got {shape[1]}; use longer clips or skip rFVD")
            t0 = time.perf_counter()
            x_hat = vae.decode(vae.encode(x, chunk_frames=chunk_frames), chunk_frames=chunk_frames)
            x_hat = x_hat.float().clamp(-1.0, 1.0)  # (B, 3, T, H, W), as a written video would be
            t_ae += time.perf_counter() - t0
            if x_hat.shape != x.shape:
                raise ValueError(f"the autoencoder returned {tuple(x_hat.shape)} for input {tuple(x.shape)}")
            psnr_rows.append(psnr(x_hat, x, per_frame=True)[1].cpu())  # (B, T)
            if min(shape[2:]) >= SSIM_MIN_SIZE:
                ssim_rows.append(ssim(x_hat, x, per_frame=True)[1].cpu())  # (B, T)
            # rFVD inputs for the first n_fvd clips, batched for the I3D as they come.
            k = max(0, min(len(idx), n_fvd - lo))
            if k:
                real_in.append(clips_to_i3d_input(x[:k].float().to(i3d_device), proto))  # (k, 3, F, 224, 224)
                fake_in.append(clips_to_i3d_input(x_hat[:k].to(i3d_device), proto))
                if sum(v.shape[0] for v in real_in) >= batch_size or lo + len(idx) >= n_fvd:
                    t0 = time.perf_counter()
                    real_feats.append(i3d_features(i3d, torch.cat(real_in), batch_size, num_frames=None))
                    fake_feats.append(i3d_features(i3d, torch.cat(fake_in), batch_size, num_frames=None))
                    t_i3d += time.perf_counter() - t0
                    real_in, fake_in = [], []
            bar.update(len(idx))

    psnr_table = torch.cat(psnr_rows)  # (N, T)
    result: dict[str, Any] = {
        "kind": "walt.eval.reconstruction/1",
        "num_clips": n,
        "clip_shape": list(shape),  # (3, T, H, W)
        "chunk_frames": chunk_frames,
        "psnr": {**_curve(psnr_table), "unit": "dB", "data_range": 2.0},
        "ssim": {**_curve(torch.cat(ssim_rows)), "window": "gaussian 11x11 sigma 1.5"} if ssim_rows else None,
        "ssim_skipped_reason": None if ssim_rows else f"frames smaller than {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE}",
        "dataset": describe_dataset_for_cache(dataset),
        "seconds": {"autoencoder": t_ae, "i3d": t_i3d},
        "rfvd": None,
    }
    if proto is not None:
        result["rfvd"] = _rfvd(np.concatenate(real_feats), np.concatenate(fake_feats), proto, i3d, n_fvd)
    return result


def _counts(num_samples: int | None, proto: FVDProtocol | None, available: int, batch_size: int) -> tuple[int, int]:
    """(clips scored, clips of rFVD): `num_samples` (default the protocol's num_fake, else all), checked."""
    n = num_samples if num_samples is not None else (proto.num_fake if proto is not None else available)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"num_samples must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if available < n:
        raise ValueError(f"asked for {n} clips but the dataset has {available}; lower num_samples or add clips")
    n_fvd = proto.num_fake if proto is not None else 0
    if n < n_fvd:
        raise ValueError(f"rFVD with protocol {proto.name!r} needs {n_fvd} clips, got num_samples={n}; "
                         f"score >= {n_fvd} clips or skip rFVD")
    return n, n_fvd


def _rfvd(rf: np.ndarray, ff: np.ndarray, proto: FVDProtocol, i3d, n_fvd: int) -> dict[str, Any]:
    """rFVD of (n_fvd, D) real and reconstructed features, with the protocol record."""
    return {
        "fvd": frechet_distance(*feature_stats(rf), *feature_stats(ff)),
        "num_real": int(rf.shape[0]),
        "num_fake": int(ff.shape[0]),
        "clips": f"the first {n_fvd} clips and their reconstructions",
        "repeats": 1,  # deterministic given the clips; the protocol's repeats do not apply
        "protocol": protocol_record(proto, i3d_weights_hash(i3d)),
    }


def _fmt(v: float, digits: int) -> str:
    return "inf" if v == float("inf") else f"{v:.{digits}f}"


def recon_markdown(result: dict[str, Any], title: str = "Reconstruction") -> str:
    """Markdown: each number next to its sample count (and, for rFVD, protocol + I3D hash)."""
    n, (_, t, h, w) = result["num_clips"], result["clip_shape"]
    lines = [f"# {title}", "", f"{n} clips of {t}x{h}x{w}; chunk_frames={result['chunk_frames']}.", "",
             "| metric | value | ± std over clips | samples | protocol [hash] | I3D weights sha256 |",
             "|---|---|---|---|---|---|"]
    p = result["psnr"]
    lines.append(f"| PSNR (dB) | {_fmt(p['mean'], 2)} | {_fmt(p['std_over_clips'], 2)} | {n} clips x {t} frames | "
                 "per frame, averaged | - |")
    s = result["ssim"]
    if s is not None:
        lines.append(f"| SSIM | {s['mean']:.4f} | {s['std_over_clips']:.4f} | {n} clips x {t} frames | "
                     "per frame, averaged | - |")
    r = result["rfvd"]
    if r is not None:
        pr = r["protocol"]
        ref = "" if pr["i3d_is_reference"] else " (NOT the reference I3D)"
        lines.append(f"| rFVD | {r['fvd']:.2f} | - | {r['num_real']} real vs {r['num_fake']} reconstructed | "
                     f"{protocol_label(pr)} | `{short_hash(pr['i3d_weights_sha256'])}`{ref} |")
    lines += ["", "Per frame index (mean over clips):", "", "| frame | PSNR (dB) |" + (" SSIM |" if s else ""),
              "|---|---|" + ("---|" if s else "")]
    for i, v in enumerate(p["per_frame_index"]):
        lines.append(f"| {i} | {_fmt(v, 2)} |" + (f" {s['per_frame_index'][i]:.4f} |" if s else ""))
    if result["ssim"] is None:
        lines += ["", f"SSIM skipped: {result['ssim_skipped_reason']}."]
    return "\n".join(lines) + "\n"


__all__ = ["reconstruction_metrics", "recon_markdown"]
