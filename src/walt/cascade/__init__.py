"""The text-to-video cascade (W.A.L.T §4 / §5.4, SPEC §4): base -> SR-1 -> SR-2 -> decode.

    from walt.cascade import Stage, sample_cascade
    stages = [Stage.load(p) for p in ("runs/base/walt_ema.safetensors", "runs/sr1/walt_ema.safetensors")]
    out = sample_cascade(stages, vae, text=tokens, text_mask=mask, seeds=[0], num_frames=41)

Modules: `stage` (`Stage`, the one loader of a trained model, base or SR), `sr` (low-res
conditioning, noise-conditioning augmentation, the SR loss and sampler), `sample` (cascade
sampling, long videos, image-to-video), `tiling` (spatially tiled, temporally streamed decoding).
The presets are `walt.denoiser`'s (`WALT.from_preset("t2v-base" | "sr1" | ...)`), the low-res
side of SR training pairs is `walt.data.downsample`, SR training is `walt.train.denoiser_loop`'s loop.
"""

from walt.cascade.generate import Cascade, CascadeOutput, cascade_lengths, check_chain, resize_image, sample_cascade
from walt.cascade.sr import SRConfig, augment_lowres, sr_conditioning, sr_loss, super_resolve, upsample_latent
from walt.cascade.stage import CascadeStage, Stage
from walt.cascade.tiling import blend_ramp, decode_video, tile_spans, tiled_decode
from walt.data.downsample import Downsampled, downsample_video
from walt.denoiser.transformer_config import CASCADE_STAGES, PAPER_PARAMS

__all__ = [
    "Stage", "CascadeStage", "Cascade", "CascadeOutput", "sample_cascade", "cascade_lengths", "check_chain",
    "resize_image", "SRConfig", "upsample_latent", "augment_lowres", "sr_conditioning", "sr_loss", "super_resolve",
    "tiled_decode", "tile_spans", "blend_ramp", "decode_video", "Downsampled", "downsample_video",
    "PAPER_PARAMS", "CASCADE_STAGES",
]
