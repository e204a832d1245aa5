"""Center initialisation on an in-memory sample (NumPy only).

- :func:`kmeans_plusplus`: greedy k-means++ as scikit-learn does it (``2 + ln k`` local
  trials per center, honouring sample weights; zero-weight rows never seed).
- :func:`random_init`: k distinct rows drawn with probability proportional to weight.
- :func:`kmeans_parallel`: k-means|| (Bahmani et al. 2012) as Spark MLlib does it:
  oversample ``2k`` rows per round for ``init_steps`` rounds, weight the candidates by the
  rows nearest to them, then reduce them to k with weighted k-means++ and Lloyd.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import InvalidInputError, InvalidParamError
from .kernels import labels_and_distances, row_norms_sq


#: Floating-point operations above which greedy k-means++ (``k (2 + ln k) n d`` x 2) is
#: replaced by :func:`_batched_kmeans_plusplus`: 2e10 is about 1 s here (k=3,000 on
#: 9,000 x 32 candidates), and the greedy form grows with k^2 (51 s at k=10,000).
SEEDING_FLOPS = 2e10
#: Rounds of :func:`_batched_kmeans_plusplus`: each picks ``k / rounds`` centers at once.
SEEDING_ROUNDS = 32
#: Floating-point operations (``2 n k d`` per iteration) the Lloyd refinement of large
#: seedings may take: its iterations are capped to fit (at least 3).
LLOYD_FLOPS = 2e11


def _check_sample(X, k: int, sample_weight):
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InvalidInputError(f"X must be 2-D, got shape {X.shape}")
    if k < 1:
        raise InvalidParamError(f"k must be >= 1, got {k}")
    w = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)
    if w.shape != (X.shape[0],):
        raise InvalidInputError(f"sample_weight has shape {w.shape}, expected ({X.shape[0]},)")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        bad = w[~(np.isfinite(w) & (w >= 0))]
        raise InvalidInputError(
            f"sample_weight must be finite and non-negative; got {bad.size} other values "
            f"(for example {bad[0]!r})")
    positive = int(np.count_nonzero(w > 0))
    if positive < k:
        raise InvalidInputError(
            f"k={k} but the sample has only {positive} rows with positive weight")
    return X, w


def _sq_dist_to(X, x_sq, centers):
    """Squared distances of every row of X to each of ``centers``: shape (len(centers), n)."""
    d = centers @ X.T
    d *= -2.0
    d += x_sq
    d += row_norms_sq(centers)[:, None]
    np.maximum(d, 0.0, out=d)
    return d


def _kmeans_plusplus(X, k, w, rng, n_local_trials=None, x_sq=None, first=None):
    """Greedy k-means++; returns row indices of the chosen centers. Assumes valid input."""
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(k))
    if x_sq is None:
        x_sq = row_norms_sq(X)
    indices = np.full(k, -1, dtype=np.int64)
    if first is None:
        first = rng.choice(n, p=w / w.sum())
    indices[0] = first
    closest = _sq_dist_to(X, x_sq, X[[first]])[0]
    # Rows with zero weight have zero mass in the cumulative sum, so a search on the
    # right side never lands on them; the last positive-weight row bounds rounding.
    last_positive = int(np.flatnonzero(w > 0)[-1])
    for c in range(1, k):
        cum = np.cumsum(w * closest)
        if cum[-1] <= 0:  # every remaining positive-weight row coincides with a center
            pool = np.flatnonzero((w > 0) & ~np.isin(np.arange(n), indices[:c]))
            cands = rng.choice(pool, size=min(n_local_trials, pool.size), replace=False)
        else:
            vals = rng.uniform(size=n_local_trials) * cum[-1]
            cands = np.minimum(np.searchsorted(cum, vals, side="right"), last_positive)
        dist = _sq_dist_to(X, x_sq, X[cands])
        np.minimum(closest, dist, out=dist)
        pots = dist @ w
        best = int(np.argmin(pots))
        closest = dist[best]
        indices[c] = cands[best]
    return indices


def _seeding_flops(n: int, d: int, k: int, n_local_trials=None) -> float:
    trials = 2 + int(np.log(k)) if n_local_trials is None else n_local_trials
    return 2.0 * k * trials * n * d


def _batched_kmeans_plusplus(X, k, w, rng, rounds: int = SEEDING_ROUNDS,
                             n_local_trials=None):
    """Greedy k-means++ for large k (row indices of k distinct rows), in ``rounds``
    rounds of ``k / rounds`` centers each: every new center is the best (lowest
    potential) of ``2 + ln k`` rows drawn with probability proportional to
    ``weight * distance^2``, as greedy k-means++'s; the trials of a round are scored
    together by chunked float32 GEMMs (:func:`_best_trials`), and :func:`_spread` drops a
    round's center next to another of that round. The same products as greedy k-means++
    (``k (2 + ln k) n d``) as matrix-matrix products, not one matrix-vector product per
    center (memory-bound: 51 s at k=10,000 on 30,000 x 32 candidates)."""
    n = X.shape[0]
    trials = 2 + int(np.log(k)) if n_local_trials is None else n_local_trials
    Xf = np.ascontiguousarray(X, dtype=np.float32)
    x_sq = row_norms_sq(Xf).astype(np.float64)
    first = int(rng.choice(n, p=w / w.sum()))
    chosen, taken = [first], np.zeros(n, bool)
    taken[first] = True
    C = Xf[[first]]
    closest = labels_and_distances(Xf, C, row_norms_sq(C))[1]
    per_round = max(1, -(-(k - 1) // max(1, rounds)))
    while len(chosen) < k:
        b = min(per_round, k - len(chosen))
        mass = w * closest
        mass[taken] = 0.0
        pool = np.flatnonzero(mass > 0)
        if pool.size >= b:
            cum = np.cumsum(mass[pool])
            draws = np.searchsorted(cum, rng.uniform(size=(b, trials)) * cum[-1], side="right")
            new = _best_trials(Xf, x_sq, w, closest, pool[np.minimum(draws, pool.size - 1)])
            new = np.unique(new[~taken[new]])
            new = new[rng.permutation(new.size)] if new.size else pool[:1]
        else:  # the rest coincide with centers: any untaken row of positive weight
            pool = np.flatnonzero((w > 0) & ~taken)
            new = pool[np.argsort(rng.uniform(size=pool.size), kind="stable")[:b]]
        new = _spread(Xf, new, closest, rng)
        chosen.extend(int(i) for i in new)
        taken[new] = True
        C = Xf[new]
        np.minimum(closest, labels_and_distances(Xf, C, row_norms_sq(C))[1], out=closest)
    return np.asarray(chosen, dtype=np.int64)


def _best_trials(Xf, x_sq, w, closest, cands, chunk: int = 256):
    """For each row of ``cands`` (b, trials: row indices), the trial whose potential
    ``sum w min(closest, |x - c|^2)`` is lowest, scored ``chunk`` candidates per GEMM."""
    flat = cands.ravel()
    pots = np.empty(flat.size)
    xs, cl = x_sq.astype(np.float32), closest.astype(np.float32)
    for s in range(0, flat.size, chunk):
        idx = flat[s:s + chunk]
        D = Xf[idx] @ Xf.T
        D *= -2.0
        D += xs
        D += xs[idx, None]
        np.maximum(D, 0.0, out=D)
        np.minimum(D, cl, out=D)
        pots[s:s + chunk] = D @ w
    best = np.argmin(pots.reshape(cands.shape), axis=1)
    return cands[np.arange(cands.shape[0]), best]


def _spread(Xf, picks, closest, rng):
    """The picks of one batched round that k-means++ would still take: in order, each is
    kept with probability ``min(1, D2 now / D2 before the round)``, where D2 now counts
    the picks kept before it (a pick next to one of them would be a wasted center; the
    first is always kept)."""
    P = Xf[picks].astype(np.float64)
    p_sq = row_norms_sq(P)
    D = np.maximum(p_sq[:, None] + p_sq[None, :] - 2.0 * (P @ P.T), 0.0)
    u = rng.uniform(size=len(picks))
    kept = []
    for j in range(len(picks)):
        before = closest[picks[j]]
        now = min(before, float(D[j, kept].min())) if kept else before
        if not kept or u[j] * before <= now:
            kept.append(j)
    return picks[kept]


def _seed(X, k, w, rng, x_sq=None, n_local_trials=None):
    """Row indices of k-means++'s k centers: greedy, or batched when greedy would take
    more than ``SEEDING_FLOPS``."""
    if _seeding_flops(X.shape[0], X.shape[1], k, n_local_trials) > SEEDING_FLOPS:
        return _batched_kmeans_plusplus(X, k, w, rng)
    return _kmeans_plusplus(X, k, w, rng, n_local_trials, x_sq=x_sq)


def kmeans_plusplus(X, k: int, rng: np.random.Generator, sample_weight=None,
                    n_local_trials: Optional[int] = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, as in scikit-learn).

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
    k : int
    rng : numpy.random.Generator
    sample_weight : array-like of shape (n_rows,), optional
        Rows are drawn with probability proportional to ``weight * distance^2``; rows of
        zero weight are never chosen.
    n_local_trials : int, optional
        Candidates tried per center; default ``2 + int(ln k)``.

    Returns
    -------
    centers : ndarray of shape (k, n_features), float64 (a copy; X is not mutated)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]])
    >>> c = kmeans_plusplus(X, 2, np.random.default_rng(0))
    >>> sorted(round(float(v)) for v in c[:, 0])
    [0, 10]
    """
    X, w = _check_sample(X, k, sample_weight)
    return X[_seed(X, k, w, rng, n_local_trials=n_local_trials)].copy()


