"""WALT: the window-attention latent diffusion transformer (Gupta et al. 2023, §3.2-3.3, SPEC §2).

    x (B, C, T, H, W) noisy latents [+ self-cond x0 | + mask*cond_frames, mask | + low-res latent]
      -> per-frame p x p patchify -> + spatial/temporal position tables        (B, T, H', W', D)
      -> depth x [spatial-window block, spatiotemporal-window block, ...]      (alternating)
      -> AdaLN final layer -> unpatchify                                        (B, C, T, H, W)

The output is the v-prediction (no learned variance). The network never imports `walt.diffusion`:
the diffusion code only calls `net(x, t, ...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from walt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from walt.config import config_from_dict, config_to_dict, replace_config
from walt.denoiser.attention import resolve_window
from walt.denoiser.adaln_blocks import FinalLayer, WALTBlock
from walt.denoiser.transformer_config import WALTConfig, get_preset
from walt.denoiser.embeddings import (
    LabelEmbedder,
    PatchEmbed,
    PositionEmbedding,
    RelativePositionBias,
    TextProjection,
    TimestepEmbedder,
    unpatchify,
)

CHECKPOINT_KIND = "walt.denoiser.WALT"


class WALT(nn.Module):
    """The W.A.L.T denoiser.

    forward(x, t, y=None, cond_frames=None, cond_mask=None, self_cond=None, text=None,
            text_mask=None, lowres=None, noise_level=None) -> (B, C, T, H, W)

        x            (B, C, T, H, W) noisy latents; 1 <= T <= T_max (T == 1: an image)
        t            (B,) timesteps in [0, 1000), float or int (a 0-dim tensor is broadcast)
        y            (B,) long labels in [0, num_classes]; `null_class` = unconditional.
                     None -> null class. Ignored when num_classes == 0.
        cond_frames  (B, C, T, H, W) clean context latents, with cond_mask (B, 1, T, 1, 1) or
                     (B, T) in {0, 1}: frame prediction (config.frame_conditioning); None -> zeros
        self_cond    (B, C, T, H, W) previous x0 estimate (config.self_conditioning); None -> zeros
        text         (B, L, text_dim) text token features, text_mask (B, L) bool (True = real token)
                     (config.text_dim > 0); None -> no text tokens (unconditional)
        lowres       (B, lowres_channels, T, H, W) upsampled low-res latent, noise_level (B,) its
                     noise-augmentation timestep (config.lowres_channels > 0, SR cascade stages)

    The forward pass never reads a tensor value back to the host, so on CUDA it queues its work
    without a synchronisation: input checks use shapes only, and the label range check runs for
    CPU labels only (tests/test_denoiser.py runs the network on the meta device, which has no
    values to read).
    """

    def __init__(self, config: WALTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.input_channels, d, cfg.patch_size)
        self.pos_embed = PositionEmbedding(cfg.token_grid, d)
        self.t_embedder = TimestepEmbedder(d, cfg.frequency_embedding_size)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d) if cfg.num_classes > 0 else None
        # Optional second label route: K tokens per class (null class included) that attention reads.
        self.class_token_table = (
            nn.Parameter(torch.zeros(cfg.num_classes + 1, cfg.class_tokens, d)) if cfg.class_tokens > 0 else None
        )
        self.noise_level_embedder = (
            TimestepEmbedder(d, cfg.frequency_embedding_size) if cfg.lowres_channels > 0 else None
        )
        self.text_proj = TextProjection(cfg.text_dim, d) if cfg.text_dim > 0 else None
        # AdaLN-LoRA: the layer-1 modulation MLP, shared by all layers (each adds its own rank-r delta).
        lora = cfg.adaln_lora_rank > 0
        self.adaLN_base = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d)) if lora else None

        self.blocks = nn.ModuleList()
        for i in range(cfg.depth):
            kind = "spatial" if i % 2 == 0 else "spatiotemporal"
            self.blocks.append(
                WALTBlock(
                    d,
                    cfg.num_heads,
                    kind,
                    self._layer_window(kind),
                    mlp_ratio=cfg.mlp_ratio,
                    qk_norm=cfg.qk_norm,
                    rel_pos_bias=cfg.rel_pos_bias,
                    adaln_lora_rank=cfg.adaln_lora_rank,
                    use_lora=lora and i > 0,
                    cross_attention=self._has_cross_attention(kind),
                    mlp_gelu=cfg.mlp_gelu,
                )
            )
        self.final_layer = FinalLayer(d, cfg.patch_size, cfg.in_channels)
        self.grad_checkpointing = False
        self.initialize_weights()

    # --- construction helpers ----------------------------------------------------------------

    def _layer_window(self, kind: str) -> tuple[int, int, int]:
        """Configured window in tokens, clamped to the largest grid (also sizes the bias table)."""
        grid = self.config.token_grid
        if self.config.attention == "full":
            return grid
        window = self.config.spatial_window if kind == "spatial" else self.config.spatiotemporal_window
        return tuple(min(w, g) for w, g in zip(window, grid))  # type: ignore[return-value]

    def _has_cross_attention(self, kind: str) -> bool:
        mode = self.config.cross_attention
        return self.config.text_dim > 0 and (mode == "all" or (mode == "spatial" and kind == "spatial"))

    def initialize_weights(self) -> None:
        """DiT initialisation: xavier linears, normal(0.02) embeddings, zero AdaLN outputs and head.

        Zeroed modulation makes every gate 0, so each block starts as the identity, and the zeroed
        final layer makes the initial prediction exactly 0.
        """

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        nn.init.normal_(self.pos_embed.spatial, std=0.02)
        nn.init.normal_(self.pos_embed.temporal, std=0.02)
        for embedder in (self.t_embedder, self.noise_level_embedder):
            if embedder is not None:
                nn.init.normal_(embedder.mlp[0].weight, std=0.02)
                nn.init.normal_(embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        if self.class_token_table is not None:
            nn.init.normal_(self.class_token_table, std=0.02)
        for m in self.modules():
            if isinstance(m, RelativePositionBias):
                nn.init.trunc_normal_(m.table, std=0.02)
        if self.adaLN_base is not None:
            nn.init.zeros_(self.adaLN_base[-1].weight)
            nn.init.zeros_(self.adaLN_base[-1].bias)
        for block in self.blocks:
            if block.adaLN_modulation is not None:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.adaLN_lora is not None:
                nn.init.zeros_(block.adaLN_lora[1].weight)  # W_b = 0: LoRA starts as no change
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)  # text path starts silent (PixArt)
                nn.init.zeros_(block.cross_attn.proj.bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # --- public helpers -----------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "WALT":
        """`WALT.from_preset("tiny" | "L" | "XL" | "L-k600", **config_overrides)`."""
        return cls(replace_config(get_preset(name), **overrides))

    @property
    def null_class(self) -> int:
        """The label meaning "no class" (classifier-free guidance); ignored if num_classes == 0."""
        return self.config.num_classes

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass (saves memory in training)."""
        self.grad_checkpointing = enable

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write {"kind", "config", "model", **extra} with `walt.checkpoint.save_checkpoint`."""
        clash = {"kind", "config", "model"} & set(extra)
        if clash:
            raise ValueError(f"extra checkpoint keys {sorted(clash)} are reserved; rename them")
        save_checkpoint(
            path, {"kind": CHECKPOINT_KIND, "config": config_to_dict(self.config), "model": self.state_dict(), **extra}
        )

    @classmethod
    def from_checkpoint_state(cls, state: dict[str, Any]) -> "WALT":
        """Build a WALT from a dict returned by `load_checkpoint` (e.g. one holding extra state)."""
        if state.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(
                f"checkpoint kind is {state.get('kind')!r}, expected {CHECKPOINT_KIND!r}: not a WALT denoiser"
            )
        net = cls(config_from_dict(WALTConfig, state["config"]))
        try:
            missing, unexpected = net.load_state_dict(state["model"], strict=False)
        except RuntimeError as e:  # same names, different shapes
            raise CheckpointError(f"checkpoint weights do not match its config: {e}") from None
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint weights do not match its config: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        return net

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "WALT":
        """Load a network written by `save` (extra entries: use `walt.checkpoint.load_checkpoint`)."""
        return cls.from_checkpoint_state(load_checkpoint(path, map_location=map_location))

    # --- forward ------------------------------------------------------------------------------

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 5:
            raise ValueError(f"x must be (B, C, T, H, W), got shape {tuple(x.shape)}")
        _, c, frames, h, w = x.shape
        t_max, h_cfg, w_cfg = cfg.input_size
        if c != cfg.in_channels:
            raise ValueError(f"x has {c} channels but the network expects in_channels={cfg.in_channels}")
        if not 1 <= frames <= t_max:
            raise ValueError(f"x has {frames} frames; the network accepts 1..{t_max} (config.input_size[0])")
        if (h, w) != (h_cfg, w_cfg):
            raise ValueError(
                f"x is {h}x{w} but the network was built for {h_cfg}x{w_cfg} latents (config.input_size)"
            )
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must be (B,) = ({x.shape[0]},), got shape {tuple(t.shape)}")
        grid = (frames, h // cfg.patch_size, w // cfg.patch_size)
        for block in self.blocks:
            if not (block.kind == "spatiotemporal" and frames == 1):
                resolve_window(block.attn.window, grid)  # ValueError naming the window and the grid

    def _check_like_x(self, name: str, value: torch.Tensor, x: torch.Tensor, channels: int) -> None:
        want = (x.shape[0], channels, *x.shape[2:])
        if tuple(value.shape) != want:
            raise ValueError(f"{name} must have shape {want} (matching x), got {tuple(value.shape)}")

    def _conditioning_input(self, x, cond_frames, cond_mask, self_cond, lowres) -> torch.Tensor:
        """Channel concatenation of x with the enabled conditioning inputs -> (B, C_in, T, H, W)."""
        cfg = self.config
        parts = [x]
        if cfg.self_conditioning:
            if self_cond is None:
                self_cond = torch.zeros_like(x)
            self._check_like_x("self_cond", self_cond, x, cfg.in_channels)
            parts.append(self_cond.to(x.dtype))
        elif self_cond is not None:
            raise ValueError("self_cond was given but config.self_conditioning is False; enable it or drop it")
        if cfg.frame_conditioning:
            b, _, frames = x.shape[:3]
            if cond_frames is None:
                parts += [torch.zeros_like(x), x.new_zeros(b, 1, *x.shape[2:])]
            else:
                self._check_like_x("cond_frames", cond_frames, x, cfg.in_channels)
                if cond_mask is None:
                    raise ValueError("cond_frames needs cond_mask, (B, T) or (B, 1, T, 1, 1) in {0, 1}")
                if tuple(cond_mask.shape) == (b, frames):
                    cond_mask = rearrange(cond_mask, "b t -> b 1 t 1 1")
                if tuple(cond_mask.shape) != (b, 1, frames, 1, 1):
                    raise ValueError(
                        f"cond_mask must be (B, T)=({b}, {frames}) or (B, 1, T, 1, 1), got {tuple(cond_mask.shape)}"
                    )
                mask = cond_mask.to(x.dtype).expand(b, 1, *x.shape[2:])  # (B, 1, T, H, W)
                parts += [mask * cond_frames.to(x.dtype), mask]
        elif cond_frames is not None or cond_mask is not None:
            raise ValueError("cond_frames was given but config.frame_conditioning is False; enable it or drop it")
        if cfg.lowres_channels > 0:
            if lowres is None:
                raise ValueError(f"this SR network needs lowres, (B, {cfg.lowres_channels}, T, H, W)")
            self._check_like_x("lowres", lowres, x, cfg.lowres_channels)
            parts.append(lowres.to(x.dtype))
        elif lowres is not None:
            raise ValueError("lowres was given but config.lowres_channels is 0")
        return torch.cat(parts, dim=1)

    def _labels(self, y, batch: int, device) -> torch.Tensor | None:
        """(B,) labels with None -> the null class; None for an unconditional network."""
        if self.y_embedder is None:
            return None
        return torch.full((batch,), self.null_class, dtype=torch.long, device=device) if y is None else y

    def _conditioning_vector(self, t, y, noise_level, batch: int) -> torch.Tensor:
        """c = t_emb + y_emb (+ noise-level emb) -> (B, D); `y` from `_labels`."""
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            if y.shape != (batch,):
                raise ValueError(f"y must be (B,) = ({batch},) labels, got shape {tuple(y.shape)}")
            if y.dtype.is_floating_point:
                raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
            # Range check on CPU labels only: on an accelerator `y.min() < 0` reads a value back to
            # the host, a synchronisation every step (there the embedding lookup itself asserts).
            if y.device.type == "cpu" and not torch.compiler.is_compiling() and (
                y.min() < 0 or y.max() > self.config.num_classes
            ):
                raise ValueError(
                    f"labels must lie in [0, {self.config.num_classes}] ({self.config.num_classes} = null class)"
                )
            c = c + self.y_embedder(y)
        if self.noise_level_embedder is not None:
            if noise_level is None:
                noise_level = torch.zeros_like(t)
            c = c + self.noise_level_embedder(noise_level.reshape(batch))
        elif noise_level is not None:
            raise ValueError("noise_level was given but config.lowres_channels is 0")
        return c

    def _text_tokens(self, text, text_mask, batch: int):
        if self.text_proj is None:
            if text is not None or text_mask is not None:
                raise ValueError("text was given but config.text_dim is 0; build the network with text_dim > 0")
            return None, None
        if text is None:
            return None, None  # unconditional: windows attend to themselves only
        if text.ndim != 3 or text.shape[0] != batch or text.shape[2] != self.config.text_dim:
            raise ValueError(f"text must be (B, L, {self.config.text_dim}), got shape {tuple(text.shape)}")
        if text_mask is not None:
            if tuple(text_mask.shape) != tuple(text.shape[:2]):
                raise ValueError(f"text_mask must be (B, L)={tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
            text_mask = text_mask.bool()
        return self.text_proj(text.to(self.text_proj.mlp[0].weight.dtype)), text_mask

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        cond_frames: torch.Tensor | None = None,
        cond_mask: torch.Tensor | None = None,
        self_cond: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        lowres: torch.Tensor | None = None,
        noise_level: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        self._check_inputs(x, t)
        b, _, frames = x.shape[:3]
        p = self.config.patch_size

        h = self._conditioning_input(x, cond_frames, cond_mask, self_cond, lowres)  # (B, C_in, T, H, W)
        h = self.x_embedder(h) + self.pos_embed(frames)  # (B, T, H', W', D)
        y = self._labels(y, b, t.device)
        c = self._conditioning_vector(t, y, noise_level, b)  # (B, D)
        text, text_mask = self._text_tokens(text, text_mask, b)  # (B, L, D), (B, L)
        base_mod = self.adaLN_base(c) if self.adaLN_base is not None else None  # (B, 6D)
        class_tokens = None if self.class_token_table is None else self.class_token_table[y].to(h.dtype)  # (B, K, D)

        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, c, base_mod, text, text_mask, class_tokens, use_reentrant=False)
            else:
                h = block(h, c, base_mod, text, text_mask, class_tokens)  # (B, T, H', W', D)

        h = self.final_layer(h, c)  # (B, T, H', W', p*p*C)
        return unpatchify(h, p)  # (B, C, T, H, W)
