"""Checkpoints: safetensors for every tensor, JSON for everything else, atomic writes.

A checkpoint is one `.safetensors` file. Tensors of arbitrarily nested state (model weights,
optimiser state, RNG states) are stored as safetensors entries; the non-tensor skeleton (the
config, step counters, hyper-parameters) is stored as JSON in the file's metadata. Nothing is
ever unpickled, so loading an untrusted checkpoint cannot run code.

Writes are atomic (`walt.io.atomic_write`): a kill mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from walt.io import atomic_write

FORMAT = "walt-checkpoint/1"
# The "kind" of a resumable training state (`walt.train.common.save_training_state`); the
# networks' own kinds live with them (e.g. `walt.denoiser.transformer.CHECKPOINT_KIND`).
TRAINING_STATE_KIND = "walt-training-state"
_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_TUPLE = "__tuple__"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match what the caller expects."""


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "_root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        key = prefix or "_root"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {_NDARRAY: key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint keys must be str or int, got {type(k).__name__}")
            # JSON keys are strings; remember int keys (optimiser state uses them).
            sk = f"#{k}" if isinstance(k, int) else k
            if isinstance(k, str) and k.startswith("#"):
                raise TypeError(f"checkpoint string keys may not start with '#': {k!r}")
            out[sk] = _flatten(v, f"{prefix}.{sk}" if prefix else sk, tensors)
        return out
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        if set(obj) == {_NDARRAY}:
            return tensors[obj[_NDARRAY]].numpy()
        if set(obj) == {_TUPLE}:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        return {(int(k[1:]) if k.startswith("#") else k): _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save nested `state` (tensors, arrays, JSON scalars, dicts, lists, tuples) atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    # safetensors refuses tensors that share memory; store independent copies.
    seen: dict[int, str] = {}
    for k, t in list(tensors.items()):
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen and ptr != -1:
            tensors[k] = t.clone()
        seen[ptr] = k
    meta = {"format": FORMAT, "state": json.dumps(skeleton)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`; raises CheckpointError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a walt checkpoint (format={meta.get('format')!r})")
    return _unflatten(json.loads(meta["state"]), tensors)
