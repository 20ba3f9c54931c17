"""Distributed training plumbing: process group, model wrappers, restorable data order, clean exit.

Parallelism, compilation and activation checkpointing are applied OUTSIDE the model, in that
order (torchtitan style): the model code (walt.denoiser) stays plain PyTorch.

    info = init_distributed()                  # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK
    model = apply_training_wrappers(model, parallel="ddp", compile=False, activation_checkpointing=True)
    sampler = ResumableBatchSampler(len(ds), global_batch=256, seed=0)   # same batches on resume
    ...
    shutdown(0)                                # barrier, destroy, flush, os._exit: never hangs/aborts

Backends: NCCL when CUDA is available, gloo on CPU. `torch.distributed` is used directly (no
accelerate: on CPU it silently ran unsynchronised processes here).

Checkpoints of sharded (FSDP2) models go through `torch.distributed.checkpoint.state_dict`:
`gather_model_state` / `gather_optimizer_state` return full, unsharded, CPU state on rank 0
(FQN-keyed, the same for "none", "ddp" and "fsdp", so a run may change its parallelism on resume).
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Literal, NoReturn

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

Parallel = Literal["none", "ddp", "fsdp"]
PARALLEL_MODES = ("none", "ddp", "fsdp")

__all__ = [
    "DistInfo", "init_distributed", "is_distributed", "get_rank", "get_world_size", "is_main", "barrier",
    "all_reduce_mean", "all_reduce_max", "wrap_model", "apply_training_wrappers", "unwrap_model",
    "is_fsdp", "ResumableBatchSampler", "gather_model_state", "load_model_state", "gather_optimizer_state",
    "load_optimizer_state", "clip_grad_norm", "no_grad_sync", "GracefulStop", "shutdown",
]


# ----------------------------------------------------------------------------- process group


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: single process, no process group


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Without torchrun (WORLD_SIZE unset or 1) nothing is initialised and a single-process
    `DistInfo` is returned, so the same script runs either way. Backend: NCCL when CUDA is
    available (each rank on cuda:LOCAL_RANK), gloo on CPU. Calling it again is harmless.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                             "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world <= 1:
        return DistInfo(0, 1, 0, device, None)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    backend = backend or ("nccl" if cuda else "gloo")
    if not dist.is_initialized():
        kw: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
        if cuda and backend == "nccl":
            kw["device_id"] = device  # eager NCCL init, binds the communicator to this GPU
        dist.init_process_group(**kw)
    return DistInfo(rank, world, local_rank, device, dist.get_backend())


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over ranks (a new tensor; `x` itself in a single process)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.MAX)
    return y


class GracefulStop:
    """Context manager: SIGTERM / SIGINT only set `flag`; the training loop checks it once per step.

    The loop finishes the current step, all-reduces the flag (so every rank stops at the same
    step), writes a checkpoint and returns. A second SIGINT raises KeyboardInterrupt at once
    (abort without saving). Handlers are installed only in the main thread (the only one that
    receives signals) and the previous handlers are restored on exit. Under torchrun, the
    launcher forwards SIGTERM / SIGINT to every worker.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.flag = threading.Event()
        self.received: str | None = None
        self._signals = signals
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user really wants out now
        self.received = signal.Signals(signum).name
        self.flag.set()
        if is_main():
            print(f"\n{self.received} received: finishing this step, saving a checkpoint, then stopping "
                  "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in self._signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
        return False


def shutdown(exit_code: int = 0) -> NoReturn:
    """End this worker safely: barrier, destroy the process group, flush, then `os._exit`.

    Measured here: gloo workers intermittently abort with SIGABRT at interpreter exit after
    their work is done (16/100 runs with destroy only, 5/100 with barrier + destroy, 0/140 with
    barrier + destroy + flush + os._exit). `os._exit` skips the interpreter teardown in which the
    abort happens; the flush makes sure nothing printed is lost. Call it as the last statement
    of a torchrun worker (it never returns). A failing barrier (a dead peer) is ignored so a
    failed run still exits with `exit_code`.
    """
    try:
        if dist.is_available() and dist.is_initialized():
            try:
                if exit_code == 0:
                    dist.barrier()
            finally:
                dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 -- exiting anyway; report and keep the exit code
        print(f"shutdown: ignoring {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


# ----------------------------------------------------------------------------- model wrappers


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


# ----------------------------------------------------------------------------- data order


class ResumableBatchSampler:
    """Deterministic, restorable batches: a seeded permutation per epoch, split across ranks.

    Epoch e visits `torch.randperm(num_samples)` drawn from a generator seeded with
    (seed, e); consecutive slices of `global_batch` indices form the global batches (the last
    incomplete slice is dropped, like DistributedSampler(drop_last=True)); rank r takes the r-th
    of `world_size` equal parts of each. The data position is (epoch, batch in epoch): save it with
    `state_dict()`, restore it with `load_state_dict()`, and a resumed run sees exactly the same
    batches. Because the permutation is global, the global batches do not depend on world_size.
    """

    def __init__(self, num_samples: int, global_batch: int, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, shuffle: bool = True):
        self.world_size = get_world_size() if world_size is None else world_size
        self.rank = get_rank() if rank is None else rank
        if global_batch < 1 or global_batch % self.world_size:
            raise ValueError(f"global batch {global_batch} must be a positive multiple of the world size {self.world_size}")
        if num_samples < global_batch:
            raise ValueError(f"the dataset has {num_samples} items, fewer than one global batch of {global_batch}; "
                             "lower batch_size or add data")
        self.num_samples, self.global_batch, self.seed, self.shuffle = num_samples, global_batch, seed, shuffle
        self.batches_per_epoch = num_samples // global_batch
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            if self.shuffle:
                g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))
                self._perm = torch.randperm(self.num_samples, generator=g)
            else:
                self._perm = torch.arange(self.num_samples)
        return self._perm

    def next_global(self) -> torch.Tensor:
        """The next global batch (global_batch,) of dataset indices; advances the position."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        lo = self.position * self.global_batch
        batch = self._permutation()[lo:lo + self.global_batch]
        self.position += 1
        return batch

    def next_indices(self) -> torch.Tensor:
        """This rank's share (global_batch / world_size,) of the next global batch."""
        per_rank = self.global_batch // self.world_size
        return self.next_global()[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[list[int]]:
        """Iterate this rank's batches to the end of the current epoch (usable as a DataLoader batch_sampler)."""
        while self.position < self.batches_per_epoch:
            yield self.next_indices().tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_samples": self.num_samples, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "num_samples", "global_batch"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(f"data position was saved with {key}={state[key]}, now {getattr(self, key)}; "
                                 "resume with the same dataset, batch size and seed")
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None
