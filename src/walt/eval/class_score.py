"""Motion-class score for the built-in dataset: does a clip show the motion its label names?

FVD says how far two sets of clips are apart; it does not say whether a class-conditional sample
shows the motion it was asked for. This score does, for the built-in procedural dataset
(`walt.data.synthetic`), whose classes are kinds of motion. A small 3D CNN (`MotionClassifier`)
reads frames and frame differences and names the class. The demo trains it on the autoencoder's
*reconstructions* of training clips, so the autoencoder's blur is not counted against the
denoiser: its accuracy on held-out reconstructions is the ceiling a denoiser can reach through
that autoencoder. A study comparing autoencoders trains one classifier on the real clips
instead (`classifier_for(None, ...)`), so every design is scored by the same network. Its pooled
features also give a Fréchet distance (`feature_frechet`), cheap enough for hundreds of clips
where the I3D of FVD costs ~1 CPU-s per clip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from walt.eval.fvd import frechet_distance

__all__ = [
    "ClassifierConfig", "MotionClassifier", "train_classifier", "classify", "class_accuracy", "feature_frechet",
    "classifier_for", "reconstruct", "score_clips", "write_confusion_png", "CHECKPOINT_KIND",
]

CHECKPOINT_KIND = "walt.eval.MotionClassifier"


@dataclass(frozen=True)
class ClassifierConfig:
    """Size and training of the motion classifier (defaults: well under a minute on 2 CPU cores at 9 x 32 x 32)."""

    width: int = 16
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    train_clips: int = 1024  # reconstructions it learns from
    seed: int = 0

    def __post_init__(self):
        if min(self.width, self.steps, self.batch_size, self.train_clips) < 1 or not self.lr > 0:
            raise ValueError(f"ClassifierConfig: width, steps, batch_size, train_clips must be >= 1 and lr > 0, got {self}")


def _block(c_in: int, c_out: int, stride) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(4, c_out), nn.SiLU())


class MotionClassifier(nn.Module):
    """(B, 3, T, H, W) clips in [-1, 1] -> (B, num_classes) logits; `features` -> (B, 4 * width).

    The input is the frames concatenated with their temporal differences (the first difference
    is zero), so motion is as easy to read as appearance. Strides halve space early, where the
    convolutions cost most, and time once.
    """

    def __init__(self, num_classes: int, width: int = 16, frames: int = 9, feature_dim: int = 64):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _block(6, w, (1, 2, 2)), _block(w, 2 * w, (1, 2, 2)), _block(2 * w, 4 * w, (2, 2, 2)),
            _block(4 * w, 4 * w, (1, 1, 1)),
        )
        t_out = (frames - 1) // 2 + 1
        # Pool space only (mean: what is there; max: where the object is) and keep time in order,
        # so a trajectory (a bounce, an orbit) is not averaged away.
        self.embed = nn.Sequential(nn.Linear(2 * 4 * w * t_out, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_classes, self.frames = num_classes, frames

    def features(self, video: Tensor) -> Tensor:
        if video.shape[2] != self.frames:
            raise ValueError(f"the classifier reads {self.frames}-frame clips, got {video.shape[2]} frames")
        diff = torch.cat([torch.zeros_like(video[:, :, :1]), video[:, :, 1:] - video[:, :, :-1]], dim=2)
        h = self.body(torch.cat([video, diff], dim=1))  # (B, 4w, T', H', W')
        pooled = torch.cat([h.mean(dim=(3, 4)), h.amax(dim=(3, 4))], dim=1)  # (B, 8w, T')
        return self.embed(pooled.flatten(1))  # (B, feature_dim)

    def forward(self, video: Tensor) -> Tensor:
        return self.head(self.features(video))


def _augment(video: Tensor, g: torch.Generator) -> Tensor:
    """Random horizontal / vertical flips: they keep every class (a mirrored slide still slides)."""
    b = video.shape[0]
    for dim in (3, 4):
        flip = torch.rand(b, generator=g) < 0.5
        video = torch.where(flip[:, None, None, None, None], video.flip(dim), video)
    return video


def train_classifier(
    videos: Tensor, labels: Tensor, num_classes: int, cfg: ClassifierConfig | None = None, progress: bool = False
) -> MotionClassifier:
    """Train on `videos` (N, 3, T, H, W) in [-1, 1] with `labels` (N,); deterministic from cfg.seed."""
    cfg = cfg or ClassifierConfig()
    if videos.ndim != 5 or videos.shape[1] != 3 or labels.shape != (videos.shape[0],):
        raise ValueError(f"videos must be (N, 3, T, H, W) with labels (N,), got {tuple(videos.shape)} / {tuple(labels.shape)}")
    with torch.enable_grad():  # callers may sit inside torch.no_grad() (sampling code)
        return _train(videos, labels, num_classes, cfg, progress)


def _train(videos: Tensor, labels: Tensor, num_classes: int, cfg: ClassifierConfig, progress: bool) -> MotionClassifier:
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    clf = MotionClassifier(num_classes, cfg.width, frames=videos.shape[2])
    opt = torch.optim.AdamW(clf.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    clf.train()
    for _ in tqdm(range(cfg.steps), desc="motion classifier", disable=not progress, leave=False):
        idx = torch.randint(0, len(videos), (min(cfg.batch_size, len(videos)),), generator=g)
        loss = F.cross_entropy(clf(_augment(videos[idx], g)), labels[idx].long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return clf.eval().requires_grad_(False)


@torch.no_grad()
def classify(clf: MotionClassifier, videos: Tensor, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """(predicted labels (N,), features (N, F)) of `videos` (N, 3, T, H, W) in [-1, 1]."""
    preds, feats = [], []
    for lo in range(0, len(videos), batch_size):
        f = clf.features(videos[lo:lo + batch_size].float())
        feats.append(f)
        preds.append(clf.head(f).argmax(dim=1))
    return torch.cat(preds), torch.cat(feats)


def class_accuracy(pred: Tensor, labels: Tensor, num_classes: int) -> dict:
    """{"accuracy", "per_class" (list, NaN where a class has no clip), "confusion" (rows: true, cols: predicted)}."""
    pred, labels = pred.long().cpu(), labels.long().cpu()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    conf.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    n = conf.sum(dim=1)
    per_class = [float(conf[k, k] / n[k]) if n[k] else math.nan for k in range(num_classes)]
    return {"accuracy": float((pred == labels).float().mean()), "per_class": per_class, "confusion": conf.tolist()}


def feature_frechet(real: Tensor | np.ndarray, fake: Tensor | np.ndarray) -> float:
    """Fréchet distance between two sets of classifier features (N, F), as FVD does with I3D logits."""
    a, b = (np.asarray(x.cpu() if isinstance(x, Tensor) else x, dtype=np.float64) for x in (real, fake))
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def write_confusion_png(confusion, class_names, path, title: str = "") -> None:
    """The confusion matrix (rows: asked-for class, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(confusion, dtype=np.float64)
    rates = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(class_names), 0.8 + 0.5 * len(class_names)))
    ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if conf[i, j]:
                ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("asked for")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def reconstruct(vae: nn.Module, videos: Tensor, batch_size: int = 32) -> Tensor:
    """The autoencoder's reconstructions of `videos` (N, 3, T, H, W), clamped to [-1, 1], on the CPU."""
    device = next(vae.parameters()).device
    outs = [vae.decode(vae.encode(videos[i:i + batch_size].to(device))).float().clamp(-1, 1).cpu()
            for i in range(0, len(videos), batch_size)]
    return torch.cat(outs)


