"""CausalVAE: shapes, strict causality, streaming == whole clip, errors, configs, checkpoints.

Tiny configs on 32x32 inputs; every test runs in well under a second on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from walt.autoencoder import CausalVAE, CausalVAEConfig, fit_frames, preset_config
from walt.autoencoder.conv_blocks import AdaptiveGroupNorm
from walt.checkpoint import CheckpointError, save_checkpoint
from walt.config import ConfigError, config_from_dict, config_to_dict, dump_config, load_config


def make_vae(seed: int = 0, **overrides) -> CausalVAE:
    """Tiny VAE in eval mode with NON-zero adaptive-norm projections (they start at zero, which
    would make the decoder's dependence on z through the norms invisible to the tests)."""
    torch.manual_seed(seed)
    vae = CausalVAE.from_preset("tiny", **overrides).eval()
    for m in vae.modules():
        if isinstance(m, AdaptiveGroupNorm):
            torch.nn.init.normal_(m.proj.weight, std=0.3)
            torch.nn.init.normal_(m.proj.bias, std=0.1)
    return vae


def video(frames: int = 17, size: int = 16, batch: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1


# ---- shapes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kl", [True, False])
def test_tiny_shapes_and_forward(kl):
    vae = make_vae(kl=kl)
    x = video(batch=2)
    with torch.no_grad():
        mean, logvar = vae.encode_posterior(x)
        z = vae.encode(x)
        recon, m2, lv2 = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(0))
        y = vae.decode(z)
    assert z.shape == (2, 4, 5, 2, 2)
    assert y.shape == x.shape and recon.shape == x.shape
    assert torch.equal(z, mean) and torch.equal(m2, mean)
    if kl:
        assert logvar.shape == mean.shape and lv2.shape == mean.shape
        # Sampling changes the decoder input; the same generator seed reproduces it.
        with torch.no_grad():
            again = vae(x, generator=torch.Generator().manual_seed(0))[0]
            no_sample = vae(x, sample_posterior=False)[0]
        assert torch.equal(again, recon)
        assert not torch.allclose(no_sample, recon)
        torch.testing.assert_close(no_sample, y)
    else:
        assert logvar is None and lv2 is None
        torch.testing.assert_close(recon, y)


@pytest.mark.parametrize(
    "name, shape, latent",
    [("tiny", (1, 3, 17, 64, 64), (1, 4, 5, 8, 8)),
     ("ucf101", (1, 3, 17, 128, 128), (1, 8, 5, 16, 16)),
     ("imagenet", (1, 3, 1, 256, 256), (1, 8, 1, 32, 32))],
)
def test_preset_shapes_on_meta(name, shape, latent):
    # Built and run on the meta device: full-size shapes without allocating activations.
    with torch.device("meta"):
        vae = CausalVAE.from_preset(name)
    x = torch.empty(shape, device="meta")
    z = vae.encode(x)
    assert tuple(z.shape) == latent
    assert tuple(vae.decode(z).shape) == shape
    assert vae.latent_shape(*shape[2:]) == latent[1:]


# Parameter counts printed in README.md ("Model sizes"); the KL posterior doubles conv_out's channels.
PRESET_PARAMS = {"tiny": 278_915, "ucf101": 370_811_795, "imagenet": 342_919_443}


@pytest.mark.parametrize("name", sorted(PRESET_PARAMS))
def test_preset_parameter_counts_match_readme(name):
    with torch.device("meta"):  # full-size presets without allocating their weights
        vae = CausalVAE.from_preset(name)
    assert sum(p.numel() for p in vae.parameters()) == PRESET_PARAMS[name]
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if readme.is_file():
        assert f"{PRESET_PARAMS[name]:,}" in readme.read_text(), f"README.md does not state {name}'s count"


@pytest.mark.parametrize("f_s, f_t", [(2, 1), (4, 2), (16, 8), (8, 8), (2, 4)])
def test_factor_variants(f_s, f_t):
    vae = make_vae(spatial_factor=f_s, temporal_factor=f_t, latent_channels=8)
    x = video(frames=1 + 2 * f_t, size=16, batch=1)
    with torch.no_grad():
        z = vae.encode(x)
        assert z.shape == (1, 8, 3, 16 // f_s, 16 // f_s)
        assert vae.decode(z).shape == x.shape
        # Streaming with one latent frame per chunk also matches here.
        zc = vae.encode(x, chunk_frames=[1] + [f_t] * 2)
        yc = vae.decode(z, chunk_frames=[1, 1, 1])
        torch.testing.assert_close(zc, z, atol=1e-5, rtol=0)
        torch.testing.assert_close(yc, vae.decode(z), atol=1e-5, rtol=0)


def test_early_temporal_downsampling_moves_time_to_the_first_transitions():
    late, early = preset_config("tiny", temporal_factor=2), preset_config("tiny", temporal_factor=2,
                                                                          temporal_downsampling="early")
    assert late.transition_strides == ((1, 2), (1, 2), (2, 2))  # f_s = 8: 3 transitions, time in the last
    assert early.transition_strides == ((2, 2), (1, 2), (1, 2))
    x = video(frames=9, size=16, batch=1)
    vae = make_vae(temporal_factor=2, temporal_downsampling="early")
    with torch.no_grad():
        z = vae.encode(x)
        assert z.shape == (1, 4, 5, 2, 2) and vae.decode(z).shape == x.shape
        x2 = x.clone()
        x2[:, :, 3] += 0.5  # frame 3 belongs to latent frame 2 (1 + 2k frames -> 1 + k)
        z2 = vae.encode(x2)
        assert torch.equal(z2[:, :, :2], z[:, :, :2]) and not torch.allclose(z2[:, :, 2], z[:, :, 2])
    with pytest.raises(ValueError, match="temporal_downsampling"):
        preset_config("tiny", temporal_downsampling="middle")


def test_channel_multipliers_are_extended_for_large_factors():
    cfg = preset_config("tiny", spatial_factor=16)  # 4 transitions from 3 multipliers
    assert cfg.num_levels == 5
    assert cfg.level_channels == (8, 16, 16, 16, 16)
    assert cfg.transition_strides == ((1, 2), (1, 2), (2, 2), (2, 2))  # temporal in the LAST ones


# ---- causality -------------------------------------------------------------------------------
def test_encoder_is_strictly_causal():
    vae = make_vae()
    x = video(batch=1)
    with torch.no_grad():
        z = vae.encode(x)
        for j in [0, 1, 4, 5, 8, 13, 16]:
            x2 = x.clone()
            x2[:, :, j] += 0.5
            z2 = vae.encode(x2)
            first_affected = (j + 3) // 4  # latent frame that frame j belongs to
            assert torch.equal(z2[:, :, :first_affected], z[:, :, :first_affected]), j
            assert not torch.allclose(z2[:, :, first_affected], z[:, :, first_affected]), j


def test_decoder_is_strictly_causal():
    vae = make_vae()
    with torch.no_grad():
        z = vae.encode(video(batch=1))
        y = vae.decode(z)
        for j in range(5):
            z2 = z.clone()
            z2[:, :, j] += 0.5
            y2 = vae.decode(z2)
            first_frame = 0 if j == 0 else 4 * (j - 1) + 1  # first output frame of latent frame j
            assert torch.equal(y2[:, :, :first_frame], y[:, :, :first_frame]), j
            assert not torch.allclose(y2[:, :, first_frame], y[:, :, first_frame]), j


def test_image_is_the_first_frame_of_a_video():
    vae = make_vae()
    x = video()
    with torch.no_grad():
        z = vae.encode(x)
        z_img = vae.encode(x[:, :, :1])
        assert z_img.shape == (1, 4, 1, 2, 2)
        torch.testing.assert_close(z_img, z[:, :, :1], atol=1e-5, rtol=0)
        torch.testing.assert_close(vae.decode(z[:, :, :1]), vae.decode(z)[:, :, :1], atol=1e-5, rtol=0)


def test_static_video_encodes_to_static_latent():
    # Replicate padding (causal_conv.py): every latent frame of a still video is the image latent.
    vae = make_vae()
    frame = video(frames=1)
    with torch.no_grad():
        z_img = vae.encode(frame)
        z = vae.encode(frame.expand(-1, -1, 13, -1, -1))
    torch.testing.assert_close(z, z_img.expand_as(z), atol=1e-5, rtol=0)


# ---- streaming ---------------------------------------------------------------------------------
def compositions(n: int) -> list[list[int]]:
    """Every ordered split of n into positive parts (2^(n-1) of them)."""
    if n == 0:
        return [[]]
    return [[first] + rest for first in range(1, n + 1) for rest in compositions(n - first)]


def encode_plans(k: int, f: int = 4) -> list[list[int]]:
    """Every valid encoder chunk plan of 1 + f*k frames: a first chunk of 1 + f*a, then multiples of f."""
    return [[1 + f * a] + [f * c for c in rest] for a in range(k + 1) for rest in compositions(k - a)]


ENCODE_PLANS = encode_plans(4)  # 17 frames: 16 plans
DECODE_PLANS = compositions(5)  # 5 latent frames: 16 plans


@pytest.fixture(scope="module")
def streaming_reference():
    """The tiny model (kl and not), a 17x16x16 clip and its whole-clip posteriors and decodes."""
    out = {}
    x = video()
    for kl in (True, False):
        vae = make_vae(kl=kl)
        with torch.no_grad():
            moments = vae.encode_posterior(x)
            out[kl] = (vae, moments, vae.decode(moments[0]))
    return x, out


def test_plan_enumeration_is_exhaustive():
    assert len(ENCODE_PLANS) == len({tuple(p) for p in ENCODE_PLANS}) == 16
    assert len(DECODE_PLANS) == 16 and all(sum(p) == 5 for p in DECODE_PLANS)
    assert [1, 16] in ENCODE_PLANS and [17] in ENCODE_PLANS and [1, 4, 4, 4, 4] in ENCODE_PLANS


@pytest.mark.parametrize("kl", [True, False])
@pytest.mark.parametrize("plan", ENCODE_PLANS, ids=lambda p: "-".join(map(str, p)))
def test_chunked_encode_equals_whole(streaming_reference, plan, kl):
    x, ref = streaming_reference
    vae, whole, _ = ref[kl]
    with torch.no_grad():
        chunked = vae.encode_posterior(x, chunk_frames=plan)
    for a, b in zip(whole, chunked):
        if a is None:
            assert b is None
        else:
            assert (b - a).abs().max().item() <= 1e-5


@pytest.mark.parametrize("plan", [4, 8, 12, 16, 32])
def test_chunked_encode_int_plans(streaming_reference, plan):
    x, ref = streaming_reference
    vae, (mean, _), _ = ref[True]
    with torch.no_grad():
        assert (vae.encode(x, chunk_frames=plan) - mean).abs().max().item() <= 1e-5


@pytest.mark.parametrize("plan", DECODE_PLANS + [2, 4], ids=lambda p: "-".join(map(str, p)) if isinstance(p, list) else str(p))
def test_chunked_decode_equals_whole(streaming_reference, plan):
    _, ref = streaming_reference
    vae, (z, _), whole = ref[True]
    with torch.no_grad():
        assert (vae.decode(z, chunk_frames=plan) - whole).abs().max().item() <= 1e-5


def test_streaming_state_does_not_leak_between_calls():
    vae = make_vae()
    x, x_other = video(seed=1), video(seed=2)
    with torch.no_grad():
        z1 = vae.encode(x, chunk_frames=4)
        vae.encode(x_other, chunk_frames=[1, 16])  # a different clip in between
        z2 = vae.encode(x, chunk_frames=4)
        y1 = vae.decode(z1, chunk_frames=1)
        vae.decode(vae.encode(x_other), chunk_frames=2)
        y2 = vae.decode(z1, chunk_frames=1)
    assert torch.equal(z1, z2) and torch.equal(y1, y2)
    assert not any(hasattr(m, "_cache") for m in vae.modules())


def test_stream_cache_is_bounded():
    # Each causal conv keeps fewer than k_t frames, however many chunks went through: decode memory
    # does not grow with the clip length (only the output does).
    from walt.autoencoder.causal_conv import StreamState

    vae = make_vae()
    z = torch.randn(1, 4, 9, 2, 2)
    state = StreamState()
    sizes = []
    with torch.no_grad():
        for start, n in [(0, 1), (1, 2), (3, 2), (5, 2), (7, 2)]:
            vae.decoder(z[:, :, start:start + n], state)
            state.first = False
            assert all(t.shape[2] < 3 for t in state.tails.values())
            sizes.append(sum(t.numel() for t in state.tails.values()))
    assert sizes[1] == sizes[2] == sizes[3] == sizes[4]


def test_chunk_plan_errors():
    vae = make_vae()
    x = video()
    with pytest.raises(ValueError, match="multiple of 4"):
        vae.encode(x, chunk_frames=3)
    with pytest.raises(ValueError, match="first chunk must have 1\\+4k"):
        vae.encode(x, chunk_frames=[4, 13])
    with pytest.raises(ValueError, match="covers 13 frames but the input has 17"):
        vae.encode(x, chunk_frames=[5, 8])
    with pytest.raises(ValueError, match="positive"):
        vae.decode(torch.zeros(1, 4, 5, 4, 4), chunk_frames=0)


# ---- non-causal variant ----------------------------------------------------------------------
def test_non_causal_variant_runs_and_differs():
    causal = make_vae()
    non_causal = CausalVAE.from_preset("tiny", causal=False).eval()
    non_causal.load_state_dict(causal.state_dict())  # same weights, only the padding differs
    x = video(batch=1)
    with torch.no_grad():
        z_c, z_nc = causal.encode(x), non_causal.encode(x)
        assert z_nc.shape == z_c.shape
        assert not torch.allclose(z_c, z_nc)
        assert non_causal.decode(z_nc).shape == x.shape
        # The first latent now sees later frames.
        x2 = x.clone()
        x2[:, :, 1] += 0.5
        assert not torch.allclose(non_causal.encode(x2)[:, :, 0], z_nc[:, :, 0])
    with pytest.raises(ValueError, match="causal=False"):
        non_causal.encode(x, chunk_frames=4)


# ---- input validation -------------------------------------------------------------------------
def test_bad_frame_count_names_valid_counts():
    vae = make_vae()
    with pytest.raises(ValueError, match=r"got 16 frames; temporal_factor=4 needs 1\+4k frames, e\.g\. 13 or 17.*fit_frames"):
        vae.encode(video(frames=16))


def test_bad_shapes_give_clear_errors():
    vae = make_vae()
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        vae.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        vae.encode(torch.zeros(1, 4, 5, 32, 32))
    with pytest.raises(ValueError, match="multiples of spatial_factor=8, got 30x32"):
        vae.encode(torch.zeros(1, 3, 5, 30, 32))
    with pytest.raises(ValueError, match=r"\(B, 4, t, h, w\)"):
        vae.decode(torch.zeros(1, 8, 2, 4, 4))


@pytest.mark.parametrize("overrides, msg", [
    (dict(spatial_factor=3), "spatial_factor=3"),
    (dict(spatial_factor=32), "spatial_factor=32"),
    (dict(temporal_factor=3), "temporal_factor=3"),
    (dict(temporal_factor=16), "temporal_factor=16"),
    (dict(temporal_kernel_size=2), "must be odd"),
    (dict(temporal_kernel_size=1), "only valid for an image model"),
    (dict(latent_channels=0), "latent_channels"),
])
def test_bad_config_values(overrides, msg):
    with pytest.raises(ValueError, match=msg):
        preset_config("tiny", **overrides)


def test_fit_frames():
    x = video(frames=16, batch=1)
    cropped = fit_frames(x, 4, mode="crop")
    padded = fit_frames(x, 4, mode="pad")
    assert cropped.shape[2] == 13 and torch.equal(cropped, x[:, :, :13])
    assert padded.shape[2] == 17 and torch.equal(padded[:, :, :16], x) and torch.equal(padded[:, :, 16], x[:, :, 15])
    assert fit_frames(x[:, :, :13], 4) is not None and fit_frames(x[:, :, :13], 4).shape[2] == 13
    with pytest.raises(ValueError, match="mode"):
        fit_frames(x, 4, mode="loop")


# ---- configs and checkpoints ------------------------------------------------------------------
def test_config_round_trip(tmp_path):
    cfg = preset_config("tiny", latent_channels=16, causal=False)
    assert config_from_dict(CausalVAEConfig, config_to_dict(cfg)) == cfg
    dump_config(cfg, tmp_path / "vae.yaml")
    assert load_config(CausalVAEConfig, tmp_path / "vae.yaml") == cfg
    bad = {**config_to_dict(cfg), "latent_chanels": 8}
    with pytest.raises(ConfigError, match="latent_chanels"):
        config_from_dict(CausalVAEConfig, bad)
    with pytest.raises(ConfigError, match="bogus"):
        CausalVAE.from_preset("tiny", bogus=1)
    with pytest.raises(ValueError, match="unknown CausalVAE preset"):
        CausalVAE.from_preset("huge")


def test_checkpoint_round_trip(tmp_path):
    vae = make_vae(seed=3, latent_channels=8)
    path = tmp_path / "vae.safetensors"
    vae.save(path, step=7, latent_stats={"mean": torch.zeros(8), "std": torch.ones(8), "count": 1})
    loaded, extra = CausalVAE.load(path, with_extra=True)
    assert loaded.config == vae.config and extra["step"] == 7
    assert torch.equal(extra["latent_stats"]["std"], torch.ones(8))
    x = video(batch=1)
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), vae.encode(x))
        assert torch.equal(loaded.decode(vae.encode(x)), vae.decode(vae.encode(x)))
    with pytest.raises(ValueError, match="reserved"):
        vae.save(path, config={})


