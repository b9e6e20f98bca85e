"""Corpus-level similarity of sample embeddings: nearest neighbours and semantic dedup.

Similarity is cosine (inner product of L2-normalized rows). Three exact (brute-force) backends:
- "faiss": IndexFlatIP, on the GPU when faiss was built with GPUs and device is "cuda[:i]";
- "torch": blocked matmul + topk on `device`;
- "numpy": blocked matmul + argpartition.
All return the same neighbours, up to the order of exactly tied scores; `choose_backend` picks
the fastest for the size and device from benchmarks/bench_similarity.py.

    from reversalkit.metrics import embed_texts, nearest_neighbor_similarity, semantic_dedup
    emb = embed_texts(texts)                               # (N, 384)
    sim, idx = nearest_neighbor_similarity(emb)            # (N,), (N,): closest other sample
    kept = semantic_dedup(emb, threshold=0.95)             # indices of the samples kept
"""

from __future__ import annotations

import numpy as np

__all__ = ["BACKENDS", "choose_backend", "nearest_neighbors", "nearest_neighbor_similarity", "semantic_dedup"]

BACKENDS = ("faiss", "torch", "numpy")
# Query rows per block are chosen so one (rows, N) float32 score block stays under this size.
_BLOCK_BYTES = 1 << 27


def _faiss_gpu(device: str) -> int | None:
    """GPU ordinal for faiss, or None when faiss has no GPU support or device is not CUDA."""
    if not device.startswith("cuda"):
        return None
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return None
    return int(device.split(":")[1]) if ":" in device else 0


def choose_backend(num_rows: int, device: str = "cpu") -> str:
    """Fastest exact backend for an (num_rows, 384) corpus on `device`, per bench_similarity.

    Measured (k=1, float32, median of repeats; benchmarks/bench_similarity.py):
    - CPU, 16-core host of an H100 machine: 10k rows numpy 112 ms, torch 111 ms, faiss-cpu 406 ms;
      100k rows numpy 11.7 s, torch 12.7 s, faiss-cpu 36.6 s.
    - CPU, 2-core EPYC (shared, noisy): 10k rows numpy 4.2 s, torch 4.8 s, faiss-cpu 5.0 s.
    - CUDA (H100): torch 6.2 ms at 10k and 383 ms at 100k, 18x and 31x faster than numpy.
    So numpy on the CPU at every measured size (torch ties it, faiss-cpu never wins), torch on a
    GPU. FAISS's GPU index (faiss-gpu) was not measured, so "faiss" with device="cuda" is used
    only when asked for explicitly.
    """
    if num_rows < 0:
        raise ValueError(f"num_rows must be >= 0, got {num_rows}")
    return "torch" if device.startswith("cuda") else "numpy"


def _prepare(embeddings, normalize: bool) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (N, D), got shape {x.shape}")
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.ascontiguousarray(x / np.maximum(norms, 1e-12))
    return x


