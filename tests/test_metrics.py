"""PSNR / SSIM against independent references (hand computation, scikit-image)."""

import math

import numpy as np
import pytest
import torch

from walt.eval.metrics import psnr, ssim


def _pair(seed=0, shape=(2, 3, 3, 24, 20), noise=0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 2 - 1
    y = (x + noise * torch.randn(shape, generator=g)).clamp(-1, 1)
    return x, y


def test_psnr_matches_hand_computation_per_frame():
    x, y = _pair()
    mean, frames = psnr(x, y, per_frame=True)
    assert frames.shape == (2, 3)
    xn, yn = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    expected = np.zeros((2, 3))
    for b in range(2):
        for t in range(3):
            mse = np.mean((xn[b, :, t] - yn[b, :, t]) ** 2)
            expected[b, t] = 10 * math.log10(4.0 / mse)
    np.testing.assert_allclose(frames.numpy(), expected, rtol=1e-10)
    assert float(mean) == pytest.approx(expected.mean(), rel=1e-12)
    # Per-frame averaging differs from PSNR of the pooled MSE when frames differ in quality.
    y2 = y.clone()
    y2[:, :, 0] = x[:, :, 0] + 0.01
    pooled = 10 * math.log10(4.0 / float(((x - y2) ** 2).mean()))
    assert float(psnr(x, y2)) > pooled + 1.0


def test_psnr_data_range_and_identity():
    x, y = _pair()
    # Rescaling to [0, 1] with data_range=1 gives the same PSNR.
    assert float(psnr((x + 1) / 2, (y + 1) / 2, data_range=1.0)) == pytest.approx(float(psnr(x, y)), rel=1e-6)  # float32 rescaling
    assert math.isinf(float(psnr(x, x)))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[:, :, :2])


@pytest.mark.parametrize("noise", [0.05, 0.5])
def test_ssim_matches_scikit_image(noise):
    skm = pytest.importorskip("skimage.metrics")
    x, y = _pair(seed=1, noise=noise)
    mean, frames = ssim(x, y, per_frame=True)
    xn, yn = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    expected = np.zeros((2, 3))
    for b in range(2):
        for t in range(3):
            expected[b, t] = skm.structural_similarity(
                xn[b, :, t], yn[b, :, t], data_range=2.0, channel_axis=0,
                gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            )
    np.testing.assert_allclose(frames.numpy(), expected, atol=1e-7)
    assert float(mean) == pytest.approx(expected.mean(), abs=1e-7)


def test_ssim_basic_properties():
    x, y = _pair(seed=2)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-9)
    assert float(ssim(x, y)) < 0.99
    assert float(ssim(x, y)) == pytest.approx(float(ssim(y, x)), abs=1e-12)
    img = ssim(x[:, :, 0], y[:, :, 0])  # (B, C, H, W) images work as 1-frame videos
    assert float(img) == pytest.approx(float(ssim(x[:, :, :1], y[:, :, :1])), abs=1e-12)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :8, :8], y[..., :8, :8])
