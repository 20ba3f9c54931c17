"""Tests for walt.denoiser: the W.A.L.T window-attention transformer (tiny configs, CPU, seconds)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from walt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from walt.config import ConfigError
from walt.denoiser import (
    WALT,
    WALTBlock,
    WALTConfig,
    WindowAttention,
    WindowCrossAttention,
    window_partition,
    window_reverse,
)
from walt.denoiser.embeddings import PatchEmbed, PositionEmbedding, RelativePositionBias, patchify, unpatchify

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


def test_position_embedding_is_spatial_plus_temporal_and_an_image_takes_temporal_0():
    pe = randomize(PositionEmbedding((5, 4, 6), 8))  # non-square grid: catches an h / w swap
    spatial = pe.spatial.reshape(4, 6, 8)  # row (h * W + w)
    image = pe(1)
    assert image.shape == (1, 4, 6, 8)
    torch.testing.assert_close(image[0], pe.temporal[0] + spatial, rtol=0, atol=0)
    video = pe(3)
    for k in range(3):
        torch.testing.assert_close(video[k], pe.temporal[k] + spatial, rtol=0, atol=0)
    # In the network: the first block receives patch embedding + temporal[0] + spatial for an image.
    net = randomize(tiny())
    seen = {}
    h1 = net.x_embedder.register_forward_hook(lambda m, a, out: seen.update(embed=out))
    h2 = net.blocks[0].register_forward_pre_hook(lambda m, a: seen.update(block_in=a[0]))
    x, t = inputs(frames=1)
    net(x, t)
    h1.remove()
    h2.remove()
    table = net.pos_embed.temporal[0] + rearrange(net.pos_embed.spatial, "(h w) d -> h w d", h=H, w=W)
    torch.testing.assert_close(seen["block_in"] - seen["embed"], table.expand_as(seen["embed"]))


def test_patchify_p2_is_a_per_frame_strided_conv_and_unpatchify_inverts_it():
    emb = randomize(PatchEmbed(3, 16, 2))
    x = torch.randn(2, 3, 4, 6, 8, generator=torch.Generator().manual_seed(0))  # (B, C, T, H, W)
    weight = rearrange(emb.proj.weight, "d (p1 p2 c) -> d c p1 p2", p1=2, p2=2)  # the patch layout
    ref = F.conv2d(rearrange(x, "b c t h w -> (b t) c h w"), weight, emb.proj.bias, stride=2)
    ref = rearrange(ref, "(b t) d h w -> b t h w d", b=2)  # (B, T, H/2, W/2, D)
    torch.testing.assert_close(emb(x), ref, atol=1e-5, rtol=1e-5)
    # No temporal mixing: changing frame 2 changes frame 2's tokens only.
    x2 = x.clone()
    x2[:, :, 2] += torch.randn_like(x2[:, :, 2])
    changed = (emb(x2) - emb(x)).abs().sum(dim=(0, 2, 3, 4))  # per frame
    assert changed[2] > 0 and changed[[0, 1, 3]].eq(0).all()
    # unpatchify (the network's output layout) inverts patchify exactly.
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 4, 3, 4, 2 * 2 * 3)
    assert torch.equal(unpatchify(tokens, 2), x)
    # The network with p = 2 maps each 2x2 output patch from one token: the output pixels of
    # token (0, 0) of frame 0 are the only ones a single-block network changes when that
    # token's value changes through its own input patch.
    net = randomize(tiny(depth=1, patch_size=2, spatial_window=(1, 4, 4), self_conditioning=False))
    net.blocks[0].attn.proj.weight.data.zero_()  # attention off: the block mixes no tokens
    net.blocks[0].attn.proj.bias.data.zero_()
    xin, tt = inputs(batch=1)
    xin2 = xin.clone()
    xin2[0, :, 0, :2, :2] += 1.0  # one input patch
    diff = (net(xin2, tt) - net(xin, tt)).abs().sum(dim=(0, 1))  # (T, H, W)
    assert diff[0, :2, :2].min() > 0 and diff.sum() == diff[0, :2, :2].sum()


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


def load_window_weights_into_full(net_full: WALT, net_window: WALT) -> None:
    """Copy a window network's weights into its `attention="full"` twin.

    The only parameters whose shapes differ are the spatial layers' relative-bias tables. A full
    layer sizes its table for the whole (T, H, W) grid: (2T-1)(2H-1)(2W-1) rows indexed by
    (dt, dh, dw); a spatial window (1, H, W) has the (2H-1)(2W-1) rows of dt = 0, which are the
    full table's slice at dt = 0 (row block T-1 after the shift). An image (T = 1) only ever
    reads that slice, so with it copied both networks compute the same function on images.
    """
    t = net_full.config.token_grid[0]
    full_state = net_full.state_dict()
    state = dict(net_window.state_dict())
    for key, value in state.items():
        if full_state[key].shape != value.shape:
            assert key.endswith("rel_pos.table"), key
            table = full_state[key].clone().view(2 * t - 1, -1, value.shape[-1])  # (dt, dh*dw, heads)
            table[t - 1] = value
            state[key] = table.view_as(full_state[key])
    net_full.load_state_dict(state)


@pytest.mark.parametrize("rel_pos_bias", [True, False])
def test_window_equals_full_attention_when_the_window_covers_everything(rel_pos_bias):
    # Module level: a window covering the grid is full attention (bias included).
    torch.manual_seed(0)
    attn = randomize(WindowAttention(16, 2, (5, 8, 8), rel_pos_bias=rel_pos_bias))
    x = torch.randn(1, 5, 8, 8, 16)
    torch.testing.assert_close(attn(x), naive_window_attention(attn, x, (5, 8, 8)), atol=1e-5, rtol=1e-4)
    # Network level: spatial windows cover a frame, ST windows the whole clip; for an image both
    # kinds of layer then are full attention, so the two networks agree (relative bias too).
    net_w = randomize(tiny(rel_pos_bias=rel_pos_bias, spatiotemporal_window=(5, 8, 8)))
    net_f = randomize(tiny(rel_pos_bias=rel_pos_bias, attention="full"), scale=0.2)
    x, t = inputs(frames=1)
    assert not torch.allclose(net_f(x, t), net_w(x, t))  # different weights: the check below can fail
    load_window_weights_into_full(net_f, net_w)
    torch.testing.assert_close(net_f(x, t), net_w(x, t), atol=1e-5, rtol=1e-5)
    # For a video the spatial layers differ (they never mix frames): the outputs must differ.
    x, t = inputs()
    assert not torch.allclose(net_f(x, t), net_w(x, t))


def test_paper_default_windows_clamp_to_a_small_latent():
    """The paper's windows (1x16x16 spatial, 5x8x8 spatiotemporal) on a 3x4x4 latent become 1x4x4 / 3x4x4."""
    defaults = WALTConfig()
    assert (defaults.spatial_window, defaults.spatiotemporal_window) == ((1, 16, 16), (5, 8, 8))
    small = dict(input_size=(3, 4, 4), spatial_window=defaults.spatial_window,
                 spatiotemporal_window=defaults.spatiotemporal_window)
    net = randomize(tiny(**small))
    assert [b.attn.window for b in net.blocks] == [(1, 4, 4), (3, 4, 4)] * 2
    # The clamped network is the one built with those windows given explicitly (same weights).
    explicit = tiny(input_size=(3, 4, 4), spatial_window=(1, 4, 4), spatiotemporal_window=(3, 4, 4))
    explicit.load_state_dict(net.state_dict())
    g = torch.Generator().manual_seed(3)
    for frames in (1, 2, 3):  # 2 frames: the 3x4x4 window clamps again, to 2x4x4
        x = torch.randn(2, C, frames, 4, 4, generator=g)
        t = torch.tensor([10, 900])
        out = net(x, t, y=torch.tensor([1, 2]))
        assert out.shape == x.shape and torch.isfinite(out).all()
        torch.testing.assert_close(explicit(x, t, y=torch.tensor([1, 2])), out)


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


