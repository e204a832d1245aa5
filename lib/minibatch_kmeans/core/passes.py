"""The pass fit's core (NumPy only): mini-batch epochs over a set of rows, and the driver
loop that turns passes over the data into centers.

A fit of this kind costs a few passes over the table, however large it is:

1. an *epochs* pass: mini-batch epochs over rows the driver holds (all of a small table,
   a random sample of a large one; :func:`minibatch_epochs`), then re-seeding of centers
   left (nearly) empty;
2. *exact* passes: every row is assigned to the current centers, which gives the exact
   cost and cluster sizes of those centers, and the Lloyd step they would take. When that
   step would lower the cost by less than ``tol`` (relative), the fit stops and returns
   these centers with their exact cost; otherwise it takes the step and passes again, up
   to a limit (:func:`run_passes`).

The epochs run scikit-learn's ``MiniBatchKMeans`` loop: Sculley's per-center learning
rate from the weights the fit has accumulated so far, batches drawn in a random order per
epoch, stopping early on the smoothed batch inertia or the center shift
(:class:`~minibatch_kmeans.core.minibatch.Convergence`), random reassignment of
low-count centers; they return what they added, the weighted sums of every row assigned
and their weights. The update is a running mean per center, so ``C W + S_1 + ... + S_t =
C_t W_t``, and epochs run over disjoint sets of rows merge by weight
(:func:`merge_epochs`) exactly as if the sets had been visited one after the other, each
from the same centers, as long as none reassigned a center.

Where it departs from scikit-learn: under cosine distance the running mean is kept
unnormalised and the centers are normalised only to assign rows (spherical k-means);
batches are contiguous runs of a per-epoch random permutation (as scikit-learn draws
``batch_size`` random indices per step, but without replacement within an epoch).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from . import rng as rng_mod
from .kernels import BatchStats, assignment_stats, normalize_rows, row_norms_sq
from .minibatch import (STOP_MAX_ITER, STOP_TOL, Convergence, MiniBatchState, StepRecord,
                        minibatch_update, reassign_low_count)

logger = logging.getLogger(__name__)

#: Lloyd steps at most over the epochs' sample (:func:`refine_on_rows`).
SAMPLE_LLOYD_STEPS = 3


@dataclass
class EpochsResult:
    """What epochs over a set of rows add to the fit.

    Attributes
    ----------
    stats : BatchStats
        What the epochs add to the running means, ``sums = W' C' - W C`` and
        ``weights = W' - W`` (without reassignment: the sums and weights of every
        assignment made, a row counting once per epoch); ``inertia``, ``n_rows`` and
        ``counts`` of the last epoch run.
    epochs : int
        Epochs run (the last one possibly cut short by early stopping).
    steps : int
        Mini-batch steps run.
    stop_reason : str
        ``"maxIter"``, ``"tol"`` or ``"maxNoImprovement"``.
    ewa : float or None
        The smoothed batch inertia (per unit weight) when the epochs stopped.
    rows : int
        Rows in the set.
    """

    stats: BatchStats
    epochs: int
    steps: int
    stop_reason: str
    ewa: Optional[float]
    rows: int = 0


def minibatch_epochs(X: np.ndarray, centers: np.ndarray, weight_sums: np.ndarray,
                     batch_size: int, max_epochs: int, order_salt, *,
                     keys: Optional[np.ndarray] = None, sample_weight=None, tol: float = 0.0,
                     max_no_improvement: Optional[int] = 10, spherical: bool = False,
                     reassignment_ratio: float = 0.0) -> EpochsResult:
    """Run up to ``max_epochs`` epochs of mini-batch steps over X; nothing is mutated.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The rows, in the compute dtype (unit rows under cosine distance).
    centers : ndarray of shape (k, n_features)
        Centers at the start (unnormalised running means under cosine distance).
    weight_sums : ndarray of shape (k,)
        Weight the fit has accumulated per center so far (the learning rates).
    batch_size : int
    max_epochs : int
        At least 1.
    order_salt : int
        Salt of the visiting order; with ``keys`` each row's place depends only on its key,
        so the order does not depend on how the rows arrived.
    keys : ndarray of shape (n_rows,), optional
        Per-row 64-bit keys; without them the order is a permutation seeded by the salt.
    sample_weight : ndarray of shape (n_rows,), optional
    tol : float
        Absolute tolerance on one step's squared center shift (0 disables).
    max_no_improvement : int or None
        Steps without a new minimum of the smoothed batch inertia before stopping.
    spherical : bool
        Normalise the centers for assignment (cosine distance).
    reassignment_ratio : float
        scikit-learn's random reassignment (0 disables): every ``10 k`` rows, centers
        lighter than this fraction of the heaviest move to rows of the current batch.

    Returns
    -------
    EpochsResult
    """
    n, d = X.shape
    k = centers.shape[0]
    dtype = X.dtype
    C0 = np.asarray(centers, dtype=np.float64)
    W0 = np.asarray(weight_sums, dtype=np.float64)
    C, W = C0, W0
    last = BatchStats.empty(k, d)
    conv = Convergence(n_samples=float(n), batch_size=batch_size, tol=tol,
                       max_no_improvement=max_no_improvement)
    steps = epochs = since_reassign = 0
    reason = STOP_MAX_ITER
    if n == 0:
        return EpochsResult(last, 0, 0, reason, None, 0)
    batch_size = max(1, min(int(batch_size), n))
    for epoch in range(max_epochs):
        salt = rng_mod.salt(int(order_salt), epoch)
        if keys is not None:
            batches = batches_in_order(rng_mod.keyed_uint64(keys, salt), batch_size)
        else:
            order = np.random.default_rng(int(salt)).permutation(n)
            batches = (order[i:i + batch_size] for i in range(0, n, batch_size))
        epochs += 1
        last = BatchStats.empty(k, d)
        stop = None
        for idx in batches:
            Cj = np.ascontiguousarray(normalize_rows(C) if spherical else C, dtype=dtype)
            w = None if sample_weight is None else sample_weight[idx]
            part = assignment_stats(X[idx], Cj, row_norms_sq(Cj), w)
            new_C, W = minibatch_update(C, W, part.sums, part.weights)
            # scikit-learn's _random_reassign: every 10 k rows, or when a center is empty,
            # centers below reassignment_ratio x the heaviest move to random batch rows.
            since_reassign += len(idx)
            if reassignment_ratio > 0 and ((W == 0).any() or since_reassign >= 10 * k):
                since_reassign = 0
                new_C, W, _ = reassign_low_count(new_C, W, reassignment_ratio,
                                                 X[idx].astype(np.float64), len(idx))
            shift = float(((new_C - C) ** 2).sum())
            C = new_C
            steps += 1
            last = last.merge(part)
            bw = part.weight_total
            stop = conv.update(part.inertia / bw if bw > 0 else 0.0, shift)
            if stop is not None:
                break
        if stop is not None:
            reason = stop
            break
    # What the epochs add, as a running mean: W' C' = W C + sums, W' = W + weights. Without
    # a reassignment these are the sums and weights of every assignment it made.
    last.sums, last.weights = W[:, None] * C - W0[:, None] * C0, W - W0
    return EpochsResult(last, epochs, steps, reason, conv.ewa, n)


def batches_in_order(h: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """``np.argsort(h, kind="stable")`` in runs of ``batch_size`` indices, sorted only as
    far as they are taken. ``h`` holds unsigned hash values, spread evenly: the rows below
    a threshold about 16 batches into their range come first, sorted, then the rows up to
    a threshold four times further, and so on. An epoch that stops after a few batches
    sorts a few batches' worth of rows, not all of them (1M rows: 0.1 s). The order is
    the same whatever the values; only the work depends on their spread."""
    n = len(h)
    lo, hi = (float(h.min()), float(h.max())) if n else (0.0, 0.0)
    frac = 16 * batch_size / max(n, 1)
    below = None  # every row whose value is at most this has been taken
    pending = np.empty(0, dtype=np.intp)
    done = n == 0
    while True:
        while len(pending) < batch_size and not done:
            t = lo + (hi - lo) * frac
            take = np.ones(n, dtype=bool) if below is None else h > below
            if t >= hi:
                done = True
            else:
                below = h.dtype.type(t)
                take &= h <= below
                frac *= 4
            chunk = np.flatnonzero(take)
            pending = np.concatenate([pending, chunk[np.argsort(h[chunk], kind="stable")]])
        if not len(pending):
            return
        yield pending[:batch_size]
        pending = pending[batch_size:]


def merge_epochs(results: List[EpochsResult], max_candidates: Optional[int] = None
                 ) -> Tuple[BatchStats, dict]:
    """Results of epochs over disjoint sets of rows: their statistics added (canonical
    order, so the same results in any order give the same bits) and a summary of what
    they ran."""
    if not results:
        raise ValueError("no epochs results to merge")
    k, d = results[0].stats.sums.shape
    order = sorted(range(len(results)),
                   key=lambda i: (results[i].stats.n_rows, results[i].stats.inertia))
    total = BatchStats.empty(k, d)
    for i in order:
        total = total.merge(results[i].stats, max_candidates)
    reasons = {}
    for r in results:
        reasons[r.stop_reason] = reasons.get(r.stop_reason, 0) + 1
    info = {"sets": len(results), "rows": sum(r.rows for r in results),
            "epochs": max(r.epochs for r in results),
            "steps": sum(r.steps for r in results), "stopReasons": reasons}
    return total, info


def lloyd_step(centers: np.ndarray, exact: BatchStats, spherical: bool = False):
    """The centers one Lloyd step moves to (every center with rows to the mean of its rows;
    unit length under cosine distance) and the cost decrease it guarantees, ``sum_c w_c
    |mean_c - c|^2`` (for the same assignment: the next assignment can only lower it more;
    under cosine distance a bound of the same kind in half squared Euclidean units)."""
    C = np.asarray(centers, dtype=np.float64)
    w = exact.weights
    hit = w > 0
    new = C.copy()
    new[hit] = exact.sums[hit] / w[hit, None]
    if spherical:
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        new = np.where(norms > 0, new / np.where(norms > 0, norms, 1.0), C)
    gain = float(np.sum(w[hit] * np.sum((new[hit] - C[hit]) ** 2, axis=1)))
    return new, gain


def refine_on_rows(X: np.ndarray, centers: np.ndarray, sample_weight=None, *, tol: float,
                   max_steps: int = SAMPLE_LLOYD_STEPS, spherical: bool = False) -> np.ndarray:
    """The centers after Lloyd steps over the rows ``X`` (the epochs' sample of a larger
    table), until a step would lower their cost by at most ``tol`` of it or after
    ``max_steps``. The epochs leave the early batches' assignments in the running means;
    these steps take the centers to the sample's own optimum, so that what the table's
    exact passes still find is the sample's error alone."""
    C = np.asarray(centers, dtype=np.float64)
    for _ in range(max_steps):
        Cd = np.ascontiguousarray(C, dtype=X.dtype)
        stats = assignment_stats(X, Cd, row_norms_sq(Cd), sample_weight)
        C, gain = lloyd_step(C, stats, spherical)
        if gain <= tol * max(stats.inertia, 0.0):
            break
    return C


