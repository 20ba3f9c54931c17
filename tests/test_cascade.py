"""Tests of the text-to-video cascade (walt.cascade): presets, SR conditioning, SR training pairs,
cascade sampling, long-video lengths, tiled decoding. Tiny sizes, one CPU thread. The seams between
extension chunks: tests/test_cascade_seams.py; the command line: tests/test_cascade_cli.py."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange
from torch import nn

from walt.autoencoder import CausalVAE
from walt.cascade.generate import cascade_lengths, check_chain, sample_cascade
from walt.cascade.sr import SRConfig, augment_lowres, sr_loss, super_resolve, upsample_latent
from walt.cascade.stage import Stage as CascadeStage
from walt.cascade.tiling import blend_ramp, decode_video, tile_spans, tiled_decode
from walt.data.downsample import Downsampled, downsample_video
from walt.denoiser import PRESETS, WALT
from walt.denoiser.transformer_config import CASCADE_STAGES, PAPER_PARAMS
from walt.diffusion import DiffusionSchedule
from walt.pipeline import plan_length


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Small convolutions / matmuls on a shared 2-core machine: one thread is much faster than two.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def randomize(net: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Give the zero-initialised layers (AdaLN outputs, final layer, cross-attn out) random values,
    so that every input actually changes the output of an untrained network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.numel() > 1 and torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return net.eval()


# Small stages for end-to-end runs: 32x32 -> 64x64 -> 128x128 pixels, every token grid 5x4x4.
SMALL = {
    "t2v-base-tiny": dict(input_size=(5, 4, 4), spatial_window=(1, 4, 4), spatiotemporal_window=(5, 2, 2)),
    "sr1-tiny": dict(input_size=(5, 8, 8), spatial_window=(1, 4, 4), spatiotemporal_window=(5, 2, 2)),
    "sr2-tiny": dict(input_size=(5, 16, 16), spatial_window=(1, 4, 4), spatiotemporal_window=(5, 2, 2)),
}


def small_stages(names=("t2v-base-tiny", "sr1-tiny", "sr2-tiny")) -> list[CascadeStage]:
    return [CascadeStage(randomize(WALT.from_preset(n, **SMALL[n]), seed=i), name=n) for i, n in enumerate(names)]


# ------------------------------------------------------------------------------------ presets


@pytest.mark.parametrize("name", ["t2v-base", "t2v-base-9x16", "sr1", "sr2"])
def test_presets_registered_with_tiny_twins(name):
    assert name in PRESETS and f"{name}-tiny" in PRESETS
    with torch.device("meta"):
        net = WALT.from_preset(name)
    tiny = WALT.from_preset(f"{name}-tiny")
    assert (net.config.lowres_channels > 0) == (tiny.config.lowres_channels > 0) == name.startswith("sr")
    assert net.config.frame_conditioning and tiny.config.frame_conditioning
    res = CASCADE_STAGES[name].resolution
    assert tuple(net.config.input_size) == (5, res[0] // 8, res[1] // 8)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_parameter_counts(name):
    """Counted on the meta device (no memory); tolerance 5 % of the paper's number."""
    with torch.device("meta"):
        net = WALT.from_preset(name)
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.05, (name, n)


def test_sr_presets_cross_attention_everywhere_and_patch_sizes():
    with torch.device("meta"):
        sr1, sr2, base = WALT.from_preset("sr1"), WALT.from_preset("sr2"), WALT.from_preset("t2v-base")
    assert (sr1.config.patch_size, sr2.config.patch_size) == (2, 4)
    assert all(b.cross_attn is not None for b in sr1.blocks) and all(b.cross_attn is not None for b in sr2.blocks)
    assert [b.cross_attn is not None for b in base.blocks] == [b.kind == "spatial" for b in base.blocks]
    assert sr1.config.token_grid == sr2.config.token_grid == (5, 16, 28)


def test_tiny_presets_chain_and_bad_chain_is_rejected():
    names = ("t2v-base-9x16-tiny", "sr1-tiny", "sr2-tiny")
    stages = [CascadeStage(WALT.from_preset(n), name=n) for n in names]
    check_chain(stages)
    with pytest.raises(ValueError, match="cannot follow"):
        check_chain([CascadeStage(WALT.from_preset("t2v-base-tiny")), stages[1]])
    with pytest.raises(ValueError, match="must be a base model"):
        check_chain(stages[1:])


# ------------------------------------------------------------------------------------ SR conditioning


