"""Nearest faces by cosine distance, for grouping and verification: exact on albums of ordinary
size, an inverted-file index (faiss) on archives, so that the plan stays near linear in time and
memory as an album grows to millions of faces.

Below `EXACT_LIMIT` vectors the search is exact (faiss's flat index: blocked inner products,
memory O(Q k), time O(Q N)). Above it, `faiss.IndexIVFFlat` on inner products: the
vectors are split into about 4 sqrt(N) cells by k-means (seeded: the same album gives the same
cells), and a query scans the `NPROBE` cells nearest it; its recall of the true k nearest is
measured by `benchmarks/bench_plan_scale.py`. The plan searches one set of faces several times
(verification passes, then the ranking of candidates): the last index built is kept and reused
while the same vectors are searched.
"""
from __future__ import annotations

import hashlib

import numpy as np

EXACT_LIMIT = 100_000  # vectors; up to here the exact search takes seconds on two cores
NPROBE = 16  # cells a query scans in the approximate index
TRAIN_PER_CELL = 64  # k-means training vectors per cell (a sample of the album)
TRAIN_ITERATIONS = 10  # k-means iterations (faiss's default 25 buys little recall for 2.5x the time)


def nearest(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `base` to each query.

    base: (N, D), queries: (Q, D), both unit rows (float). Returns cosine distances (Q, k)
    float64, ascending, and their indices into base (Q, k) int64; where fewer than k are found
    (k > N, or an approximate search's cells hold fewer) the row ends with inf and -1.
    """
    base = np.ascontiguousarray(base, np.float32)
    queries = np.ascontiguousarray(queries, np.float32)
    q, n = len(queries), len(base)
    distance = np.full((q, k), np.inf)
    index = np.full((q, k), -1, np.int64)
    if not n or not q or k <= 0:
        return distance, index
    found = min(k, n)
    if n <= EXACT_LIMIT:
        d, i = _exact(base, queries, found)
    else:
        d, i = _inverted_file(base, queries, found)
    distance[:, :found], index[:, :found] = d, i
    return distance, index


def _exact(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    similarity, idx = index.search(queries, k)
    return 1.0 - similarity.astype(np.float64), idx.astype(np.int64)


_built: dict[bytes, object] = {}  # the last inverted-file index, by a digest of its vectors


def _inverted_file(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    key = hashlib.blake2b(base.tobytes(), digest_size=16).digest() + repr(base.shape).encode()
    if key not in _built:
        _built.clear()
        _built[key] = _build_inverted_file(base)
    similarity, idx = _built[key].search(queries, k)
    missing = idx < 0
    distance = 1.0 - similarity.astype(np.float64)
    distance[missing] = np.inf
    return distance, idx.astype(np.int64)


def _build_inverted_file(base: np.ndarray):
    """faiss.IndexIVFFlat over base (N, D) float32 unit rows, trained on a seeded sample."""
    import faiss

    n, dim = base.shape
    cells = int(np.clip(round(4 * np.sqrt(n)), 1, n // 39))  # faiss wants >= 39 training points a cell
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0
    index.cp.niter = TRAIN_ITERATIONS
    sample = min(n, cells * TRAIN_PER_CELL)
    rows = np.sort(np.random.default_rng(0).choice(n, sample, replace=False)) if sample < n else slice(None)
    index.train(base[rows])
    index.add(base)
    index.nprobe = min(NPROBE, cells)
    return index
