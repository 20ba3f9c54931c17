"""Tests for walt.denoiser: the W.A.L.T window-attention transformer (tiny configs, CPU, seconds)."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

from walt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from walt.config import ConfigError
from walt.denoiser import WALT, WALTConfig, WALTBlock, WindowAttention, window_partition, window_reverse
from walt.denoiser.embeddings import RelativePositionBias

B, C, T, H, W = 2, 4, 5, 8, 8


def tiny(**overrides) -> WALT:
    torch.manual_seed(0)
    return WALT.from_preset("tiny", **overrides).eval()


def randomize(net: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """DiT init zeroes the gates and the head (output == 0); perturb every weight to wire-check paths."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


def inputs(frames: int = T, batch: int = B, channels: int = C):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, channels, frames, H, W, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_output_shape_video_and_image(frames):
    net = randomize(tiny())
    x, t = inputs(frames)
    out = net(x, t, y=torch.tensor([0, 3]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_patch_size_2_and_float_or_scalar_timesteps():
    net = randomize(tiny(patch_size=2, spatial_window=(1, 4, 4), spatiotemporal_window=(5, 2, 2)))
    x, t = inputs()
    out_int = net(x, t)
    assert out_int.shape == x.shape
    torch.testing.assert_close(net(x, t.float()), out_int)
    torch.testing.assert_close(net(x[:1], 500), net(x[:1], torch.tensor([500.0])))


def test_initial_prediction_is_zero():
    """DiT init: zero AdaLN outputs and zero head -> the untrained network predicts exactly 0."""
    net = tiny()
    x, t = inputs()
    assert torch.equal(net(x, t), torch.zeros_like(x))


def test_builds_on_meta_device():
    with torch.device("meta"):
        net = WALT.from_preset("tiny")
    assert all(p.is_meta for p in net.parameters())


# --- windows ---------------------------------------------------------------------------------


def test_window_partition_round_trip_and_layout():
    x = torch.randn(2, 4, 6, 8, 3)
    window = (2, 3, 4)
    windows = window_partition(x, window)
    assert windows.shape == (2 * 2 * 2 * 2, 2 * 3 * 4, 3)
    assert torch.equal(window_reverse(windows, window, (4, 6, 8)), x)
    # The second window of sample 0 is the block t in [0,2), h in [0,3), w in [4,8).
    expected = rearrange(x[0, 0:2, 0:3, 4:8], "t h w d -> (t h w) d")
    assert torch.equal(windows[1], expected)


def naive_window_attention(attn: WindowAttention, x: torch.Tensor, window) -> torch.Tensor:
    """Reference: full attention over all tokens with a same-window mask and a gathered bias."""
    b, t, h, w, d = x.shape
    heads = attn.num_heads
    tokens = rearrange(x, "b t h w d -> b (t h w) d")
    q, k, v = rearrange(attn.qkv(tokens), "b l (three h d) -> three b h l d", three=3, h=heads)
    q, k = attn.q_norm(q), attn.k_norm(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)  # (B, heads, L, L)
    coords = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    coords = coords.reshape(-1, 3)  # (L, 3)
    win_id = coords // torch.tensor(window)
    same = (win_id[:, None] == win_id[None]).all(-1)  # (L, L)
    if attn.rel_pos is not None:
        table_window = attn.rel_pos.window
        rel = coords[:, None] - coords[None] + torch.tensor(table_window) - 1  # (L, L, 3)
        sizes = [2 * n - 1 for n in table_window]
        idx = (rel[..., 0] * sizes[1] + rel[..., 1]) * sizes[2] + rel[..., 2]
        idx = idx.clamp(0, attn.rel_pos.table.shape[0] - 1)  # pairs in different windows are masked anyway
        scores = scores + rearrange(attn.rel_pos.table[idx], "l m h -> h l m")
    scores = scores.masked_fill(~same, float("-inf"))
    out = rearrange(scores.softmax(-1) @ v, "b h l d -> b l (h d)")
    return rearrange(attn.proj(out), "b (t h w) d -> b t h w d", t=t, h=h, w=w)


@pytest.mark.parametrize("qk_norm", ["layernorm", "rmsnorm", "none"])
@pytest.mark.parametrize("rel_pos_bias", [True, False])
def test_window_attention_matches_masked_full_attention(qk_norm, rel_pos_bias):
    torch.manual_seed(0)
    attn = randomize(WindowAttention(16, 2, (5, 4, 4), qk_norm=qk_norm, rel_pos_bias=rel_pos_bias))
    x = torch.randn(2, 5, 8, 8, 16)
    torch.testing.assert_close(attn(x), naive_window_attention(attn, x, (5, 4, 4)), atol=1e-5, rtol=1e-4)
    # A 3-frame clip clamps the window to (3, 4, 4) and reuses a subset of the bias table.
    x3 = x[:, :3]
    torch.testing.assert_close(attn(x3), naive_window_attention(attn, x3, (3, 4, 4)), atol=1e-5, rtol=1e-4)


def test_clamped_window_bias_is_a_subset_of_the_full_window_bias():
    rpb = randomize(RelativePositionBias((5, 4, 4), num_heads=3))
    full = rpb((5, 4, 4))  # (heads, 80, 80); tokens ordered t, h, w
    assert full.shape == (3, 80, 80)
    torch.testing.assert_close(rpb((1, 4, 4)), full[:, :16, :16])
    torch.testing.assert_close(rpb((2, 4, 4)), full[:, :32, :32])


def test_window_equals_full_attention_when_the_window_covers_everything():
    # Module level, with relative bias: a window covering the grid is full attention.
    torch.manual_seed(0)
    attn = randomize(WindowAttention(16, 2, (5, 8, 8)))
    x = torch.randn(1, 5, 8, 8, 16)
    torch.testing.assert_close(attn(x), naive_window_attention(attn, x, (5, 8, 8)), atol=1e-5, rtol=1e-4)
    # Network level: spatial windows cover a frame, ST windows the whole clip; for an image both
    # kinds of layer then match "full" exactly (same weights, bias-free so state dicts line up).
    net_w = randomize(tiny(rel_pos_bias=False, spatiotemporal_window=(5, 8, 8)))
    net_f = tiny(rel_pos_bias=False, attention="full")
    net_f.load_state_dict(net_w.state_dict())
    x, t = inputs(frames=1)
    torch.testing.assert_close(net_f(x, t), net_w(x, t))
    # For a video the spatial layers differ (they never mix frames): the outputs must differ.
    x, t = inputs()
    assert not torch.allclose(net_f(x, t), net_w(x, t))


def test_full_attention_layers_see_every_token():
    net = randomize(tiny(attention="full", self_conditioning=False))
    x, t = inputs(batch=1)
    x.requires_grad_(True)
    out = net(x, t)
    out[0, :, 0, 0, 0].sum().backward()  # one output token of frame 0
    assert (x.grad.abs().sum(dim=(0, 1, 3, 4)) > 0).all()  # depends on every frame


def test_spatial_layer_does_not_mix_frames():
    net = randomize(tiny(depth=1, self_conditioning=False))  # one spatial block only
    x, t = inputs(batch=1)
    x.requires_grad_(True)
    net(x, t)[0, :, 0].sum().backward()  # outputs of frame 0
    per_frame = x.grad.abs().sum(dim=(0, 1, 3, 4))
    assert per_frame[0] > 0 and (per_frame[1:] == 0).all()


def test_image_is_identity_in_spatiotemporal_layers():
    torch.manual_seed(0)
    block = randomize(WALTBlock(32, 2, "spatiotemporal", (5, 4, 4), adaln_lora_rank=0))
    x = torch.randn(2, 1, 8, 8, 32)
    c = torch.randn(2, 32)
    assert torch.equal(block(x, c), x)  # bitwise
    video = torch.randn(2, 5, 8, 8, 32)
    assert not torch.equal(block(video, c), video)
    # Whole network: the image output does not depend on any spatiotemporal block's weights.
    net = randomize(tiny())
    x_img, t = inputs(frames=1)
    x_vid, _ = inputs()
    before_img, before_vid = net(x_img, t), net(x_vid, t)
    with torch.no_grad():
        for p in net.blocks[1].parameters():
            p.add_(1.0)
    assert torch.equal(net(x_img, t), before_img)
    assert not torch.allclose(net(x_vid, t), before_vid)


def test_joint_image_video_batches_train_one_network():
    net = randomize(tiny()).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for frames in (1, 5):
        x, t = inputs(frames)
        opt.zero_grad()
        net(x, t, y=torch.tensor([1, net.null_class])).square().mean().backward()
        st_grad = sum(p.grad.abs().sum() for p in net.blocks[1].parameters() if p.grad is not None)
        assert (st_grad > 0) == (frames > 1)  # images never touch spatiotemporal layers
        assert net.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
        opt.step()


def test_gradient_checkpointing_matches():
    net = randomize(tiny()).train()
    x, t = inputs()
    net(x, t).square().mean().backward()
    ref = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.set_grad_checkpointing(True)
    net(x, t).square().mean().backward()
    for g_ref, p in zip(ref, net.parameters()):
        torch.testing.assert_close(p.grad, g_ref)


# --- AdaLN-LoRA and parameter counts ---------------------------------------------------------


@pytest.mark.parametrize("rank", [0, 2, 16])
def test_adaln_lora_parameter_count(rank):
    depth, d = 4, 64
    net = tiny(adaln_lora_rank=rank)
    got = sum(
        p.numel()
        for name, p in net.named_parameters()
        if name.startswith("adaLN_base") or (name.startswith("blocks.") and ".adaLN_" in name)
    )
    if rank == 0:
        expected = depth * (6 * d * d + 6 * d)  # a SiLU + Linear(D, 6D) per layer
    else:
        expected = (6 * d * d + 6 * d) + (depth - 1) * (rank * d + 6 * d * rank)  # shared MLP + W_b W_a
    assert got == expected
    # Nothing else changes with the rank.
    assert n_params(net) - got == n_params(tiny(adaln_lora_rank=1)) - (6 * d * d + 6 * d) - (depth - 1) * 7 * d


def test_adaln_lora_layers_differ_after_training_signal():
    net = randomize(tiny(adaln_lora_rank=2))
    c = torch.randn(2, 64)
    base = net.adaLN_base(c)
    assert torch.equal(net.blocks[0].modulation(c, base), base)  # layer 1 uses the shared MLP
    assert not torch.allclose(net.blocks[1].modulation(c, base), base)  # others add W_b W_a c


@pytest.mark.parametrize(
    "preset, overrides, paper",
    [("L", {}, 313e6), ("XL", {}, 460e6), ("L", {"adaln_lora_rank": 0}, 459e6)],
)
def test_preset_parameter_counts_match_the_paper(preset, overrides, paper):
    with torch.device("meta"):
        net = WALT.from_preset(preset, **overrides)
    assert abs(n_params(net) - paper) / paper < 0.05, n_params(net)
    assert net.config.in_channels == 8 and net.config.patch_size == 1


# --- conditioning ----------------------------------------------------------------------------


def test_null_class_and_label_errors():
    net = randomize(tiny())
    x, t = inputs()
    assert net.null_class == 10
    null = torch.full((B,), net.null_class)
    torch.testing.assert_close(net(x, t), net(x, t, y=null))  # y=None is the null class
    assert not torch.allclose(net(x, t, y=torch.tensor([3, 3])), net(x, t, y=null))
    with pytest.raises(ValueError, match="labels"):
        net(x, t, y=torch.tensor([0, 11]))
    unconditional = randomize(tiny(num_classes=0))
    torch.testing.assert_close(unconditional(x, t, y=torch.tensor([1, 2])), unconditional(x, t))


def test_self_conditioning_changes_output():
    net = randomize(tiny(self_conditioning=True))
    x, t = inputs()
    torch.testing.assert_close(net(x, t, self_cond=torch.zeros_like(x)), net(x, t))
    assert not torch.allclose(net(x, t, self_cond=torch.randn_like(x)), net(x, t))
    with pytest.raises(ValueError, match="self_conditioning"):
        randomize(tiny(self_conditioning=False))(x, t, self_cond=x)


def test_frame_conditioning_changes_output_and_mask_gates_frames():
    net = randomize(tiny(frame_conditioning=True))
    x, t = inputs()
    ctx = torch.randn_like(x)
    mask = torch.tensor([[1, 1, 0, 0, 0]] * B)
    out = net(x, t, cond_frames=ctx, cond_mask=mask)
    assert not torch.allclose(out, net(x, t))
    torch.testing.assert_close(out, net(x, t, cond_frames=ctx, cond_mask=mask[:, None, :, None, None]))
    # Context in masked-out frames is invisible.
    ctx2 = ctx.clone()
    ctx2[:, :, 2:] = torch.randn_like(ctx2[:, :, 2:])
    torch.testing.assert_close(net(x, t, cond_frames=ctx2, cond_mask=mask), out)
    with pytest.raises(ValueError, match="cond_mask"):
        net(x, t, cond_frames=ctx)
    with pytest.raises(ValueError, match="frame_conditioning"):
        randomize(tiny())(x, t, cond_frames=ctx, cond_mask=mask)


@pytest.mark.parametrize("mode", ["spatial", "all"])
def test_text_cross_attention(mode):
    net = randomize(tiny(text_dim=12, cross_attention=mode))
    kinds = [b.kind for b in net.blocks if b.cross_attn is not None]
    assert kinds == (["spatial", "spatial"] if mode == "spatial" else ["spatial", "spatiotemporal"] * 2)
    x, t = inputs()
    text = torch.randn(B, 6, 12)
    mask = torch.tensor([[True] * 4 + [False] * 2] * B)
    out = net(x, t, text=text, text_mask=mask)
    assert not torch.allclose(out, net(x, t))  # text changes the output
    assert not torch.allclose(out, net(x, t, text=torch.randn_like(text), text_mask=mask))
    # Padded tokens are ignored; an all-False mask equals no text.
    text2 = text.clone()
    text2[:, 4:] = torch.randn_like(text2[:, 4:])
    torch.testing.assert_close(net(x, t, text=text2, text_mask=mask), out)
    torch.testing.assert_close(net(x, t, text=text, text_mask=torch.zeros_like(mask)), net(x, t))
    # Images work too (cross-attention lives in the spatial layers).
    assert net(x[:, :, :1], t, text=text, text_mask=mask).shape == (B, C, 1, H, W)
    assert len([b for b in tiny(text_dim=12, cross_attention="none").blocks if b.cross_attn is not None]) == 0


def test_superresolution_conditioning():
    net = randomize(tiny(lowres_channels=4))
    x, t = inputs()
    lowres = torch.randn_like(x)
    out = net(x, t, lowres=lowres, noise_level=torch.tensor([0, 0]))
    assert not torch.allclose(out, net(x, t, lowres=torch.randn_like(x), noise_level=torch.tensor([0, 0])))
    assert not torch.allclose(out, net(x, t, lowres=lowres, noise_level=torch.tensor([250, 250])))
    with pytest.raises(ValueError, match="lowres"):
        net(x, t)


# --- errors ----------------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors():
    net = tiny()
    x, t = inputs()
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(B, 3, T, H, W), t)
    with pytest.raises(ValueError, match="frames"):
        net(torch.randn(B, C, 6, H, W), t)
    with pytest.raises(ValueError, match="built for"):
        net(torch.randn(B, C, T, 16, 16), t)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        net(torch.randn(C, T, H, W), t)
    with pytest.raises(ValueError, match="t must be"):
        net(x, torch.zeros(3))
    with pytest.raises(ValueError, match="text_dim"):
        net(x, t, text=torch.randn(B, 3, 8))


def test_window_divisibility_errors():
    with pytest.raises(ConfigError, match="not divisible by the window"):
        WALT.from_preset("tiny", spatiotemporal_window=(2, 4, 4))  # 5 frames
    with pytest.raises(ConfigError, match="not divisible by the window"):
        WALT.from_preset("tiny", spatial_window=(1, 3, 3))
    with pytest.raises(ConfigError, match="spatial_window must span one frame"):
        WALT.from_preset("tiny", spatial_window=(2, 8, 8))
    with pytest.raises(ConfigError, match="unknown key"):
        WALT.from_preset("tiny", windw=(1, 8, 8))
    with pytest.raises(ValueError, match="unknown WALT preset"):
        WALT.from_preset("huge")
    # Valid for the 4-frame maximum, not for a 3-frame clip: run-time error naming the window.
    net = tiny(input_size=(4, 8, 8), spatiotemporal_window=(2, 4, 4))
    assert net(*inputs(frames=4)).shape == (B, C, 4, H, W)
    with pytest.raises(ValueError, match=r"not divisible by the window \(2, 4, 4\)"):
        net(*inputs(frames=3))


# --- checkpoints -----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    net = randomize(tiny(text_dim=8, frame_conditioning=True))
    path = tmp_path / "walt.safetensors"
    net.save(path, step=7)
    loaded = WALT.load(path).eval()
    assert loaded.config == net.config
    x, t = inputs()
    text = torch.randn(B, 3, 8)
    torch.testing.assert_close(loaded(x, t, text=text), net(x, t, text=text), rtol=0, atol=0)
    assert load_checkpoint(path)["step"] == 7


def test_load_mismatch_errors(tmp_path):
    from walt.config import config_to_dict

    net = tiny()
    cfg = config_to_dict(net.config)
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, {"kind": "walt.denoiser.WALT", "config": {**cfg, "depth": 2}, "model": net.state_dict()})
    with pytest.raises(CheckpointError, match="do not match"):
        WALT.load(bad)
    save_checkpoint(bad, {"kind": "walt.denoiser.WALT", "config": {**cfg, "hidden_size": 32}, "model": net.state_dict()})
    with pytest.raises(CheckpointError, match="do not match"):
        WALT.load(bad)  # same parameter names, different shapes
    vae = tmp_path / "vae.safetensors"
    save_checkpoint(vae, {"kind": "walt.autoencoder.CausalVAE", "config": {}, "model": {}})
    with pytest.raises(CheckpointError, match="not a WALT"):
        WALT.load(vae)
    typo = tmp_path / "typo.safetensors"
    save_checkpoint(typo, {"kind": "walt.denoiser.WALT", "config": {**cfg, "dept": 2}, "model": net.state_dict()})
    with pytest.raises(ConfigError, match="dept"):
        WALT.load(typo)
    with pytest.raises(ValueError, match="reserved"):
        net.save(tmp_path / "x.safetensors", model=1)


def test_config_round_trips_through_dict():
    from walt.config import config_from_dict, config_to_dict

    cfg = WALT.from_preset("tiny", text_dim=16, cross_attention="all").config
    assert config_from_dict(WALTConfig, config_to_dict(cfg)) == cfg