def test_upsample_nearest_is_depth_to_space_of_repeated_channels():
    z = torch.randn(2, 4, 3, 5, 7)
    up = upsample_latent(z, 2, "nearest")
    d2s = rearrange(z.repeat_interleave(4, dim=1), "b (c s1 s2) t h w -> b c t (h s1) (w s2)", s1=2, s2=2)
    assert up.shape == (2, 4, 3, 10, 14) and torch.equal(up, d2s)
    assert upsample_latent(z, 2, "bilinear").shape == (2, 4, 3, 10, 14)


def test_noise_augmentation_follows_the_schedule():
    sched = DiffusionSchedule()
    z = torch.randn(4000, 1, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    za, s = augment_lowres(z, 400, sched, g)
    a = float(sched.alpha_bar(400))
    assert s.tolist() == [400] * 4000
    # x_s = sqrt(a) z + sqrt(1-a) eps: regression slope sqrt(a), residual std sqrt(1-a).
    slope = float((za * z).mean() / (z * z).mean())
    assert abs(slope - math.sqrt(a)) < 0.03
    assert abs(float((za - slope * z).std()) - math.sqrt(1 - a)) < 0.03
    with pytest.raises(ValueError, match="noise levels"):
        augment_lowres(z[:2], 1000, sched)


def _sr_inputs(seed=0):
    net = randomize(WALT.from_preset("sr1-tiny", **SMALL["sr1-tiny"]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 5, 8, 8, generator=g)
    lowres = torch.randn(2, 4, 5, 8, 8, generator=g)
    text = torch.randn(2, 3, 384, generator=g)
    return net, x, lowres, text


def test_sr_conditioning_changes_the_output():
    net, x, lowres, text = _sr_inputs()
    t = torch.tensor([500, 500])
    with torch.no_grad():
        a = net(x, t, lowres=lowres, noise_level=torch.tensor([10, 10]), text=text)
        b = net(x, t, lowres=lowres.flip(0), noise_level=torch.tensor([10, 10]), text=text)
    assert (a - b).abs().mean() > 1e-3
    # End to end: a different low-res latent gives a different super-resolved sample.
    z_lo = torch.randn(1, 4, 5, 4, 4)
    kw = dict(steps=2, seeds=[0], text=text[:1])
    s1 = super_resolve(net, DiffusionSchedule(), z_lo, noise_level=0, **kw)
    s2 = super_resolve(net, DiffusionSchedule(), z_lo + 1.0, noise_level=0, **kw)
    assert s1.shape == (1, 4, 5, 8, 8) and (s1 - s2).abs().mean() > 1e-3


def test_noise_augmentation_level_changes_the_output():
    net, x, lowres, text = _sr_inputs()
    t = torch.tensor([500, 500])
    with torch.no_grad():
        a = net(x, t, lowres=lowres, noise_level=torch.tensor([0, 0]), text=text)
        b = net(x, t, lowres=lowres, noise_level=torch.tensor([200, 200]), text=text)
    assert (a - b).abs().mean() > 1e-3
    z_lo = torch.randn(1, 4, 5, 4, 4)
    kw = dict(steps=2, seeds=[0], text=text[:1])
    s0 = super_resolve(net, DiffusionSchedule(), z_lo, noise_level=0, **kw)
    s0b = super_resolve(net, DiffusionSchedule(), z_lo, noise_level=0, **kw)
    s2 = super_resolve(net, DiffusionSchedule(), z_lo, noise_level=300, **kw)
    assert torch.equal(s0, s0b)  # seeded: same level, same sample
    assert (s0 - s2).abs().mean() > 1e-3


def test_sr_loss_trains_the_noise_level_embedding():
    net, _, _, text = _sr_inputs()
    net.train()
    z_hi, z_lo = torch.randn(2, 4, 5, 8, 8), torch.randn(2, 4, 5, 4, 4)
    loss, stats = sr_loss(net, z_hi, z_lo, DiffusionSchedule(), sr=SRConfig(max_noise_level=250),
                          generator=torch.Generator().manual_seed(0), text=text)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= float(stats["noise_level"]) <= 250
    assert net.noise_level_embedder.mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="do not fit the SR stage"):
        sr_loss(net, z_hi, torch.randn(2, 4, 5, 8, 8), DiffusionSchedule())


# ------------------------------------------------------------------------------------ cascade


def test_cascade_shapes_through_every_tiny_stage():
    names = ("t2v-base-9x16-tiny", "sr1-tiny", "sr2-tiny")
    stages = [CascadeStage(randomize(WALT.from_preset(n), seed=i), name=n) for i, n in enumerate(names)]
    vae = CausalVAE.from_preset("tiny").eval()
    text, mask = torch.randn(1, 5, 384), torch.ones(1, 5, dtype=torch.bool)
    out = sample_cascade(stages, vae, text=text, text_mask=mask, uncond_text=torch.zeros(1, 5, 384),
                         uncond_text_mask=torch.zeros(1, 5, dtype=torch.bool), guidance_scale=2.0,
                         seeds=[0], steps=1, decode=False)
    # 128x224 -> 256x448 -> 512x896 pixels with the tiny autoencoder's f_s = 8; every token grid 5x16x28.
    assert [tuple(c[0].shape) for c in out.latents] == [(1, 4, 5, 16, 28), (1, 4, 5, 32, 56), (1, 4, 5, 64, 112)]
    assert [s.net.config.token_grid for s in stages] == [(5, 16, 28)] * 3
    assert out.video is None and out.lengths == [17]
    assert all(torch.isfinite(c[0]).all() for c in out.latents)


def test_cascade_long_video_and_image_to_video_end_to_end():
    """base -> SR-1, 29 frames (two chunks per stage), conditioned on an image; decoded."""
    stages = small_stages(("t2v-base-tiny", "sr1-tiny"))
    vae = CausalVAE.from_preset("tiny").eval()
    image = torch.rand(1, 3, 40, 50) * 2 - 1
    out = sample_cascade(stages, vae, text=torch.randn(1, 4, 384), seeds=[3], steps=2, num_frames=29, image=image)
    assert out.video.shape == (1, 3, 29, 64, 64) and out.lengths == [17, 29]
    assert [len(c) for c in out.latents] == [2, 2] and out.latents[1][1].shape == (1, 4, 5, 8, 8)
    assert out.video.abs().max() <= 1.0
    # The image is pinned as the first latent frame of every stage's first chunk.
    from walt.cascade.generate import resize_image

    for stage, chunks in zip(stages, out.latents):
        h = stage.net.config.input_size[1] * 8
        want = vae.encode(resize_image(image, (h, h)))
        assert torch.allclose(chunks[0][:, :, :1], want, atol=1e-5)


@pytest.mark.parametrize("frames,lengths", [(17, [17]), (29, [17, 29]), (41, [17, 29, 41])])
def test_long_video_length_arithmetic(frames, lengths):
    assert cascade_lengths(frames) == lengths


def test_unreachable_length_is_a_clear_error_unless_rounded_up():
    with pytest.raises(ValueError, match="not reachable"):
        cascade_lengths(30)
    assert cascade_lengths(30, round_up=True) == [17, 29, 41]


@pytest.mark.parametrize("frames,short,want", [
    (21, True, (29, [17, 29])), (41, True, (41, [17, 29, 41])), (42, False, (53, [17, 29, 41, 53])),
    (17, True, (17, [17])), (10, True, (13, [13])), (1, True, (1, [1])), (10, False, (17, [17])),
])
def test_any_length_is_planned_as_the_next_reachable_one(frames, short, want):
    """`--frames N`: generate the next reachable length (1 + 4k within a chunk, 17 + 12k beyond), crop to N."""
    assert plan_length(frames, 17, 5, 4, short_clips=short) == want
    assert want[0] >= frames


def test_bad_lengths_are_refused():
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=">= 1"):
            plan_length(bad)


