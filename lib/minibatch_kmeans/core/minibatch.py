"""The mini-batch update rule, low-count reassignment and early stopping (NumPy only).

These follow scikit-learn's ``MiniBatchKMeans`` (``_mini_batch_step``,
``update_center_dense``, ``_random_reassign``, ``_mini_batch_convergence``) so that the
behaviour users know carries over. Where ours differs it says so:

- batch inertia is normalised by the batch's actual weight (our batches are hash buckets
  whose size varies a little), not by the nominal batch size;
- the rows that re-seed low-count centers are the batch rows with the smallest per-step
  random keys, so the choice does not depend on how the batch was partitioned.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InvalidParamError
from .kernels import BatchStats

#: Why a fit stopped.
STOP_MAX_ITER = "maxIter"
STOP_TOL = "tol"
STOP_NO_IMPROVEMENT = "maxNoImprovement"


def minibatch_update(centers, weight_sums, batch_sums, batch_weights):
    """Sculley's per-center learning-rate update, exactly as scikit-learn's.

    For every center with batch weight ``w_c > 0``::

        c_new = (c * W_c + S_c) / (W_c + w_c),   W_c += w_c

    which is ``c += (S_c - w_c c) / W_c`` with the updated ``W_c``. Centers with no
    batch weight are unchanged.

    Parameters
    ----------
    centers : ndarray of shape (k, n_features)
    weight_sums : ndarray of shape (k,)
        Weight accumulated by each center so far.
    batch_sums : ndarray of shape (k, n_features)
        Weighted sums of this batch's rows per center.
    batch_weights : ndarray of shape (k,)

    Returns
    -------
    new_centers : ndarray of shape (k, n_features), float64
    new_weight_sums : ndarray of shape (k,), float64
        New arrays; the inputs are not mutated.
    """
    centers = np.asarray(centers, dtype=np.float64)
    W = np.asarray(weight_sums, dtype=np.float64)
    w = np.asarray(batch_weights, dtype=np.float64)
    new_W = W + w
    new_c = centers.copy()
    hit = w > 0
    new_c[hit] = (centers[hit] * W[hit, None] + batch_sums[hit]) / new_W[hit, None]
    return new_c, new_W


def split_dying(centers, weight_sums, ratio: float, spread: float = 1e-4):
    """Re-seed dying clusters by splitting the heaviest (Spark ``StreamingKMeans``' rule).

    While the lightest center's weight is below ``ratio`` times the heaviest's, the
    heaviest is split in two: both centers get half the two weights' sum and sit at the
    heaviest's place moved by ``+p`` and ``-p`` in every coordinate, with
    ``p_j = spread * max(|c_j|, 1)``. Rows of the old heavy cluster then divide by the
    hyperplane through its center, and the next updates pull the halves apart. Spark moves
    by ``1e-14`` times the value, which float32 distances (this library's default) cannot
    resolve; ``1e-4`` moves a center by far less than any cluster's spread and still
    decides every row away from the hyperplane.

    Parameters
    ----------
    centers : ndarray of shape (k, n_features)
    weight_sums : ndarray of shape (k,)
    ratio : float
        A center is dying when its weight is below ``ratio * max(weight_sums)``;
        0 never re-seeds.

    Returns
    -------
    centers, weight_sums : new float64 arrays
    splits : list of (dying, heaviest) index pairs, in the order applied
    """
    C = np.array(centers, dtype=np.float64)
    W = np.array(weight_sums, dtype=np.float64)
    splits = []
    for _ in range(len(W) - 1):
        big, small = int(np.argmax(W)), int(np.argmin(W))
        if big == small or not W[small] < ratio * W[big]:
            break
        W[big] = W[small] = (W[big] + W[small]) / 2.0
        p = spread * np.maximum(np.abs(C[big]), 1.0)
        C[small] = C[big] - p
        C[big] = C[big] + p
        splits.append((small, big))
    return C, W, splits


def reassign_low_count(centers, weight_sums, ratio: float, cand_rows, batch_rows: int):
    """Re-seed centers whose weight is below ``ratio * max(weight)`` (scikit-learn's rule).

    At most half the batch's rows may become new centers; those kept are the highest-
    weight ones among the low ones. New centers are ``cand_rows`` in order (the batch rows
    with the smallest random keys). Re-seeded centers get the smallest weight among the
    others so they are not re-seeded again at once.

    Returns
    -------
    new_centers, new_weight_sums : new arrays (the inputs are not mutated)
    n_reassigned : int
    """
    centers = np.array(centers, dtype=np.float64)
    W = np.array(weight_sums, dtype=np.float64)
    if ratio <= 0:
        return centers, W, 0
    to_reassign = W < ratio * W.max()
    if to_reassign.sum() > 0.5 * batch_rows:
        to_reassign[np.argsort(W, kind="stable")[int(0.5 * batch_rows):]] = False
    n = int(to_reassign.sum())
    n = min(n, len(cand_rows))
    if n == 0 or to_reassign.all():
        return centers, W, 0
    idx = np.flatnonzero(to_reassign)[:n]
    centers[idx] = cand_rows[:n]
    W[idx] = W[~to_reassign].min()
    return centers, W, n


@dataclass
class Convergence:
    """Early stopping on a mini-batch fit (scikit-learn's ``_mini_batch_convergence``).

    Parameters
    ----------
    n_samples : float
        Rows (or total weight) in the training table.
    batch_size : int
        Nominal batch size; the EWA weight is ``alpha = min(1, 2 * batch_size / (n + 1))``.
    tol : float
        Absolute threshold on the squared center shift of one step (already scaled by the
        mean feature variance); 0 disables.
    max_no_improvement : int or None
        Stop after this many steps without a new minimum of the EWA; None disables.
    """

    n_samples: float
    batch_size: int
    tol: float = 0.0
    max_no_improvement: Optional[int] = 10
    ewa: Optional[float] = None
    ewa_min: Optional[float] = None
    no_improvement: int = 0
    steps_seen: int = 0

    @property
    def alpha(self) -> float:
        return min(1.0, self.batch_size * 2.0 / (self.n_samples + 1))

    def update(self, normalized_inertia: float, center_shift_sq: float) -> Optional[str]:
        """Record one step; return the stop reason, or None to go on. Mutates self."""
        self.steps_seen += 1
        if self.steps_seen == 1:  # inertia of the initial centers: ignored, as sklearn
            return None
        if self.ewa is None:
            self.ewa = normalized_inertia
        else:
            a = self.alpha
            self.ewa = self.ewa * (1 - a) + normalized_inertia * a
        if self.tol > 0.0 and center_shift_sq <= self.tol:
            return STOP_TOL
        if self.ewa_min is None or self.ewa < self.ewa_min:
            self.no_improvement = 0
            self.ewa_min = self.ewa
        else:
            self.no_improvement += 1
        if self.max_no_improvement is not None and self.no_improvement >= self.max_no_improvement:
            return STOP_NO_IMPROVEMENT
        return None


@dataclass
class StepRecord:
    """One line of a fit's history."""

    step: int
    epoch: int
    bucket: int
    rows: int
    batch_inertia: float  # weighted batch inertia divided by the batch's weight
    ewa: Optional[float]
    center_shift: float  # sum over centers of squared shift in this step
    reassigned: int
    seconds: float
    #: "step" (one mini-batch step), or in the pass fit "epochs" (a pass of mini-batch
    #: epochs in every task) and "exact" (a pass assigning every row to fixed centers)
    kind: str = "step"

    def as_dict(self):
        return dict(self.__dict__)


@dataclass
class MiniBatchState:
    """The mutable state of a mini-batch fit, updated in place by :meth:`apply`.

    Attributes
    ----------
    centers : ndarray of shape (k, n_features), float64
    weight_sums : ndarray of shape (k,), float64
    step : int
        Steps applied so far.
    """

    centers: np.ndarray
    convergence: Convergence
    reassignment_ratio: float = 0.01
    spherical: bool = False
    weight_sums: Optional[np.ndarray] = None
    step: int = 0
    rows_seen: int = 0
    n_since_last_reassign: int = 0
    history: list = field(default_factory=list)

    def __post_init__(self):
        self.centers = np.array(self.centers, dtype=np.float64)
        if self.weight_sums is None:
            self.weight_sums = np.zeros(self.centers.shape[0])
        if self.reassignment_ratio < 0:
            raise InvalidParamError(
                f"reassignmentRatio must be >= 0, got {self.reassignment_ratio}")

    @property
    def k(self) -> int:
        return self.centers.shape[0]

    def reassign_due(self) -> bool:
        """scikit-learn's ``_random_reassign``: every ``10 k`` rows, or when a center is
        empty. Mutates the counter; call once per step, before :meth:`apply`."""
        if self.reassignment_ratio <= 0:
            return False
        self.n_since_last_reassign += self.convergence.batch_size
        if (self.weight_sums == 0).any() or self.n_since_last_reassign >= 10 * self.k:
            self.n_since_last_reassign = 0
            return True
        return False

    def apply(self, stats: BatchStats, reassign: bool, *, epoch: int = 0, bucket: int = 0,
              seconds: float = 0.0):
        """Apply one batch's merged statistics; returns (StepRecord, stop reason or None)."""
        old = self.centers
        new, W = minibatch_update(old, self.weight_sums, stats.sums, stats.weights)
        n_re = 0
        if reassign and stats.n_rows:
            new, W, n_re = reassign_low_count(new, W, self.reassignment_ratio,
                                              stats.cand_rows if stats.cand_rows is not None
                                              else np.empty((0, new.shape[1])),
                                              stats.n_rows)
        if self.spherical:
            norms = np.linalg.norm(new, axis=1, keepdims=True)
            new = np.where(norms > 0, new / np.where(norms > 0, norms, 1.0), new)
        shift = float(((new - old) ** 2).sum())
        self.centers, self.weight_sums = new, W
        self.step += 1
        self.rows_seen += stats.n_rows
        total_w = stats.weight_total
        normalized = stats.inertia / total_w if total_w > 0 else 0.0
        reason = self.convergence.update(normalized, shift)
        rec = StepRecord(self.step, epoch, bucket, stats.n_rows, normalized,
                         self.convergence.ewa, shift, n_re, seconds)
        self.history.append(rec)
        return rec, reason
