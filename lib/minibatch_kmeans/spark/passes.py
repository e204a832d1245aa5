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
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

from ..core import rng as rng_mod
from ..core.kernels import assignment_stats, row_norms_sq
from ..core.loop import candidate_salt, max_candidates, select_candidates
from ..core.passes import (PassesOutcome, merge_epochs, minibatch_epochs, refine_on_rows,
                           run_passes)
from .checkpoint import FitCheckpoints
from .features import FeatureSpec
from .initialize import Initializer
from .params import FitParams, FitResult, check_prepared, cost_from_inertia, default_init_size
from .prepare import Prepared, count_rows, plan_rows, prepared_rows, valid_features
from .session import default_parallelism, is_cached, job_description
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
#: :data:`EPOCH_SAMPLE_MAX_BYTES` of features, what a "local" fit holds). The sample's
#: centers sit about k / rows of the cost from the table's optimum, so at 1M rows and
#: k=50 (5e-5) the first exact pass finds them within ``tol`` (1e-4) and the fit stops
#: there: at 10M x 32 every seed took one exact pass (a 500k sample, at 9e-5 to 1.1e-4,
#: took a second, 10 s, for some), for 0.6 s more sampling and 0.3 s more epochs.
EPOCH_ROWS = 1_000_000
EPOCH_ROWS_PER_CENTER = 2_000
EPOCH_SAMPLE_MAX_BYTES = LOCAL_MAX_BYTES


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
            with job_description(spark, "mbkm fit: start the Python workers"):
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
    mode, fraction, estimate = _choose_mode_and_fraction(df, spec.n_features, p)
    data, rows = _read_input(df, spec, p, mode, fraction, estimate)
    n = data.n_rows
    logger.info("%d rows: %s fit, %d of them on the driver", n, mode, len(rows.keys))
    mb = Initializer(data, p)
    batch = min(p.batch_size or auto_batch_size(p.k), n)
    init_size = default_init_size(p.k, batch, n, p.init_size)
    plan = _Plan(mode, fraction >= 1.0, batch, init_size)
    sample = _init_sample(mb, rows, init_size, plan.whole)
    count_seconds = time.perf_counter() - t_start
    checkpoints = FitCheckpoints(p, df.sparkSession, data, p.initial_centers, plan.derived())
    saved = checkpoints.saved
    if saved is not None:
        state = saved.state
        logger.info("resuming after pass %d (checkpoint in %s)", saved.step, p.checkpoint_dir)
    else:
        state = mb.state_from_sample(*sample, p.initial_centers, batch)
    resumed_from = state.step
    init_seconds = time.perf_counter() - t_start - count_seconds
    passes = _Passes(p, mb, rows, state, batch)
    t_loop = time.perf_counter()
    outcome = _run_loop(p, plan, state, passes, checkpoints, should_stop, on_step)
    loop_seconds = time.perf_counter() - t_loop
    t_final = time.perf_counter()
    extra = 0
    if outcome.exact is None and p.compute_training_cost and outcome.reason != "interrupted":
        outcome.exact = passes.exact(state.centers)  # resumed from a finished checkpoint
        extra = 1
    summary = _summary(p, plan, data, state, outcome, driver_rows=len(rows.keys),
                       resumed_from=resumed_from, extra_exact=extra,
                       seconds={"prepareSeconds": count_seconds, "initSeconds": init_seconds,
                                "loopSeconds": loop_seconds})
    summary["finalPassSeconds"] = time.perf_counter() - t_final
    summary["fitSeconds"] = time.perf_counter() - t_start
    logger.info("%s fit: %d passes (%s), %.2f s", mode, summary["numPasses"], outcome.reason,
                summary["fitSeconds"])
    return FitResult(state.centers, state.weight_sums, summary, state.history)


def order_salt(seed: int, pass_index: int) -> int:
    """The salt of an epochs pass's visiting order."""
    return int(rng_mod.salt(seed, rng_mod.EPOCH, pass_index))


