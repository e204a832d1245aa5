"""Initialisation on the driver: the init sample (a JVM-side filter on each row's hash,
so only sampled rows leave the JVM), k-means++, random or k-means|| on it (or k-means||
over the whole table, as MLlib), and the state a fit starts from."""
from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np
from pyspark.sql import functions as F

from ..core import init as init_mod
from ..core import rng as rng_mod
from ..core.kernels import BatchStats, batch_stats, normalize_rows
from ..core.minibatch import Convergence, MiniBatchState
from ..errors import InvalidInputError
from .collect import collect_matrix
from .params import FitParams, check_initial_centers
from .prepare import N_SLOTS, Prepared, feature_names
from .udfs import (PART_VALUES, PARTIAL_SCHEMA, SAMPLE_SCHEMA, STATS_SCHEMA, feature_matrix,
                   parts_function, parts_to_stats, reduce_parts_function, sample_function,
                   sample_table_to_numpy, stats_function, table_to_stats)

logger = logging.getLogger(__name__)


def distinct_rows(rows, n_features: int, weighted: bool):
    """One row per key of ``rows`` (``key``, ``f0`` ... and ``weight``), grouped in the JVM:
    its features, ``copies`` (its rows) and, when ``weighted``, the sum of their weights.
    Rows of one key are exact duplicates (the key hashes the features), so the first
    row's features are every row's."""
    aggs = [F.first(n).alias(n) for n in feature_names(n_features)]
    aggs.append(F.count(F.lit(1)).alias("copies"))
    if weighted:
        aggs.append(F.sum("weight").alias("weight"))
    return rows.groupBy("key").agg(*aggs)