def relocate_empty(centers: np.ndarray, exact: BatchStats, far_rows: np.ndarray):
    """Centers that got no row in ``exact`` moved to the rows farthest from their centers
    (``far_rows``, farthest first; scikit-learn KMeans' ``_relocate_empty_clusters``):
    (new centers, how many moved)."""
    empty = np.flatnonzero(exact.weights <= 0)
    n = min(len(empty), len(far_rows))
    C = np.array(centers, dtype=np.float64)
    C[empty[:n]] = far_rows[:n]
    return C, n


EpochsPass = Callable[[np.ndarray, np.ndarray, int], Tuple[BatchStats, dict]]
"""epochs_pass(centers, weight_sums, n_candidates) -> (merged stats, info of merge_epochs)."""
ExactPass = Callable[[np.ndarray], BatchStats]
"""exact_pass(centers) -> BatchStats of every row under these centers."""
FarthestPass = Callable[[np.ndarray, int], np.ndarray]
"""farthest_pass(centers, m) -> the m rows farthest from their nearest center, farthest
first, shape (<= m, n_features)."""


@dataclass
class PassesOutcome:
    """How :func:`run_passes` ended: the stop reason, the exact statistics of the final
    centers (None when the fit ran no exact pass), and the epochs pass's summary."""

    reason: str
    exact: Optional[BatchStats]
    epochs_info: dict


