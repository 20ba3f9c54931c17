"""Text-embedding sidecar of a latent cache: encode every caption once, train without the encoder.

The text encoder (T5-XL in the paper, MiniLM here) is frozen, so its features of a caption never
change; like the latents, they are computed once and stored next to the latent shards
(`walt.data.latent_cache`), and training reads them back by item index:

    cache_text_embeddings("cache/videos", build_text_encoder("minilm"))
    text = TextEmbeddings("cache/videos")
    tokens, mask = text.batch([0, 5, 7])          # (3, L, D) float32, (3, L) bool

Layout (a sub-folder of the latent cache, `text/` by default):
    text/plan.json               written first: encoder info (name, dim, max_length, weights_id),
                                 the latent cache's VAE hash, item count, shard ranges
    text/shard_00000.safetensors tokens (n, L_s, D) float16|float32 (padding zeroed), mask (n, L_s)
                                 uint8, indices (n,); L_s = longest prompt of that shard;
                                 metadata: encoder weights_id, sha256 of the shard's captions
    text/index.json              written last (its presence means "complete"): shards, the global
                                 token length L = max L_s, encoder info

Text shard s covers exactly the items of latent shard s, so an interrupted run resumes shard by
shard (every file is written atomically); a shard is redone when its captions (sha256) or the
encoder (weights_id) differ from what is stored. A sidecar from another encoder is refused: pass
another `subdir` or `overwrite=True`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from walt.io import atomic_write, write_json

__all__ = ["TEXT_CACHE_FORMAT", "DEFAULT_SUBDIR", "cache_text_embeddings", "has_text_embeddings", "TextEmbeddings",
           "null_text"]

TEXT_CACHE_FORMAT = "walt-text-cache/1"
DEFAULT_SUBDIR = "text"
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


def null_text(batch: int, length: int, dim: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional text: zero tokens (B, L, D) with an all-False mask (B, L).

    *Choice* (the paper does not say): a dropped caption at training time and the unconditional
    branch of classifier-free guidance both use NO text tokens (all masked out), rather than the
    encoding of the empty prompt "". With keys/values = concat(window tokens, text tokens) this
    is exactly the network called with text=None, independent of the text encoder, and a zeroed
    placeholder keeps the batch shape so the guided [cond; uncond] batch can run in one call.
    """
    return (torch.zeros(batch, length, dim, device=device, dtype=dtype),
            torch.zeros(batch, length, device=device, dtype=torch.bool))


def prompt_kwargs(encoder, prompts: Sequence[str], guidance_scale: float, device=None) -> dict[str, torch.Tensor]:
    """`walt.pipeline.generate` keyword arguments for `prompts`: text / text_mask, and with guidance
    (scale != 1) the no-text branch `null_text`, as a dropped caption in training."""
    tokens, mask = encoder.encode(list(prompts))  # (b, L, D), (b, L)
    kw = {"text": tokens.to(device), "text_mask": mask.to(device)}
    if guidance_scale != 1.0:
        kw["uncond_text"], kw["uncond_text_mask"] = null_text(*tokens.shape, device=device)
    return kw


def _captions_sha(captions: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(captions), ensure_ascii=False).encode()).hexdigest()


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"



