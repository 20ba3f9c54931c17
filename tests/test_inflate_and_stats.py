"""Image -> video inflation (exact on 1-frame inputs and static videos) and latent statistics."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from walt.autoencoder import (
    CausalVAE,
    LatentStats,
    image_config,
    inflate_image_to_video,
    measure_latent_stats,
    preset_config,
)
from walt.autoencoder.conv_blocks import AdaptiveGroupNorm
from walt.autoencoder.latent_stats import LatentStatsAccumulator


def image_vae(video_cfg, kernel_t: int = 1, seed: int = 0) -> CausalVAE:
    """A random image model (temporal_factor=1) with non-zero adaptive-norm projections."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(image_config(video_cfg), temporal_kernel_size=kernel_t)
    vae = CausalVAE(cfg).eval()
    for m in vae.modules():
        if isinstance(m, AdaptiveGroupNorm):
            torch.nn.init.normal_(m.proj.weight, std=0.3)
    return vae


@pytest.mark.parametrize("kernel_t", [1, 3])
@pytest.mark.parametrize("overrides", [
    {},                                      # f_s 8, f_t 4: every transition spatial
    {"spatial_factor": 2},                   # temporal-only transitions: identity-initialised layers
    {"temporal_factor": 8, "kl": False},
    {"causal": False},                       # centre-slice inflation
])
def test_inflated_model_reproduces_image_model(kernel_t, overrides):
    video_cfg = preset_config("tiny", **overrides)
    img = image_vae(video_cfg, kernel_t)
    vid = inflate_image_to_video(img, video_cfg).eval()
    assert vid.config == video_cfg
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(2, 3, 1, 16, 16, generator=g) * 2 - 1
    static = frame.expand(-1, -1, 1 + 2 * video_cfg.temporal_factor, -1, -1)
    with torch.no_grad():
        z_img = img.encode(frame)
        y_img = img.decode(z_img)
        # A 1-frame input: identical to the image model.
        torch.testing.assert_close(vid.encode(frame), z_img, atol=1e-5, rtol=0)
        torch.testing.assert_close(vid.decode(z_img), y_img, atol=1e-5, rtol=0)
        # A static video: every latent frame is the image latent, every output frame the image output.
        z_vid = vid.encode(static)
        assert z_vid.shape[2] == 3
        torch.testing.assert_close(z_vid, z_img.expand_as(z_vid), atol=1e-5, rtol=0)
        y_vid = vid.decode(z_vid)
        torch.testing.assert_close(y_vid, y_img.expand_as(y_vid), atol=1e-5, rtol=0)


def test_inflated_model_is_a_trainable_video_model():
    video_cfg = preset_config("tiny")
    vid = inflate_image_to_video(image_vae(video_cfg).state_dict(), video_cfg)  # from a state_dict
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vid.encode(x)
        assert z.shape == (1, 4, 3, 2, 2)
        # At initialisation each kernel sees only the current frame, so the two stride-2 temporal
        # convs read frame 4j for latent j: frame 4 moves latent 1 only, frame 2 nothing yet.
        x4, x2 = x.clone(), x.clone()
        x4[:, :, 4] += 0.5
        x2[:, :, 2] += 0.5
        z4 = vid.encode(x4)
        assert not torch.allclose(z4[:, :, 1], z[:, :, 1])
        assert torch.equal(z4[:, :, 0], z[:, :, 0]) and torch.equal(z4[:, :, 2], z[:, :, 2])
        assert torch.equal(vid.encode(x2), z)
    # Causal inflation: only the last temporal slice of a kernel is non-zero ...
    w = vid.encoder.conv_in.weight
    assert w[:, :, :-1].abs().sum() == 0 and w[:, :, -1].abs().sum() > 0
    # ... but the zero slices get gradients, so video training learns to mix frames.
    recon, _, _ = vid(x, sample_posterior=False)
    recon.square().mean().backward()
    assert w.grad[:, :, :-1].abs().sum() > 0


def test_inflation_rejects_mismatched_models():
    video_cfg = preset_config("tiny")
    with pytest.raises(ValueError, match="temporal_factor=1"):
        inflate_image_to_video(CausalVAE(video_cfg), video_cfg)
    with pytest.raises(ValueError, match="latent_channels"):
        inflate_image_to_video(image_vae(video_cfg), preset_config("tiny", latent_channels=8))
    with pytest.raises(ValueError, match="base_channels"):
        inflate_image_to_video(image_vae(preset_config("tiny", base_channels=16)), video_cfg)


# ---- latent statistics -----------------------------------------------------------------------
def _latent_batches(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1, 1, 1)
    shift = torch.tensor([0.0, -1.0, 4.0, 100.0]).view(1, 4, 1, 1, 1)
    return [torch.randn(2, 4, 1 + i % 3, 4, 4, generator=g) * scale + shift for i in range(n)]


def test_latent_stats_match_the_whole_data_in_float64():
    batches = _latent_batches()
    stats = LatentStats.from_latents(iter(batches))  # a one-pass iterator is enough
    flat = torch.cat([b.double().transpose(0, 1).reshape(4, -1) for b in batches], dim=1)
    torch.testing.assert_close(stats.mean, flat.mean(1), atol=1e-12, rtol=0)
    torch.testing.assert_close(stats.std, flat.std(1, correction=0), atol=1e-12, rtol=0)
    assert stats.count == flat.shape[1] and stats.mean.dtype == torch.float64
    # Normalised latents have zero mean / unit std per channel; denormalize inverts it.
    z = batches[0]
    zn = stats.normalize(z)
    assert zn.dtype == z.dtype and zn.shape == z.shape
    normalised_all = torch.cat([stats.normalize(b).transpose(0, 1).reshape(4, -1) for b in batches], 1)
    torch.testing.assert_close(normalised_all.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised_all.std(1, correction=0), torch.ones(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(stats.denormalize(zn), z, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="latents must be"):
        stats.normalize(torch.zeros(1, 3, 2, 2))


def test_latent_stats_dict_and_checkpoint_round_trip(tmp_path):
    stats = LatentStats.from_latents(_latent_batches())
    again = LatentStats.from_dict(stats.to_dict())
    assert torch.equal(again.mean, stats.mean) and torch.equal(again.std, stats.std)
    vae = CausalVAE.from_preset("tiny")
    vae.save(tmp_path / "vae.safetensors", latent_stats=stats.to_dict())
    _, extra = CausalVAE.load(tmp_path / "vae.safetensors", with_extra=True)
    loaded = LatentStats.from_dict(extra["latent_stats"])
    assert torch.equal(loaded.mean, stats.mean) and loaded.count == stats.count
    with pytest.raises(ValueError, match="mean, std"):
        LatentStats.from_dict({"mean": [0.0]})
    with pytest.raises(ValueError, match="positive"):
        LatentStats(mean=[0.0, 0.0], std=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least 2"):
        LatentStatsAccumulator().finalize()


def test_measure_latent_stats_encodes_batches():
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny").train()
    g = torch.Generator().manual_seed(1)
    videos = [torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1 for _ in range(3)]
    stats = measure_latent_stats(vae, [(v, 0) for v in videos], max_batches=2)
    assert vae.training  # mode restored
    with torch.no_grad():
        expected = LatentStats.from_latents(vae.encode(v) for v in videos[:2])
    torch.testing.assert_close(stats.mean, expected.mean)
    torch.testing.assert_close(stats.std, expected.std)
    assert stats.count == 2 * (2 * 2 * 2)  # max_batches respected: 2 clips x (2 latent frames x 2x2) per channel
