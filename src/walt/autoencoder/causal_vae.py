"""The causal 3D CNN autoencoder of W.A.L.T (Sec. 3.1; SPEC §1), MAGVIT-v2 layout, no quantizer.

    encoder: conv_in -> per level [num_res_blocks ResBlocks, strided conv] -> mid ResBlocks
             -> GroupNorm + swish + conv_out (2c channels = mean, logvar when kl, else c)
    decoder: conv_in -> mid ResBlocks -> per level (coarse to fine) [ResBlocks, depth-to-space]
             -> GroupNorm + swish + conv_out; every decoder GroupNorm is adaptive to z

A video (B, 3, 1 + f_t*k, H, W) becomes latents (B, c, 1 + k, H/f_s, W/f_s); an image is a 1-frame
video and gets exactly the first latent frame of any video that starts with it. Both `encode` and
`decode` can stream a long clip in chunks (`chunk_frames`) with a causal cache; the result equals
the whole-clip result and decode memory does not grow with the clip length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from walt.autoencoder.conv_blocks import AdaptiveGroupNorm, Downsample, FrameGroupNorm, ResBlock, Upsample, swish
from walt.autoencoder.causal_conv import CausalConv3d, StreamState, activation_format
from walt.autoencoder.causal_vae_config import CausalVAEConfig, preset_config
from walt.autoencoder.frames import check_frame_count, chunk_plan
from walt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from walt.config import ConfigError, config_from_dict, config_to_dict

CHECKPOINT_KIND = "causal_vae"
ChunkFrames = int | Sequence[int] | None


def _run_block(block: nn.Module, enabled: bool, h: torch.Tensor, state: StreamState | None, *extra) -> torch.Tensor:
    """`block(h, state, *extra)`, recomputed in the backward pass when `enabled` (activation checkpointing).

    Only whole-clip training passes are checkpointed: a streaming pass (state given) mutates its
    causal cache, which a recomputation would replay twice.
    """
    if enabled and state is None and torch.is_grad_enabled():
        return checkpoint(block, h, None, *extra, use_reentrant=False)
    return block(h, state, *extra)


class Encoder(nn.Module):
    """(B, in_channels, 1 + f_t*k, H, W) -> (B, 2c or c, 1 + k, H/f_s, W/f_s) posterior moments."""

    def __init__(self, cfg: CausalVAEConfig):
        super().__init__()
        chs, kt, g = cfg.level_channels, cfg.temporal_kernel_size, cfg.norm_groups
        conv = dict(kernel_t=kt, causal=cfg.causal)
        self.conv_in = CausalConv3d(cfg.in_channels, chs[0], (kt, 3, 3), causal=cfg.causal)
        self.levels = nn.ModuleList()
        self.down = nn.ModuleDict()  # keyed by transition index; absent where neither stride is > 1
        c_prev = chs[0]
        for i, c in enumerate(chs):
            blocks = [ResBlock(c_prev if j == 0 else c, c, max_groups=g, **conv) for j in range(cfg.num_res_blocks)]
            self.levels.append(nn.ModuleList(blocks))
            c_prev = c
            if i < len(chs) - 1:
                st, ss = cfg.transition_strides[i]
                if st > 1 or ss > 1:
                    self.down[str(i)] = Downsample(c, st, ss, **conv)
        self.mid = nn.ModuleList([ResBlock(c_prev, c_prev, max_groups=g, **conv) for _ in range(cfg.num_res_blocks)])
        self.norm_out = FrameGroupNorm(c_prev, g)
        out = 2 * cfg.latent_channels if cfg.kl else cfg.latent_channels
        self.conv_out = CausalConv3d(c_prev, out, (kt, 3, 3), causal=cfg.causal)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        ckpt = self.grad_checkpointing and self.training
        h = self.conv_in(x.contiguous(memory_format=activation_format(self.conv_in)), state)  # (B, C0, T, H, W)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = _run_block(block, ckpt, h, state)
            if str(i) in self.down:
                h = self.down[str(i)](h, state)  # (B, Ci, 1 + (T-1)/st, H/ss, W/ss)
        for block in self.mid:
            h = _run_block(block, ckpt, h, state)
        return self.conv_out(swish(self.norm_out(h)), state)  # (B, 2c | c, t, h, w)


class Decoder(nn.Module):
    """(B, c, 1 + k, h, w) -> (B, in_channels, 1 + f_t*k, h*f_s, w*f_s); GroupNorms adapt to z."""

    def __init__(self, cfg: CausalVAEConfig):
        super().__init__()
        chs, kt, g, zc = cfg.level_channels, cfg.temporal_kernel_size, cfg.norm_groups, cfg.latent_channels
        conv = dict(kernel_t=kt, causal=cfg.causal)
        # Output frames per latent frame at each level (level 0 = full resolution).
        ratios = [cfg.temporal_factor]
        for st, _ in cfg.transition_strides:
            ratios.append(ratios[-1] // st)
        top = chs[-1]
        self.conv_in = CausalConv3d(zc, top, (kt, 3, 3), causal=cfg.causal)
        self.mid = nn.ModuleList([ResBlock(top, top, max_groups=g, z_channels=zc, time_ratio=1, **conv)
                                  for _ in range(cfg.num_res_blocks)])
        self.levels = nn.ModuleList()  # stored fine-to-coarse (index = level) to mirror the encoder
        self.up = nn.ModuleDict()      # keyed by transition index
        for i, c in enumerate(chs):
            c_in = chs[i + 1] if i + 1 < len(chs) else top
            blocks = [ResBlock(c_in if j == 0 else c, c, max_groups=g, z_channels=zc, time_ratio=ratios[i], **conv)
                      for j in range(cfg.num_res_blocks)]
            self.levels.append(nn.ModuleList(blocks))
            if i > 0:
                st, ss = cfg.transition_strides[i - 1]
                if st > 1 or ss > 1:
                    self.up[str(i - 1)] = Upsample(c, st, ss, **conv)
        self.norm_out = AdaptiveGroupNorm(chs[0], zc, g, time_ratio=ratios[0])
        self.conv_out = CausalConv3d(chs[0], cfg.in_channels, (kt, 3, 3), causal=cfg.causal)
        self.grad_checkpointing = False

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        ckpt = self.grad_checkpointing and self.training
        z = z.contiguous(memory_format=activation_format(self.conv_in))
        h = self.conv_in(z, state)  # (B, C_top, t, h, w)
        for block in self.mid:
            h = _run_block(block, ckpt, h, state, z)
        for i in reversed(range(len(self.levels))):
            for block in self.levels[i]:
                h = _run_block(block, ckpt, h, state, z)
            if str(i - 1) in self.up:
                h = self.up[str(i - 1)](h, state)  # (B, Ci, 1 + st*(T-1), H*ss, W*ss)
        first = state is None or state.first
        return self.conv_out(swish(self.norm_out(h, z, first)), state)  # (B, 3, T, H, W)


class CausalVAE(nn.Module):
    """Causal 3D CNN autoencoder with a continuous latent (optionally a diagonal Gaussian posterior).

    API (SPEC §1, API.md):
        vae = CausalVAE.from_preset("tiny" | "ucf101" | "imagenet", **overrides)  or  CausalVAE(config)
        z = vae.encode(x, chunk_frames=None)             # (B,3,1+f_t*k,H,W) -> (B,c,1+k,H/f_s,W/f_s), posterior mean
        mean, logvar = vae.encode_posterior(x, chunk_frames=None)   # logvar is None when kl=False
        x = vae.decode(z, chunk_frames=None)             # (B,c,1+k,h,w) -> (B,3,1+f_t*k,h*f_s,w*f_s)
        recon, mean, logvar = vae(x, sample_posterior=True, generator=None)   # training
        vae.save(path, **extra);  vae = CausalVAE.load(path)

    `chunk_frames` streams the clip through the causal cache: an int N means chunks of 1+N, N, N, ...
    input frames (N a multiple of temporal_factor for encode; latent frames, any N >= 1, for decode),
    or pass an explicit list of chunk lengths. Chunked == whole clip (to float rounding).
    """

    def __init__(self, config: CausalVAEConfig):
        super().__init__()
        if not isinstance(config, CausalVAEConfig):
            raise TypeError(f"CausalVAE expects a CausalVAEConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.initialize_weights()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "CausalVAE":
        return cls(preset_config(name, **overrides))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual block's activations in the backward pass (less memory in training).

        The 3D-conv activations at full resolution dominate training memory; checkpointing every
        ResBlock keeps only block inputs, at the cost of one more forward pass of each block.
        """
        self.encoder.grad_checkpointing = enable
        self.decoder.grad_checkpointing = enable

    @property
    def grad_checkpointing(self) -> bool:
        return self.encoder.grad_checkpointing

    def initialize_weights(self) -> None:
        """PyTorch's default (Kaiming-uniform) conv init; unit GroupNorms; zero adaptive-norm projections."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                m.reset_parameters()
            elif isinstance(m, FrameGroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, AdaptiveGroupNorm):
                nn.init.zeros_(m.proj.weight)
                nn.init.zeros_(m.proj.bias)

    # ---- shapes ------------------------------------------------------------------------------
    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(c, t, h, w) of the latent of a (frames, height, width) video (validates the sizes)."""
        cfg = self.config
        check_frame_count(frames, cfg.temporal_factor)
        self._check_spatial(height, width)
        return (cfg.latent_channels, 1 + (frames - 1) // cfg.temporal_factor,
                height // cfg.spatial_factor, width // cfg.spatial_factor)

    def _check_spatial(self, height: int, width: int) -> None:
        f = self.config.spatial_factor
        if height % f or width % f or height < f or width < f:
            raise ValueError(
                f"height and width must be positive multiples of spatial_factor={f}, got {height}x{width}; "
                f"resize or crop to e.g. {max(f, height // f * f)}x{max(f, width // f * f)}"
            )

    def _check_video(self, x: torch.Tensor) -> None:
        c = self.config.in_channels
        if x.dim() != 5 or x.shape[1] != c:
            raise ValueError(
                f"expected a video of shape (B, {c}, T, H, W), got {tuple(x.shape)}; "
                f"add a time axis for images: x[:, :, None]"
            )
        check_frame_count(x.shape[2], self.config.temporal_factor)
        self._check_spatial(x.shape[3], x.shape[4])

    def _check_latent(self, z: torch.Tensor) -> None:
        c = self.config.latent_channels
        if z.dim() != 5 or z.shape[1] != c or z.shape[2] < 1:
            raise ValueError(f"expected latents of shape (B, {c}, t, h, w), got {tuple(z.shape)}")

    def _stream(self, net: nn.Module, x: torch.Tensor, chunk_frames: ChunkFrames, factor: int, what: str,
                out_frames: int) -> torch.Tensor:
        """Run `net` on the whole clip, or chunk by chunk with one StreamState (causal cache).

        Chunk outputs are written into one preallocated (B, C, out_frames, ...) tensor, so a long
        streamed clip holds its output once plus ONE chunk's activations, never a list + concat copy.
        """
        if chunk_frames is None:
            return net(x)
        if not self.config.causal:
            raise ValueError("chunk_frames needs a causal model; this one has causal=False, pass chunk_frames=None")
        plan = chunk_plan(x.shape[2], chunk_frames, factor, what)
        state, out, start, done = StreamState(), None, 0, 0
        for n in plan:
            y = net(x[:, :, start:start + n], state)  # (B, C', frames of this chunk, H', W')
            if out is None:
                out = y.new_empty(y.shape[0], y.shape[1], out_frames, *y.shape[3:])
            out[:, :, done:done + y.shape[2]] = y
            start, done = start + n, done + y.shape[2]
            state.first = False
            del y
        if done != out_frames:  # would be a bug in the causal cache, not a user error
            raise RuntimeError(f"streaming produced {done} frames, expected {out_frames}")
        return out

    # ---- encode / decode ---------------------------------------------------------------------
    def encode_posterior(self, x: torch.Tensor, chunk_frames: ChunkFrames = None):
        """(B, 3, 1+f_t*k, H, W) -> (mean, logvar), each (B, c, 1+k, H/f_s, W/f_s); logvar None if kl=False."""
        self._check_video(x)
        f_t = self.config.temporal_factor
        moments = self._stream(self.encoder, x, chunk_frames, f_t, "frames", 1 + (x.shape[2] - 1) // f_t)
        moments = moments.contiguous()  # callers get NCDHW whatever the layout inside
        if not self.config.kl:
            return moments, None
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # as in LDM: keeps exp(logvar) finite

    def encode(self, x: torch.Tensor, chunk_frames: ChunkFrames = None) -> torch.Tensor:
        """(B, 3, 1+f_t*k, H, W) in [-1, 1] -> posterior mean (B, c, 1+k, H/f_s, W/f_s), not normalised."""
        return self.encode_posterior(x, chunk_frames)[0]

    def decode(self, z: torch.Tensor, chunk_frames: ChunkFrames = None) -> torch.Tensor:
        """(B, c, 1+k, h, w) -> (B, 3, 1+f_t*k, h*f_s, w*f_s); `chunk_frames` counts latent frames."""
        self._check_latent(z)
        out_frames = 1 + (z.shape[2] - 1) * self.config.temporal_factor
        return self._stream(self.decoder, z, chunk_frames, 1, "latent frames", out_frames).contiguous()

    def forward(self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, decoder_noise: float = 0.0):
        """Training pass: x (B,3,T,H,W) -> (recon (B,3,T,H,W), mean, logvar) with logvar None if kl=False.

        With kl=True and `sample_posterior`, the decoder sees z = mean + exp(logvar / 2) * eps
        (reparameterisation); otherwise it sees the mean. `decoder_noise` = s > 0 (kl=False) makes
        it see z = mean + s * std(mean) * eps instead, std per clip: a decoder trained so renders
        latents a little off the encoder's (a denoiser's samples) as clean clips. eps is `noise`
        (B, c, t, h, w) when given (the training loop draws it per global batch, so it does not
        depend on how the batch is split over ranks and micro-batches), else drawn from `generator`.
        """
        mean, logvar = self.encode_posterior(x)
        z = mean
        if (logvar is not None or decoder_noise > 0) and sample_posterior:
            if noise is not None:
                if noise.shape != mean.shape:
                    raise ValueError(f"noise has shape {tuple(noise.shape)} but the posterior is {tuple(mean.shape)}")
                eps = noise.to(mean.dtype)
            else:
                eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            if logvar is not None:
                z = mean + torch.exp(0.5 * logvar) * eps
            else:
                scale = mean.detach().flatten(1).std(dim=1).view(-1, *([1] * (mean.ndim - 1)))  # (B, 1, 1, 1, 1)
                z = mean + decoder_noise * scale * eps
        return self.decoder(z).contiguous(), mean, logvar

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | Path, **extra: Any) -> None:
        """Write kind, config, weights (and any `extra` JSON/tensor state, e.g. latent_stats) atomically."""
        reserved = {"kind", "config", "model"} & set(extra)
        if reserved:
            raise ValueError(f"save(): extra keys {sorted(reserved)} are reserved; rename them")
        state = {"kind": CHECKPOINT_KIND, "config": config_to_dict(self.config),
                 "model": self.state_dict(), **extra}
        save_checkpoint(path, state)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu", with_extra: bool = False):
        """Rebuild a CausalVAE from `save()`; with_extra=True returns (vae, {extra keys})."""
        ckpt = load_checkpoint(path, map_location)
        kind = ckpt.get("kind")
        if kind != CHECKPOINT_KIND:
            raise CheckpointError(f"{path} holds a {kind!r} checkpoint, not a CausalVAE ({CHECKPOINT_KIND!r})")
        try:
            config = config_from_dict(CausalVAEConfig, ckpt["config"])
        except (ConfigError, ValueError) as e:
            raise CheckpointError(f"{path}: its CausalVAE config is invalid: {e}") from None
        vae = cls(config)
        try:
            vae.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as e:
            first_line = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{path}: weights do not match its config: {first_line}") from None
        vae.to(map_location)
        if with_extra:
            return vae, {k: v for k, v in ckpt.items() if k not in ("kind", "config", "model")}
        return vae