class _DriverRows(NamedTuple):
    """The rows a pass fit holds on the driver (all valid rows, or the Bernoulli sample of
    them), and in "pass" mode where its exact passes read every valid row."""

    #: :func:`~minibatch_kmeans.core.rng.row_keys` of the rows
    keys: np.ndarray
    #: the rows' features in the compute dtype (unit rows under cosine distance)
    X: np.ndarray
    #: the rows' weights, or None
    w: Optional[np.ndarray]
    #: "pass" mode: every valid row (:func:`.prepare.valid_features`), which each exact and
    #: farthest pass reads by one Spark job; "local" mode: None, X holds every valid row
    exact_input: Any = None
    #: "pass" mode: the job warming the Python workers up (:func:`start_warmup`)
    warm: Optional[threading.Thread] = None


class _Plan(NamedTuple):
    """What a pass fit derived before its loop."""

    mode: str  # "local" or "pass"
    whole: bool  # the epochs pass runs over every valid row, not a sample of them
    batch: int
    init_size: int

    def derived(self) -> dict:
        """The values a checkpoint must have been derived with to resume."""
        return {"fitMode": self.mode, "batchSizeUsed": self.batch,
                "initSizeUsed": self.init_size, "maxPasses": MAX_PASSES}


def _choose_mode_and_fraction(df, n_features: int, p: FitParams) -> Tuple[str, float, int]:
    """The fit mode, "local" or "pass" (:func:`choose_mode`), the fraction of the rows the
    epochs pass samples (1.0: all of them) and the row count they come from: Spark's own
    for a materialised cache, else a count (metadata only on files)."""
    estimate = plan_rows(df) if is_cached(df) else None
    if estimate is None:
        estimate = df.count()
    mode = choose_mode(p.fit_mode, estimate, n_features, p.np_dtype)
    fraction = 1.0 if mode == "local" else min(
        1.0, epoch_sample_rows(p.k, n_features, p.np_dtype) / max(estimate, 1))
    return mode, fraction, estimate


def _read_input(df, spec: FeatureSpec, p: FitParams, mode: str, fraction: float,
                estimate: int) -> Tuple[Prepared, _DriverRows]:
    """The input counted and checked (handleInvalid, k against the rows), and the rows the
    driver holds. "local": one job collects every row to the driver, which counts them.
    "pass": a JVM job counts them; once the counts pass the checks, another brings the
    Bernoulli sample of ``fraction`` of the valid rows (all of them at 1.0), and the Python
    workers start warming up in the background."""
    reader = Initializer(Prepared(None, spec, 0, 0.0), p)
    spark = df.sparkSession
    if mode == "local":  # every row on the driver, counted there
        with job_description(spark, "mbkm fit: rows to the driver (local mode)"):
            counts, keys, X, w = reader.collect_all(
                valid_features(df, spec, p.dtype, p.spherical, with_invalid=True), estimate)
    else:
        with job_description(spark, "mbkm fit: count the rows"):
            counts = count_rows(df, spec, p.seed, p.dtype, p.spherical,
                                content_hash=p.checkpoint_dir is not None)
    data = _counted_input(df, spec, p, counts)
    check_prepared(data, p)  # handleInvalid, k against the rows: before any sample
    if mode == "local":
        return data, _DriverRows(keys, X, w)
    # the exact passes read every valid row; a sample of them comes first
    exact_input = valid_features(df, spec, p.dtype, p.spherical)
    # a matrix sized with room for the sample's spread: only the rows written are touched
    with job_description(spark, "mbkm fit: the epochs' sample to the driver"):
        _, keys, X, w = reader.collect_all(exact_input if fraction >= 1.0 else valid_features(
            df.sample(fraction=fraction, seed=p.seed), spec, p.dtype, p.spherical),
            int(data.n_rows * min(1.0, 1.05 * fraction)) + 1024)
    return data, _DriverRows(keys, X, w, exact_input, start_warmup(df.sparkSession,
                                                                   p.np_dtype))