def cache_dir() -> Path:
    """`$WALT_CACHE/motion_classifier`, default `~/.cache/walt/motion_classifier`."""
    return Path(os.environ.get("WALT_CACHE") or Path.home() / ".cache" / "walt") / "motion_classifier"


def classifier_for(
    vae: nn.Module | None,
    clips: Callable[[int], tuple[Tensor, Tensor]],
    num_classes: int,
    data_key: dict,
    cfg: ClassifierConfig | None = None,
    folder: str | Path | None = None,
    progress: bool = False,
) -> tuple[MotionClassifier, dict]:
    """The motion classifier for this autoencoder and dataset: loaded from the cache or trained.

    `clips(n)` returns n training clips (n, 3, T, H, W) in [-1, 1] and their labels; the classifier
    learns from their reconstructions through `vae`, or from the clips themselves when `vae` is
    None. The cache key is the autoencoder's weights hash, `data_key` (what `clips` draws:
    dataset, size, restriction) and `cfg`, so a retrained autoencoder or other clips never reuse a
    stale classifier. Returns (classifier, info) with info["cached"] and info["seconds"].
    """
    import time

    from walt.checkpoint import load_checkpoint, save_checkpoint
    from walt.config import config_to_dict
    from walt.data.latent_dataset import vae_fingerprint

    cfg = cfg or ClassifierConfig()
    key = {"vae": vae_fingerprint(vae) if vae is not None else "real clips", "data": data_key, "config": dataclasses.asdict(cfg), "classes": num_classes}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = Path(folder or cache_dir()) / f"{digest}.safetensors"
    t0 = time.perf_counter()
    if path.is_file():
        state = load_checkpoint(path)
        if state.get("kind") == CHECKPOINT_KIND and state.get("digest") == digest:
            clf = MotionClassifier(num_classes, cfg.width, frames=int(state["frames"]))
            clf.load_state_dict(state["model"])
            return clf.eval().requires_grad_(False), {"cached": True, "seconds": time.perf_counter() - t0, "path": str(path)}
    videos, labels = clips(cfg.train_clips)
    clf = train_classifier(reconstruct(vae, videos) if vae is not None else videos, labels, num_classes, cfg,
                           progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"kind": CHECKPOINT_KIND, "digest": digest, "key": json.dumps(key, default=str), "frames": videos.shape[2], "config": config_to_dict(cfg),
                           "model": clf.state_dict()})
    return clf, {"cached": False, "seconds": time.perf_counter() - t0, "path": str(path)}


