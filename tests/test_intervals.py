"""95% bootstrap intervals (`walt.eval.intervals`): what they contain, pairing, the clip-count search."""

from __future__ import annotations

import numpy as np
import pytest

from walt.eval.intervals import (
    clips_for_relative_width,
    established,
    fd_interval,
    mean_interval,
    paired_fd_difference,
    paired_mean_difference,
)


def test_mean_interval_brackets_the_mean_and_narrows_with_clips():
    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 2, 32), rng.normal(10, 2, 512)
    a, b = mean_interval(small), mean_interval(large)
    assert a["lo"] < a["value"] < a["hi"] and a["n"] == 32 and a["value"] == pytest.approx(small.mean())
    assert (b["hi"] - b["lo"]) < 0.5 * (a["hi"] - a["lo"])
    assert mean_interval(small) == a  # seeded: the same interval every time
    with pytest.raises(ValueError, match=">= 2"):
        mean_interval([1.0])


def test_fd_interval_is_centred_on_the_estimate():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(64, 8)), rng.normal(0.5, 1, size=(48, 8))
    iv = fd_interval(real, fake, reps=50)
    assert iv["lo"] <= iv["value"] <= iv["hi"] and iv["n"] == [64, 48] and iv["value"] > 0


def test_paired_differences_cancel_common_noise():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(64, 6))
    a = rng.normal(size=(64, 6))
    same = paired_fd_difference(real, a, a.copy(), reps=50)
    assert same["value"] == 0 and same["lo"] == same["hi"] == 0 and not established(same)
    far = paired_fd_difference(real, a + 3.0, a, reps=50)
    assert far["lo"] > 0 and established(far)
    x = rng.normal(size=100)
    d = paired_mean_difference(x + 1.0, x)
    assert d["value"] == pytest.approx(1.0) and established(d)
    with pytest.raises(ValueError, match="same clip count"):
        paired_fd_difference(real, a, a[:10])
    with pytest.raises(ValueError, match="same shape"):
        paired_mean_difference(x, x[:5])


def test_established_needs_the_interval_to_exclude_zero():
    assert established({"lo": 0.1, "hi": 2.0}) and established({"lo": -2.0, "hi": -0.1})
    assert not established({"lo": -0.1, "hi": 2.0})


def test_clips_for_relative_width_picks_the_first_count_that_is_narrow_enough():
    widths = {32: 0.4, 64: 0.2, 128: 0.09, 256: 0.05}
    res = clips_for_relative_width(lambda n: {"value": 1.0, "lo": 1 - widths[n] / 2, "hi": 1 + widths[n] / 2, "n": n},
                                   [32, 64, 128, 256])
    assert res["chosen"] == 128 and res["relative_width"] == pytest.approx([0.4, 0.2, 0.09, 0.05])
    none = clips_for_relative_width(lambda n: {"value": 1.0, "lo": 0.0, "hi": 2.0, "n": n}, [32, 64])
    assert none["chosen"] is None


def test_few_clip_fd_matches_the_fvd_formula():
    from walt.eval.fvd import fvd
    from walt.eval.intervals import _fd

    rng = np.random.default_rng(3)
    for n, d in ((96, 400), (5, 40), (60, 16)):  # fewer clips than dimensions (the SVD path), and more
        a, b = rng.normal(size=(n, d)), rng.normal(0.2, 1.3, size=(n + 3, d))
        assert _fd(a, b) == pytest.approx(fvd(a, b), rel=1e-6)