def test_cascade_crops_to_any_length():
    """21 frames through base -> SR-1: two chunks per stage (17 -> 29), cropped to exactly 21."""
    stages = small_stages(("t2v-base-tiny", "sr1-tiny"))
    vae = CausalVAE.from_preset("tiny").eval()
    out = sample_cascade(stages, vae, text=torch.randn(1, 3, 384), seeds=[0], steps=1, num_frames=21)
    assert out.video.shape == (1, 3, 21, 64, 64) and out.lengths == [17, 29]
    short = sample_cascade(stages, vae, text=torch.randn(1, 3, 384), seeds=[0], steps=1, num_frames=6)
    assert short.video.shape == (1, 3, 6, 64, 64) and short.lengths == [17]


# ------------------------------------------------------------------------------------ tiling


def test_tile_spans_cover_with_overlap():
    for size, tile, ov in [(112, 32, 8), (64, 32, 8), (40, 16, 6), (10, 32, 8)]:
        spans = tile_spans(size, tile, ov)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(b - a == min(tile, size) for a, b in spans)
        assert all(p[1] - n[0] >= ov for p, n in zip(spans, spans[1:]))
    w = blend_ramp(16, True, True, pad=2, ramp=4)
    assert w[:2].sum() == 0 and w[-2:].sum() == 0 and (w[2:-2] > 0).all() and w.max() == 1


