"""Stage 1 of W.A.L.T: the causal 3D CNN autoencoder (SPEC §1).

    from walt.autoencoder import CausalVAE, CausalVAEConfig
    vae = CausalVAE.from_preset("tiny" | "ucf101" | "imagenet", **overrides)
    z = vae.encode(x)      # (B, 3, 1+4k, H, W) -> (B, c, 1+k, H/8, W/8)
    x = vae.decode(z)
"""

from walt.autoencoder.causal_vae_config import PRESETS, CausalVAEConfig, image_config, preset_config
from walt.autoencoder.frames import check_frame_count, chunk_plan, fit_frames, valid_frame_count
from walt.autoencoder.causal_vae import CausalVAE
from walt.autoencoder.inflate import inflate_image_to_video
from walt.autoencoder.latent_stats import LatentStats, measure_latent_stats

__all__ = [
    "CausalVAE",
    "CausalVAEConfig",
    "PRESETS",
    "preset_config",
    "image_config",
    "fit_frames",
    "check_frame_count",
    "valid_frame_count",
    "chunk_plan",
    "inflate_image_to_video",
    "LatentStats",
    "measure_latent_stats",
]