def score_clips(clf: MotionClassifier, names: list[str], generated: Tensor, asked: Tensor, real: Tensor,
                labels: Tensor, vae: nn.Module) -> dict:
    """The class score of `generated` (N, 3, T, H, W) asked for classes `asked` (N,), with its references.

    `real` / `labels`: held-out clips no network (nor the classifier) saw; their reconstructions
    through `vae` are the ceiling. Returns {"class_accuracy": {...}, "feature_fd": {...}}.
    """
    recon = reconstruct(vae, real)
    (p_real, f_real), (p_rec, f_rec) = classify(clf, real), classify(clf, recon)
    p_gen, f_gen = classify(clf, generated)
    gen = class_accuracy(p_gen, asked, len(names))
    rec, rl = class_accuracy(p_rec, labels, len(names)), class_accuracy(p_real, labels, len(names))
    return {
        "class_accuracy": {
            "generated": gen["accuracy"], "reconstructed": rec["accuracy"], "real": rl["accuracy"],
            "per_class": dict(zip(names, gen["per_class"])), "per_class_reconstructed": dict(zip(names, rec["per_class"])),
            "confusion": gen["confusion"], "chance": 1 / len(names), "generated_clips": len(p_gen),
            "heldout_clips": len(real),
        },
        "feature_fd": {"generated_vs_real": feature_frechet(f_real, f_gen),
                       "reconstructed_vs_real": feature_frechet(f_real, f_rec), "clips": [len(f_real), len(f_gen)]},
    }