def reference_cross_attention(attn: WindowCrossAttention, x, text, text_mask, window):
    """By hand, one window at a time: keys / values = kv(concat(window tokens, kept text tokens))."""
    b, t, h, w, d = x.shape
    heads, wt, wh, ww = attn.num_heads, *window
    out = torch.empty_like(x)
    for i in range(b):
        kept = text[i][text_mask[i]] if text is not None else x.new_zeros(0, d)  # (L_i, D)
        for t0 in range(0, t, wt):
            for h0 in range(0, h, wh):
                for w0 in range(0, w, ww):
                    win = x[i, t0 : t0 + wt, h0 : h0 + wh, w0 : w0 + ww].reshape(-1, d)  # (N, D)
                    q = attn.q(win).view(-1, heads, d // heads).transpose(0, 1)  # (heads, N, hd)
                    k, v = attn.kv(torch.cat([win, kept])).chunk(2, dim=-1)  # (N + L_i, D) each
                    k = k.view(-1, heads, d // heads).transpose(0, 1)
                    v = v.view(-1, heads, d // heads).transpose(0, 1)
                    q, k = attn.q_norm(q), attn.k_norm(k)
                    p = (q @ k.transpose(-1, -2) / math.sqrt(d // heads)).softmax(-1)  # (heads, N, N + L_i)
                    o = attn.proj((p @ v).transpose(0, 1).reshape(-1, d))  # (N, D)
                    out[i, t0 : t0 + wt, h0 : h0 + wh, w0 : w0 + ww] = o.view(wt, wh, ww, d)
    return out


def test_cross_attention_keys_values_are_the_window_tokens_and_the_text_tokens():
    """W.A.L.T §3.3: K/V = concat(query-window tokens, text tokens); a text-only K/V would fail here."""
    torch.manual_seed(0)
    attn = randomize(WindowCrossAttention(16, 2, (1, 4, 4)))
    x = torch.randn(2, 2, 8, 8, 16)  # (B, T, H, W, D): 8 windows per sample
    text = torch.randn(2, 3, 16)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = attn(x, text, mask)
    torch.testing.assert_close(out, reference_cross_attention(attn, x, text, mask, (1, 4, 4)), atol=1e-5, rtol=1e-4)
    # Unconditional (no text): the window attends to itself only, which an all-False mask equals.
    none = attn(x, None, None)
    torch.testing.assert_close(none, reference_cross_attention(attn, x, None, None, (1, 4, 4)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attn(x, text, torch.zeros_like(mask)), none, atol=1e-6, rtol=1e-5)
    # A spatiotemporal (2, 4, 4) window: the queries of both frames share the keys / values.
    attn_st = randomize(WindowCrossAttention(16, 2, (2, 4, 4)))
    torch.testing.assert_close(
        attn_st(x, text, mask), reference_cross_attention(attn_st, x, text, mask, (2, 4, 4)), atol=1e-5, rtol=1e-4
    )


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


# --- import rule -----------------------------------------------------------------------------

_IMPORT_PROBE = """
import json, sys
import walt.denoiser
from walt.denoiser import WALT, get_preset
after_import = sorted(m for m in sys.modules if m == "walt" or m.startswith("walt."))
WALT.from_preset("tiny")
WALT.from_preset("t2v-base-tiny")
for name in ("t2v-base", "t2v-base-9x16", "sr1", "sr2"):
    get_preset(name), get_preset(name + "-tiny")
after_presets = sorted(m for m in sys.modules if m == "walt" or m.startswith("walt."))
print(json.dumps({"import": after_import, "presets": after_presets}))
"""


def test_denoiser_imports_no_diffusion_pipeline_or_training_code():
    """`walt.denoiser` is plain PyTorch: importing it, and building any preset (the text-to-video
    ones included), loads no walt.diffusion / walt.pipeline / walt.train."""
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    forbidden = ("walt.diffusion", "walt.pipeline", "walt.train")
    for stage, modules in loaded.items():
        bad = [m for m in modules if m.startswith(forbidden)]
        assert not bad, f"after {stage}: {bad}"
    # The cascade presets live beside the others: neither the import nor a cascade preset loads walt.cascade.
    assert not [m for m in loaded["import"] if m.startswith("walt.cascade")]
    assert not [m for m in loaded["presets"] if m.startswith("walt.cascade")]
    assert "walt.denoiser.transformer" in loaded["import"]


def test_mlp_gelu_variants_share_weights_and_differ_slightly():
    """`mlp_gelu="erf"` swaps only the MLP's activation: the same state dict loads, the outputs differ
    by the tanh approximation's error (small, not zero), and an unknown name is a ConfigError."""
    torch.manual_seed(0)
    exact = tiny(mlp_gelu="erf")
    for p in exact.parameters():  # zero-initialised output layers would hide the activation
        torch.nn.init.normal_(p, std=0.2)
    approx = tiny()
    approx.load_state_dict(exact.state_dict())
    assert isinstance(exact.blocks[0].mlp.act, torch.nn.GELU) and exact.blocks[0].mlp.act.approximate == "none"
    x, t = inputs()
    a, b = exact(x, t), approx(x, t)
    diff = (a - b).abs().max().item()
    assert 0 < diff < 0.05 * a.abs().max().item()
    with pytest.raises(ConfigError, match="mlp_gelu"):
        tiny(mlp_gelu="relu")


def test_class_tokens_are_a_second_label_route_read_by_attention():
    """class_tokens=K adds a (num_classes + 1, K, D) table: each label's K tokens are keys/values of
    every attention layer. Changing one label's tokens changes only that label's output; without the
    option there is no table; it needs a class-conditional network."""
    net = randomize(tiny(class_tokens=3))
    assert tuple(net.class_token_table.shape) == (11, 3, 64)
    assert tiny().class_token_table is None
    x, t = inputs()
    y = torch.tensor([3, 5])
    before = net(x, t, y=y)
    with torch.no_grad():
        net.class_token_table[3].add_(1.0)
    after = net(x, t, y=y)
    assert not torch.allclose(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])
    with torch.no_grad():  # a null-class call (y=None) reads the null row
        net.class_token_table[net.null_class].add_(1.0)
    torch.testing.assert_close(net(x, t), net(x, t, y=torch.full((B,), net.null_class)))
    net(x, t, y=y).sum().backward()
    assert net.class_token_table.grad[3].abs().sum() > 0 and net.class_token_table.grad[0].abs().sum() == 0
    with pytest.raises(ConfigError, match="class_tokens"):
        tiny(num_classes=0, class_tokens=2)


def test_window_attention_extra_tokens_are_keys_and_values_only():
    """WindowAttention(x, extra): each window's queries attend to its own tokens plus the extra ones,
    with no relative bias towards the extra tokens; the output keeps x's shape."""
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, (1, 2, 2), qk_norm="none", rel_pos_bias=False).eval()
    x = torch.randn(1, 1, 2, 4, 16)  # two (1, 2, 2) windows
    extra = torch.randn(1, 3, 16)
    out = attn(x, extra)
    assert out.shape == x.shape
    q, k, v = attn.qkv(x.reshape(1, 8, 16)).chunk(3, dim=-1)
    _, ke, ve = attn.qkv(extra).chunk(3, dim=-1)
    heads = lambda z: z.reshape(z.shape[0], -1, 2, 8).transpose(1, 2)  # noqa: E731
    for win, cols in ((0, [0, 1, 4, 5]), (1, [2, 3, 6, 7])):  # token order: (h, w) row-major over 2 x 4
        kk = torch.cat([k[:, cols], ke], dim=1)
        vv = torch.cat([v[:, cols], ve], dim=1)
        ref = F.scaled_dot_product_attention(heads(q[:, cols]), heads(kk), heads(vv))
        ref = attn.proj(ref.transpose(1, 2).reshape(1, 4, 16))
        torch.testing.assert_close(out.reshape(1, 8, 16)[:, cols], ref, atol=1e-5, rtol=1e-5)
