"""The distributed fit: prepare once, initialise on a driver-side sample, one Spark job
per step, driver-side update, and one final full pass for the exact training cost.

DataFrame API only (no RDD, no ``sparkContext``, no ``_jvm``), so it runs unchanged on
Spark Connect and Databricks serverless.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ..core import init as init_mod
from ..core import rng as rng_mod
from ..core.checkpoint import FINAL_REASONS, Checkpoint, check_resumable
from ..core.kernels import BatchStats, batch_stats
from ..core.loop import candidate_salt, max_candidates, run_steps
from ..core.minibatch import Convergence, MiniBatchState, StepRecord
from ..errors import InvalidInputError, InvalidParamError
from .checkpoint import open_store, timed_save
from .features import FeatureSpec
from .prepare import N_SLOTS, STORAGES, Prepared, prepare
from .udfs import (SAMPLE_SCHEMA, STATS_SCHEMA, feature_matrix, local_steps_function,
                   normalize_rows, sample_function, sample_table_to_numpy, stats_function,
                   table_to_stats)

logger = logging.getLogger(__name__)

INIT_MODES = ("k-means||", "k-means++", "random")
INIT_SCOPES = ("sample", "table")
DISTANCES = ("euclidean", "cosine")
HANDLE_INVALID = ("error", "skip")
DTYPES = ("float32", "float64")


@dataclass
class FitParams:
    """Everything the fit needs besides the data (the estimator's Params, validated)."""

    k: int = 2
    max_iter: int = 20
    tol: float = 1e-4
    seed: int = 0
    init_mode: str = "k-means||"
    init_steps: int = 2
    init_scope: str = "sample"
    init_runs: int = 0
    distance: str = "euclidean"
    batch_size: int = 10000
    local_steps: int = 1
    init_size: Optional[int] = None
    max_no_improvement: Optional[int] = 10
    reassignment_ratio: float = 0.01
    handle_invalid: str = "error"
    initial_centers: Optional[Sequence[Sequence[float]]] = None
    dtype: str = "float32"
    compute_training_cost: bool = True
    prepare_storage: str = "auto"
    scratch_dir: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    checkpoint_interval: int = 10
    log_every: int = 10

    def validate(self) -> "FitParams":
        def bad(name, value, expected):
            raise InvalidParamError(f"{name}={value!r} is invalid: expected {expected}")

        if not isinstance(self.k, (int, np.integer)) or self.k < 2:
            bad("k", self.k, "an integer >= 2")
        if self.max_iter < 0:
            bad("maxIter", self.max_iter, "an integer >= 0")
        if not (self.tol >= 0) or not math.isfinite(self.tol):
            bad("tol", self.tol, "a finite number >= 0")
        if self.init_mode not in INIT_MODES:
            bad("initMode", self.init_mode, f"one of {list(INIT_MODES)}")
        if self.init_steps < 1:
            bad("initSteps", self.init_steps, "an integer >= 1")
        if self.init_runs < 0:
            bad("initRuns", self.init_runs, "an integer >= 0 (0: 3 for random, else 1)")
        if self.init_scope not in INIT_SCOPES:
            bad("initScope", self.init_scope, f"one of {list(INIT_SCOPES)}")
        if self.distance not in DISTANCES:
            bad("distanceMeasure", self.distance, f"one of {list(DISTANCES)}")
        if self.batch_size < 1:
            bad("batchSize", self.batch_size, "a positive integer")
        if self.local_steps < 1:
            bad("localSteps", self.local_steps, "a positive integer (1: one step per job)")
        if self.init_size is not None and self.init_size < 1:
            bad("initSize", self.init_size, "a positive integer (or unset for 3 * batchSize)")
        if self.max_no_improvement is not None and self.max_no_improvement < 1:
            bad("maxNoImprovement", self.max_no_improvement, "a positive integer, or None")
        if not (self.reassignment_ratio >= 0):
            bad("reassignmentRatio", self.reassignment_ratio, "a number >= 0 (0 disables)")
        if self.handle_invalid not in HANDLE_INVALID:
            bad("handleInvalid", self.handle_invalid, f"one of {list(HANDLE_INVALID)}")
        if self.dtype not in DTYPES:
            bad("dtype", self.dtype, f"one of {list(DTYPES)}")
        if self.prepare_storage not in STORAGES:
            bad("prepareStorage", self.prepare_storage, f"one of {list(STORAGES)}")
        if self.checkpoint_dir is not None and (not isinstance(self.checkpoint_dir, str)
                                                or not self.checkpoint_dir.strip()):
            bad("checkpointDir", self.checkpoint_dir, "a non-empty path, or unset for no "
                                                      "checkpoints")
        if not isinstance(self.checkpoint_interval, (int, np.integer)) \
                or isinstance(self.checkpoint_interval, bool) or self.checkpoint_interval < 1:
            bad("checkpointInterval", self.checkpoint_interval, "an integer >= 1 (steps "
                                                                "between checkpoints)")
        return self

    @property
    def spherical(self) -> bool:
        return self.distance == "cosine"

    @property
    def np_dtype(self):
        return np.float32 if self.dtype == "float32" else np.float64


@dataclass
class FitResult:
    """What a fit produces: centers, their accumulated weights, and the summary."""

    centers: np.ndarray
    weight_sums: np.ndarray
    summary: dict
    history: List[StepRecord] = field(default_factory=list)


def check_initial_centers(centers, k: int, n_features: int, spherical: bool) -> np.ndarray:
    """Validate user-given centers; return a float64 copy (the input is never mutated)."""
    try:
        C = np.array(centers, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidParamError(f"initialCenters must be a k x n_features list of numbers: {e}")
    if C.ndim != 2 or C.shape != (k, n_features):
        raise InvalidParamError(
            f"initial centers have shape {C.shape} but k={k} and {n_features} features")
    if not np.all(np.isfinite(C)):
        raise InvalidParamError("initial centers contain NaN or infinite values")
    if spherical:
        norms = np.linalg.norm(C, axis=1)
        if np.any(norms == 0):
            raise InvalidParamError(
                "initial centers include a zero vector, which has no direction under "
                "distanceMeasure='cosine'")
        C = C / norms[:, None]
    return C


def default_init_size(k: int, batch_size: int, n_rows: int, init_size: Optional[int]) -> int:
    """scikit-learn's rule: 3 * batch size (or 3 k when that is larger), at most n."""
    if init_size is None:
        size = 3 * batch_size
        if size < k:
            size = 3 * k
    elif init_size < k:
        warnings.warn(f"initSize={init_size} should be larger than k={k}; using "
                      f"min(3 * k, rows)", RuntimeWarning, stacklevel=3)
        size = 3 * k
    else:
        size = init_size
    return int(min(size, n_rows))


class SparkMiniBatch:
    """One fit over a prepared table. Use :func:`fit` rather than this class directly."""

    def __init__(self, prepared: Prepared, params: FitParams):
        self.p = params
        self.data = prepared
        self.d = prepared.spec.n_features
        self.timings = {}
        self.local_steps = 1
        self.state: Optional[MiniBatchState] = None

    # -- one Spark job each ---------------------------------------------------------
    def stats(self, df, centers, n_candidates=0, salt_value=0) -> BatchStats:
        fn = stats_function(centers, self.p.np_dtype, n_candidates, salt_value,
                            self.p.spherical)
        return self.run_stats(df, fn, centers.shape[0], n_candidates)

    def run_stats(self, df, fn, k, n_candidates=0) -> BatchStats:
        """The merged partials of a stats function (``STATS_SCHEMA``) run over ``df``."""
        table = df.mapInArrow(fn, STATS_SCHEMA).toArrow()
        return table_to_stats(table, k, self.d, n_candidates or None)

    def run_batch(self, bucket, centers, n_candidates, step) -> BatchStats:
        salt_value = candidate_salt(self.p.seed, step)
        if self.local_steps == 1:
            s = self.stats(self.data.bucket(bucket), centers, n_candidates, salt_value)
        else:
            fn = local_steps_function(centers, self.state.weight_sums, self.p.np_dtype,
                                      self.data.bucket_bounds(bucket), self.local_steps,
                                      n_candidates, salt_value, self.p.spherical)
            s = self.run_stats(self.data.bucket(bucket), fn, centers.shape[0], n_candidates)
        if s.n_rows > 4 * self.p.batch_size * self.local_steps:
            logger.warning("bucket %d has %d rows for batchSize %d: the input has many "
                           "exact duplicate rows", bucket, s.n_rows, self.p.batch_size)
        return s

    def collect_rows(self, df):
        """(keys, rows float64, weights or None) of a small DataFrame, sorted by key."""
        table = df.toArrow()
        if table.num_rows == 0:
            return np.empty(0, np.int64), np.empty((0, self.d)), None
        keys = table.column("key").to_numpy()
        order = np.argsort(keys, kind="stable")
        X = feature_matrix(table, self.d, np.float64)[order]
        if self.p.spherical:
            X = normalize_rows(X)
        w = None
        if "weight" in table.column_names:
            w = table.column("weight").to_numpy().astype(np.float64)[order]
        return keys[order], X, w

    # -- initialisation ---------------------------------------------------------------
    def init_sample(self, size: int):
        """``size`` rows drawn at random (by key) from the prepared table, on the driver."""
        n = self.data.n_rows
        hi = min(N_SLOTS, int(math.ceil(N_SLOTS * 1.2 * size / max(n, 1))) + 1)
        while True:
            keys, X, w = self.collect_rows(self.data.slots(0, hi))
            if len(keys) >= size or hi >= N_SLOTS:
                break
            hi = min(N_SLOTS, hi * 2)
        order = np.argsort(rng_mod.keyed_uint64(keys, rng_mod.salt(self.p.seed, rng_mod.INIT)),
                           kind="stable")[:size]
        whole = hi >= N_SLOTS
        return keys[order], X[order], (None if w is None else w[order]), whole

    def ensure_distinct(self, X, w, whole_table):
        """Raise when the table has fewer than k distinct rows; enlarge the sample when
        only the sample is short of them."""
        k = self.p.k
        wpos = np.ones(len(X), bool) if w is None else w > 0
        distinct = np.unique(X[wpos], axis=0).shape[0]
        if distinct >= k:
            return X, w
        if not whole_table:
            valid = self.data.valid()
            feats = self.data.feature_names
            distinct_df = valid.dropDuplicates(feats)
            if w is not None:
                distinct_df = valid.where("weight > 0").dropDuplicates(feats)
            n_distinct = distinct_df.count()
            if n_distinct >= k:
                _, X2, w2 = self.collect_rows(distinct_df.orderBy("key").limit(max(len(X), k)))
                return X2, w2
            distinct = n_distinct
        raise InvalidInputError(
            f"k={k} but the input has only {distinct} distinct rows"
            + (" with positive weight" if w is not None else "")
            + (" after skipping invalid rows" if self.data.n_invalid else "")
            + f": expected at least k={k} distinct rows")

    def init_centers(self, sample_X, sample_w) -> np.ndarray:
        """Best of ``initRuns`` initialisations by inertia on the init sample (scikit-learn's
        ``n_init``; by default 3 runs for random and 1 otherwise, as its "auto")."""
        p = self.p
        runs = p.init_runs or (3 if p.init_mode == "random" else 1)
        best, best_inertia = None, np.inf
        for run in range(runs):
            C = self.init_once(sample_X, sample_w, rng_mod.generator(p.seed, rng_mod.INIT, run))
            if runs == 1:
                return C
            inertia = batch_stats(sample_X, C, sample_w, p.dtype).inertia
            logger.info("init run %d/%d: inertia %.6g on the init sample", run + 1, runs, inertia)
            if inertia < best_inertia:
                best, best_inertia = C, inertia
        return best

    def init_once(self, sample_X, sample_w, rng) -> np.ndarray:
        p = self.p
        if p.init_mode == "k-means++":
            return init_mod.kmeans_plusplus(sample_X, p.k, rng, sample_w)
        if p.init_mode == "random":
            return init_mod.random_init(sample_X, p.k, rng, sample_w)
        if p.init_scope == "table":
            return self.kmeans_parallel_table(sample_X, sample_w, rng)
        return init_mod.kmeans_parallel(sample_X, p.k, rng, sample_w, p.init_steps)

    def kmeans_parallel_table(self, sample_X, sample_w, rng) -> np.ndarray:
        """k-means|| over the whole prepared table, as Spark MLlib does (2 jobs a round)."""
        p = self.p
        positive = np.flatnonzero(np.ones(len(sample_X), bool) if sample_w is None
                                  else sample_w > 0)
        cands = sample_X[[int(rng.choice(positive))]]
        valid = self.data.valid()
        for step in range(p.init_steps):
            phi = self.stats(valid, cands).inertia
            if phi <= 0:
                break
            fn = sample_function(cands, p.np_dtype, phi, 2.0 * p.k,
                                 rng_mod.salt(p.seed, rng_mod.KMEANS_PARALLEL, step),
                                 p.spherical)
            _, new = sample_table_to_numpy(valid.mapInArrow(fn, SAMPLE_SCHEMA).toArrow(),
                                           self.d)
            cands = np.vstack([cands, new])
        cands = np.unique(cands, axis=0)
        if cands.shape[0] < p.k:
            w = np.ones(len(sample_X)) if sample_w is None else sample_w
            return init_mod.complete_with_kmeans_plusplus(sample_X, w, cands, p.k, rng)
        weights = self.stats(valid, cands).weights
        return init_mod.reduce_candidates(cands, weights, p.k, rng)

    def initial_state(self, initial_centers, init_size: int, step_rows: int) -> MiniBatchState:
        """The state before the first step: initial centers (given, or initialised on a
        sample of ``init_size`` rows) and the convergence test, whose ``tol`` is scaled by
        the sample's mean feature variance."""
        p = self.p
        _, sample_X, sample_w, whole = self.init_sample(init_size)
        if initial_centers is not None:
            centers = check_initial_centers(initial_centers, p.k, self.d, p.spherical)
        else:
            sample_X, sample_w = self.ensure_distinct(sample_X, sample_w, whole)
            centers = self.init_centers(sample_X, sample_w)
        # tol is relative to the data's spread: mean feature variance of the sample.
        tol = 0.0
        if p.tol > 0 and len(sample_X) > 1:
            tol = float(np.mean(np.average((sample_X - np.average(sample_X, axis=0,
                                                                  weights=sample_w)) ** 2,
                                           axis=0, weights=sample_w))) * p.tol
        # maxNoImprovement counts batches, as scikit-learn's; a step here is localSteps.
        no_improvement = p.max_no_improvement and -(-p.max_no_improvement // self.local_steps)
        conv = Convergence(n_samples=self.data.n_rows, batch_size=step_rows, tol=tol,
                           max_no_improvement=no_improvement)
        return MiniBatchState(centers, conv, p.reassignment_ratio, p.spherical)

    # -- the fit ------------------------------------------------------------------------
    def run(self, initial_centers=None, should_stop=None, on_step=None) -> FitResult:
        p, data = self.p, self.data
        t_start = time.perf_counter()
        n = data.n_rows
        batch_size = p.batch_size
        if batch_size > n:
            warnings.warn(f"batchSize={batch_size} is larger than the {n} valid rows; "
                          f"using batchSize={n}", RuntimeWarning, stacklevel=3)
            logger.warning("batchSize=%d clamped to the %d valid rows", batch_size, n)
            batch_size = n
        # With localSteps = m, one step (one Spark job) covers m batches: m sub-steps.
        n_batches = max(1, min(N_SLOTS, int(round(n / batch_size))))
        self.local_steps = min(p.local_steps, n_batches)
        data.n_buckets = max(1, int(round(n_batches / self.local_steps)))
        init_size = default_init_size(p.k, batch_size, n, p.init_size)
        max_steps = p.max_iter * data.n_buckets
        # What the fit derived before its loop: a checkpoint must have derived the same.
        derived = {"batchSizeUsed": batch_size, "localStepsUsed": self.local_steps,
                   "numBuckets": data.n_buckets, "initSizeUsed": init_size,
                   "maxSteps": max_steps}
        store = fingerprint = saved = None
        if p.checkpoint_dir is not None:
            store = open_store(p.checkpoint_dir, data.df.sparkSession)
            fingerprint = fit_fingerprint(p, data, initial_centers)
            saved = store.load_latest()
        if saved is not None:
            check_resumable(saved, fingerprint, derived,
                            source=f"the checkpoint in checkpointDir={p.checkpoint_dir!r}")
            state = self.state = saved.state
            logger.info("resuming from step %d of %d (checkpoint in %s%s)", saved.step,
                        max_steps, p.checkpoint_dir,
                        f", stopped: {saved.stop_reason}" if saved.stop_reason else "")
        else:
            state = self.state = self.initial_state(initial_centers, init_size,
                                                    batch_size * self.local_steps)
        resumed_from = state.step
        self.timings["init_seconds"] = time.perf_counter() - t_start
        n_cand = max_candidates(p.k, batch_size)
        t_loop = time.perf_counter()
        last_saved = state.step

        def save(reason=None):
            nonlocal last_saved
            timed_save(store, Checkpoint(state, fingerprint, derived, reason))
            last_saved = state.step

        def before_step() -> bool:
            # Saved before the next step, not after the last one: a checkpoint without a
            # stop reason is always one the fit went on from.
            if store is not None and state.step > last_saved \
                    and state.step % p.checkpoint_interval == 0:
                save()
            return should_stop is not None and bool(should_stop())

        def log_step(rec: StepRecord):
            if rec.step == 1 or rec.step % max(1, p.log_every) == 0:
                logger.info("step %d/%d (epoch %d): %d rows seen, batch inertia %.4g, "
                            "ewa %s, shift %.3g, %.2f s elapsed", rec.step, max_steps,
                            rec.epoch + 1, state.rows_seen, rec.batch_inertia,
                            "-" if rec.ewa is None else f"{rec.ewa:.4g}", rec.center_shift,
                            time.perf_counter() - t_start)
            if on_step is not None:
                on_step(rec, state)

        if saved is not None and saved.finished:
            reason = saved.stop_reason
            logger.info("the checkpoint at step %d is final (%s): no steps to run",
                        saved.step, reason)
        else:
            reason = run_steps(state, data.n_buckets, max_steps, p.seed, self.run_batch,
                               n_cand, on_step=log_step, should_stop=before_step)
            if store is not None and (state.step != last_saved or reason in FINAL_REASONS):
                save(reason)
        loop_seconds = time.perf_counter() - t_loop
        logger.info("stopped after %d steps (%s), %.2f s", state.step, reason, loop_seconds)
        summary = {
            "k": p.k,
            "numFeatures": self.d,
            "numRows": n,
            "numSkipped": data.n_invalid,
            "skippedByReason": {data.spec.reason_text(c): v for c, v in data.invalid.items()},
            "batchSize": batch_size,
            "localSteps": self.local_steps,
            "numBuckets": data.n_buckets,
            "prepareStorage": data.storage,
            "prepareBlocks": data.n_blocks,
            "initSize": init_size,
            "numSteps": state.step,
            "numIter": int(math.ceil(state.step / data.n_buckets)) if state.step else 0,
            "stopReason": reason,
            "rowsSeen": state.rows_seen,
            "resumedFromStep": resumed_from,
            "checkpointDir": p.checkpoint_dir,
            "initSeconds": self.timings["init_seconds"],
            "loopSeconds": loop_seconds,
        }
        t_final = time.perf_counter()
        if p.compute_training_cost:
            final = self.stats(data.valid(with_key=False), state.centers)
            summary["trainingCost"] = cost_from_inertia(final.inertia, p.spherical)
            summary["clusterSizes"] = [int(c) for c in final.counts]
            summary["trainingCostExact"] = True
        else:  # as scikit-learn without compute_labels: the EWA of batch inertia
            h = state.history
            per_weight = (state.convergence.ewa if state.convergence.ewa is not None
                          else (h[-1].batch_inertia if h else 0.0))
            summary["trainingCost"] = cost_from_inertia(per_weight * data.weight_total,
                                                        p.spherical)
            summary["clusterSizes"] = None
            summary["trainingCostExact"] = False
        summary["finalPassSeconds"] = time.perf_counter() - t_final
        summary["fitSeconds"] = time.perf_counter() - t_start
        return FitResult(state.centers, state.weight_sums, summary, state.history)


def fit_fingerprint(params: FitParams, data: Prepared, initial_centers=None) -> dict:
    """What a fit's result depends on, as JSON values named like the Params: a checkpoint
    resumes only under the same fingerprint. The input is known by its feature layout,
    valid and invalid row counts, total weight and the XOR of its rows' keys (which hash
    the seed and each row's features)."""
    p, spec = params, data.spec
    given = None
    if initial_centers is not None:
        text = json.dumps(np.asarray(initial_centers, dtype=np.float64).tolist())
        given = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return {
        "k": int(p.k), "seed": int(p.seed), "maxIter": int(p.max_iter), "tol": float(p.tol),
        "initMode": p.init_mode, "initSteps": int(p.init_steps), "initScope": p.init_scope,
        "initRuns": int(p.init_runs), "initSize": p.init_size, "initialCenters": given,
        "distanceMeasure": p.distance, "batchSize": int(p.batch_size),
        "localSteps": int(p.local_steps), "maxNoImprovement": p.max_no_improvement,
        "reassignmentRatio": float(p.reassignment_ratio), "dtype": p.dtype,
        "features": {"kind": spec.kind, "columns": list(spec.columns),
                     "numFeatures": spec.n_features, "weightCol": spec.weight_col},
        "numRows": int(data.n_rows), "numInvalid": int(data.n_invalid),
        "weightTotal": float(data.weight_total), "contentHash": int(data.content_hash),
    }


def cost_from_inertia(inertia: float, spherical: bool) -> float:
    """Euclidean inertia as the cost Spark reports: for unit vectors and unit centers the
    cosine distance ``1 - cos`` is half the squared Euclidean distance."""
    return inertia / 2.0 if spherical else inertia


def check_prepared(data: Prepared, params: FitParams) -> None:
    """Raise for an empty input, or invalid rows under handleInvalid='error'."""
    if data.n_rows == 0 and data.n_invalid == 0:
        raise InvalidInputError("the input is empty: expected at least one row to cluster")
    invalid = data.spec.summarize_invalid(data.n_invalid, data.invalid)
    if data.n_invalid and params.handle_invalid == "error":
        raise InvalidInputError(
            f"the input has {invalid}; expected none with handleInvalid='error' (set "
            "handleInvalid='skip' to skip them)")
    if data.n_rows == 0:
        raise InvalidInputError(f"no valid rows: all {data.n_invalid} rows are invalid "
                                f"({invalid})")
    if data.n_invalid:
        logger.warning("skipping %s", invalid)
    if data.n_rows < params.k:
        raise InvalidInputError(
            f"k={params.k} but the input has only {data.n_rows} valid rows: expected at "
            f"least k rows")


def fit(df, spec: FeatureSpec, params: FitParams, should_stop=None, on_step=None) -> FitResult:
    """Fit mini-batch k-means on ``df``; the prepared cache is released afterwards.

    ``should_stop()`` is asked before every step (True interrupts the fit);
    ``on_step(record, state)`` is called after every step with its :class:`StepRecord` and
    the :class:`MiniBatchState` (read-only: ``state.centers`` are the current centers).

    With ``params.checkpoint_dir`` the state is saved every ``checkpoint_interval`` steps
    and when the loop ends (:mod:`minibatch_kmeans.spark.checkpoint`); a fit that finds a
    checkpoint there resumes from it instead of initialising (and a finished one runs no
    steps), after checking that it was written by the same Params on the same input.
    """
    params.validate()
    if params.initial_centers is not None:  # fail before any Spark job
        check_initial_centers(params.initial_centers, params.k, spec.n_features,
                              params.spherical)
    t0 = time.perf_counter()
    data = prepare(df, spec, params.seed, params.dtype, params.spherical,
                   params.prepare_storage, params.scratch_dir, params.batch_size)
    prepare_seconds = time.perf_counter() - t0
    try:
        check_prepared(data, params)
        result = SparkMiniBatch(data, params).run(params.initial_centers, should_stop, on_step)
    finally:
        data.unpersist()
    result.summary["prepareSeconds"] = prepare_seconds
    result.summary["fitSeconds"] += prepare_seconds
    return result