def _counted_input(df, spec: FeatureSpec, p: FitParams, counts) -> Prepared:
    """The input as its counts (as :func:`.prepare.count_columns` names them) describe it: a
    :class:`Prepared` without a table, whose keyed rows are built only if an init must
    sample by itself; one more job counts the invalid values by reason, if any."""
    n, n_bad = int(counts["n"] or 0), int(counts["bad"] or 0)

    def rows():  # keyed rows, for an init that must sample by itself: seldom needed
        return prepared_rows(df, spec, p.seed, p.dtype, p.spherical)

    return Prepared(None, spec, n, float(counts["w"] or 0.0),
                    spec.invalid_counts(df, p.spherical) if n_bad else {}, n_bad,
                    content_hash=int(counts.get("h") or 0), make_df=rows)


def _init_sample(mb: Initializer, rows: _DriverRows, init_size: int, whole: bool):
    """The init's sample, (X float64, weights or None, whether it is every valid row): drawn
    from the rows on the driver when they are enough, else by the init itself."""
    n = mb.data.n_rows
    if len(rows.keys) >= min(init_size, n):
        _, sample_X, sample_w, all_rows = mb.draw(rows.keys, rows.X, rows.w, init_size,
                                                  whole and init_size >= n)
        return sample_X.astype(np.float64), sample_w, all_rows
    # a Bernoulli sample far short of the init's: the init samples by itself
    return mb.init_sample(init_size)[1:]


class _Passes:
    """The passes :func:`~minibatch_kmeans.core.passes.run_passes` runs: the epochs pass
    (and the Lloyd steps refining it) over the rows the driver holds, and the exact and
    farthest passes over every valid row, on the driver when it holds them all ("local"
    mode), else by one Spark job each."""

    def __init__(self, p: FitParams, mb: Initializer, rows: _DriverRows, state, batch: int):
        self.p, self.mb, self.rows, self.state, self.batch = p, mb, rows, state, batch
        self.tol_abs = state.convergence.tol

    def epochs(self, C, W, n_cand):
        """Mini-batch epochs on the driver, over the rows it holds, and the re-seeding
        candidates among them."""
        p, rows, step = self.p, self.rows, self.state.step
        r = minibatch_epochs(rows.X, C, W, self.batch, p.max_iter, order_salt(p.seed, step),
                             keys=rows.keys, sample_weight=rows.w, tol=self.tol_abs,
                             max_no_improvement=p.max_no_improvement, spherical=p.spherical,
                             reassignment_ratio=p.reassignment_ratio)
        r.stats.cand_keys, r.stats.cand_rows = select_candidates(
            rows.keys, rows.X, candidate_salt(p.seed, step), n_cand)
        return merge_epochs([r], n_cand)

    def refine(self, C):
        """Lloyd steps over the sample on the driver (:func:`refine_on_rows`)."""
        return refine_on_rows(self.rows.X, C, self.rows.w, tol=self.p.tol,
                              spherical=self.p.spherical)

    def exact(self, C):
        """Every valid row assigned to the centers C: their BatchStats."""
        rows = self.rows
        if rows.exact_input is None:
            Cd = np.ascontiguousarray(C, dtype=self.p.np_dtype)
            return assignment_stats(rows.X, Cd, row_norms_sq(Cd), rows.w)
        if rows.warm is not None:
            rows.warm.join()
        with job_description(rows.exact_input.sparkSession,
                             f"mbkm fit: exact pass after pass {self.state.step} (cost, sizes)"):
            return self.mb.stats(rows.exact_input, C)

    def farthest(self, C, m):
        """The ``m`` valid rows farthest from their nearest center, farthest first."""
        rows, p = self.rows, self.p
        if rows.exact_input is None:
            Cd = np.ascontiguousarray(C, dtype=p.np_dtype)  # unit under cosine already
            return farthest_rows(rows.X, Cd, row_norms_sq(Cd), m)[1]
        fn = farthest_function(C, p.np_dtype, m, p.spherical)
        with job_description(rows.exact_input.sparkSession,
                             f"mbkm fit: the {m} farthest rows, for empty clusters"):
            table = rows.exact_input.mapInArrow(fn, FARTHEST_SCHEMA).toArrow()
        return table_to_farthest(table, self.mb.d, m)


