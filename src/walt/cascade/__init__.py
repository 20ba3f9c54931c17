"""The text-to-video cascade (W.A.L.T §4 / §5.4, SPEC §4): base -> SR-1 -> SR-2 -> decode.

    from walt.denoiser import WALT
    base = WALT.from_preset("t2v-base-9x16")          # or "t2v-base", "sr1", "sr2", "*-tiny"
    from walt.cascade import Cascade, CascadeStage, SRConfig, tiled_decode, upsample_latent, sr_loss

Submodules: `presets` (the registered configs), `sr` (low-res conditioning, noise-conditioning
augmentation, the SR training loss and sampler), `pipeline` (stages, cascade sampling, long videos,
image-to-video), `tiling` (spatially tiled, temporally streamed decoding), `pairs` (the low-res
side of SR training pairs: the same clips' pixels downsampled), `train_sr` (training a
cascade stage from latent caches), `commands` (the `walt sample --cascade` / `walt train --stage sr`
glue).

The package init is lazy: `walt.denoiser`'s preset registry imports `walt.cascade.presets` on the
first lookup of a cascade preset name (`PRESET_MODULES`), and that lookup must pull in no diffusion
or training code (tests/test_denoiser.py checks the imports), so nothing heavy may be imported here.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PAPER_PARAMS": "presets",
    "CASCADE_STAGES": "presets",
    "SRConfig": "sr",
    "upsample_latent": "sr",
    "augment_lowres": "sr",
    "sr_conditioning": "sr",
    "sr_loss": "sr",
    "super_resolve": "sr",
    "CascadeStage": "pipeline",
    "Cascade": "pipeline",
    "sample_cascade": "pipeline",
    "cascade_lengths": "pipeline",
    "tiled_decode": "tiling",
    "tile_spans": "tiling",
    "blend_ramp": "tiling",
    "decode_video": "tiling",
    "Downsampled": "pairs",
    "downsample_video": "pairs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"walt.cascade.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'walt.cascade' has no attribute {name!r}")
