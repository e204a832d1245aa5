"""The default fit: a few passes over the input where it lies, no prepared copy.

On Spark a fit pays for every Spark job and every hand-over of rows to Python, not for
arithmetic (a Python pass over 1M x 32 cached rows costs about 1.5 s; the mini-batch
compute of one epoch over them about 0.1 s). So this fit spends its jobs like money:

1. a JVM job counts the valid and invalid rows (``handleInvalid``);
2. a JVM job brings a random sample of the rows to the driver (:func:`epoch_sample_rows`
   of them at most, Spark's Bernoulli sample), which initialises on it and runs the
   *epochs pass* over it: mini-batch epochs in NumPy
   (:func:`~minibatch_kmeans.core.passes.minibatch_epochs`), then a few Lloyd steps on
   the sample (:func:`~minibatch_kmeans.core.passes.refine_on_rows`), while the
   executors start their Python workers in the background;
3. one *exact pass* over every row where it lies: each is assigned to the centers, which
   gives the exact training cost and cluster sizes, and tells whether a Lloyd step would
   still lower the cost by more than ``tol``; only then does the fit take it and pass
   again (:func:`~minibatch_kmeans.core.passes.run_passes`).

A table whose features take at most :data:`LOCAL_MAX_BYTES` (``fitMode="auto"``) is
collected to the driver whole by one job instead, and fitted there by the very same
passes: no Python worker starts at all.

Only the Bernoulli sample depends on how the input is partitioned: the same seed on the
same input *and partitioning* gives the same centers, and a table small enough to be
sampled whole gives the same centers however it is partitioned, in either mode
(``summary.partitionDependent``). ``fitMode="step"`` is the partition-independent
per-step fit of :mod:`minibatch_kmeans.spark.fit`.
"""
from __future__ import annotations

import logging
import threading
import time
import numpy as np

from ..core import rng as rng_mod
from ..core.checkpoint import Checkpoint, check_resumable
from ..core.kernels import assignment_stats, row_norms_sq
from ..core.loop import candidate_salt, max_candidates, select_candidates
from ..core.passes import merge_epochs, minibatch_epochs, refine_on_rows, run_passes
from .checkpoint import open_store, timed_save
from .features import FeatureSpec
from .initialize import Initializer
from .params import (FitParams, FitResult, check_prepared, cost_from_inertia, default_init_size,
                     fit_fingerprint)
from .prepare import Prepared, count_rows, plan_rows, prepared_rows, valid_features
from .session import default_parallelism, is_cached
from .udfs import (FARTHEST_SCHEMA, farthest_function, farthest_rows, table_to_farthest,
                   warmup_function)

logger = logging.getLogger(__name__)

#: fitMode="auto" fits on the driver when the rows' features take at most this many
#: bytes in the compute dtype (1M x 32 float32): collecting them costs about one Python
#: pass, and the driver's passes over them then cost a tenth of one each.
LOCAL_MAX_BYTES = 128 << 20
#: Rows per mini-batch step when batchSize is unset (at least 4 k).
TASK_BATCH = 4096
#: Passes over the data at most: the epochs pass, then exact passes (Lloyd steps).
MAX_PASSES = 4
#: The epochs pass of a fit on Spark runs on the driver over a random sample of about
#: this many rows (or :data:`EPOCH_ROWS_PER_CENTER` per center, when more; at most
#: :data:`EPOCH_SAMPLE_MAX_BYTES` of features): mini-batch epochs over more rows buy no
#: better centers, the exact passes see every row, and the collect's cost grows
#: faster than its size (large task results).
EPOCH_ROWS = 500_000
EPOCH_ROWS_PER_CENTER = 2_000
EPOCH_SAMPLE_MAX_BYTES = 64 << 20


def epoch_sample_rows(k: int, n_features: int, dtype=np.float32) -> int:
    """How many rows the epochs pass of a fit on Spark reads at most (see
    :data:`EPOCH_ROWS`)."""
    cap = EPOCH_SAMPLE_MAX_BYTES // max(1, n_features * np.dtype(dtype).itemsize)
    return max(1, min(max(EPOCH_ROWS, EPOCH_ROWS_PER_CENTER * int(k)), cap))


def auto_batch_size(k: int) -> int:
    """The mini-batch size when ``batchSize`` is unset: 4,096 rows, or 4 k when that is
    larger, so that a step still sees a few rows per center."""
    return max(TASK_BATCH, 4 * int(k))


def choose_mode(fit_mode: str, n_rows: int, n_features: int, dtype=np.float32) -> str:
    """"local" or "pass" for ``fitMode`` "auto" (and the given mode otherwise)."""
    if fit_mode != "auto":
        return fit_mode
    size = n_rows * n_features * np.dtype(dtype).itemsize
    return "local" if size <= LOCAL_MAX_BYTES else "pass"