def test_checkpoint_kind_and_config_mismatch(tmp_path):
    vae = make_vae()
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, {"kind": "walt_denoiser", "config": {}, "model": {}})
    with pytest.raises(CheckpointError, match="not a CausalVAE"):
        CausalVAE.load(other)
    # Weights that do not fit the stored config (e.g. a hand-edited config).
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, {"kind": "causal_vae", "config": config_to_dict(preset_config("tiny", latent_channels=8)),
                          "model": vae.state_dict()})
    with pytest.raises(CheckpointError, match="do not match its config"):
        CausalVAE.load(bad)
    typo = tmp_path / "typo.safetensors"
    save_checkpoint(typo, {"kind": "causal_vae", "config": {"latent_chanels": 4}, "model": {}})
    with pytest.raises(CheckpointError, match="latent_chanels"):
        CausalVAE.load(typo)


# ---- training hooks ------------------------------------------------------------------------------
def test_grad_checkpointing_gives_the_same_gradients():
    x = video(frames=5, batch=2)
    noise = torch.randn(2, 4, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    grads = []
    for enable in (False, True):
        vae = make_vae().train()
        vae.set_grad_checkpointing(enable)
        assert vae.grad_checkpointing == enable
        recon, mean, logvar = vae(x, noise=noise)
        ((recon - x).abs().mean() + 1e-3 * (mean.square() + logvar.exp()).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in vae.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-7)
    # A streaming pass in training mode (with a causal cache) is never checkpointed and still matches.
    torch.testing.assert_close(vae.encode(x, chunk_frames=4), vae.encode(x), atol=1e-5, rtol=0)


def test_forward_with_given_noise():
    vae = make_vae()
    x = video(frames=5)
    eps = torch.randn(1, 4, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = vae(x, noise=eps)[0]
        b = vae(x, generator=torch.Generator().manual_seed(0))[0]  # the same draw
        mean, logvar = vae.encode_posterior(x)
        c = vae.decode(mean + torch.exp(0.5 * logvar) * eps)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="noise has shape"):
        vae(x, noise=eps[:, :2])
