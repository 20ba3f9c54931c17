"""Parallelism, compilation and activation checkpointing, applied from OUTSIDE the model (torchtitan).

    model = apply_training_wrappers(net, parallel="ddp", compile=False, activation_checkpointing=True)

The model code (walt.denoiser, walt.autoencoder) stays plain PyTorch; this module is the only one
that knows DDP / FSDP2. Checkpoints of sharded (FSDP2) models go through
`torch.distributed.checkpoint.state_dict`: `gather_model_state` / `gather_optimizer_state` return
full, unsharded, CPU state on rank 0 (FQN-keyed, the same for "none", "ddp" and "fsdp", so a run
may change its parallelism on resume).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from walt.train.distributed import is_distributed

Parallel = Literal["none", "ddp", "fsdp"]
PARALLEL_MODES = ("none", "ddp", "fsdp")

__all__ = [
    "wrap_model", "apply_training_wrappers", "unwrap_model", "is_fsdp", "no_grad_sync", "clip_grad_norm",
    "gather_model_state", "load_model_state", "gather_optimizer_state", "load_optimizer_state",
]


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP wrapper (FSDP2 and `Module.compile` work in place)."""
    while isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile(model) wrapper


def wrap_model(model: nn.Module, mode: Parallel = "ddp", device: torch.device | None = None,
               find_unused_parameters: bool = False, mixed_precision: torch.dtype | None = None) -> nn.Module:
    """Wrap `model` for data-parallel training; "none" (or a single process) returns it unchanged.

    "ddp": `DistributedDataParallel` (every rank holds the whole model and optimiser).
    "fsdp": FSDP2 (`torch.distributed.fsdp.fully_shard`) on every block of `model.blocks` and
    then on the root, for models whose weights + optimiser do not fit one device. Sharding is in
    place; the returned module is `model` itself. With `mixed_precision` (e.g. bf16), parameters
    are all-gathered in that dtype and gradients reduced in float32.
    `find_unused_parameters`: needed with DDP when some steps leave parameters unused (joint
    image-video training: images skip the spatiotemporal blocks).
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    if mode == "none" or not is_distributed():
        return model
    if mode == "ddp":
        ids = [device.index] if device is not None and device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kw = {}
    if mixed_precision is not None:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=mixed_precision, reduce_dtype=torch.float32)
    for block in getattr(model, "blocks", []):
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model


def apply_training_wrappers(
    model: nn.Module,
    parallel: Parallel = "none",
    compile: bool = False,
    activation_checkpointing: bool = False,
    device: torch.device | None = None,
    find_unused_parameters: bool = False,
    mixed_precision: torch.dtype | None = None,
) -> nn.Module:
    """Activation checkpointing, then torch.compile, then DDP / FSDP2 (torchtitan's order).

    - activation checkpointing: `model.set_grad_checkpointing(True)` (WALT recomputes each block
      in the backward pass);
    - compile: each block of `model.blocks` is compiled in place (`Module.compile`: state-dict
      keys stay unchanged, repeated blocks compile once, composes with FSDP per-block sharding);
      models without `blocks` are compiled whole, also in place;
    - parallel: `wrap_model(model, parallel, ...)`.
    """
    if activation_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ValueError(f"{type(model).__name__} has no set_grad_checkpointing(); turn activation_checkpointing off")
        model.set_grad_checkpointing(True)
    if compile:
        blocks = getattr(model, "blocks", None)
        if blocks is not None and len(blocks):
            for block in blocks:
                block.compile()
        else:
            model.compile()
    return wrap_model(model, parallel, device=device, find_unused_parameters=find_unused_parameters,
                      mixed_precision=mixed_precision)


class no_grad_sync:
    """Context: skip the gradient all-reduce of DDP / FSDP2 (all but the last micro-batch of an accumulation)."""

    def __init__(self, model: nn.Module, enabled: bool = True):
        self.model, self.enabled, self._ctx = model, enabled, None

    def __enter__(self):
        if not self.enabled:
            return self
        if isinstance(self.model, nn.parallel.DistributedDataParallel):
            self._ctx = self.model.no_sync()
            self._ctx.__enter__()
        elif is_fsdp(self.model):
            self.model.set_requires_gradient_sync(False)
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        elif self.enabled and is_fsdp(self.model):
            self.model.set_requires_gradient_sync(True)
        return False


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Clip the global gradient L2 norm (<= 0: measure only); the norm before clipping, as a float.

    Works for plain, DDP (gradients already averaged) and FSDP2 (DTensor gradients: the norm is
    reduced over the shards) models alike; every rank gets the same value.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # DTensor (FSDP2)
        norm = norm.full_tensor()
    return float(norm)


# ----------------------------------------------------------------------------- full state dicts

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
_LOAD = StateDictOptions(full_state_dict=True)


def gather_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full CPU state dict (unsharded under FSDP; empty on ranks > 0 when distributed). Collective for FSDP."""
    return get_model_state_dict(unwrap_model(model), options=_FULL)


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict on every rank (each rank passes the same dict, e.g. read from one file)."""
    set_model_state_dict(unwrap_model(model), state, options=_LOAD)


def gather_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Full optimiser state keyed by parameter names (portable across none / ddp / fsdp)."""
    return get_optimizer_state_dict(unwrap_model(model), optimizer, options=_FULL)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    set_optimizer_state_dict(unwrap_model(model), optimizer, state, options=_LOAD)