def random_init(X, k: int, rng: np.random.Generator, sample_weight=None) -> np.ndarray:
    """k distinct rows drawn without replacement, with probability proportional to weight.

    Returns
    -------
    centers : ndarray of shape (k, n_features), float64 (a copy)
    """
    X, w = _check_sample(X, k, sample_weight)
    idx = rng.choice(X.shape[0], size=k, replace=False, p=w / w.sum())
    return X[idx].copy()


def _lloyd(X, w, centers, max_iter=30, dtype=None):
    """Weighted Lloyd iterations on a small in-memory set (Spark's LocalKMeans step);
    ``dtype``: of the assignment's GEMM (default X's), the sums stay float64."""
    centers = centers.copy()
    Xa = X if dtype is None else np.ascontiguousarray(X, dtype=dtype)
    for _ in range(max_iter):
        Ca = centers if dtype is None else centers.astype(dtype)
        labels, _ = labels_and_distances(Xa, Ca, row_norms_sq(Ca))
        k = centers.shape[0]
        wsum = np.bincount(labels, weights=w, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, X * w[:, None])
        moved = wsum > 0
        new = centers.copy()
        new[moved] = sums[moved] / wsum[moved, None]
        if np.allclose(new, centers, rtol=0, atol=1e-12):
            centers = new
            break
        centers = new
    return centers


