"""Shared helpers of the text tests (tests/test_text.py, tests/test_text_conditioning.py): a toy
text encoder, a tiny random local T5 folder, a small captioned latent cache."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from walt.text import TextEncoder


class _WordTokenizer:
    """Whitespace tokenizer with a hashed vocabulary, HF call convention (input_ids / attention_mask)."""

    vocab_size = 97

    def get_vocab(self):
        return {"<pad>": 0}

    def _ids(self, text):
        return [1 + int(hashlib.md5(w.encode()).hexdigest(), 16) % (self.vocab_size - 1) for w in text.split()] + [1]

    def __call__(self, prompts, padding, truncation, max_length, return_tensors):
        ids = [self._ids(p)[:max_length] for p in prompts]
        L = max(len(i) for i in ids)
        return {"input_ids": torch.tensor([i + [0] * (L - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (L - len(i)) for i in ids])}


class _Out:
    def __init__(self, h):
        self.last_hidden_state = h


class _EmbedModel(nn.Module):
    def __init__(self, dim, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(_WordTokenizer.vocab_size, dim)

    def forward(self, input_ids, attention_mask):
        return _Out(self.emb(input_ids))


class ToyEncoder(TextEncoder):
    """A real `TextEncoder` over a random word-embedding table: fast stand-in for cache/training tests."""

    def __init__(self, dim=12, seed=0, max_length=16):
        super().__init__(_EmbedModel(dim, seed), _WordTokenizer(), f"toy{seed}", dim, max_length)
        self.calls = 0

    def encode(self, prompts):
        self.calls += len(prompts)
        return super().encode(prompts)


def make_tiny_t5(d):
    """A randomly initialised 2-layer T5 encoder (d_model 16) + a Unigram tokenizer trained offline, saved locally.

    The tokenizer is a T5-style SentencePiece-Unigram model built with `tokenizers` on a few
    sentences (T5's own spiece.model cannot be downloaded here); these are NOT T5 weights.
    """
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    corpus = ["a red star rotating in place", "a blue circle bouncing around", "a green square sliding"] * 4
    tk.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=64, special_tokens=["<pad>", "</s>", "<unk>"],
                                                           unk_token="<unk>"))
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(fast), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, pad_token_id=0,
                   eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(str(d))
    return d


def make_caption_cache(vae, root):
    """12 captioned synthetic clips -> latents 4x2x4x4 in 2 shards (8 + 4), at root / "v"."""
    from walt.data import SyntheticVideos
    from walt.data.latent_cache import encode_dataset

    encode_dataset(vae, SyntheticVideos(12, num_frames=5, resolution=32), root / "v", shard_size=8, batch_size=4,
                   progress=False)
    return root / "v"


def copy_cache(src, dst):
    """Copy a latent cache without its text sidecar(s)."""
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("text*"))
    return dst