def start_warmup(spark, dtype) -> threading.Thread:
    """Start every task slot's Python worker (imports, the compiled kernel) in a background
    job, so that the first pass does not wait for them. Failures are only logged."""
    def run():
        try:
            slots = default_parallelism(spark)
            (spark.range(0, slots, 1, slots).mapInArrow(warmup_function(dtype), "ok int")
             .collect())
        except Exception as e:  # noqa: BLE001 - an optimisation only
            logger.info("warming the Python workers failed (%s); the first pass starts "
                        "them", e)

    thread = threading.Thread(target=run, name="mbkm-warmup", daemon=True)
    thread.start()
    return thread


def fit_passes(df, spec: FeatureSpec, params: FitParams, should_stop=None,
               on_step=None) -> FitResult:
    """Fit with ``params.fit_mode`` "auto", "local" or "pass" (see the module docstring);
    returns a :class:`~minibatch_kmeans.spark.fit.FitResult`. Arguments as
    :func:`minibatch_kmeans.spark.fit.fit`; checkpoints are saved after every pass."""
    p = params
    t_start = time.perf_counter()
    d, k = spec.n_features, p.k
    batch = p.batch_size or auto_batch_size(k)
    # The row count: Spark's own for a materialised cache, else a count (metadata only
    # on files). A small table is then collected whole, counted on the driver; a large
    # one is counted by one JVM job and sampled by another.
    estimate = plan_rows(df) if is_cached(df) else None
    if estimate is None:
        estimate = df.count()
    mode = choose_mode(p.fit_mode, estimate, d, p.np_dtype)
    fraction = 1.0 if mode == "local" else min(
        1.0, epoch_sample_rows(k, d, p.np_dtype) / max(estimate, 1))
    whole = fraction >= 1.0

    def rows():  # keyed rows, for an init that must sample by itself: seldom needed
        return prepared_rows(df, spec, p.seed, p.dtype, p.spherical)

    reader = Initializer(Prepared(None, spec, 0, 0.0), p)
    if mode == "local":  # every row on the driver, counted there
        counts, keys, X, w = reader.collect_all(
            valid_features(df, spec, p.dtype, p.spherical, with_invalid=True))
    else:
        counts = count_rows(df, spec, p.seed, p.dtype, p.spherical,
                            content_hash=p.checkpoint_dir is not None)
    n, n_bad = int(counts["n"] or 0), int(counts["bad"] or 0)
    data = Prepared(None, spec, n, float(counts["w"] or 0.0),
                    spec.invalid_counts(df, p.spherical) if n_bad else {}, n_bad,
                    content_hash=int(counts.get("h") or 0), make_df=rows)
    check_prepared(data, p)  # handleInvalid, k against the rows: before any sample
    warm = exact_input = None
    if mode == "pass":  # the exact passes read every valid row; a sample of them comes first
        exact_input = valid_features(df, spec, p.dtype, p.spherical)
        _, keys, X, w = reader.collect_all(exact_input if whole else valid_features(
            df.sample(fraction=fraction, seed=p.seed), spec, p.dtype, p.spherical))
        warm = start_warmup(df.sparkSession, p.np_dtype)
    logger.info("%d rows: %s fit, %d of them on the driver", n, mode, len(keys))
    mb = Initializer(data, p)
    batch = min(batch, n)
    init_size = default_init_size(k, batch, n, p.init_size)
    if len(keys) >= min(init_size, n):
        _, sample_X, sample_w, all_rows = mb.draw(keys, X, w, init_size,
                                                  whole and init_size >= n)
        sample = (sample_X.astype(np.float64), sample_w, all_rows)
    else:  # a Bernoulli sample far short of the init's: the init samples by itself
        sample = mb.init_sample(init_size)[1:]
    count_seconds = time.perf_counter() - t_start
    derived = {"fitMode": mode, "batchSizeUsed": batch, "initSizeUsed": init_size,
               "maxPasses": MAX_PASSES}
    store = fingerprint = saved = None
    if p.checkpoint_dir is not None:
        store = open_store(p.checkpoint_dir, df.sparkSession)
        fingerprint = fit_fingerprint(p, data, p.initial_centers)
        saved = store.load_latest()
    if saved is not None:
        check_resumable(saved, fingerprint, derived,
                        source=f"the checkpoint in checkpointDir={p.checkpoint_dir!r}")
        state = saved.state
        logger.info("resuming after pass %d (checkpoint in %s)", saved.step, p.checkpoint_dir)
    else:
        state = mb.state_from_sample(*sample, p.initial_centers, batch)
    resumed_from = state.step
    init_seconds = time.perf_counter() - t_start - count_seconds
    tol_abs, no_imp = state.convergence.tol, p.max_no_improvement

    def epochs_pass(C, W, n_cand):  # on the driver, over the rows it holds
        r = minibatch_epochs(X, C, W, batch, p.max_iter, order_salt(p.seed, state.step),
                             keys=keys, sample_weight=w, tol=tol_abs,
                             max_no_improvement=no_imp, spherical=p.spherical,
                             reassignment_ratio=p.reassignment_ratio)
        r.stats.cand_keys, r.stats.cand_rows = select_candidates(
            keys, X, candidate_salt(p.seed, state.step), n_cand)
        return merge_epochs([r], n_cand)

    if mode == "local":
        def exact_pass(C):
            Cd = np.ascontiguousarray(C, dtype=p.np_dtype)
            return assignment_stats(X, Cd, row_norms_sq(Cd), w)

        def farthest_pass(C, m):
            Cd = np.ascontiguousarray(C, dtype=p.np_dtype)  # unit under cosine already
            return farthest_rows(X, Cd, row_norms_sq(Cd), m)[1]
    else:
        def exact_pass(C):
            if warm is not None:
                warm.join()
            return mb.stats(exact_input, C)

        def farthest_pass(C, m):
            fn = farthest_function(C, p.np_dtype, m, p.spherical)
            return table_to_farthest(exact_input.mapInArrow(fn, FARTHEST_SCHEMA).toArrow(),
                                     d, m)

    def before_pass() -> bool:
        return should_stop is not None and bool(should_stop())

    def after_pass(rec):
        logger.info("pass %d (%s): %d rows, %.4g per unit weight, shift %.3g, %.2f s",
                    rec.step, rec.kind, rec.rows, rec.batch_inertia, rec.center_shift,
                    rec.seconds)
        if store is not None:
            timed_save(store, Checkpoint(state, fingerprint, derived))
        if on_step is not None:
            on_step(rec, state)

    t_loop = time.perf_counter()
    if saved is not None and saved.finished:
        outcome_reason, exact, info = saved.stop_reason, None, {}
    else:
        outcome = run_passes(state, epochs_pass, exact_pass, max_passes=MAX_PASSES,
                             tol=p.tol, n_candidates=max_candidates(k, batch),
                             exact_passes=p.compute_training_cost,
                             farthest_pass=farthest_pass, on_pass=after_pass,
                             should_stop=before_pass, refine=None if whole else (
                                 lambda C: refine_on_rows(X, C, w, tol=p.tol,
                                                          spherical=p.spherical)))
        outcome_reason, exact, info = outcome.reason, outcome.exact, outcome.epochs_info
        if store is not None:
            timed_save(store, Checkpoint(state, fingerprint, derived, outcome_reason))
    loop_seconds = time.perf_counter() - t_loop
    history = state.history[resumed_from:]
    # an exact pass that moved empty centers ran one more job to find the farthest rows
    relocations = sum(1 for r in history if r.kind == "exact" and r.reassigned)
    t_final = time.perf_counter()
    extra = 0
    if exact is None and p.compute_training_cost and outcome_reason != "interrupted":
        exact = exact_pass(state.centers)  # resumed from a finished checkpoint
        extra = 1
    exact_runs = sum(1 for r in history if r.kind == "exact") + extra
    reasons = info.get("stopReasons") or {}
    summary = {
        "k": k, "numFeatures": d, "numRows": n, "numSkipped": data.n_invalid,
        "skippedByReason": {spec.reason_text(c): v for c, v in data.invalid.items()},
        "fitMode": mode, "batchSize": batch, "initSize": init_size,
        "numPasses": len(history) + extra + relocations, "epochRows": info.get("rows"),
        # rows handed to the driver or to Python, per row of the table. local: once, in
        # one job (its passes run on the driver); pass: the sample, then every exact and
        # farthest pass, besides two JVM-only jobs (the count and the sample's filter)
        "passesOverData": 1.0 if mode == "local" else (
            len(keys) / max(n, 1) + exact_runs + relocations),
        "numJobs": 1 if mode == "local" else 2 + exact_runs + relocations + 1,
        "epochsStopReason": next(iter(reasons), None),
        "numSteps": int(info.get("steps", 0)), "numIter": int(info.get("epochs", 0)),
        "stopReason": outcome_reason, "rowsSeen": state.rows_seen,
        "resumedFromStep": resumed_from, "checkpointDir": p.checkpoint_dir,
        "localSteps": None, "numBuckets": None, "prepareStorage": None,
        "prepareBlocks": None, "partitionDependent": not whole,
        "prepareSeconds": count_seconds, "initSeconds": init_seconds,
        "loopSeconds": loop_seconds,
    }
    if exact is not None:
        summary["trainingCost"] = cost_from_inertia(exact.inertia, p.spherical)
        summary["clusterSizes"] = [int(c) for c in exact.counts]
        summary["trainingCostExact"] = True
    else:  # the epochs pass's last epoch, as scikit-learn without compute_labels
        last = state.history[-1].batch_inertia if state.history else 0.0
        summary["trainingCost"] = cost_from_inertia(last * data.weight_total, p.spherical)
        summary["clusterSizes"] = None
        summary["trainingCostExact"] = False
    summary["finalPassSeconds"] = time.perf_counter() - t_final
    summary["fitSeconds"] = time.perf_counter() - t_start
    logger.info("%s fit: %d passes (%s), %.2f s", mode, summary["numPasses"], outcome_reason,
                summary["fitSeconds"])
    return FitResult(state.centers, state.weight_sums, summary, state.history)


def order_salt(seed: int, pass_index: int) -> int:
    """The salt of an epochs pass's visiting order."""
    return int(rng_mod.salt(seed, rng_mod.EPOCH, pass_index))
