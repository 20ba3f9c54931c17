"""Smoke tests of walt.bench.denoiser_speed (`benchmarks/bench_denoiser.py` wraps it): the measuring code
runs and reports sane numbers.

Timings themselves are not checked (the CI machine is shared); only that every reported quantity
is finite and positive, that FLOPs are counted (including the CPU SDPA kernel FlopCounterMode does
not know), and that full attention costs more FLOPs than window attention.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from walt.bench.denoiser_speed import (
    BenchSettings,
    bench_inference,
    build_walt,
    full_twin,
    markdown,
    run,
    walt_model_fn,
)
from walt.bench.measure import count_flops

TINY = dict(layouts=("tiny",), width=16, depth=2, heads=2, batch=1, steps=1, repeats=1, sample_steps=2,
            text_tokens=2, text_dim=8, dtype="fp32", peak_n=128)


def _positive_finite(row: dict, keys: list[str]) -> None:
    for k in keys:
        assert isinstance(row[k], (int, float)) and math.isfinite(row[k]) and row[k] > 0, (k, row[k])


def test_train_rows_and_mfu():
    result = run(BenchSettings(**TINY, latte=False), log=lambda m: None)
    assert {"machine", "settings", "matmul_peak_gflops", "train", "inference", "ratios"} <= set(result)
    rows = {r["model"]: r for r in result["train"]}
    assert set(rows) == {"walt-window", "walt-full"}
    keys = ["steps_per_s", "tokens_per_s", "gflop_per_step", "achieved_gflops", "mfu", "params"]
    for r in rows.values():
        _positive_finite(r, keys)
    # Full attention over all 320 tokens costs more than 64- / 80-token windows.
    assert rows["walt-full"]["gflop_per_step"] > rows["walt-window"]["gflop_per_step"]
    assert rows["walt-full"]["params"] >= rows["walt-window"]["params"]  # only the bias tables differ
    _positive_finite(result["ratios"], ["train_window_over_full[tiny]"])
    table = markdown(result)
    assert "walt-window" in table and "walt-full" in table and "MFU" in table


def test_walt_inference_row():
    s = BenchSettings(**TINY)
    row = bench_inference(s, build_walt(s, "tiny", text=True), walt_model_fn, "tiny")
    _positive_finite(row, ["gflop_per_forward", "forward_s", "forward_tokens_per_s", "s_per_step", "s_per_clip"])


def test_full_twin_shares_weights():
    s = BenchSettings(**TINY)
    window = build_walt(s, "tiny")
    full, not_copied = full_twin(window)
    assert full.config.attention == "full"
    w, f = window.state_dict(), full.state_dict()
    assert not_copied == sum(1 for k in f if "rel_pos" in k)  # only the window-sized bias tables
    assert all(torch.equal(w[k], f[k]) for k in f if "rel_pos" not in k)


def test_count_flops_counts_cpu_sdpa():
    b, h, n, d = 1, 2, 16, 8
    q = torch.randn(b, h, n, d)
    # QK^T and attention @ V: 2 * (2 * n * n * d) per head.
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 4 * b * h * n * n * d
    qg = q.clone().requires_grad_()
    fwd_bwd = count_flops(lambda: F.scaled_dot_product_attention(qg, qg, qg).sum().backward())
    assert fwd_bwd > 3 * 4 * b * h * n * n * d  # backward costs about 2.5x the forward


def test_settings_errors():
    with pytest.raises(ValueError, match="even"):
        BenchSettings(**{**TINY, "depth": 3})
    with pytest.raises(ValueError, match="layout"):
        BenchSettings(**{**TINY, "layouts": ("huge",)})


@pytest.mark.slow
def test_full_run_with_latte():
    result = run(BenchSettings(**TINY), log=lambda m: None)
    rows = {r["model"]: r for r in result["inference"]}
    assert set(rows) == {"walt-window+text", "walt-window", "latte"}
    for r in rows.values():
        _positive_finite(r, ["gflop_per_forward", "forward_tokens_per_s", "s_per_step", "s_per_clip"])
    # The class-conditional W.A.L.T has no text path: fewer FLOPs than the text-conditioned one.
    assert rows["walt-window"]["gflop_per_forward"] < rows["walt-window+text"]["gflop_per_forward"]
    # Latte's num_layers counts (spatial, temporal) pairs: depth 2 = 1 pair = as many blocks as W.A.L.T.
    _positive_finite(result["ratios"], ["forward_walt_over_latte[tiny]", "sampling_walt_over_latte[tiny]",
                                        "forward_walt_over_latte[tiny,class]", "sampling_walt_over_latte[tiny,class]"])
    assert "class-conditional" in markdown(result)


# --- walt.bench.measure: peak memory ---------------------------------------------------------


def test_peak_memory_cpu_sees_an_allocation_and_resets():
    from walt.bench.measure import PeakMemory, reset_peak_rss

    if not reset_peak_rss():
        pytest.skip("this OS cannot reset the peak RSS (/proc/self/clear_refs)")
    with PeakMemory("cpu") as big:
        x = torch.ones(64, 2**20)  # 256 MiB, touched
        del x
    with PeakMemory("cpu") as small:
        y = torch.ones(2**20)  # 4 MiB
        del y
    assert "reset" in big.method
    assert big.over_base_mb > 200, big.over_base_mb
    # The second block's peak is its own, not the first block's 256 MiB.
    assert small.over_base_mb < 100 and small.peak_mb < big.peak_mb - 150, (small.over_base_mb, small.peak_mb, big.peak_mb)


# --- walt.bench.vae_speed: the CogVideoX peer and streaming --------------------------------


def test_cogvideox_kwargs_follow_level_channels():
    from walt.autoencoder.causal_vae_config import preset_config
    from walt.bench.vae_speed import cogvideox_kwargs
    from walt.config import replace_config

    tiny = preset_config("tiny")  # multipliers (1, 2, 2) extended to 4 levels by f_s = 8
    assert len(tiny.channel_multipliers) == 3
    kw = cogvideox_kwargs(tiny)
    assert kw["block_out_channels"] == tiny.level_channels == (8, 16, 16, 16)
    assert cogvideox_kwargs(preset_config("ucf101"))["block_out_channels"] == (128, 256, 256, 512)
    with pytest.raises(ValueError, match="spatial_factor"):
        cogvideox_kwargs(replace_config(preset_config("ucf101"), spatial_factor=4))  # 4 levels but f_s = 4


def test_cogvideox_peer_latent_shape_equals_ours():
    pytest.importorskip("diffusers")
    from walt.bench.vae_speed import build, calls

    torch.manual_seed(0)
    walt, c = build("walt", "tiny", torch.device("cpu"))
    cog, _ = build("cogvideox", "tiny", torch.device("cpu"))
    x = torch.rand(1, 3, 17, 16, 16) * 2 - 1  # (B, 3, T, H, W)
    z = torch.randn(1, c.latent_channels, 5, 2, 2)  # (B, c, t, h, w)
    with torch.no_grad():
        (w_enc, w_dec), (c_enc, c_dec) = calls("walt", walt, x, z, None), calls("cogvideox", cog, x, z, None)
        assert tuple(w_enc().shape) == tuple(c_enc().shape) == (1, c.latent_channels, 5, 2, 2)
        assert tuple(w_dec().shape) == tuple(c_dec().shape) == (1, 3, 17, 16, 16)


def test_cold_case_counts_the_same_flops_on_the_meta_device():
    from walt.bench.vae_speed import run_case

    case = dict(model="walt", preset="tiny", overrides={"temporal_downsampling": "early"}, frames=9, size=16,
                device="cpu", repeats=1)
    for op in ("encode", "decode"):
        warm, cold = run_case({**case, "op": op}), run_case({**case, "op": op, "cold": True})
        assert warm["gflop_per_call"] == cold["gflop_per_call"] > 0 and cold["name"] == "walt"


def test_streaming_baseline_is_a_whole_clip_decode():
    from walt.bench.vae_speed import streaming

    common = dict(preset="tiny", size=16, device="cpu", repeats=1)
    res = streaming(common, long_latents=6, isolated=False, log=lambda m: None)
    assert res["short"]["frames"] == 17 and res["short"]["chunk_frames"] is None  # whole clip, not chunked
    assert res["long"]["frames"] == 25 and res["long"]["chunk_frames"] == 1
    for r in (res["short"], res["long"]):
        _positive_finite(r, ["seconds", "peak_mb"])
    assert res["ratio_over_baseline"] is None or res["ratio_over_baseline"] >= 0


# --- walt.bench.cascade_speed and walt.bench.benchmarks_md --------------------------------------------------


def test_cascade_smoke_measures_and_extrapolates(tmp_path):
    from walt.bench.cascade_speed import PAPER_STEPS, SIZES, markdown, run

    size = SIZES["smoke"]()
    r = run(size, torch.device("cpu"), log=lambda m: None)
    assert [x["stage"] for x in r["stages"]] == list(size.stages)
    for x in r["stages"]:
        _positive_finite(x, ["measured_s_per_step", "gflop_per_step", "utilisation", "peak_mb", "params"])
        assert len(x["step_s"]) == size.steps
        assert x["extrapolated_s_50_steps"] == pytest.approx(PAPER_STEPS * x["measured_s_per_step"])
    # The SR stages see the base's token count (the paper's equal token grids).
    assert len({x["tokens"] for x in r["stages"]}) == 1
    d = r["decode"]
    last = r["stages"][-1]
    assert d["latent"] == [4, size.decode_latent_frames, *(size.decode_latent_hw or last["latent"][1:])]
    assert d["frames"] == 1 + 4 * (size.decode_latent_frames - 1) and d["full_frames"] == 17
    assert d["s_full_clip_extrapolated"] and d["s_full_clip"] == pytest.approx(d["measured_s"] / d["frames"] * 17)
    assert d["resolution"] == [8 * d["latent"][2], 8 * d["latent"][3]] and d["video"][1:] == [d["frames"], *d["resolution"]]
    md = markdown(r)
    assert "measured" in md and "extrapolated" in md and "50 steps" in md and r["machine"] in md


def test_report_fragment_has_command_machine_and_tables(tmp_path):
    from walt.bench.benchmarks_md import FRAGMENT, main

    main(["start", "--out", str(tmp_path), "--command", "scripts/benchmarks.sh --size smoke", "--size", "smoke",
          "--device", "cpu"])
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "bench.md").write_text("# walt bench (tiny size, cpu)\n\n## Autoencoder\n\n| a | b |\n")
    main(["finish", "--out", str(tmp_path)])
    text = (tmp_path / FRAGMENT).read_text()
    from walt.experiment.machine import cpu_model

    assert "`scripts/benchmarks.sh --size smoke`" in text and cpu_model() in text and "Load average" in text
    assert "\n#### Autoencoder\n" in text and "| a | b |" in text  # the part's table, its heading demoted
    assert "not run: no cascade/cascade.md" in text


@pytest.mark.parametrize("name", ["smoke", "cpu", "full"])
def test_cascade_sizes_resolve_without_running(name):
    """Every cascade size names real presets whose last latent the size's autoencoder decodes."""
    from walt.autoencoder.causal_vae_config import preset_config
    from walt.bench.cascade_speed import SIZES, decode_latent_shape
    from walt.denoiser.transformer_config import get_preset

    size = SIZES[name]()
    cfgs = [get_preset(s) for s in size.stages]
    assert all(c.text_dim > 0 for c in cfgs)  # text-to-video stages
    is_sr = [c.lowres_channels > 0 for c in cfgs]
    assert is_sr == sorted(is_sr) and any(is_sr) and not all(is_sr)  # base stage(s) first, then the SR stages
    c, t, h, w = decode_latent_shape(size.stages[-1], None)
    vae = preset_config(size.vae)
    assert c == vae.latent_channels and t == 5 and 1 + vae.temporal_factor * (t - 1) == 17
    if name != "smoke":  # the paper's output: 512x896
        assert (h * vae.spatial_factor, w * vae.spatial_factor) == (512, 896)
