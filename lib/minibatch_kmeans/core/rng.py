"""Seed-derived randomness that does not depend on partitioning.

Every random choice of a fit derives from the user's ``seed``. Choices about individual
rows (which rows re-seed a center, which rows k-means|| samples) use a per-row 64-bit key
(a hash of the row's content computed once when the data are prepared) mixed with a
per-purpose salt, so they are the same whichever partition or core sees the row.
"""
from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x) -> np.ndarray:
    """SplitMix64 finalizer: a bijective 64-bit mix of each element (uint64 in, uint64 out)."""
    z = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def salt(seed: int, *parts: int) -> np.uint64:
    """A 64-bit salt derived from the seed and a sequence of small integers (purpose, step)."""
    h = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    for p in parts:
        h = mix64(h ^ np.uint64(p & 0xFFFFFFFFFFFFFFFF))
    return np.uint64(h)


def keyed_uint64(keys, salt_value) -> np.ndarray:
    """Per-row random 64-bit integers from row keys (int64 or uint64) and a salt."""
    k = np.asarray(keys).astype(np.int64, copy=False).view(np.uint64)
    return mix64(k ^ np.uint64(salt_value))


def keyed_uniform(keys, salt_value) -> np.ndarray:
    """Per-row uniform floats in [0, 1) from row keys and a salt."""
    return (keyed_uint64(keys, salt_value) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


#: Rows per block of :func:`row_keys` (its temporaries stay a few MB).
_KEY_BLOCK = 1 << 16


def row_keys(X: np.ndarray, seed: int) -> np.ndarray:
    """Per-row 64-bit keys (int64) of a float matrix, from the seed and the bits of each
    row rounded to float32: equal rows get equal keys, whatever their order, partition or
    compute dtype (a float64 fit draws the rows a float32 fit draws).

    A multilinear hash: the row's 64-bit words (32-bit words for an odd number of
    features) times odd multipliers derived from the seed, summed modulo 2^64, then
    :func:`mix64`. One integer GEMV per block of rows, about 50 ms for 1M x 32 (hashing
    in the JVM, ``xxhash64``, cost a collect of those rows 0.3 s more).
    """
    n, d = X.shape
    wide = d % 2 == 0
    m = d // 2 if wide else d
    mult = mix64(np.uint64(salt(seed, ROW_KEY)) + np.arange(m, dtype=np.uint64)) | np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, _KEY_BLOCK):
        block = np.ascontiguousarray(X[start:start + _KEY_BLOCK], dtype=np.float32)
        words = block.view(np.uint64) if wide else block.view(np.uint32).astype(np.uint64)
        np.matmul(words, mult, out=out[start:start + len(block)])
    return mix64(out).view(np.int64)


def generator(seed: int, *parts: int) -> np.random.Generator:
    """A NumPy Generator for one purpose (for example an epoch's bucket order)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *parts])


# Purposes, so that different uses of one seed never share a stream.
INIT = 1
EPOCH = 2
REASSIGN = 3
KMEANS_PARALLEL = 4
ROW_KEY = 5
