"""Nearest-neighbour similarity and semantic dedup: every backend against brute-force references.

Reference neighbours: a float64 torch similarity matrix with the diagonal masked, then topk; ids
must match exactly wherever the reference's scores are distinct (gap above float32 rounding).
Reference dedup: the greedy rule written as a plain double loop in float64.
"""

import numpy as np
import pytest
import torch

from reversalkit.metrics import choose_backend, nearest_neighbor_similarity, nearest_neighbors, semantic_dedup
from reversalkit.metrics.similarity import BACKENDS

GAP = 1e-5  # float32 dot products of unit vectors at D <= 384 are accurate to ~1e-6


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def torch_reference(x, k):
    xt = torch.from_numpy(unit(x.astype(np.float64)))
    sims = xt @ xt.T
    sims.fill_diagonal_(float("-inf"))
    top = torch.topk(sims, k + 1, dim=1)  # one extra score to tell whether the k-th is tied
    return top.values.numpy(), top.indices.numpy()


def greedy_reference(x, threshold):
    xu = unit(x.astype(np.float64))
    kept = []
    for i in range(len(xu)):
        if all(xu[i] @ xu[j] < threshold for j in kept):
            kept.append(i)
    return np.array(kept, dtype=np.int64)


def clustered(n_clusters, per_cluster, dim, spread, seed):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim))
    noise = rng.standard_normal((n_clusters * per_cluster, dim))
    x = np.repeat(centers, per_cluster, axis=0) + spread * noise
    return x[rng.permutation(len(x))].astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,dim,k", [(6, 3, 1), (123, 16, 1), (431, 42, 5), (300, 384, 3)])
def test_nearest_neighbors_match_torch_bruteforce(backend, n, dim, k):
    x = np.random.default_rng(n + dim).standard_normal((n, dim)).astype(np.float32)
    ref_scores, ref_ids = torch_reference(x, k)
    scores, ids = nearest_neighbors(x, k, backend=backend)
    assert scores.shape == ids.shape == (n, k) and scores.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_allclose(scores, ref_scores[:, :k], atol=GAP)
    gaps = -np.diff(ref_scores, axis=1)  # (n, k): gap after each rank
    distinct = np.all(gaps > GAP, axis=1)
    assert distinct.mean() > 0.9  # the check below must cover most rows to mean anything
    np.testing.assert_array_equal(ids[distinct], ref_ids[distinct, :k])
    assert not np.any(ids == np.arange(n)[:, None])  # never itself
    assert np.all(np.diff(scores, axis=1) <= 0)  # descending


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_exclude_self_and_score_one(backend):
    base = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    x = np.concatenate([base, base[:5], base[:5]])  # rows 0..4 appear three times each
    sims, ids = nearest_neighbor_similarity(x, backend=backend)
    assert sims.shape == ids.shape == (30,)
    assert np.all(ids != np.arange(30))
    dup_rows = list(range(5)) + list(range(20, 30))
    np.testing.assert_allclose(sims[dup_rows], 1.0, atol=1e-6)
    for r in dup_rows:  # the neighbour is one of the copies of the same vector
        np.testing.assert_array_equal(x[ids[r]], x[r])


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_flag_and_zero_rows(backend):
    x = np.random.default_rng(1).standard_normal((50, 12)).astype(np.float32)
    scaled = x * np.random.default_rng(2).uniform(0.1, 10, size=(50, 1)).astype(np.float32)
    a = nearest_neighbors(x, 2, backend=backend)
    b = nearest_neighbors(scaled, 2, backend=backend)
    np.testing.assert_allclose(a[0], b[0], atol=GAP)
    c = nearest_neighbors(unit(x), 2, backend=backend, normalize=False)
    np.testing.assert_allclose(a[0], c[0], atol=GAP)
    x[3] = 0.0
    assert np.all(np.isfinite(nearest_neighbors(x, 1, backend=backend)[0]))


def test_nearest_neighbors_errors():
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="k must lie"):
        nearest_neighbors(x, 4)
    with pytest.raises(ValueError, match="k must lie"):
        nearest_neighbors(x, 0)
    with pytest.raises(ValueError, match="2-D"):
        nearest_neighbors(np.ones(5), 1)
    with pytest.raises(ValueError, match="backend"):
        nearest_neighbors(x, 1, backend="annoy")
    with pytest.raises(ValueError, match="k must lie"):
        nearest_neighbor_similarity(x[:1])  # one row has no other row


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_rows", [7, 1024])
def test_semantic_dedup_matches_greedy_reference(backend, block_rows):
    x = clustered(n_clusters=30, per_cluster=8, dim=32, spread=0.05, seed=3)
    x = np.concatenate([x, x[:10]])  # exact duplicates of earlier rows, dropped at any threshold
    ref = greedy_reference(x, 0.9)
    got = semantic_dedup(x, 0.9, backend=backend, block_rows=block_rows)
    np.testing.assert_array_equal(got, ref)
    assert 30 <= len(got) < len(x)  # about one per cluster survives


@pytest.mark.parametrize("backend", BACKENDS)
def test_semantic_dedup_threshold_extremes(backend):
    x = np.random.default_rng(4).standard_normal((40, 10)).astype(np.float32)
    np.testing.assert_array_equal(semantic_dedup(x, -1.0, backend=backend), [0])  # all dup of row 0
    loose = np.concatenate([x, x[[5, 9]]])
    np.testing.assert_array_equal(semantic_dedup(loose, 0.999, backend=backend), np.arange(40))
    assert semantic_dedup(np.zeros((0, 10)), 0.5, backend=backend).shape == (0,)


def test_semantic_dedup_errors():
    with pytest.raises(ValueError, match="threshold"):
        semantic_dedup(np.ones((3, 2)), 1.5)
    with pytest.raises(ValueError, match="backend"):
        semantic_dedup(np.ones((3, 2)), 0.5, backend="annoy")


def test_choose_backend_follows_benchmark():
    for n in (2, 1_000, 10_000, 100_000, 10_000_000):
        assert choose_backend(n, "cpu") == "numpy"
        assert choose_backend(n, "cuda:0") == "torch"
    with pytest.raises(ValueError, match="num_rows"):
        choose_backend(-1)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "faiss"])  # faiss: GPU index when faiss has GPUs
def test_cuda_backends_match_cpu(backend):
    x = clustered(n_clusters=50, per_cluster=20, dim=384, spread=0.5, seed=5)
    ref_scores, ref_ids = nearest_neighbors(x, 3, backend="numpy")
    scores, ids = nearest_neighbors(x, 3, backend=backend, device="cuda")
    np.testing.assert_allclose(scores, ref_scores, atol=GAP)
    distinct = np.all(-np.diff(ref_scores, axis=1) > GAP, axis=1)
    assert distinct.mean() > 0.9
    np.testing.assert_array_equal(ids[distinct], ref_ids[distinct])
    np.testing.assert_array_equal(semantic_dedup(x, 0.8, backend=backend, device="cuda"),
                                  semantic_dedup(x, 0.8, backend="numpy"))
