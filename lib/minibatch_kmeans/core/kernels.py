"""Assignment kernel and per-batch partial statistics.

The kernel computes squared Euclidean distances as ``|x|^2 - 2 x.c + |c|^2`` with one
matrix product per chunk of rows, in ``float32`` by default (four times the GEMM
throughput of ``float64`` on this class of machine) or ``float64`` on request. Sums and
inertia are always accumulated in ``float64``.

The passes over the rows that follow each chunk's matrix product (distance to the chosen
center, per-center sums) run compiled with numba when it is installed (the ``fast``
extra), else in NumPy; both give the same labels, sums, weights and counts, and distances
equal to float64 rounding. :data:`KERNEL` says which one this process uses; the
environment variable ``MBKM_KERNEL=numpy`` forces NumPy (``numba`` requires numba), read
once at import.

Public functions validate their input and call private kernels that assume valid input.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InvalidInputError, InvalidParamError

#: Environment variable that picks the row passes' implementation: ``numpy``, ``numba``
#: or unset (numba when it imports).
KERNEL_ENV = "MBKM_KERNEL"


def _load_fused():
    """The compiled row passes (module ``numba_passes``), or None for the NumPy path."""
    choice = os.environ.get(KERNEL_ENV, "").strip().lower()
    if choice == "numpy":
        return None
    try:
        from . import numba_passes as _fused
    except Exception as e:  # an optional speed-up must not break the import
        if choice == "numba":
            raise
        if getattr(e, "name", None) not in ("numba", "llvmlite"):  # installed but broken
            warnings.warn(f"numba kernel unavailable, using NumPy: {e!r}", RuntimeWarning)
        return None
    return _fused


_fused = _load_fused()
_LOADED = _fused  # what _use_kernel("numba") switches back to
#: Implementation of the row passes in this process: ``"numba"`` or ``"numpy"``.
KERNEL = "numpy" if _fused is None else "numba"


@contextmanager
def _use_kernel(name: str):
    """Run the row passes with ``"numpy"`` (or ``"numba"``, when loaded) inside the block,
    to compare both in one process (benchmarks, tests). Not thread-safe: it swaps the
    module's implementation for every thread."""
    global _fused
    if name not in ("numpy", "numba") or (name == "numba" and _LOADED is None):
        raise InvalidParamError(f"kernel {name!r} is not available here (loaded: {KERNEL})")
    saved, _fused = _fused, (None if name == "numpy" else _LOADED)
    try:
        yield
    finally:
        _fused = saved


#: Rows per chunk of the distance computation: keeps the (chunk, k) distance block in
#: cache for moderate k and bounds memory for large batches.
CHUNK_ROWS = 4096

_DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype) -> np.dtype:
    """Return the NumPy compute dtype for ``"float32"``/``"float64"`` (or a NumPy dtype)."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise InvalidParamError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        return np.dtype(_DTYPES[dtype])
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidParamError(f"dtype must be float32 or float64, got {dt}")
    return dt


def row_norms_sq(X: np.ndarray) -> np.ndarray:
    """Squared Euclidean norm of each row, in X's dtype: ndarray of shape (n_rows,)."""
    return np.einsum("ij,ij->i", X, X)


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (spherical k-means); zero rows are left as is."""
    norms = np.sqrt(row_norms_sq(X))
    norms[norms == 0] = 1.0
    return X / norms[:, None].astype(X.dtype)


def _chunk_labels(X: np.ndarray, centers: np.ndarray, centers_sq: np.ndarray):
    """Yield ``(start, stop, labels)`` for each chunk of up to :data:`CHUNK_ROWS` rows of X:
    the index of each row's nearest center, int64 (``np.argmin``: the first of equal
    minima).

    The argmin uses the expansion ``|c|^2 - 2 x.c`` computed by one GEMM per chunk of
    ``[x, 1] @ [-2 C^T; |c|^2]``, so the matrix product also adds the norms (two fewer
    passes over the chunk's (rows, k) distance matrix: 1.4x faster at k=1000, 1.2x at
    k=100). The argmin stays NumPy's in both paths: it was faster than every compiled
    variant tried, and the labels are then the same by construction.
    """
    n, d = X.shape
    k = centers.shape[0]
    if n == 0:
        return
    rhs = np.empty((d + 1, k), dtype=X.dtype)
    rhs[:d] = centers.T
    rhs[:d] *= -2.0
    rhs[d] = centers_sq
    rows = min(CHUNK_ROWS, n)
    lhs = np.empty((rows, d + 1), dtype=X.dtype)
    lhs[:, d] = 1.0
    out = np.empty((rows, k), dtype=X.dtype)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        m = stop - start
        lhs[:m, :d] = X[start:stop]
        yield start, stop, np.argmin(np.matmul(lhs[:m], rhs, out=out[:m]), axis=1)


_COMPILED = (np.dtype(np.float32), np.dtype(np.float64))


def _fused_for(X: np.ndarray, centers: np.ndarray):
    """The compiled row passes when they apply to these arrays (numba loaded; C-contiguous
    float32 or float64, one dtype), else None."""
    if (_fused is None or X.dtype != centers.dtype or X.dtype not in _COMPILED
            or not (X.flags.c_contiguous and centers.flags.c_contiguous)):
        return None
    return _fused


def _sq_dists(xc: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """NumPy path: ``|x - c|^2`` of each row to its labelled center, the difference in the
    rows' dtype, squared and summed in float64."""
    diff = xc - centers[labels]
    return np.einsum("ij,ij->i", diff, diff, dtype=np.float64)


def labels_and_distances(X: np.ndarray, centers: np.ndarray, centers_sq: np.ndarray):
    """Nearest center per row. X and centers share one float dtype; no validation.

    The labels come from the chunked GEMM of :func:`_chunk_labels`. The returned distance
    is then recomputed directly as ``|x - c|^2`` for the chosen center (in float64), so it
    has no cancellation error when ``|x|`` is large next to the distance (which float32
    expansion would suffer from), and is exactly 0 for a row on its center.
    """
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=np.float64)
    fused = _fused_for(X, centers)
    for start, stop, lab in _chunk_labels(X, centers, centers_sq):
        labels[start:stop] = lab
        if fused is None:
            dist[start:stop] = _sq_dists(X[start:stop], centers, lab)
        else:
            fused.row_sq_dists(X[start:stop], centers, lab, dist[start:stop])
    return labels, dist


