"""Distributed plumbing: restorable data order, wrappers, and a real 2-process torchrun run (gloo, CPU)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from walt.autoencoder import CausalVAE
from walt.data import SyntheticVideos
from walt.data.latent_cache import encode_dataset
from walt.data.latent_dataset import LatentDataset
from walt.denoiser import WALT
from walt.train.batches import ResumableBatchSampler
from walt.train.distributed import init_distributed, is_main
from walt.train.parallelize import (
    apply_training_wrappers,
    clip_grad_norm,
    gather_model_state,
    gather_optimizer_state,
    load_model_state,
    load_optimizer_state,
    wrap_model,
)
from walt.train.vae import train_vae

WORKER = Path(__file__).with_name("_ddp_worker.py")
from _ddp_worker import vae_data, vae_train_config  # noqa: E402 -- the worker's autoencoder run, repeated here


def test_sampler_splits_global_batches_across_ranks_and_restores():
    n, gb, world = 22, 8, 2
    ranks = [ResumableBatchSampler(n, gb, seed=3, rank=r, world_size=world) for r in range(world)]
    single = ResumableBatchSampler(n, gb, seed=3, rank=0, world_size=1)
    assert len(single) == 2  # drop_last: 22 // 8
    seen = []
    for _ in range(5):  # crosses epoch boundaries
        glob = single.next_global()
        parts = [s.next_indices() for s in ranks]
        assert all(len(p) == gb // world for p in parts)
        assert torch.equal(torch.cat(parts), glob)  # ranks partition the global batch, independent of world size
        assert len(set(glob.tolist())) == gb
        seen.append(glob)
    assert single.epoch == 2 and single.position == 1
    assert not torch.equal(seen[0], seen[2])  # a new permutation each epoch
    # Restoring the position reproduces the following batches exactly.
    state = single.state_dict()
    expect = [single.next_global() for _ in range(3)]
    fresh = ResumableBatchSampler(n, gb, seed=3, rank=0, world_size=1)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, fresh.next_global()) for a in expect)
    with pytest.raises(ValueError, match="global_batch"):
        ResumableBatchSampler(n, 4, seed=3, world_size=1).load_state_dict(state)
    with pytest.raises(ValueError, match="multiple of the world size"):
        ResumableBatchSampler(n, 7, world_size=2, rank=0)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(4, 8, world_size=1, rank=0)
    # Usable as a DataLoader batch_sampler: one epoch of this rank's batches.
    assert [len(b) for b in ResumableBatchSampler(n, gb, rank=1, world_size=2)] == [4, 4]


def test_single_process_fallbacks(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.backend) == (0, 1, None) and is_main()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        init_distributed()
    net = WALT.from_preset("tiny", depth=2, hidden_size=32, num_heads=2)
    assert wrap_model(net, "ddp") is net  # no process group: unchanged
    with pytest.raises(ValueError, match="parallel mode"):
        wrap_model(net, "zero3")
    assert apply_training_wrappers(net, "none", activation_checkpointing=True) is net and net.grad_checkpointing
    with pytest.raises(ValueError, match="set_grad_checkpointing"):
        apply_training_wrappers(torch.nn.Linear(2, 2), activation_checkpointing=True)


def test_full_state_round_trip_single_process():
    torch.manual_seed(0)
    net = WALT.from_preset("tiny", depth=2, hidden_size=32, num_heads=2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, t = torch.randn(2, 4, 5, 8, 8), torch.tensor([10, 900])
    (net(x, t) - x).square().mean().backward()
    norm = clip_grad_norm(net.parameters(), 1e-3)
    assert norm > 1e-3 and float(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]).norm()) \
        == pytest.approx(1e-3, rel=1e-3)
    opt.step()
    model_state, opt_state = gather_model_state(net), gather_optimizer_state(net, opt)
    assert set(opt_state["state"]) <= set(model_state)  # keyed by parameter names, not positions
    torch.manual_seed(1)
    other = WALT.from_preset("tiny", depth=2, hidden_size=32, num_heads=2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    load_model_state(other, model_state)
    load_optimizer_state(other, other_opt, opt_state)
    for (k, a), b in zip(net.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    p0, q0 = next(iter(net.parameters())), next(iter(other.parameters()))
    assert torch.equal(opt.state[p0]["exp_avg"], other_opt.state[q0]["exp_avg"])


def test_torchrun_two_processes_ddp_and_fsdp(tmp_path):
    """`torchrun --nproc_per_node=2` on CPU (gloo): shared encoding, DDP, FSDP2 (stopped at step 2, then resumed),
    and the autoencoder + discriminator with DDP (stopped, resumed) against the same run in one process."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny").eval()
    encode_dataset(vae, SyntheticVideos(8, num_frames=5, resolution=32), tmp_path / "cache", shard_size=8,
                   batch_size=4, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(WORKER),
           str(tmp_path / "cache"), str(tmp_path / "out"), "encode", "ddp", "fsdp+resume", "vae+resume"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    finals = {}
    for mode in ("ddp", "fsdp+resume"):
        reports = [json.loads((tmp_path / "out" / mode / f"rank{r}.json").read_text()) for r in range(2)]
        assert [r["rank"] for r in reports] == [0, 1]
        assert all(r["world_size"] == 2 and r["backend"] == "gloo" and r["step"] == 3 for r in reports)
        assert reports[0]["init"] == reports[1]["init"]
        assert reports[0]["final"] == reports[1]["final"], f"{mode}: ranks disagree on the final weights"
        assert reports[0]["final"] != reports[0]["init"]  # training changed the weights
        assert reports[0]["loss"] is not None  # rank 0 logged
        a, b = (load_file(str(tmp_path / "out" / mode / f"rank{r}.safetensors")) for r in range(2))
        assert all(torch.equal(a[k], b[k]) for k in a)
        finals[mode] = a
        # Rank 0 alone wrote the log, the checkpoints and the exports.
        run = tmp_path / "out" / mode
        assert (run / "walt.safetensors").is_file() and (run / "walt_ema.safetensors").is_file()
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.safetensors",
                                                                           "step_00000003.safetensors"]
        assert len((run / "log.csv").read_text().strip().splitlines()) == 4  # header + 3 steps
        assert WALT.load(run / "walt.safetensors").config.hidden_size == 32
    # Encoding split over the ranks: each encoded its half of the shards, the cache equals a 1-process one.
    assert [json.loads((tmp_path / "out" / f"encode_rank{r}.json").read_text())["encoded"] for r in range(2)] == \
        [[0, 2], [1, 3]]
    encode_dataset(vae, SyntheticVideos(8, num_frames=5, resolution=32), tmp_path / "single", shard_size=2,
                   batch_size=2, latent_dtype="float32", progress=False)
    both, single = LatentDataset(tmp_path / "out" / "encode"), LatentDataset(tmp_path / "single")
    torch.testing.assert_close(both.latents(range(8)), single.latents(range(8)), rtol=1e-6, atol=1e-6)
    assert both.captions == single.captions

    # The same global batches and loss draws: the sharded, interrupted run matches plain DDP.
    for k, v in finals["ddp"].items():
        torch.testing.assert_close(finals["fsdp+resume"][k], v, rtol=1e-5, atol=1e-6)

    # Autoencoder stage: both ranks hold the same weights, rank 0 alone wrote the run folder, and
    # the 2 x (2 micro-batches of 1) run, interrupted at step 2, equals one process on batches of 4.
    run = tmp_path / "out" / "vae+resume"
    reports = [json.loads((run / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 and r["step"] == 3 for r in reports)
    assert reports[0]["final"] == reports[1]["final"] != reports[0]["init"], "autoencoder ranks disagree"
    assert reports[0]["loss"] is not None
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.safetensors",
                                                                       "step_00000003.safetensors"]
    assert len((run / "log.csv").read_text().strip().splitlines()) == 4  # header + 3 steps, no duplicates
    ddp_vae = load_file(str(run / "rank0.safetensors"))
    torch.manual_seed(0)
    single = CausalVAE.from_preset("tiny")
    train_vae(vae_train_config("none"), single, vae_data(), tmp_path / "vae_single", progress=False)
    # Step 1's losses (both players) agree to float rounding: same global batch, noise and gradient mean.
    rows = [next(csv.DictReader(open(d / "log.csv"))) for d in (run, tmp_path / "vae_single")]
    for key in ("g_total", "recon", "kl", "psnr", "grad_norm_g", "d_total", "r1", "lecam", "grad_norm_d"):
        assert float(rows[0][key]) == pytest.approx(float(rows[1][key]), rel=1e-5), key
    # Weights after 3 Adam steps (lr 1e-3): rounding can flip the update of a near-zero gradient
    # element, so allow a fraction of one step there; a desynchronised run is off by ~lr everywhere.
    diffs = torch.cat([(ddp_vae[k] - v).abs().flatten() for k, v in single.state_dict().items()])
    assert diffs.max().item() < 2e-4 and diffs.mean().item() < 1e-7, (diffs.max().item(), diffs.mean().item())
