"""CausalVAE memory layouts: channels-last 3D (NDHWC) computes what contiguous (NCDHW) computes,
keeps every activation channels-last, and the broadcast adaptive GroupNorm equals the materialised one.
"""

from __future__ import annotations

import pytest
import torch
from einops import repeat

from walt.autoencoder import CausalVAE
from walt.autoencoder.conv_blocks import AdaptiveGroupNorm, frame_group_norm, latent_to_frames

CL = torch.channels_last_3d


def _pair(**overrides) -> tuple[CausalVAE, CausalVAE]:
    """The same tiny VAE twice, the second with channels-last weights; non-zero adaptive-norm projections."""
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny", **overrides).eval()
    for m in vae.modules():
        if isinstance(m, AdaptiveGroupNorm):
            torch.nn.init.normal_(m.proj.weight, std=0.3)
            torch.nn.init.normal_(m.proj.bias, std=0.1)
    twin = CausalVAE(vae.config).eval()
    twin.load_state_dict(vae.state_dict())
    return vae, twin.to(memory_format=CL)


def _video(frames=9, size=32, batch=2):
    return torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("layout", ["late", "early"])
def test_channels_last_encodes_and_decodes_like_contiguous(layout):
    vae, cl = _pair(temporal_downsampling=layout)
    x = _video()
    with torch.no_grad():
        z, z_cl = vae.encode(x), cl.encode(x)
        assert z_cl.stride() == z.stride()  # callers get NCDHW whatever the layout inside
        torch.testing.assert_close(z_cl, z, rtol=1e-4, atol=1e-5)
        y, y_cl = vae.decode(z), cl.decode(z)
        assert y_cl.is_contiguous()
        torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cl.decode(z, chunk_frames=1), y, rtol=1e-4, atol=1e-5)  # streamed


def test_channels_last_training_gradients_match():
    vae, cl = _pair(kl=False)
    x = _video(frames=5)
    grads = []
    for net in (vae.train(), cl.train()):
        recon, _, _ = net(x, sample_posterior=False)
        (recon - x).square().mean().backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-3, atol=1e-6)


def test_activations_stay_channels_last():
    """Batch 2: fp32 oneDNN convolutions (which keep NDHWC) also for these tiny sizes; torch's own
    small-input fallback for one clip computes in NCDHW."""
    _, cl = _pair()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=CL)))
             for m in cl.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size != (1, 1, 1)]
    with torch.no_grad():
        cl.decode(cl.encode(_video(batch=2)))
    for h in hooks:
        h.remove()
    assert seen and all(seen), f"{seen.count(False)} of {len(seen)} convolutions saw a non-channels-last input"


@pytest.mark.parametrize("grad", [False, True])
def test_adaptive_group_norm_broadcast_equals_the_materialised_scale(grad):
    torch.manual_seed(0)
    norm = AdaptiveGroupNorm(8, 4, max_groups=4, time_ratio=4)
    torch.nn.init.normal_(norm.proj.weight, std=0.3)
    x, z = torch.randn(2, 8, 9, 16, 12), torch.randn(2, 4, 3, 4, 3)  # r_h = r_w = 4
    with torch.set_grad_enabled(grad):
        scale, shift = norm.proj(z).chunk(2, dim=1)
        full = repeat(latent_to_frames(torch.cat([scale, shift], 1), 4, True), "b c t h w -> b c t (h a) (w e)", a=4, e=4)
        scale, shift = full.chunk(2, dim=1)
        reference = frame_group_norm(x, 4) * (1 + scale) + shift
        assert torch.equal(norm(x, z, first=True), reference)
