"""The driver loop shared by the Spark fit and the NumPy reference (NumPy only).

The loop knows nothing about where batches live: it asks a ``run_batch`` callable for
the merged :class:`~minibatch_kmeans.core.kernels.BatchStats` of one bucket under the
current centers. The Spark adapter answers with one Spark job; :func:`local_batch_runner`
answers from in-memory arrays, which makes it the reference the Spark path is tested
against.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import numpy as np

from . import rng as rng_mod
from .kernels import BatchStats, assignment_stats, row_norms_sq, smallest_keys
from .minibatch import STOP_MAX_ITER, MiniBatchState, StepRecord

logger = logging.getLogger(__name__)

RunBatch = Callable[[int, np.ndarray, int, int], BatchStats]
"""run_batch(bucket, centers, n_candidates, step) -> merged BatchStats of that bucket."""


def bucket_order(seed: int, epoch: int, n_buckets: int) -> np.ndarray:
    """The order in which an epoch visits the buckets: a fresh permutation per epoch."""
    return rng_mod.generator(seed, rng_mod.EPOCH, epoch).permutation(n_buckets)


def max_candidates(k: int, batch_size: int) -> int:
    """How many re-seeding candidates a step may need: at most k, at most half a batch."""
    return int(max(1, min(k, batch_size // 2 + 1)))


def candidate_salt(seed: int, step: int) -> np.uint64:
    return rng_mod.salt(seed, rng_mod.REASSIGN, step)


def select_candidates(keys, X, salt_value, m: int):
    """The ``m`` rows of X with the smallest per-step random keys, sorted by key."""
    if m <= 0 or len(keys) == 0:
        return np.empty(0, dtype=np.uint64), np.empty((0, X.shape[1]))
    rk = rng_mod.keyed_uint64(keys, salt_value)
    if len(rk) > m:
        part = np.argpartition(rk, m - 1)[:m]
        rk, X = rk[part], X[part]
    return smallest_keys(rk, np.asarray(X, dtype=np.float64), m)


def run_steps(state: MiniBatchState, n_buckets: int, max_steps: int, seed: int,
              run_batch: RunBatch, n_candidates: int,
              on_step: Optional[Callable[[StepRecord], None]] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> str:
    """Run steps from ``state.step`` until ``max_steps`` or early stopping.

    Mutates ``state``. Returns the stop reason (``"maxIter"``, ``"tol"`` or
    ``"maxNoImprovement"``), or ``"interrupted"`` when ``should_stop`` says so.
    """
    order_epoch, order = -1, None
    while state.step < max_steps:
        if should_stop is not None and should_stop():
            return "interrupted"
        epoch, pos = divmod(state.step, n_buckets)
        if epoch != order_epoch:
            order_epoch, order = epoch, bucket_order(seed, epoch, n_buckets)
        bucket = int(order[pos])
        due = state.reassign_due()
        t0 = time.perf_counter()
        stats = run_batch(bucket, state.centers, n_candidates if due else 0, state.step)
        rec, reason = state.apply(stats, due, epoch=epoch, bucket=bucket,
                                  seconds=time.perf_counter() - t0)
        if on_step is not None:
            on_step(rec)
        if reason is not None:
            return reason
    return STOP_MAX_ITER


def local_batch_runner(X: np.ndarray, keys: np.ndarray, buckets: Sequence[np.ndarray],
                       seed: int, sample_weight: Optional[np.ndarray] = None,
                       dtype=np.float32) -> RunBatch:
    """A ``run_batch`` over in-memory rows: ``buckets[b]`` holds the row indices of bucket b.

    This is the NumPy reference of one Spark step: the same kernel, the same candidate
    rule, on the same rows.
    """
    X = np.ascontiguousarray(X)
    Xc = X.astype(dtype, copy=False)

    def run(bucket, centers, n_cand, step):
        idx = buckets[bucket]
        C = np.ascontiguousarray(centers, dtype=dtype)
        xb = Xc[idx]
        w = None if sample_weight is None else sample_weight[idx]
        stats = assignment_stats(xb, C, row_norms_sq(C), w)
        stats.cand_keys, stats.cand_rows = select_candidates(
            keys[idx], Xc[idx], candidate_salt(seed, step), n_cand)
        return stats

    return run
