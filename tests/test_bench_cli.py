"""`walt bench` (walt.commands.bench + walt.bench.suite): one run writes bench.json and bench.md.

Timings are not checked (the machine is shared); only that every section reports finite positive
numbers under the expected keys, that the samplers cover ddim / dpmpp / ddpm at the stated step
counts, and that bad input exits 2 with one line and writes nothing. `--threads 1` because a
2-thread pool on a loaded 2-core machine is ~100x slower for the tiny models.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from walt.bench.suite import SIZES
from walt.cli import main


def _positive_finite(row: dict, keys: list[str]) -> None:
    for k in keys:
        v = row[k]
        assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0, (k, v)


def _check_common(r: dict) -> None:
    assert {"machine", "device", "size", "sections", "matmul_peak_gflops", "ratios", "flops", "elapsed_s"} <= set(r)
    assert r["size"]["name"] == "tiny" and r["device"] == "cpu"
    _positive_finite(r["matmul_peak_gflops"], ["fp32"])


def test_bench_tiny_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "--size", "tiny", "--only", "ae,denoiser,samplers", "--threads", "1", "--out", str(out)])
    assert rc == 0
    r = json.loads((out / "bench.json").read_text())
    _check_common(r)
    assert r["sections"] == ["ae", "denoiser", "samplers"]
    size = SIZES["tiny"]()

    ae = {(x["name"], x["op"], x["frames"]): x for x in r["autoencoder"]["rows"]}
    clips = [f for f, _, _ in size.ae_clips]
    assert set(ae) == {(m, op, f) for m in ("walt", "walt-early") for op in ("encode", "decode") for f in clips}
    for x in ae.values():
        _positive_finite(x, ["frames_per_s", "seconds", "gflop_per_call", "achieved_gflops", "utilisation", "peak_mb"])
        assert x["dtype"] == r["dtype"] == "fp32"
    # Early temporal compression: the full-resolution levels see fewer frames, so fewer FLOPs.
    assert ae["walt-early", "encode", 9]["gflop_per_call"] < ae["walt", "encode", 9]["gflop_per_call"]

    train = {x["model"]: x for x in r["denoiser"]["train"]}
    assert set(train) == {"walt-window", "walt-full"}
    for x in train.values():
        _positive_finite(x, ["tokens_per_s", "steps_per_s", "gflop_per_step", "mfu"])
    assert train["walt-full"]["gflop_per_step"] > train["walt-window"]["gflop_per_step"]
    _positive_finite(r["ratios"], ["train_window_over_full[tiny]"])

    runs = {(x["sampler"], x["steps"]) for x in r["samplers"]["rows"]}
    expected = {(s, n) for s in ("ddim", "dpmpp") for n in size.sampler_steps} | {("ddpm", size.ddpm_steps)}
    assert runs == expected
    assert all(x["network_calls"] == x["steps"] for x in r["samplers"]["rows"])  # one call per step, no guidance
    for x in r["samplers"]["rows"]:
        _positive_finite(x, ["s_per_clip", "s_per_step", "gflop_per_clip", "utilisation"])
    # FLOPs per clip grow with the step count (same network call each step).
    ddim = sorted((x for x in r["samplers"]["rows"] if x["sampler"] == "ddim"), key=lambda x: x["steps"])
    assert ddim[-1]["gflop_per_clip"] > ddim[0]["gflop_per_clip"]

    # Streaming: a chunked long decode against a WHOLE-clip 17-frame decode, each with its own peak.
    st = r["autoencoder"]["streaming"]
    assert st["short"]["frames"] == 17 and st["short"]["chunk_frames"] is None
    assert st["long"]["frames"] == 1 + 4 * size.ae_long_latents and st["long"]["chunk_frames"] == 1
    for x in list(ae.values()) + [st["short"], st["long"]]:
        assert "memory_method" in x and x["peak_mb"] >= x["peak_over_base_mb"] >= 0
    for x in list(train.values()) + r["samplers"]["rows"]:
        _positive_finite(x, ["peak_mb"])  # CPU peaks are measured too (RSS), not left empty
    assert set(r["section_s"]) == {"ae", "denoiser", "samplers"} and r["load_average_end"] is not None
    assert r["machine_info"]["torch"] and r["machine_info"]["cpu"]

    md = (out / "bench.md").read_text()
    for text in ("Autoencoder", "walt-early", "Streaming", "window/full", "MFU", "ddpm", "dpmpp", "network calls",
                 r["machine"], "load average", "dtype fp32"):
        assert text in md
    printed = capsys.readouterr().out
    assert "samplers ddim" in printed and "wrote" in printed  # progress lines per workload


@pytest.mark.slow
def test_bench_tiny_all_sections_with_peers(tmp_path):
    pytest.importorskip("diffusers")
    out = tmp_path / "bench"
    assert main(["bench", "--size", "tiny", "--threads", "1", "--out", str(out)]) == 0
    r = json.loads((out / "bench.json").read_text())
    _check_common(r)
    assert {(x["model"], x["op"]) for x in r["autoencoder"]["rows"]} >= {("cogvideox", "encode"), ("cogvideox", "decode")}
    _positive_finite(r["ratios"], [
        f"{op}_{what}_ratio_{m}_over_cogvideox[{f}x{s}x{s}]" for op in ("encode", "decode") for what in ("speed", "memory")
        for m in ("walt", "walt-early") for f, s, _ in SIZES["tiny"]().ae_clips
    ] + [f"{k}_walt_over_latte[tiny{c}]" for k in ("forward", "sampling") for c in ("", ",class")])
    assert "Peers" in (out / "bench.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--only", "ae,gpu"], "--only unknown section 'gpu'"),
    (["--only", ","], "--only is empty"),
    (["--size", "huge"], "--size 'huge' is not a size"),
    (["--device", "cuda:7"], "--device"),
])
def test_bench_bad_flags_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["bench", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("walt bench: error:")
    assert not out.exists()  # validated before anything was written


def test_bench_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):  # a file, and a folder that cannot be created under a file
        assert main(["bench", "--size", "tiny", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--out" in err, err


def test_bench_help_lists_sections():
    out = subprocess.run([sys.executable, "-m", "walt", "bench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "ae,denoiser,samplers,peers" in out.stdout and "--size" in out.stdout


def test_benchmarks_script_help_and_bad_arguments(tmp_path):
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "benchmarks.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0  # parses
    out = subprocess.run(["bash", script, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--size smoke|cpu|paper" in out.stdout and "BENCHMARKS.md" in out.stdout
    for argv, message in ((["--size", "huge"], "--size must be smoke, cpu or paper"), (["--frobnicate"], "unknown argument")):
        bad = subprocess.run(["bash", script, *argv, "--out", str(tmp_path / "x")], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", sorted(SIZES))
def test_suite_sizes_build_their_settings(name):
    """Every `walt bench --size` builds valid benchmark settings (without running anything)."""
    import dataclasses

    from walt.bench.denoiser_speed import BenchSettings

    size = SIZES[name]()
    dn = {**size.denoiser, "dtype": "fp32" if size.denoiser.get("dtype") == "auto" else size.denoiser["dtype"]}
    s = BenchSettings(device="cpu", **dn)
    assert size.sampler_layout in ("tiny", "paper", "sr") and set(s.layouts) <= {"tiny", "paper", "sr"}
    assert dataclasses.asdict(size)["name"] == name and size.description


def test_fastest_dtype_never_picks_bf16_whose_kernels_fail(monkeypatch):
    """A fast bf16 matmul is not enough: the attention / convolution kernels must run in bf16 too."""
    import walt.train.precision as common

    assert isinstance(common.bf16_kernels_work("cpu"), bool)
    monkeypatch.setattr(common, "bf16_kernels_work", lambda device: False)
    monkeypatch.setattr(common, "matmul_peak_gflops", lambda device, dtype, **kw: 1e3 if dtype == torch.bfloat16 else 1.0)
    assert common.fastest_dtype("cpu")[0] == "fp32"
    monkeypatch.setattr(common, "bf16_kernels_work", lambda device: True)
    assert common.fastest_dtype("cpu")[0] == "bf16"