def _block_rows(num_cols: int) -> int:
    return int(max(1, min(4096, _BLOCK_BYTES // (4 * max(num_cols, 1)))))


def _knn_numpy(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    scores = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    rows = _block_rows(n)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        sims = x[s:e] @ x.T  # (b, N)
        sims[np.arange(e - s), np.arange(s, e)] = -np.inf  # exclude self
        if k == 1:  # argmax: no (b, N) index array, unlike argpartition
            best = sims.argmax(axis=1)
            ids[s:e, 0] = best
            scores[s:e, 0] = sims[np.arange(e - s), best]
            continue
        part = np.argpartition(sims, -k, axis=1)[:, -k:]  # (b, k) unordered top k
        part_scores = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        ids[s:e] = np.take_along_axis(part, order, axis=1)
        scores[s:e] = np.take_along_axis(part_scores, order, axis=1)
    return scores, ids


def _knn_torch(x: np.ndarray, k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    n = x.shape[0]
    xt = torch.from_numpy(x).to(device)
    scores = torch.empty((n, k), dtype=torch.float32, device=device)
    ids = torch.empty((n, k), dtype=torch.int64, device=device)
    rows = _block_rows(n)
    with torch.no_grad():
        for s in range(0, n, rows):
            e = min(n, s + rows)
            sims = xt[s:e] @ xt.T  # (b, N)
            r = torch.arange(e - s, device=device)
            sims[r, r + s] = float("-inf")  # exclude self
            top = torch.topk(sims, k, dim=1)
            scores[s:e], ids[s:e] = top.values, top.indices
    return scores.cpu().numpy(), ids.cpu().numpy()


def _faiss_index(d: int, device: str):
    import faiss

    index = faiss.IndexFlatIP(d)
    gpu = _faiss_gpu(device)
    if gpu is not None:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, index)
    return index


def _knn_faiss(x: np.ndarray, k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    index = _faiss_index(x.shape[1], device)
    index.add(x)
    scores, ids = index.search(x, k + 1)  # (N, k+1), self usually first
    # Drop self; if exact ties pushed it out of the k+1 results, drop the last one instead.
    is_self = ids == np.arange(n)[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1).astype(np.int64)


def nearest_neighbors(embeddings, k: int = 1, *, backend: str = "auto", device: str = "cpu",
                      normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar OTHER rows of every row of embeddings (N, D).

    Returns (scores, ids): float32 (N, k) cosine similarities in descending order and int64 (N, k)
    row indices. normalize=False treats the rows as already unit length (inner product).
    backend: "auto" (`choose_backend`), "faiss", "torch" or "numpy". Requires 1 <= k <= N - 1.
    """
    x = _prepare(embeddings, normalize)
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must lie in [1, N-1] = [1, {n - 1}] for N={n} rows, got k={k}")
    backend = choose_backend(n, device) if backend == "auto" else backend
    if backend == "faiss":
        return _knn_faiss(x, k, device)
    if backend == "torch":
        return _knn_torch(x, k, device)
    if backend == "numpy":
        return _knn_numpy(x, k)
    raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")


def nearest_neighbor_similarity(embeddings, *, backend: str = "auto", device: str = "cpu",
                                normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Similarity of every row to its closest other row: (scores float32 (N,), ids int64 (N,))."""
    scores, ids = nearest_neighbors(embeddings, 1, backend=backend, device=device, normalize=normalize)
    return scores[:, 0], ids[:, 0]


class _KeptRows:
    """Rows kept so far by `semantic_dedup`, queried for their max similarity on one backend."""

    def __init__(self, capacity: int, dim: int, backend: str, device: str):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
        self.backend, self.device, self.count = backend, device, 0
        if backend == "faiss":
            self.index = _faiss_index(dim, device)
        elif backend == "torch":
            import torch

            self.buf = torch.empty((capacity, dim), dtype=torch.float32, device=device)
        else:
            self.buf = np.empty((capacity, dim), dtype=np.float32)

    def add(self, rows: np.ndarray) -> None:
        if self.backend == "faiss":
            self.index.add(rows)
        elif self.backend == "torch":
            import torch

            self.buf[self.count:self.count + len(rows)] = torch.from_numpy(rows).to(self.device)
        else:
            self.buf[self.count:self.count + len(rows)] = rows
        self.count += len(rows)

    def max_sim(self, queries: np.ndarray) -> np.ndarray:
        """(b,) float32: each query's highest similarity to a kept row; -inf when none is kept."""
        if self.count == 0:
            return np.full(len(queries), -np.inf, dtype=np.float32)
        if self.backend == "faiss":
            return self.index.search(queries, 1)[0][:, 0]
        cols = _block_rows(len(queries))  # kept rows per chunk, bounding the (b, cols) block
        if self.backend == "torch":
            import torch

            q = torch.from_numpy(queries).to(self.device)
            best = torch.full((len(queries),), float("-inf"), device=self.device)
            with torch.no_grad():
                for c in range(0, self.count, cols):
                    block = q @ self.buf[c:min(self.count, c + cols)].T  # (b, cols)
                    best = torch.maximum(best, block.max(dim=1).values)
            return best.cpu().numpy()
        best = np.full(len(queries), -np.inf, dtype=np.float32)
        for c in range(0, self.count, cols):
            best = np.maximum(best, (queries @ self.buf[c:min(self.count, c + cols)].T).max(axis=1))
        return best


def _greedy_within(x_block: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy in-order keep mask for rows (b, D) of one block, comparing only within the block."""
    hits = np.tril(x_block @ x_block.T >= threshold, -1)  # (b, b): earlier rows above threshold
    keep = np.ones(len(x_block), dtype=bool)
    for r in np.flatnonzero(hits.any(axis=1)):  # rows with no earlier hit are always kept
        keep[r] = not np.any(hits[r, :r] & keep[:r])
    return keep


def semantic_dedup(embeddings, threshold: float, *, backend: str = "auto", device: str = "cpu",
                   normalize: bool = True, block_rows: int = 1024) -> np.ndarray:
    """Indices (ascending, int64) of the rows kept by greedy semantic dedup of embeddings (N, D).

    Rows are visited in order; a row is dropped when its cosine similarity to some already kept
    row is >= threshold, else kept. So the result does not depend on the backend or block size,
    except for pairs whose similarity lies within float32 rounding of the threshold.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    x = _prepare(embeddings, normalize)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    backend = choose_backend(n, device) if backend == "auto" else backend
    kept_rows = _KeptRows(n, x.shape[1], backend, device)
    kept: list[np.ndarray] = []
    for s in range(0, n, block_rows):
        block = x[s:s + block_rows]
        candidates = np.flatnonzero(kept_rows.max_sim(block) < threshold)
        if candidates.size == 0:
            continue
        new = s + candidates[_greedy_within(block[candidates], threshold)]
        kept_rows.add(x[new])
        kept.append(new)
    return np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, dtype=np.int64)