def _check_matrix(X, name: str, dtype: np.dtype) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (n_rows, n_features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise InvalidInputError(f"{name} must be numeric, got dtype {X.dtype}")
    return np.ascontiguousarray(X, dtype=dtype)


def assign(X, centers, dtype="float32"):
    """Assign each row of X to its nearest center (squared Euclidean distance).

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
    centers : array-like of shape (k, n_features)
    dtype : {"float32", "float64"}, default "float32"
        Precision of the matrix product.

    Returns
    -------
    labels : ndarray of shape (n_rows,), int32
    dist_sq : ndarray of shape (n_rows,), float64
        Squared distance of each row to its nearest center.

    Examples
    --------
    >>> import numpy as np
    >>> labels, d = assign(np.array([[0.0, 0.0], [9.0, 9.0]]), np.array([[10.0, 10.0], [1.0, 0.0]]))
    >>> labels.tolist(), d.tolist()
    ([1, 0], [1.0, 2.0])
    """
    dt = resolve_dtype(dtype)
    X = _check_matrix(X, "X", dt)
    C = _check_matrix(centers, "centers", dt)
    if C.shape[1] != X.shape[1]:
        raise InvalidInputError(
            f"centers have {C.shape[1]} features but X has {X.shape[1]}"
        )
    if C.shape[0] == 0:
        raise InvalidInputError("centers is empty: expected at least one center")
    return labels_and_distances(X, C, row_norms_sq(C))


@dataclass
class BatchStats:
    """Partial statistics of one batch (or of one partition of a batch).

    Statistics from disjoint row sets merge by addition, in any order.

    Attributes
    ----------
    sums : ndarray of shape (k, n_features), float64
        Weighted sum of the rows assigned to each center.
    weights : ndarray of shape (k,), float64
        Weight sum (row count when unweighted) per center.
    inertia : float
        Weighted sum of squared distances to the nearest center.
    n_rows : int
        Number of rows seen.
    counts : ndarray of shape (k,), int64
        Rows (not weights) assigned to each center.
    cand_keys : ndarray of shape (m,), uint64
        Random keys of candidate rows for re-seeding low-count centers (may be empty).
    cand_rows : ndarray of shape (m, n_features), float64
        The candidate rows themselves, in the order of ``cand_keys``.
    """

    sums: np.ndarray
    weights: np.ndarray
    inertia: float
    n_rows: int
    counts: Optional[np.ndarray] = None
    cand_keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    cand_rows: Optional[np.ndarray] = None

    @classmethod
    def empty(cls, k: int, n_features: int) -> "BatchStats":
        return cls(np.zeros((k, n_features)), np.zeros(k), 0.0, 0, np.zeros(k, np.int64),
                   np.empty(0, dtype=np.uint64), np.empty((0, n_features)))

    @property
    def weight_total(self) -> float:
        return float(self.weights.sum())

    def merge(self, other: "BatchStats", max_candidates: Optional[int] = None) -> "BatchStats":
        """Return the statistics of both row sets (neither input is mutated).

        Candidates keep the ``max_candidates`` smallest keys of both sets, so the merged
        candidates do not depend on how the rows were split.
        """
        keys = np.concatenate([self.cand_keys, other.cand_keys])
        rows = np.concatenate([_cand_rows(self), _cand_rows(other)])
        keys, rows = smallest_keys(keys, rows, max_candidates)
        return BatchStats(self.sums + other.sums, self.weights + other.weights,
                          self.inertia + other.inertia, self.n_rows + other.n_rows,
                          _counts(self) + _counts(other), keys, rows)


def _counts(s: BatchStats) -> np.ndarray:
    return s.counts if s.counts is not None else np.zeros(len(s.weights), np.int64)


def _cand_rows(s: BatchStats) -> np.ndarray:
    if s.cand_rows is None:
        return np.empty((0, s.sums.shape[1]))
    return s.cand_rows


def smallest_keys(keys: np.ndarray, rows: np.ndarray, m: Optional[int]):
    """The ``m`` rows with the smallest keys, sorted by key (all when m is None)."""
    order = np.argsort(keys, kind="stable")
    if m is not None:
        order = order[:m]
    return keys[order], rows[order]


def _weighted_sums(X: np.ndarray, labels: np.ndarray, w: Optional[np.ndarray], k: int):
    """Per-center weighted row sums, accumulated in float64: one ``bincount`` per feature
    (2x faster than sorting the rows by label and ``add.reduceat``)."""
    sums = np.empty((k, X.shape[1]), dtype=np.float64)
    for j in range(X.shape[1]):
        col = X[:, j] if w is None else X[:, j] * w
        sums[:, j] = np.bincount(labels, weights=col, minlength=k)
    return sums


def _partial_stats(X, labels, dist_sq, k, sample_weight):
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    if sample_weight is None:
        weights = counts.astype(np.float64)
        inertia = float(dist_sq.sum())
    else:
        # (bincount returns int64 zeros for an empty batch, even with weights)
        weights = np.bincount(labels, weights=sample_weight, minlength=k).astype(
            np.float64, copy=False)
        inertia = float(dist_sq @ sample_weight)
    sums = _weighted_sums(X, labels, sample_weight, k)
    return BatchStats(sums, weights, inertia, int(X.shape[0]), counts,
                      np.empty(0, dtype=np.uint64), np.empty((0, X.shape[1])))


_NO_WEIGHTS = np.empty(0, dtype=np.float64)


def assignment_stats(X: np.ndarray, centers: np.ndarray, centers_sq: np.ndarray,
                     sample_weight: Optional[np.ndarray]) -> BatchStats:
    """Partial statistics of X under ``centers``: ``_partial_stats`` of the labels and
    distances of :func:`labels_and_distances`, without candidates. No validation.

    With numba, each chunk's labels go straight into one compiled pass that adds the rows
    to the per-center sums, and neither labels nor distances are kept: at 50k x 32, k=100,
    float32, 2.1x faster than the NumPy path (``_partial_stats``'s ``bincount`` per
    feature): 87% of a bare GEMM's rows/s instead of 41% (one BLAS thread, as in a Spark
    worker).
    """
    fused = _fused_for(X, centers)
    if fused is None:
        labels, dist = labels_and_distances(X, centers, centers_sq)
        return _partial_stats(X, labels, dist, centers.shape[0], sample_weight)
    k, d = centers.shape
    sums, weights, counts = np.zeros((k, d)), np.zeros(k), np.zeros(k, np.int64)
    w = None
    if sample_weight is not None:
        w = np.ascontiguousarray(sample_weight, dtype=np.float64)
    inertia = 0.0
    for start, stop, lab in _chunk_labels(X, centers, centers_sq):
        wc = _NO_WEIGHTS if w is None else w[start:stop]
        inertia += fused.accumulate_stats(X[start:stop], centers, lab, wc, w is not None,
                                          sums, weights, counts)
    return BatchStats(sums, weights, inertia, int(X.shape[0]), counts,
                      np.empty(0, dtype=np.uint64), np.empty((0, d)))


def warm_up(dtype) -> None:
    """Load what the row passes need for ``dtype`` on tiny input: with numba, each compiled
    function's machine code, which numba loads from its disk cache (or compiles) on the
    first call in a process, about 0.4-0.8 s together here."""
    X = np.zeros((4, 2), dtype=resolve_dtype(dtype))
    C = X[:2].copy()
    assignment_stats(X, C, row_norms_sq(C), None)
    labels_and_distances(X, C, row_norms_sq(C))


def batch_stats(X, centers, sample_weight=None, dtype="float32") -> BatchStats:
    """Assign a batch to its nearest centers and return its partial statistics.

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
    centers : array-like of shape (k, n_features)
    sample_weight : array-like of shape (n_rows,), optional
        Non-negative row weights; ``None`` means every row weighs 1.
    dtype : {"float32", "float64"}
        Precision of the distance computation (sums and inertia are float64).

    Returns
    -------
    BatchStats
    """
    dt = resolve_dtype(dtype)
    X = _check_matrix(X, "X", dt)
    C = _check_matrix(centers, "centers", dt)
    if C.shape[1] != X.shape[1]:
        raise InvalidInputError(f"centers have {C.shape[1]} features but X has {X.shape[1]}")
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (X.shape[0],):
            raise InvalidInputError(
                f"sample_weight has shape {w.shape}, expected ({X.shape[0]},)")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InvalidInputError("sample_weight must be finite and non-negative")
    return assignment_stats(X, C, row_norms_sq(C), w)


def predict_matrix(X: np.ndarray, centers: np.ndarray, cosine: bool, dtype):
    """Labels and distances (Euclidean, or cosine distance) of rows of X."""
    Xc = np.ascontiguousarray(X, dtype=dtype)
    C = np.ascontiguousarray(centers, dtype=dtype)
    if cosine:
        Xc = normalize_rows(Xc)
    labels, dist_sq = labels_and_distances(Xc, C, row_norms_sq(C))
    dist = dist_sq / 2.0 if cosine else np.sqrt(dist_sq)
    return labels, dist