def reduce_candidates(cands, cand_weights, k, rng, max_iter=30, n_runs=3) -> np.ndarray:
    """Reduce weighted k-means|| candidates to k centers: the best (by weighted cost on the
    candidates) of ``n_runs`` greedy weighted k-means++ seedings, each refined by Lloyd.

    One seeding misses a cluster about one time in five on well-separated blobs in 32
    dimensions (50 blobs: 6 of 30 seeds), and no later step recovers from that; the best of
    3 missed 1 in 100. The runs work on the candidates only, so they are cheap (0.3 s each
    for k=1000 and 4,000 candidates).

    When greedy seeding would take more than ``SEEDING_FLOPS`` (large k), one run: the
    batched seeding (:func:`_batched_kmeans_plusplus`) and a float32 Lloyd of at most
    ``LLOYD_FLOPS``: k=10,000 on 30,000 x 32 candidates took 17 s instead of 51 s here,
    for a cost 0.4% higher.
    """
    cands = np.ascontiguousarray(cands, dtype=np.float64)
    w = np.asarray(cand_weights, dtype=np.float64)
    if np.count_nonzero(w > 0) < k:  # rows no data point is nearest to still may seed
        w = w + 1e-12 * max(float(w.max(initial=0.0)), 1.0)
    x_sq = row_norms_sq(cands)
    n, d = cands.shape
    dtype = None
    if _seeding_flops(n, d, k) > SEEDING_FLOPS:  # large k: bounded (see the constants)
        n_runs, dtype = 1, np.float32
        max_iter = int(min(max_iter, max(3, LLOYD_FLOPS // (2.0 * n * k * d))))
    best, best_cost = None, np.inf
    for _ in range(max(1, n_runs)):
        centers = _lloyd(cands, w, cands[_seed(cands, k, w, rng, x_sq=x_sq)],
                         max_iter=max_iter, dtype=dtype)
        if n_runs == 1:
            return centers
        cost = float(labels_and_distances(cands, centers, row_norms_sq(centers))[1] @ w)
        if cost < best_cost:
            best, best_cost = centers, cost
    return best


def kmeans_parallel(X, k: int, rng: np.random.Generator, sample_weight=None,
                    init_steps: int = 2, oversampling: Optional[float] = None) -> np.ndarray:
    """k-means|| on an in-memory sample (Bahmani et al. 2012, Spark MLlib's default init).

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
    k : int
    rng : numpy.random.Generator
    sample_weight : array-like of shape (n_rows,), optional
    init_steps : int, default 2
        Oversampling rounds (Spark's ``initSteps``).
    oversampling : float, optional
        Expected candidates per round; default ``2 k`` as in Spark.

    Returns
    -------
    centers : ndarray of shape (k, n_features), float64
    """
    X, w = _check_sample(X, k, sample_weight)
    if init_steps < 1:
        raise InvalidParamError(f"init_steps must be >= 1, got {init_steps}")
    ell = 2.0 * k if oversampling is None else float(oversampling)
    # Distances that only weigh the sampling and the candidates use the chunked float32
    # kernel, not one (2k, n) float64 matrix per round (2.4 GB for k=1000 on a 150k-row
    # sample): k-means|| on 150k x 64 rows with k=1000 took 7.9 s, now 3.0 s, same cost.
    # labels_and_distances recomputes each distance directly, so float32 loses nothing to
    # cancellation.
    Xf = X.astype(np.float32)

    def nearest(rows):
        """Squared distance of every row to its nearest row of X[rows]."""
        C = Xf[rows]
        return labels_and_distances(Xf, C, row_norms_sq(C))[1]

    chosen = [int(rng.choice(X.shape[0], p=w / w.sum()))]
    closest = nearest(chosen)
    for step in range(init_steps):
        phi = float(closest @ w)
        if phi <= 0:
            break
        p = ell * w * closest / phi
        new = np.flatnonzero(rng.uniform(size=X.shape[0]) < p)
        chosen.extend(int(i) for i in new)
        if new.size and step < init_steps - 1:  # the last round's distances go unused
            np.minimum(closest, nearest(new), out=closest)
    cand_idx = np.unique(np.asarray(chosen))
    cands = np.unique(X[cand_idx], axis=0)
    if cands.shape[0] < k:
        # Too few distinct candidates (tiny sample or heavy duplicates): complete them
        # greedily with k-means++ over the whole sample, starting from what we have.
        return complete_with_kmeans_plusplus(X, w, cands, k, rng)
    cf = cands.astype(np.float32)
    labels, _ = labels_and_distances(Xf, cf, row_norms_sq(cf))
    cand_w = np.bincount(labels, weights=w, minlength=cands.shape[0])
    return reduce_candidates(cands, cand_w, k, rng)


def complete_with_kmeans_plusplus(X, w, centers, k, rng) -> np.ndarray:
    """Add centers drawn by k-means++ from X (weights w) until there are k of them."""
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, X.shape[1])
    x_sq = row_norms_sq(X)
    out = [c for c in centers]
    closest = (_sq_dist_to(X, x_sq, centers).min(axis=0) if len(out)
               else np.full(X.shape[0], 1.0))
    while len(out) < k:
        mass = w * closest
        if mass.sum() <= 0:
            raise InvalidInputError(
                f"k={k} but only {len(out)} distinct rows with positive weight were found")
        i = int(rng.choice(X.shape[0], p=mass / mass.sum()))
        out.append(X[i].copy())
        np.minimum(closest, _sq_dist_to(X, x_sq, X[[i]])[0], out=closest)
    return np.vstack(out)