def _run_loop(p: FitParams, plan: _Plan, state, passes: _Passes,
              checkpoints: FitCheckpoints, should_stop, on_step) -> PassesOutcome:
    """:func:`~minibatch_kmeans.core.passes.run_passes` from the state on (none when the
    checkpoint it resumed from is final), logging and checkpointing after every pass and
    when they end."""
    saved = checkpoints.saved
    if saved is not None and saved.finished:
        return PassesOutcome(saved.stop_reason, None, {})

    def before_pass() -> bool:
        return should_stop is not None and bool(should_stop())

    def after_pass(rec):
        logger.info("pass %d (%s): %d rows, %.4g per unit weight, shift %.3g, %.2f s",
                    rec.step, rec.kind, rec.rows, rec.batch_inertia, rec.center_shift,
                    rec.seconds)
        checkpoints.save(state)
        if on_step is not None:
            on_step(rec, state)

    outcome = run_passes(state, passes.epochs, passes.exact, max_passes=MAX_PASSES,
                         tol=p.tol, n_candidates=max_candidates(p.k, plan.batch),
                         exact_passes=p.compute_training_cost,
                         farthest_pass=passes.farthest, on_pass=after_pass,
                         should_stop=before_pass,
                         refine=None if plan.whole else passes.refine)
    checkpoints.save(state, outcome.reason)
    return outcome


def _summary(p: FitParams, plan: _Plan, data: Prepared, state, outcome: PassesOutcome, *,
             driver_rows: int, resumed_from: int, extra_exact: int, seconds: dict) -> dict:
    """The fit's summary but for finalPassSeconds and fitSeconds. ``driver_rows``: the rows
    the epochs pass ran over; ``extra_exact``: 1 when an exact pass ran after the loop (for
    a fit resumed from a finished checkpoint); ``seconds``: prepareSeconds, initSeconds and
    loopSeconds."""
    spec, n, info, local = data.spec, data.n_rows, outcome.epochs_info, plan.mode == "local"
    history = state.history[resumed_from:]
    # an exact pass that moved empty centers ran one more job to find the farthest rows
    relocations = sum(1 for r in history if r.kind == "exact" and r.reassigned)
    exact_runs = sum(1 for r in history if r.kind == "exact") + extra_exact
    reasons = info.get("stopReasons") or {}
    summary = {
        "k": p.k, "numFeatures": spec.n_features, "numRows": n, "numSkipped": data.n_invalid,
        "skippedByReason": {spec.reason_text(c): v for c, v in data.invalid.items()},
        "fitMode": plan.mode, "batchSize": plan.batch, "initSize": plan.init_size,
        "numPasses": len(history) + extra_exact + relocations, "epochRows": info.get("rows"),
        # rows handed to the driver or to Python, per row of the table. local: once, in
        # one job (its passes run on the driver); pass: the sample, then every exact and
        # farthest pass, besides two JVM-only jobs (the count and the sample's filter)
        "passesOverData": 1.0 if local else (
            driver_rows / max(n, 1) + exact_runs + relocations),
        "numJobs": 1 if local else 2 + exact_runs + relocations + 1,
        "epochsStopReason": next(iter(reasons), None),
        "numSteps": int(info.get("steps", 0)), "numIter": int(info.get("epochs", 0)),
        "stopReason": outcome.reason, "rowsSeen": state.rows_seen,
        "resumedFromStep": resumed_from, "checkpointDir": p.checkpoint_dir,
        "localSteps": None, "numBuckets": None, "prepareStorage": None,
        "prepareBlocks": None, "cacheRebalances": None,
        "partitionDependent": not plan.whole, **seconds,
    }
    if outcome.exact is not None:
        summary["trainingCost"] = cost_from_inertia(outcome.exact.inertia, p.spherical)
        summary["clusterSizes"] = [int(c) for c in outcome.exact.counts]
        summary["trainingCostExact"] = True
    else:  # the epochs pass's last epoch, as scikit-learn without compute_labels
        last = state.history[-1].batch_inertia if state.history else 0.0
        summary["trainingCost"] = cost_from_inertia(last * data.weight_total, p.spherical)
        summary["clusterSizes"] = None
        summary["trainingCostExact"] = False
    return summary