def run_passes(state: MiniBatchState, epochs_pass: EpochsPass, exact_pass: ExactPass, *,
               max_passes: int, tol: float, n_candidates: int, exact_passes: bool = True,
               farthest_pass: Optional[FarthestPass] = None,
               refine: Optional[Callable[[np.ndarray], np.ndarray]] = None,
               on_pass: Optional[Callable[[StepRecord], None]] = None,
               should_stop: Optional[Callable[[], bool]] = None) -> PassesOutcome:
    """Run passes from ``state.step`` (passes already done) on; mutates ``state``.

    Pass 1 is the epochs pass, passes 2 to ``max_passes`` are exact passes (none when
    ``exact_passes`` is false). After an exact pass whose Lloyd step would lower the cost
    by at most ``tol`` times the cost, or after the last pass allowed, the fit stops with
    the centers that pass measured (reason ``"tol"`` or ``"maxIter"``); otherwise the
    centers take the Lloyd step. An exact pass that leaves centers without rows is never
    the last when passes remain: those centers move to the farthest rows
    (``farthest_pass``, one more pass) and the fit passes again. ``refine(centers)``, when
    given, moves the centers after the epochs (:func:`refine_on_rows` on a sample).
    ``should_stop()`` is asked before every pass.
    """
    info: dict = {}
    exact = None
    while True:
        if should_stop is not None and should_stop():
            return PassesOutcome("interrupted", None, info)
        t0 = time.perf_counter()
        old = state.centers
        if state.step == 0:
            stats, info = epochs_pass(state.centers, state.weight_sums, n_candidates)
            new, W = minibatch_update(old, state.weight_sums, stats.sums, stats.weights)
            n_re = 0
            if state.reassignment_ratio > 0 and stats.n_rows:
                new, W, n_re = reassign_low_count(
                    new, W, state.reassignment_ratio,
                    stats.cand_rows if stats.cand_rows is not None
                    else np.empty((0, new.shape[1])), stats.n_rows)
            if state.spherical:
                new = normalize_rows(new)
            if refine is not None:
                new = refine(new)
            state.centers, state.weight_sums = new, W
            state.rows_seen += int(round(stats.weight_total)) if stats.n_rows else 0
            rows, per_w, kind = stats.n_rows, _per_weight(stats), "epochs"
            gain = None
        else:
            exact = exact_pass(state.centers)
            new, gain = lloyd_step(old, exact, state.spherical)
            rows, per_w, kind, n_re = exact.n_rows, _per_weight(exact), "exact", 0
        state.step += 1
        rec = StepRecord(state.step, int(info.get("epochs", 0)), -1, int(rows), per_w, None,
                         float(((state.centers - old) ** 2).sum()), n_re,
                         time.perf_counter() - t0, kind)
        reason = None
        if kind == "exact":
            converged = gain <= tol * max(exact.inertia, 0.0)
            logger.info("a Lloyd step would lower the cost by %.3g of it (tol %.3g)",
                        gain / exact.inertia if exact.inertia > 0 else 0.0, tol)
            empty = int(np.sum(exact.weights <= 0))
            if empty and farthest_pass is not None and state.step < max_passes:
                far = farthest_pass(new, empty)
                new, rec.reassigned = relocate_empty(new, exact, far)
                converged = rec.reassigned == 0 and converged
            if converged or state.step >= max_passes:
                reason = STOP_TOL if converged else STOP_MAX_ITER
            else:
                rec.center_shift = float(((new - old) ** 2).sum())
                state.centers = new
                exact = None
        elif not exact_passes or state.step >= max_passes:
            reason = STOP_MAX_ITER
        state.history.append(rec)
        if on_pass is not None:
            on_pass(rec)
        if reason is not None:
            return PassesOutcome(reason, exact, info)


def _per_weight(stats: BatchStats) -> float:
    w = stats.weight_total
    return stats.inertia / w if w > 0 else 0.0
