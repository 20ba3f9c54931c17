"""Text conditioning for text-to-video (W.A.L.T §3.3, §5.3; SPEC §2): frozen encoders and cached features.

    from walt.text import build_text_encoder, cache_text_embeddings, TextEmbeddings, null_text
    enc = build_text_encoder("minilm")                 # all-MiniLM-L6-v2 offline (384-d), or "t5:/path"
    tokens, mask = enc.encode(["a red ball bouncing"])  # (1, L, 384) float32, (1, L) bool
    cache_text_embeddings("cache/videos", enc)          # sidecar of a latent cache (resumable)
    text = TextEmbeddings("cache/videos")               # training reads features, never runs the encoder

Dropped / unconditional text is `null_text`: no text tokens at all (an all-False mask).
Heavy imports (transformers) happen only when an encoder is built.
"""

from walt.text.cache import (
    DEFAULT_SUBDIR,
    TextEmbeddings,
    cache_text_embeddings,
    has_text_embeddings,
    null_text,
    prompt_kwargs,
)
from walt.text.encoders import (
    TEXT_ENCODERS,
    MiniLMTextEncoder,
    T5TextEncoder,
    TextEncoder,
    TextEncoderError,
    build_text_encoder,
    register_text_encoder,
    weights_fingerprint,
)

__all__ = [
    "TextEncoder", "TextEncoderError", "MiniLMTextEncoder", "T5TextEncoder", "TEXT_ENCODERS",
    "register_text_encoder", "build_text_encoder", "weights_fingerprint", "cache_text_embeddings",
    "has_text_embeddings", "TextEmbeddings", "null_text", "prompt_kwargs", "DEFAULT_SUBDIR",
]