def _latent_shards(cache_dir: Path) -> tuple[dict[str, Any], list[list[str]]]:
    """(latent index, captions of each latent shard)."""
    from walt.data.latent_dataset import load_cache_index

    index = load_cache_index(cache_dir)
    captions = []
    for s in index["shards"]:
        path = cache_dir / s["file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise ValueError(f"latent cache shard {path} is missing or corrupt ({e}); re-run `walt encode`") from None
        caps = json.loads(meta.get("captions", "[]"))
        if len(caps) != s["count"]:
            raise ValueError(f"{path} stores {len(caps)} captions for {s['count']} latents; re-encode the latent cache")
        captions.append([str(c) for c in caps])
    return index, captions


def _valid_text_shard(path: Path, count: int, weights_id: str, captions_sha: str) -> bool:
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            n = f.get_slice("tokens").get_shape()[0]
    except (SafetensorError, OSError):
        return False
    return (meta.get("format") == TEXT_CACHE_FORMAT and meta.get("weights_id") == weights_id
            and meta.get("captions_sha256") == captions_sha and n == count)


def has_text_embeddings(cache_dir: str | Path, subdir: str = DEFAULT_SUBDIR) -> bool:
    """True when `cache_dir/subdir` holds a complete text sidecar."""
    return (Path(cache_dir) / subdir / "index.json").is_file()


@torch.no_grad()
def cache_text_embeddings(
    cache_dir: str | Path,
    encoder,
    subdir: str = DEFAULT_SUBDIR,
    batch_size: int = 64,
    dtype: str = "float16",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode the captions of a complete latent cache with `encoder` into a sidecar folder (resumable).

    Args:
        cache_dir: a latent cache written by `walt.data.latent_cache.encode_dataset` (captions are
            read from its shards).
        encoder: a `walt.text.TextEncoder` (anything with encode / dim / max_length / weights_id / info()).
        subdir: sidecar folder name inside `cache_dir` (several encoders can live side by side).
        batch_size: prompts per `encoder.encode` call.
        dtype: stored token dtype, "float16" (default) | "float32" | "bfloat16".
        overwrite: replace a sidecar made by another encoder / settings instead of refusing.
    Returns: the sidecar's index (also in `cache_dir/subdir/index.json`), with "encoded_shards"
        and "skipped_shards" of this call added.
    Raises:
        ValueError: no complete latent cache; no captions at all; an existing sidecar from another
            encoder or dtype (without overwrite).

    Under torch.distributed (e.g. `torchrun ... walt encode`) rank 0 encodes, the others wait and
    read the index.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        result, error = None, None
        if dist.get_rank() == 0:
            try:
                result = _cache_text_embeddings(cache_dir, encoder, subdir, batch_size, dtype, overwrite, progress)
            except ValueError as e:
                error = e  # reach the barrier first, so the other ranks do not wait forever
        dist.barrier()
        if error is not None:
            raise error
        if result is None:
            index = Path(cache_dir) / subdir / "index.json"
            if not index.is_file():
                raise ValueError(f"rank 0 failed to write {index}; see its error")
            result = {**json.loads(index.read_text()), "encoded_shards": [], "skipped_shards": []}
        return result
    return _cache_text_embeddings(cache_dir, encoder, subdir, batch_size, dtype, overwrite, progress)


def _cache_text_embeddings(cache_dir, encoder, subdir, batch_size, dtype, overwrite, progress) -> dict[str, Any]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    cache_dir = Path(cache_dir)
    latent_index, captions = _latent_shards(cache_dir)
    if not any(c.strip() for caps in captions for c in caps):
        raise ValueError(f"the latent cache in {cache_dir} has no captions (every caption is empty); "
                         "text conditioning needs a captioned dataset")
    info = encoder.info() if hasattr(encoder, "info") else {
        "name": encoder.name, "dim": encoder.dim, "max_length": encoder.max_length, "weights_id": encoder.weights_id}
    weights_id = info["weights_id"]
    plan = {
        "format": TEXT_CACHE_FORMAT,
        "encoder": info,
        "dtype": dtype,
        "vae_sha256": latent_index["vae_sha256"],
        "num_samples": latent_index["num_samples"],
        "shards": [{"file": s["file"], "count": s["count"], "start": s["start"]} for s in latent_index["shards"]],
    }
    out = cache_dir / subdir
    out.mkdir(parents=True, exist_ok=True)
    plan_path, index_path = out / "plan.json", out / "index.json"
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        same = (old.get("encoder", {}).get("weights_id") == weights_id and old.get("dtype") == dtype
                and old.get("vae_sha256") == plan["vae_sha256"] and old.get("shards") == plan["shards"])
        if not same:
            if not overwrite:
                why = ("another text encoder" if old.get("encoder", {}).get("weights_id") != weights_id
                       else "another dtype" if old.get("dtype") != dtype else "another latent cache")
                raise ValueError(f"{out} holds text embeddings from {why} ({old.get('encoder', {}).get('name')!r}); "
                                 "pass overwrite=True (CLI: delete the folder) or use another subdir")
            for p in out.glob("*.safetensors"):
                p.unlink()
            index_path.unlink(missing_ok=True)
    index_path.unlink(missing_ok=True)  # re-validated below: a shard may have gone missing since
    write_json(plan_path, plan)

    encoded, skipped, lengths = [], [], []
    bar = tqdm(total=plan["num_samples"], disable=not progress, desc="encode text", unit="caption",
               dynamic_ncols=True)
    try:
        for s, (shard, caps) in enumerate(zip(plan["shards"], captions)):
            path = out / _shard_name(s)
            sha = _captions_sha(caps)
            if _valid_text_shard(path, shard["count"], weights_id, sha):
                skipped.append(s)
                with safe_open(str(path), framework="pt") as f:
                    lengths.append(f.get_slice("mask").get_shape()[1])
                bar.update(shard["count"])
                continue
            toks, masks = [], []
            for lo in range(0, len(caps), batch_size):
                t, m = encoder.encode(caps[lo:lo + batch_size])  # (b, l, D), (b, l)
                toks.append(t.float().cpu())
                masks.append(m.cpu())
                bar.update(len(caps[lo:lo + batch_size]))
            L = max(t.shape[1] for t in toks)
            tokens = torch.cat([torch.nn.functional.pad(t, (0, 0, 0, L - t.shape[1])) for t in toks])  # (n, L, D)
            mask = torch.cat([torch.nn.functional.pad(m, (0, L - m.shape[1])) for m in masks])  # (n, L)
            tensors = {"tokens": tokens.to(_DTYPES[dtype]).contiguous(), "mask": mask.to(torch.uint8).contiguous(),
                       "indices": torch.arange(shard["start"], shard["start"] + shard["count"], dtype=torch.long)}
            meta = {"format": TEXT_CACHE_FORMAT, "shard": str(s), "weights_id": weights_id, "captions_sha256": sha}
            atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
            encoded.append(s)
            lengths.append(L)
    finally:
        bar.close()
    index = {**plan, "num_shards": len(plan["shards"]), "max_tokens": max(lengths),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(index_path, index)
    return {**index, "encoded_shards": encoded, "skipped_shards": skipped}


class TextEmbeddings:
    """Cached text features of a latent cache, by item index (no text encoder needed).

    `emb[i]` -> (tokens (L, D) float32, mask (L,) bool); `emb.batch(ids)` -> (B, L, D), (B, L).
    Every item is padded (zeros, mask False) to the sidecar's global length L = `max_tokens`.

    Args:
        cache_dir: the latent cache folder.
        subdir: the sidecar folder inside it.
        weights_id: optional encoder weights_id the sidecar must come from (ValueError otherwise).
    """

    def __init__(self, cache_dir: str | Path, subdir: str = DEFAULT_SUBDIR, weights_id: str | None = None):
        self.cache_dir = Path(cache_dir)
        folder = self.cache_dir / subdir
        path = folder / "index.json"
        if not path.is_file():
            hint = " (caching was interrupted: run it again, it resumes)" if (folder / "plan.json").is_file() else ""
            raise ValueError(f"no text embeddings in {folder}{hint}; create them with "
                             "`walt encode ... --text-encoder minilm` or walt.text.cache_text_embeddings")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != TEXT_CACHE_FORMAT:
            raise ValueError(f"{path} is not a walt text cache (format={self.index.get('format')!r})")
        self.encoder_info: dict[str, Any] = self.index["encoder"]
        # What training and sampling check the features by: width, encoder, latent cache.
        self.dim, self.weights_id = int(self.encoder_info["dim"]), str(self.encoder_info["weights_id"])
        self.encoder_name, self.vae_sha256 = str(self.encoder_info["name"]), str(self.index["vae_sha256"])
        if weights_id is not None and weights_id != self.weights_id:
            raise ValueError(f"the text embeddings in {folder} come from another encoder (weights "
                             f"{self.weights_id[:12]} != {weights_id[:12]}); re-cache them with this encoder")
        self.max_tokens = int(self.index["max_tokens"])
        n = int(self.index["num_samples"])
        self._tokens = torch.zeros(n, self.max_tokens, self.dim, dtype=_DTYPES[self.index["dtype"]])
        self._mask = torch.zeros(n, self.max_tokens, dtype=torch.bool)
        for s, shard in enumerate(self.index["shards"]):
            p = folder / _shard_name(s)
            try:
                with safe_open(str(p), framework="pt") as f:
                    meta = f.metadata() or {}
                    tok, mask = f.get_tensor("tokens"), f.get_tensor("mask")
            except (SafetensorError, OSError) as e:
                raise ValueError(f"text shard {p} is missing or corrupt ({e}); run cache_text_embeddings again") from None
            if meta.get("weights_id") != self.weights_id or tok.shape[0] != shard["count"]:
                raise ValueError(f"{p} does not match {path}; run cache_text_embeddings again")
            lo, l = shard["start"], tok.shape[1]
            self._tokens[lo:lo + shard["count"], :l] = tok
            self._mask[lo:lo + shard["count"], :l] = mask.bool()

    def __len__(self) -> int:
        return self._tokens.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._tokens[i].float(), self._mask[i].clone()

    def batch(self, ids: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) float32 tokens and (B, L) bool mask of items `ids`."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        return self._tokens[ids].float(), self._mask[ids]