def reduced_stats(df, fn, k: int, n_features: int, n_candidates: int, tasks: int):
    """The Arrow table of a stats function's partials summed on the executors: each task
    cuts its partial into parts of ``PART_VALUES`` doubles (:func:`parts_function`), one
    shuffle gathers each part of every task in one reduce task, which sums them in the
    canonical order (:func:`reduce_parts_function`), and the driver receives one row
    per part: ``k (d + 2)`` doubles in all, plus the candidates, whatever ``tasks`` is.
    DataFrame API only (Spark Connect)."""
    n_parts = -(-k * (n_features + 2) // PART_VALUES)
    reducers = max(1, min(n_parts + 1, tasks))
    parts = df.mapInArrow(parts_function(fn), PARTIAL_SCHEMA)
    gathered = parts.repartitionById(reducers, F.pmod(F.col("part") + 1, F.lit(reducers)))
    reduce_fn = reduce_parts_function(n_features, n_candidates or None)
    return gathered.mapInArrow(reduce_fn, PARTIAL_SCHEMA).toArrow()


def thin_copies(copies: np.ndarray, hashed: np.ndarray, size: int) -> np.ndarray:
    """How many of each row's ``copies`` a sample of ``size`` copies in all keeps, as a
    uniform sample of the copies would: about ``copies * t`` each, for the rate ``t`` that
    keeps ``size``, rounded by the row's random key ``hashed`` (uint64):
    ``floor(copies * t + 1 - u)`` with ``u = hashed / 2^64``. A row of one copy is kept
    when ``u <= t``: rows without duplicates are taken by smallest key, as before."""
    c = np.asarray(copies, dtype=np.float64)
    one_minus_u = 1.0 - hashed.astype(np.float64) / 2.0 ** 64

    def kept(t):
        return np.clip(np.floor(c * t + one_minus_u), 0, c)

    if size >= c.sum():
        return c.astype(np.int64)
    lo, hi = 0.0, 1.0
    for _ in range(64):  # the smallest t keeping at least size copies
        mid = 0.5 * (lo + hi)
        if kept(mid).sum() >= size:
            hi = mid
        else:
            lo = mid
    return kept(hi).astype(np.int64)


class Initializer:
    """Spark jobs over a prepared (or projected) table and the initialisation built on
    them; :class:`~minibatch_kmeans.spark.fit.SparkMiniBatch` adds the per-step loop."""

    #: Bytes of partial results above which a job's partials are summed on the executors.
    direct_result_bytes = 4 << 20

    def __init__(self, prepared: Prepared, params: FitParams):
        self.p = params
        self.data = prepared
        self.d = prepared.spec.n_features
        self.timings = {}
        self.local_steps = 1
        self.state: Optional[MiniBatchState] = None
        self.init_rows_collected = 0
        self.last_result_bytes = 0

    # -- one Spark job each ---------------------------------------------------------
    def stats(self, df, centers, n_candidates=0, salt_value=0, tasks=None) -> BatchStats:
        fn = stats_function(centers, self.p.np_dtype, n_candidates, salt_value,
                            self.p.spherical)
        return self.run_stats(df, fn, centers.shape[0], n_candidates, tasks)

    def run_stats(self, df, fn, k, n_candidates=0, tasks=None) -> BatchStats:
        """The merged partials of a stats function (``STATS_SCHEMA``) run over ``df``.

        Each task returns one partial (k x d sums, weights and counts, and up to
        ``n_candidates`` rows). When the prepared table's tasks would bring more than
        ``direct_result_bytes`` of them to the driver, they are summed on the executors
        instead (:func:`reduced_stats`): the driver then receives one partial's worth
        whatever the number of tasks. ``tasks``: at most how many tasks ``df`` runs
        (default: the prepared table's partitions). ``last_result_bytes``: the Arrow
        bytes the driver received."""
        tasks = tasks or self.data.n_partitions
        partial = 8 * (k * (self.d + 2) + 4 + n_candidates * (self.d + 1))
        if tasks is None or tasks * partial <= self.direct_result_bytes:
            table = df.mapInArrow(fn, STATS_SCHEMA).toArrow()
            self.last_result_bytes = table.nbytes
            return table_to_stats(table, k, self.d, n_candidates or None)
        table = reduced_stats(df, fn, k, self.d, n_candidates, tasks)
        self.last_result_bytes = table.nbytes
        return parts_to_stats(table, k, self.d)

    def collect_rows(self, df):
        """(keys, rows float64, weights or None) of a small DataFrame, sorted by key."""
        return self.rows_from_table(df.toArrow())

    def collect_all(self, rows, expected_rows: int = 0):
        """Every row of ``rows`` (:func:`prepare.valid_features`, with or without
        ``_valid``) on the driver, counted there: (counts as :func:`prepare.count_columns`
        names them, keys (:func:`~minibatch_kmeans.core.rng.row_keys` of the rows in the
        compute dtype), rows in the compute dtype (unit rows under cosine distance),
        weights or None), the valid rows in the DataFrame's order. ``expected_rows``: an
        estimate of the row count (0: unknown), to size the matrix once."""
        X, w, n_bad = collect_matrix(rows, self.d, self.p.np_dtype, expected_rows)
        keys = rng_mod.row_keys(X, self.p.seed)
        if self.p.spherical:
            X = normalize_rows(X)
        n = len(X)
        counts = {"n": n, "bad": n_bad, "w": float(n if w is None else w.sum()),
                  "h": int(np.bitwise_xor.reduce(keys)) if n else 0}
        return counts, keys, X, w

    def rows_from_table(self, table):
        """:meth:`collect_rows` of an Arrow table with ``key``, ``f0`` ... and ``weight``;
        with ``copies`` (as :func:`distinct_rows` gives) also each row's copies."""
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
        if "copies" in table.column_names:
            return keys[order], X, w, table.column("copies").to_numpy()[order]
        return keys[order], X, w

    # -- initialisation ---------------------------------------------------------------
    def init_sample(self, size: int):
        """``size`` rows drawn at random (by key) from the prepared table, on the driver:
        (keys, X, weights or None, whether the sample is every valid row).

        Rows of one key (exact duplicates) reach the driver as one row with their number
        of copies (and their weights' sum), grouped in the JVM, so the driver receives
        about ``size`` distinct rows however often a value repeats; the slot range grows
        until it holds ``size`` rows (copies counted, as if every copy had come), and
        :meth:`draw` takes ``size`` copies of them. ``init_rows_collected`` counts the
        rows the init's jobs brought to the driver."""
        n = self.data.n_rows
        hi = min(N_SLOTS, int(math.ceil(N_SLOTS * 1.2 * size / max(n, 1))) + 1)
        self.init_rows_collected = 0
        while True:
            table = distinct_rows(self.data.slots(0, hi), self.d,
                                  self.data.weighted).toArrow()
            self.init_rows_collected += table.num_rows
            if table.num_rows == 0:
                keys, X, w, copies = np.empty(0, np.int64), np.empty((0, self.d)), None, np.empty(0)
            else:
                keys, X, w, copies = self.rows_from_table(table)
            if copies.sum() >= size or hi >= N_SLOTS:
                break
            hi = min(N_SLOTS, hi * 2)
        logger.info("init sample: %d distinct rows collected to the driver (%d wanted, "
                    "slots [0, %d))", self.init_rows_collected, size, hi)
        return self.draw(keys, X, w, size, hi >= N_SLOTS, copies)

    def draw_order(self, keys, w=None) -> np.ndarray:
        """The init's order of rows: by a per-row random key (then weight: rows with one
        key have the same features), whatever order they arrived in."""
        hashed = rng_mod.keyed_uint64(keys, rng_mod.salt(self.p.seed, rng_mod.INIT))
        return np.argsort(hashed, kind="stable") if w is None else np.lexsort((w, hashed))

    def draw(self, keys, X, w, size: int, whole: bool, copies=None):
        """The ``size`` rows of collected rows that the init takes (the smallest per-row
        random keys): (keys, X, w, whole) as :meth:`init_sample`. With ``copies`` (rows
        standing for several), :func:`thin_copies` takes ``size`` copies in all."""
        if copies is not None and len(copies) and (copies != 1).any():
            return self.draw_copies(keys, X, w, size, whole, copies)
        if 0 < size < len(keys):  # sort only the smallest keys, with all ties of the last
            hashed = rng_mod.keyed_uint64(keys, rng_mod.salt(self.p.seed, rng_mod.INIT))
            last = hashed[np.argpartition(hashed, size - 1)[size - 1]]
            first = np.flatnonzero(hashed <= last)
            order = first[self.draw_order(keys[first], None if w is None else w[first])]
        else:
            order = self.draw_order(keys, w)
        order = order[:size]
        return keys[order], X[order], (None if w is None else w[order]), whole

    def draw_copies(self, keys, X, w, size: int, whole: bool, copies):
        """:meth:`draw` of rows with ``copies``: each keeps its share of ``size`` copies
        (:func:`thin_copies`, by its per-row random key), weighted by the copies kept
        (times the mean weight of its copies)."""
        hashed = rng_mod.keyed_uint64(keys, rng_mod.salt(self.p.seed, rng_mod.INIT))
        kept = thin_copies(copies, hashed, size)
        rows = np.flatnonzero(kept)
        weights = kept[rows] * (1.0 if w is None else w[rows] / copies[rows])
        order = self.draw_order(keys[rows], weights)
        rows, weights = rows[order], weights[order]
        return keys[rows], X[rows], weights, whole and bool((kept == copies).all())

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
            if self.data.weighted:
                distinct_df = valid.where("weight > 0").dropDuplicates(feats)
            n_distinct = distinct_df.count()
            if n_distinct >= k:
                _, X2, w2 = self.collect_rows(distinct_df.orderBy("key").limit(max(len(X), k)))
                return X2, w2
            distinct = n_distinct
        raise InvalidInputError(
            f"k={k} but the input has only {distinct} distinct rows"
            + (" with positive weight" if self.data.weighted else "")
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
        _, sample_X, sample_w, whole = self.init_sample(init_size)
        return self.state_from_sample(sample_X, sample_w, whole, initial_centers, step_rows)

    def state_from_sample(self, sample_X, sample_w, whole: bool, initial_centers,
                          step_rows: int) -> MiniBatchState:
        """:meth:`initial_state` from a sample already on the driver (``whole``: the sample
        is every valid row)."""
        p = self.p
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
