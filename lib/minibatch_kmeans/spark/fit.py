"""The per-step fit (``fitMode="step"``): prepare once, initialise on a driver-side
sample, one Spark job per step, driver-side update, and one final full pass for the exact
training cost; and :func:`fit`, which runs the mode the Params ask for.

DataFrame API only (no RDD, no ``sparkContext``, no ``_jvm``), so it runs unchanged on
Spark Connect and Databricks serverless; only on classic Spark does
:mod:`~minibatch_kmeans.spark.rebalance` look at the executors (a no-op elsewhere).
"""
from __future__ import annotations

import logging
import math
import time
import warnings

from ..core.kernels import BatchStats
from ..core.loop import candidate_salt, max_candidates, run_steps
from ..core.minibatch import StepRecord
from .checkpoint import FitCheckpoints
from .collect import matrix_memory
from .features import FeatureSpec
from .initialize import Initializer
from .params import (FitParams, FitResult, check_initial_centers, check_prepared,
                     cost_from_inertia, default_init_size)
from .passes import fit_passes
from .prepare import N_SLOTS, prepare
from .rebalance import CacheBalancer
from .session import jit_sized_codegen, job_description
from .udfs import local_steps_function

logger = logging.getLogger(__name__)


class SparkMiniBatch(Initializer):
    """One per-step fit over a prepared table. Use :func:`fit` rather than this class
    directly."""

    #: Largest Arrow result (bytes) a step's job brought to the driver.
    max_step_result_bytes = 0
    #: Steps the fit may run (the Spark UI's "step i/n")
    max_steps = 0
    #: Re-caches the prepared table when an executor loss left it crowded (None: never)
    balancer = None

    def run_batch(self, bucket, centers, n_candidates, step) -> BatchStats:
        if self.balancer is not None:
            self.balancer.check()
        salt_value = candidate_salt(self.p.seed, step)
        rows = self.data.bucket(bucket)
        with job_description(rows.sparkSession,
                             f"mbkm fit: step {step + 1}/{self.max_steps}"):
            if self.local_steps == 1:
                s = self.stats(rows, centers, n_candidates, salt_value, self.data.step_tasks)
            else:
                fn = local_steps_function(centers, self.state.weight_sums, self.p.np_dtype,
                                          self.data.bucket_bounds(bucket), self.local_steps,
                                          n_candidates, salt_value, self.p.spherical)
                s = self.run_stats(rows, fn, centers.shape[0], n_candidates,
                                   self.data.step_tasks)
        self.max_step_result_bytes = max(self.max_step_result_bytes, self.last_result_bytes)
        if s.n_rows > 4 * self.p.step_batch_size * self.local_steps:
            logger.warning("bucket %d has %d rows for batchSize %d: the input has many "
                           "exact duplicate rows", bucket, s.n_rows, self.p.step_batch_size)
        return s

    def run(self, initial_centers=None, should_stop=None, on_step=None) -> FitResult:
        """Initialise (or resume from the checkpoint in ``checkpointDir``), run the steps,
        and measure the final centers; arguments as :func:`fit`."""
        p, data = self.p, self.data
        t_start = time.perf_counter()
        n = data.n_rows
        batch_size = self._plan_steps(n)
        init_size = default_init_size(p.k, batch_size, n, p.init_size)
        max_steps = p.max_iter * data.n_buckets
        # What the fit derived before its loop: a checkpoint must have derived the same.
        derived = {"batchSizeUsed": batch_size, "localStepsUsed": self.local_steps,
                   "numBuckets": data.n_buckets, "initSizeUsed": init_size,
                   "maxSteps": max_steps}
        checkpoints = FitCheckpoints(p, data.df.sparkSession, data, initial_centers, derived)
        saved = checkpoints.saved
        if saved is not None:
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
        reason = self._run_steps(checkpoints, max_steps, n_cand, should_stop, on_step, t_start)
        loop_seconds = time.perf_counter() - t_loop
        logger.info("stopped after %d steps (%s), %.2f s", state.step, reason, loop_seconds)
        summary = self._summary(batch_size, init_size, reason, resumed_from, loop_seconds)
        t_final = time.perf_counter()
        summary.update(self._training_cost())
        # Passes over the data: the prepare copy (and its re-caches), the steps' rows, the
        # final cost pass.
        rebalances = summary["cacheRebalances"]
        summary["passesOverData"] = (1 + rebalances + state.rows_seen / max(n, 1)
                                     + bool(p.compute_training_cost))
        summary["numJobs"] = 1 + rebalances + state.step + bool(p.compute_training_cost)
        summary["numPasses"] = None  # steps, not passes: see passesOverData
        summary["finalPassSeconds"] = time.perf_counter() - t_final
        summary["fitSeconds"] = time.perf_counter() - t_start
        return FitResult(state.centers, state.weight_sums, summary, state.history)

    def _plan_steps(self, n: int) -> int:
        """The batch size (``batchSize``, at most the ``n`` valid rows), and the buckets the
        steps visit: sets ``local_steps`` and ``data.n_buckets``. With localSteps = m, one
        step (one Spark job) covers a bucket of m batches: m sub-steps."""
        batch_size = self.p.step_batch_size
        if batch_size > n:
            # 4, as run's 3 before: the frame of fit (_plan_steps < run < _fit_steps < fit)
            warnings.warn(f"batchSize={batch_size} is larger than the {n} valid rows; "
                          f"using batchSize={n}", RuntimeWarning, stacklevel=4)
            logger.warning("batchSize=%d clamped to the %d valid rows", batch_size, n)
            batch_size = n
        n_batches = max(1, min(N_SLOTS, int(round(n / batch_size))))
        self.local_steps = min(self.p.local_steps, n_batches)
        self.data.n_buckets = max(1, int(round(n_batches / self.local_steps)))
        return batch_size

    def _run_steps(self, checkpoints: FitCheckpoints, max_steps: int, n_cand: int,
                   should_stop, on_step, t_start: float) -> str:
        """Run the steps from ``self.state`` on (none when the checkpoint it resumed from is
        final), logging every ``logEvery`` steps and checkpointing every
        ``checkpointInterval`` steps and when the loop ends; returns the stop reason."""
        p, state, saved = self.p, self.state, checkpoints.saved
        if saved is not None and saved.finished:
            logger.info("the checkpoint at step %d is final (%s): no steps to run",
                        saved.step, saved.stop_reason)
            return saved.stop_reason
        checkpoints.last_saved = state.step
        self.max_steps, first, t_loop = max_steps, state.step, time.perf_counter()

        def before_step() -> bool:
            checkpoints.save_if_due(state)
            return should_stop is not None and bool(should_stop())

        def log_step(rec: StepRecord):
            if rec.step == 1 or rec.step % max(1, p.log_every) == 0:
                per_step = (time.perf_counter() - t_loop) / max(1, rec.step - first)
                logger.info("step %d/%d (epoch %d): %d rows seen, batch inertia %.4g, "
                            "ewa %s, shift %.3g, %.2f s elapsed, at most %.0f s left "
                            "(early stopping usually ends sooner)", rec.step, max_steps,
                            rec.epoch + 1, state.rows_seen, rec.batch_inertia,
                            "-" if rec.ewa is None else f"{rec.ewa:.4g}", rec.center_shift,
                            time.perf_counter() - t_start, per_step * (max_steps - rec.step))
            if on_step is not None:
                on_step(rec, state)

        reason = run_steps(state, self.data.n_buckets, max_steps, p.seed, self.run_batch,
                           n_cand, on_step=log_step, should_stop=before_step)
        checkpoints.save_at_end(state, reason)
        return reason

    def _summary(self, batch_size: int, init_size: int, reason: str, resumed_from: int,
                 loop_seconds: float) -> dict:
        """The summary's figures of the fit's plan and loop; the training cost, the jobs
        and the final seconds come after."""
        p, data, state = self.p, self.data, self.state
        return {
            "k": p.k,
            "fitMode": "step",
            "numFeatures": self.d,
            "numRows": data.n_rows,
            "numSkipped": data.n_invalid,
            "skippedByReason": {data.spec.reason_text(c): v for c, v in data.invalid.items()},
            "batchSize": batch_size,
            "localSteps": self.local_steps,
            "numBuckets": data.n_buckets,
            "prepareStorage": data.storage,
            "prepareBlocks": data.n_blocks,
            "initSize": init_size,
            "initRowsCollected": self.init_rows_collected,
            "maxStepResultBytes": self.max_step_result_bytes,
            "cacheRebalances": self.balancer.rebalances if self.balancer is not None else 0,
            "numSteps": state.step,
            "numIter": int(math.ceil(state.step / data.n_buckets)) if state.step else 0,
            "stopReason": reason,
            "rowsSeen": state.rows_seen,
            "resumedFromStep": resumed_from,
            "checkpointDir": p.checkpoint_dir,
            "initSeconds": self.timings["init_seconds"],
            "loopSeconds": loop_seconds,
        }

    def _training_cost(self) -> dict:
        """trainingCost, clusterSizes and trainingCostExact of the final centers: exact, by
        one more job over every valid row, with computeTrainingCost; else as scikit-learn
        without compute_labels, the EWA of batch inertia (no job)."""
        p, data, state = self.p, self.data, self.state
        if p.compute_training_cost:
            final = self.stats(data.valid(with_key=False), state.centers)
            return {"trainingCost": cost_from_inertia(final.inertia, p.spherical),
                    "clusterSizes": [int(c) for c in final.counts],
                    "trainingCostExact": True}
        h = state.history
        per_weight = (state.convergence.ewa if state.convergence.ewa is not None
                      else (h[-1].batch_inertia if h else 0.0))
        return {"trainingCost": cost_from_inertia(per_weight * data.weight_total, p.spherical),
                "clusterSizes": None, "trainingCostExact": False}


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
            with matrix_memory():  # no matrix it collects outlives the fit
                return fit_passes(df, spec, params, should_stop, on_step)
        return _fit_steps(df, spec, params, should_stop, on_step)


def _fit_steps(df, spec: FeatureSpec, params: FitParams, should_stop, on_step) -> FitResult:
    """:func:`fit` with ``fitMode="step"``."""
    t0 = time.perf_counter()
    with job_description(df.sparkSession, "mbkm fit: prepare (keyed rows, cached)"):
        data = prepare(df, spec, params.seed, params.dtype, params.spherical,
                       params.prepare_storage, params.scratch_dir, params.step_batch_size)
    prepare_seconds = time.perf_counter() - t0
    try:
        check_prepared(data, params)
        mb = SparkMiniBatch(data, params)
        mb.balancer = CacheBalancer(data)  # from the executors that just filled the cache
        result = mb.run(params.initial_centers, should_stop, on_step)
    finally:
        data.unpersist()
    result.summary["prepareSeconds"] = prepare_seconds
    result.summary["fitSeconds"] += prepare_seconds
    return result
