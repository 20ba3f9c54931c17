"""torchrun worker for tests/test_distributed.py: train a tiny WALT for a few steps, report weight hashes.

    python -m torch.distributed.run --nproc_per_node=2 --standalone tests/_ddp_worker.py CACHE OUT MODE [MODE ...]

MODE "encode": the ranks encode one latent cache together (OUT/encode; shard s on rank s % 2).
MODE "vae+resume": `train_vae` of a tiny autoencoder + discriminator with DDP on a small built-in
dataset (`vae_data()`, `vae_train_config()`), stopped at step 2, rebuilt and resumed to step 3.
For each other MODE ("ddp" | "fsdp", optionally "+resume": stop at step 2, rebuild, resume) every rank trains the same freshly seeded network on the latent
cache, then writes OUT/MODE/rank{r}.json with sha256 hashes of its full (gathered) initial and final
weights, and OUT/MODE/rank{r}.safetensors with the final weights. Ends through `shutdown()`.
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file


def full_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight as a full tensor on this rank (FSDP2 shards are all-gathered)."""
    out = {}
    for k, v in net.state_dict().items():
        v = v.full_tensor() if hasattr(v, "full_tensor") else v
        out[k] = v.detach().cpu().clone().contiguous()
    return out


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].numpy().tobytes())
    return h.hexdigest()


def vae_data():
    from walt.data import SyntheticVideos

    return SyntheticVideos(8, num_frames=5, resolution=16, seed=3)


def vae_train_config(parallel: str = "ddp"):
    """Shared with tests/test_distributed.py, which repeats the run in one process."""
    from walt.autoencoder.discriminator import DiscriminatorConfig
    from walt.autoencoder.losses import VAELossConfig
    from walt.train.vae import VAETrainConfig

    return VAETrainConfig(steps=3, batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=0, betas=(0.9, 0.99),
                          log_every=1, ckpt_every=2, parallel=parallel, ema_decay=0.5, tensorboard=False, seed=1,
                          discriminator=DiscriminatorConfig(base_channels=4, channel_multipliers=(1, 2),
                                                            pool_size=(1, 2, 2)),
                          loss=VAELossConfig(adversarial_start_step=1))


def build_vae() -> torch.nn.Module:
    from walt.autoencoder import CausalVAE

    torch.manual_seed(0)
    return CausalVAE.from_preset("tiny")


def train_vae_mode(out: Path, mode: str, info) -> None:
    from walt.train.distributed import get_rank
    from walt.train.vae import train_vae

    cfg, ds = vae_train_config(), vae_data()
    vae = build_vae()
    init = digest(full_state(vae))
    first = train_vae(cfg, vae, ds, out / mode, progress=False, stop_at=2)
    assert first.interrupted and first.step == 2, first
    vae = build_vae()
    result = train_vae(cfg, vae, ds, out / mode, progress=False)
    final = full_state(vae)
    rank = get_rank()
    save_file(final, str(out / mode / f"rank{rank}.safetensors"))
    report = {"rank": rank, "world_size": info.world_size, "backend": info.backend, "init": init,
              "final": digest(final), "step": result.step, "loss": result.metrics.get("g_total")}
    (out / mode / f"rank{rank}.json").write_text(json.dumps(report))


def main() -> int:
    from walt.data.latent_dataset import LatentDataset
    from walt.denoiser import WALT
    from walt.diffusion import DiffusionLossConfig
    from walt.train.denoiser_loop import DenoiserTrainConfig, train_denoiser
    from walt.train.distributed import get_rank, init_distributed

    cache, out = Path(sys.argv[1]), Path(sys.argv[2])
    info = init_distributed()
    ds = LatentDataset(cache)
    def build() -> torch.nn.Module:
        torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        return WALT.from_preset("tiny", input_size=(2, 4, 4), hidden_size=32, depth=2, num_heads=2,
                                spatial_window=(1, 4, 4), spatiotemporal_window=(2, 4, 4), num_classes=8)

    for mode in sys.argv[3:]:
        if mode == "encode":  # the ranks share the shards of one cache (same seeded tiny VAE on each)
            from walt.autoencoder import CausalVAE
            from walt.data import SyntheticVideos
            from walt.data.latent_cache import encode_dataset

            torch.manual_seed(0)
            vae = CausalVAE.from_preset("tiny").eval()
            written = encode_dataset(vae, SyntheticVideos(8, num_frames=5, resolution=32), out / "encode",
                                  shard_size=2, batch_size=2, latent_dtype="float32", progress=False)
            (out / f"encode_rank{get_rank()}.json").write_text(json.dumps({"encoded": written.encoded_shards}))
            continue
        if mode.startswith("vae"):
            train_vae_mode(out, mode, info)
            continue
        parallel, _, resume = mode.partition("+")  # "fsdp+resume": stopped at step 2, then resumed
        net = build()
        init = digest(full_state(net))
        cfg = DenoiserTrainConfig(steps=3, batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=0, log_every=1,
                                  ckpt_every=2, parallel=parallel, ema_decay=0.5, tensorboard=False,
                                  loss=DiffusionLossConfig(p_self_cond=0.5))
        if resume:
            first = train_denoiser(cfg, net, ds, out / mode, progress=False, stop_at=2)
            assert first.interrupted and first.step == 2, first
            net = build()
        result = train_denoiser(cfg, net, ds, out / mode, progress=False)
        final = full_state(net)
        rank = get_rank()
        (out / mode).mkdir(parents=True, exist_ok=True)
        save_file(final, str(out / mode / f"rank{rank}.safetensors"))
        report = {"rank": rank, "world_size": info.world_size, "backend": info.backend, "init": init,
                  "final": digest(final), "step": result.step, "loss": result.metrics.get("loss")}
        (out / mode / f"rank{rank}.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    from walt.train.distributed import shutdown

    code = 1
    try:
        code = main()
    except BaseException:  # noqa: BLE001 -- print the reason, then exit non-zero through shutdown()
        import traceback

        traceback.print_exc()
        code = 1
    shutdown(code)
