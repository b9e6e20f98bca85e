"""Tokenization shared by training and sampling (a leaf: it imports nothing of reversalkit).

`batch_encode` encodes many texts in one call for a transformers tokenizer or a
`tokenizers.Tokenizer`; `TokenizerAdapter` is the one encode/decode interface the sampler uses over
those, a directory to load one from, or None (token-id prompts, empty texts).

    ids = batch_encode(tokenizer, ["2 + 3 ="], add_special_tokens=True)
    TokenizerAdapter(tokenizer).decode(ids[0])
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def batch_encode(tokenizer, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of each text, as `tokenizer(texts, add_special_tokens=...)["input_ids"]` gives them
    for a transformers tokenizer (or `encode_batch` for a `tokenizers.Tokenizer`).

    A fast transformers tokenizer whose backend has no padding or truncation set encodes through
    the backend's `encode_batch` directly (transformers' per-text conversion to Python objects cost
    ~40% of the encoding); any other goes through `tokenizer(...)`.
    """
    if type(tokenizer).__module__.startswith("tokenizers"):
        return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.padding is None and backend.truncation is None:
        return [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]
    return tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]


class TokenizerAdapter:
    def __init__(self, tokenizer):
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer  # noqa: PLC0415

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        self.tok = tokenizer
        if tokenizer is not None and not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode")):
            raise TypeError(f"tokenizer must have encode() and decode(), got {type(tokenizer).__name__}")

    @property
    def eos_token_id(self) -> int | None:
        return getattr(self.tok, "eos_token_id", None)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, with the special tokens the tokenizer adds (e.g. BOS), in one
        batched call where the tokenizer has one."""
        if self.tok is None:
            raise ValueError("string prompts need a tokenizer; pass one to Engine or give token-id lists")
        if not callable(self.tok) and not type(self.tok).__module__.startswith("tokenizers"):
            return [list(self.tok.encode(t)) for t in texts]  # any object with encode() and decode()
        return [list(ids) for ids in batch_encode(self.tok, texts, add_special_tokens=True)]

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens removed."""
        if self.tok is None:
            return ""
        return self.tok.decode(ids, skip_special_tokens=True)

    def decode_raw(self, ids: list[int]) -> str:
        """Same as decode; used by the stop-string check (kept separate so a faster one can slot in)."""
        return self.decode(ids)