class LocalDecoder(nn.Module):
    """A decoder with a known receptive field: 3 per-frame 3x3 convs (radius 3 latent px), then
    nearest x8 upsampling in space and the causal x4 time mapping. No normalisation."""

    def __init__(self):
        super().__init__()
        self.config = type("C", (), {"spatial_factor": 8, "temporal_factor": 4})()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(8, 3, 3, padding=1))

    def decode(self, z, chunk_frames=None):
        b = z.shape[0]
        x = self.net(rearrange(z, "b c t h w -> (b t) c h w"))
        x = rearrange(x, "(b t) c h w -> b c t h w", b=b).repeat_interleave(8, 3).repeat_interleave(8, 4)
        return torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)


def test_tiled_decode_equals_untiled_for_a_local_decoder():
    """Tiles overlapping by more than the receptive field (pad >= 3 latent px): equal to 1e-5."""
    dec = LocalDecoder()
    z = torch.randn(1, 4, 2, 20, 28)
    with torch.no_grad():
        full = dec.decode(z)
        tiled = tiled_decode(dec, z, tile=12, overlap=8, pad=3)
    assert tiled.shape == full.shape == (1, 3, 5, 160, 224)
    assert (tiled - full).abs().max() < 1e-5


def test_tiled_decode_matches_the_causal_vae_closely():
    """The real decoder has a large receptive field and per-frame GroupNorm (whole-frame
    statistics), so tiling is approximate. Random tiny VAE, 16x24 latent in 16x16 tiles (8 px
    overlap): PSNR of tiled vs untiled > 30 dB (measured 33.7 dB; the error is dominated by the
    GroupNorm statistics, not the blending: pad / overlap change it by < 1 dB)."""
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny").eval()
    with torch.no_grad():
        z = torch.randn(1, 4, 2, 16, 24)
        full = vae.decode(z, chunk_frames=1)
        tiled = tiled_decode(vae, z, tile=16, overlap=8, pad=2, chunk_frames=1)
        one_tile = decode_video(vae, z, tile=32)  # tile >= latent: the plain streamed decode
    psnr = 10 * math.log10(4.0 / float(((tiled - full) ** 2).mean()))  # pixels in [-1, 1]: peak-to-peak 2
    assert psnr > 30.0, psnr
    assert torch.equal(one_tile, full.clamp(-1, 1))


def test_tiling_rejects_too_small_overlap():
    with pytest.raises(ValueError, match="overlap"):
        tiled_decode(LocalDecoder(), torch.randn(1, 4, 1, 20, 20), tile=8, overlap=4, pad=2)


# ------------------------------------------------------------------------------------ SR pairs


def test_downsampled_pairs_are_the_same_clips_box_filtered():
    """The low-res side of an SR pair = the high-res clip's pixels, area-downsampled (a 2x2 box mean)."""
    from walt.data import SyntheticVideos

    hi = SyntheticVideos(3, num_frames=5, resolution=(32, 48), seed=1)
    lo = Downsampled(hi, (16, 24))
    assert len(lo) == 3 and lo.describe()["downsampled_from"] == [32, 48] and lo.describe()["downsample_mode"] == "area"
    for i in range(3):
        a, b = hi[i], lo[i]
        assert (a["caption"], a["label"], a["index"]) == (b["caption"], b["label"], b["index"])
        box = a["video"].unflatten(2, (16, 2)).unflatten(4, (24, 2)).mean(dim=(3, 5))  # (3, T, 16, 24)
        assert b["video"].shape == (3, 5, 16, 24) and torch.allclose(b["video"], box, atol=1e-6)
    # Re-rendering at the low resolution is the same scene but not the same pixels.
    rerender = SyntheticVideos(3, num_frames=5, resolution=(16, 24), seed=1)[0]["video"]
    assert (rerender - lo[0]["video"]).abs().mean() > 1e-3
    bil = downsample_video(hi[0]["video"], (16, 24), "bilinear")
    assert bil.shape == (3, 5, 16, 24) and (bil - lo[0]["video"]).abs().mean() < 0.1
    with pytest.raises(ValueError, match="larger"):
        Downsampled(hi, (64, 64))
