"""The per-step fit (``fitMode="step"``): prepare once, initialise on a driver-side
sample, one Spark job per step, driver-side update, and one final full pass for the exact
training cost; and :func:`fit`, which runs the mode the Params ask for.

DataFrame API only (no RDD, no ``sparkContext``, no ``_jvm``), so it runs unchanged on
Spark Connect and Databricks serverless.
"""
from __future__ import annotations

import logging
import math
import time
import warnings

from ..core.checkpoint import FINAL_REASONS, Checkpoint, check_resumable
from ..core.kernels import BatchStats
from ..core.loop import candidate_salt, max_candidates, run_steps
from ..core.minibatch import StepRecord
from .checkpoint import open_store, timed_save
from .features import FeatureSpec
from .initialize import Initializer
from .params import (FitParams, FitResult, check_initial_centers, check_prepared,
                     cost_from_inertia, default_init_size, fit_fingerprint)
from .passes import fit_passes
from .prepare import N_SLOTS, prepare
from .session import jit_sized_codegen
from .udfs import local_steps_function

logger = logging.getLogger(__name__)


class SparkMiniBatch(Initializer):
    """One per-step fit over a prepared table. Use :func:`fit` rather than this class
    directly."""

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

    def run(self, initial_centers=None, should_stop=None, on_step=None) -> FitResult:
        p, data = self.p, self.data
        t_start = time.perf_counter()
        n = data.n_rows
        batch_size = p.step_batch_size
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
            "fitMode": "step",
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
        # Passes over the data: the prepare copy, the steps' rows, the final cost pass.
        summary["passesOverData"] = (1 + state.rows_seen / max(n, 1)
                                     + bool(p.compute_training_cost))
        summary["numJobs"] = 1 + state.step + bool(p.compute_training_cost)
        summary["numPasses"] = None  # steps, not passes: see passesOverData
        summary["finalPassSeconds"] = time.perf_counter() - t_final
        summary["fitSeconds"] = time.perf_counter() - t_start
        return FitResult(state.centers, state.weight_sums, summary, state.history)


def fit(df, spec: FeatureSpec, params: FitParams, should_stop=None, on_step=None) -> FitResult:
    """Fit mini-batch k-means on ``df`` in ``params.fit_mode``: "auto" (default), "local"
    or "pass" run :func:`minibatch_kmeans.spark.passes.fit_passes`; "step" prepares a
    copy and runs one Spark job per step (its cache is released afterwards).

    ``should_stop()`` is asked before every step or pass (True interrupts the fit);
    ``on_step(record, state)`` is called after every step or pass with its
    :class:`StepRecord` and the :class:`MiniBatchState` (read-only: ``state.centers`` are
    the current centers).

    With ``params.checkpoint_dir`` the state is saved every ``checkpoint_interval`` steps
    (after every pass) and when the loop ends (:mod:`minibatch_kmeans.spark.checkpoint`);
    a fit that finds a checkpoint there resumes from it instead of initialising (and a
    finished one runs no steps), after checking that it was written by the same Params
    on the same input.
    """
    params.validate()
    if params.initial_centers is not None:  # fail before any Spark job
        check_initial_centers(params.initial_centers, params.k, spec.n_features,
                              params.spherical)
    with jit_sized_codegen(df.sparkSession):
        if params.fit_mode != "step":
            return fit_passes(df, spec, params, should_stop, on_step)
        return _fit_steps(df, spec, params, should_stop, on_step)


def _fit_steps(df, spec: FeatureSpec, params: FitParams, should_stop, on_step) -> FitResult:
    """:func:`fit` with ``fitMode="step"``."""
    t0 = time.perf_counter()
    data = prepare(df, spec, params.seed, params.dtype, params.spherical,
                   params.prepare_storage, params.scratch_dir, params.step_batch_size)
    prepare_seconds = time.perf_counter() - t0
    try:
        check_prepared(data, params)
        result = SparkMiniBatch(data, params).run(params.initial_centers, should_stop, on_step)
    finally:
        data.unpersist()
    result.summary["prepareSeconds"] = prepare_seconds
    result.summary["fitSeconds"] += prepare_seconds
    return result
