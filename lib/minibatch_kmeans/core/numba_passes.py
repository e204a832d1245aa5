"""Compiled (numba) row passes of the assignment kernel: the optional fast path.

Importing this module needs numba (``pip install 'minibatch-kmeans[fast]'``);
:mod:`minibatch_kmeans.core.kernels` imports it only when numba is present and the
``MBKM_KERNEL`` environment variable does not ask for NumPy.

Each function takes one chunk of rows whose labels are already known (``np.argmin`` of
the chunk's GEMM block, as in the NumPy path) and does in one pass over the rows what
NumPy needs several passes and temporaries for. The results match the NumPy path:

* distances: the difference ``x - c`` in the compute dtype (as NumPy's ``x - c``), then
  squared and summed in float64; only the order of that sum may differ (about 1e-16
  relative), so a row on its center still gets exactly 0;
* sums and weights: added in row order in float64 like ``np.bincount``, with the same
  operations (``float64(x) * w``, then ``+``), so they are bit-for-bit equal; the functions
  that accumulate are compiled without fast-math so that LLVM does not fuse the multiply
  and add into an FMA, which would round differently.

Each function compiles on its first call for a dtype, with ``cache=True``: a fresh process
(a Spark Python worker) then loads the machine code from ``__pycache__`` instead of
compiling it. Measured on the 2-core dev machine: first call 1.2 s without a cache, 0.5 s
from it (mostly numba's own start-up, which compiling eagerly at import would only move
to the import), plus 0.3 s to import numba.
"""
from __future__ import annotations

import numba as nb
import numpy as np

#: Fast-math flags of the distance sum: reassociation lets LLVM vectorise it, contraction
#: lets it use FMA. No ``nnan``/``ninf``: NaN or infinite rows keep NumPy's results.
_SUM_FLAGS = {"reassoc", "contract"}


def _jit(**options):
    """``numba.njit`` with the GIL released and the machine code cached on disk.

    numba raises at decoration when it finds no writable cache directory (neither next to
    this file, nor the user's cache directory, nor ``NUMBA_CACHE_DIR``): then compile in
    memory rather than make the import fail.
    """
    def wrap(fn):
        try:
            return nb.njit(nogil=True, cache=True, **options)(fn)
        except RuntimeError:
            return nb.njit(nogil=True, cache=False, **options)(fn)
    return wrap


@_jit(fastmath=_SUM_FLAGS)
def _sq_dist(X, i, C, c):
    """``|X[i] - C[c]|^2``: the difference in the rows' dtype, squared and summed in
    float64."""
    acc = 0.0
    for f in range(X.shape[1]):
        t = np.float64(X[i, f] - C[c, f])
        acc += t * t
    return acc


@_jit()
def row_sq_dists(X, C, labels, out):
    """``out[i] = |X[i] - C[labels[i]]|^2`` for every row of the chunk X."""
    for i in range(X.shape[0]):
        out[i] = _sq_dist(X, i, C, labels[i])


@_jit()
def accumulate_stats(X, C, labels, w, weighted, sums, weights, counts):
    """Add the chunk X's rows to the per-center ``sums``, ``weights`` and ``counts`` (in
    place) and return the chunk's (weighted) inertia.

    ``w`` holds the chunk's row weights when ``weighted`` is true and is ignored otherwise.
    The inertia is summed per chunk, in row order, and the caller adds the chunk totals,
    which keeps the rounding error near that of NumPy's pairwise ``sum``.
    """
    inertia = 0.0
    for i in range(X.shape[0]):
        c = labels[i]
        dist = _sq_dist(X, i, C, c)
        if weighted:
            wi = w[i]
            for f in range(X.shape[1]):
                sums[c, f] += np.float64(X[i, f]) * wi
            inertia += dist * wi
        else:
            wi = 1.0
            for f in range(X.shape[1]):
                sums[c, f] += np.float64(X[i, f])
            inertia += dist
        weights[c] += wi
        counts[c] += 1
    return inertia
