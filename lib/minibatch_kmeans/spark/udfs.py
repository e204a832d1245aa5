"""Vectorized functions that run on the executors (mapInArrow), and their Arrow codecs.

Centers travel inside the function closure (pickled with the function), never through
``sparkContext.broadcast``, so every function here also runs on Spark Connect. Each
function returns at most one row per partition: the partition's partial statistics.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from ..core.kernels import (BatchStats, assignment_stats, labels_and_distances, normalize_rows,
                            row_norms_sq, smallest_keys, warm_up)
from ..core.loop import select_candidates
from ..core.minibatch import minibatch_update
from ..core.rng import keyed_uniform
from .prepare import N_SLOTS

STATS_SCHEMA = ("sums array<double>, weights array<double>, inertia double, n_rows long, "
                "counts array<long>, cand_keys array<long>, cand_rows array<double>")
SAMPLE_SCHEMA = "key long, features array<double>"


def arrow_matrix(col, n_features: int, dtype) -> np.ndarray:
    """An Arrow list column of equal-length numeric lists as an (n, d) NumPy matrix."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)  # flatten honours offsets
    return flat.astype(dtype, copy=False).reshape(len(col), n_features)  # -1: equal lists


def feature_matrix(batch, n_features: int, dtype, out: Optional[np.ndarray] = None
                   ) -> np.ndarray:
    """The per-feature columns f0 ... f{d-1} of an Arrow batch or table as an (n, d)
    matrix, no Python object per row; written into ``out`` (n rows) when given."""
    X = np.empty((batch.num_rows, n_features), dtype=dtype) if out is None else out
    names = [f"f{j}" for j in range(n_features)]
    start = 0
    # Record batch by record batch: each block is transposed while it is in cache (3x
    # faster than writing whole strided columns on 1M x 32).
    for part in ([batch] if isinstance(batch, pa.RecordBatch) else batch.to_batches()):
        stop = start + part.num_rows
        if stop > start:
            X[start:stop] = np.column_stack(
                [part.column(n).to_numpy(zero_copy_only=False) for n in names])
        start = stop
    return X


def _rows(batch: pa.RecordBatch, n_features: int, dtype, spherical: bool):
    X = feature_matrix(batch, n_features, dtype)
    if spherical:
        X = normalize_rows(X)
    w = None
    if "weight" in batch.schema.names:
        w = batch.column("weight").to_numpy(zero_copy_only=False).astype(np.float64)
    keys = None
    if "key" in batch.schema.names:
        keys = batch.column("key").to_numpy(zero_copy_only=False)
    return X, w, keys


def stats_to_batch(s: BatchStats) -> pa.RecordBatch:
    rows = s.cand_rows if s.cand_rows is not None else np.empty((0, s.sums.shape[1]))
    return pa.RecordBatch.from_pydict({
        "sums": pa.array([s.sums.ravel()], type=pa.list_(pa.float64())),
        "weights": pa.array([s.weights], type=pa.list_(pa.float64())),
        "inertia": pa.array([s.inertia], type=pa.float64()),
        "n_rows": pa.array([s.n_rows], type=pa.int64()),
        "counts": pa.array([s.counts], type=pa.list_(pa.int64())),
        "cand_keys": pa.array([s.cand_keys.view(np.int64)], type=pa.list_(pa.int64())),
        "cand_rows": pa.array([rows.ravel()], type=pa.list_(pa.float64())),
    })


def table_to_stats(table: pa.Table, k: int, n_features: int,
                   max_candidates: Optional[int] = None) -> BatchStats:
    """Merge the per-partition rows of a stats job (any order gives the same result)."""
    if table.num_rows == 0:
        return BatchStats.empty(k, n_features)

    def flat(name, dtype):
        col = table.column(name).combine_chunks()
        return col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)

    keys = flat("cand_keys", np.int64).view(np.uint64)
    rows = flat("cand_rows", np.float64).reshape(-1, n_features)
    keys, rows = smallest_keys(keys, rows, max_candidates)
    inertia = table.column("inertia").to_numpy()
    n_rows = table.column("n_rows").to_numpy()
    # Sum the partials in a canonical order, so that the same partials arriving in any
    # order give bit-for-bit the same totals.
    order = np.lexsort((n_rows, inertia))
    return BatchStats(
        flat("sums", np.float64).reshape(-1, k, n_features)[order].sum(axis=0),
        flat("weights", np.float64).reshape(-1, k)[order].sum(axis=0),
        float(np.sum(inertia[order])),
        int(n_rows.sum()),
        flat("counts", np.int64).reshape(-1, k).sum(axis=0),
        keys, rows)


PARTIAL_SCHEMA = ("part int, inertia double, n_rows long, vals array<double>, "
                  "cand_keys array<long>, cand_rows array<double>")
#: Doubles per part of a partial result reduced on the executors (128 KB).
PART_VALUES = 1 << 14


def _list_column(arrays, dtype) -> pa.Array:
    """An Arrow list column of 1-D NumPy arrays, built from one flat buffer."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate(arrays).astype(dtype, copy=False) if len(arrays) else np.empty(0, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def stats_to_parts(batch: pa.RecordBatch, part_values: int = PART_VALUES) -> pa.RecordBatch:
    """A ``STATS_SCHEMA`` row (one task's partial) as ``PARTIAL_SCHEMA`` rows: its sums,
    weights and counts laid end to end (``k (d + 2)`` doubles) cut into parts of
    ``part_values`` (part 0, 1, ...), and its candidates as part -1 when it has some.
    Every row carries the partial's inertia and rows, by which the reduce orders them."""
    def flat(name, dtype):
        return batch.column(name).flatten().to_numpy(zero_copy_only=False).astype(dtype)

    values = np.concatenate([flat("sums", np.float64), flat("weights", np.float64),
                             flat("counts", np.float64)])
    vals = [values[i:i + part_values] for i in range(0, len(values), part_values)]
    parts = list(range(len(vals)))
    empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
    cand_keys, cand_rows = [empty_i] * len(vals), [empty_f] * len(vals)
    if len(batch.column("cand_keys")[0]):
        parts.append(-1)
        vals.append(empty_f)
        cand_keys.append(flat("cand_keys", np.int64))
        cand_rows.append(flat("cand_rows", np.float64))
    m = len(parts)
    return pa.RecordBatch.from_arrays([
        pa.array(parts, pa.int32()),
        pa.array([batch.column("inertia")[0].as_py()] * m, pa.float64()),
        pa.array([batch.column("n_rows")[0].as_py()] * m, pa.int64()),
        _list_column(vals, np.float64), _list_column(cand_keys, np.int64),
        _list_column(cand_rows, np.float64)],
        names=["part", "inertia", "n_rows", "vals", "cand_keys", "cand_rows"])


def parts_function(fn, part_values: int = PART_VALUES):
    """``fn`` (a stats function) whose partial comes out as :func:`stats_to_parts` rows."""
    def parted(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in fn(batches):
            yield stats_to_parts(batch, part_values)

    return parted


def reduce_parts_function(n_features: int, max_candidates: Optional[int]):
    """mapInArrow function over ``PARTIAL_SCHEMA`` rows gathered by part: one row per part,
    the sum of every task's values of that part in the canonical order of
    :func:`table_to_stats` (by inertia, then rows: the same totals bit for bit, whatever
    order the partials arrive in), with the total inertia and rows; part -1: the
    ``max_candidates`` candidates of smallest key of all tasks."""
    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        got = [b for b in batches if b.num_rows]
        if not got:
            return
        t = pa.Table.from_batches(got)
        part, inertia = t.column("part").to_numpy(), t.column("inertia").to_numpy()
        n_rows = t.column("n_rows").to_numpy()
        for p in np.unique(part):
            rows = np.flatnonzero(part == p)
            order = rows[np.lexsort((n_rows[rows], inertia[rows]))]
            sub = t.take(pa.array(order))
            vals, cand_keys, cand_rows = np.empty(0), np.empty(0, np.int64), np.empty(0)
            if p >= 0:
                vals = arrow_matrix(sub.column("vals"), -1, np.float64).sum(axis=0)
            else:
                keys = sub.column("cand_keys").combine_chunks().flatten().to_numpy(
                    zero_copy_only=False).astype(np.int64)
                cand = sub.column("cand_rows").combine_chunks().flatten().to_numpy(
                    zero_copy_only=False).reshape(-1, n_features)
                cand_keys, cand_rows = smallest_keys(keys.view(np.uint64), cand,
                                                     max_candidates)
                cand_keys, cand_rows = cand_keys.view(np.int64), cand_rows.ravel()
            yield pa.RecordBatch.from_arrays([
                pa.array([int(p)], pa.int32()),
                pa.array([float(np.sum(inertia[order]))], pa.float64()),
                pa.array([int(n_rows[order].sum())], pa.int64()),
                _list_column([vals], np.float64), _list_column([cand_keys], np.int64),
                _list_column([cand_rows], np.float64)],
                names=["part", "inertia", "n_rows", "vals", "cand_keys", "cand_rows"])

    return fn


def parts_to_stats(table: pa.Table, k: int, n_features: int) -> BatchStats:
    """The :class:`BatchStats` of a reduced parts job (:func:`reduce_parts_function`)."""
    if table.num_rows == 0:
        return BatchStats.empty(k, n_features)
    part = table.column("part").to_numpy()
    main = np.flatnonzero(part >= 0)
    main = main[np.argsort(part[main])]
    vals = table.column("vals").combine_chunks()
    values = np.concatenate([vals[int(i)].values.to_numpy(zero_copy_only=False)
                             for i in main])
    kd = k * n_features
    keys, rows = np.empty(0, np.uint64), np.empty((0, n_features))
    cand = np.flatnonzero(part < 0)
    if len(cand):
        i = int(cand[0])
        keys = table.column("cand_keys")[i].values.to_numpy(zero_copy_only=False)
        keys = keys.astype(np.int64).view(np.uint64)
        rows = (table.column("cand_rows")[i].values.to_numpy(zero_copy_only=False)
                .reshape(-1, n_features))
    first = int(main[0])
    return BatchStats(values[:kd].reshape(k, n_features), values[kd:kd + k].copy(),
                      float(table.column("inertia")[first].as_py()),
                      int(table.column("n_rows")[first].as_py()),
                      values[kd + k:].astype(np.int64), keys, rows)


def stats_function(centers: np.ndarray, dtype, n_candidates: int = 0, salt_value=0,
                   spherical: bool = False):
    """mapInArrow function: partial statistics of a partition under ``centers``.

    Input columns: ``f0`` ... ``f{d-1}``, optional ``weight`` and ``key``.
    """
    C = np.ascontiguousarray(centers, dtype=dtype)
    d = C.shape[1]
    salt_value = np.uint64(salt_value)

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        c_sq = row_norms_sq(C)
        total = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            X, w, keys = _rows(batch, d, dtype, spherical)
            part = assignment_stats(X, C, c_sq, w)
            if n_candidates and keys is not None:
                part.cand_keys, part.cand_rows = select_candidates(keys, X, salt_value,
                                                                   n_candidates)
            total = part if total is None else total.merge(part, n_candidates)
        if total is not None:
            yield stats_to_batch(total)

    return fn


def sample_function(centers: np.ndarray, dtype, phi: float, ell: float, salt_value,
                    spherical: bool = False):
    """mapInArrow function for one k-means|| round: keep each row with probability
    ``min(1, ell * weight * d^2 / phi)``, decided by its key, so the same rows are kept
    however the table is partitioned."""
    C = np.ascontiguousarray(centers, dtype=dtype)
    d = C.shape[1]
    salt_value = np.uint64(salt_value)

    def fn(batches):
        c_sq = row_norms_sq(C)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            X, w, keys = _rows(batch, d, dtype, spherical)
            _, dist = labels_and_distances(X, C, c_sq)
            p = ell * dist / phi
            if w is not None:
                p *= w
            keep = keyed_uniform(keys, salt_value) < p
            if keep.any():
                rows = X[keep].astype(np.float64)
                yield pa.RecordBatch.from_pydict({
                    "key": pa.array(keys[keep], type=pa.int64()),
                    "features": pa.array(list(rows), type=pa.list_(pa.float64())),
                })

    return fn


def sample_table_to_numpy(table: pa.Table, n_features: int):
    """(keys int64, rows float64) of a sample table, sorted by key (deterministic)."""
    if table.num_rows == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, n_features))
    keys = table.column("key").to_numpy()
    rows = arrow_matrix(table.column("features"), n_features, np.float64)
    return smallest_keys(keys, rows, None)


def local_steps_function(centers: np.ndarray, weight_sums: np.ndarray, dtype, slot_range,
                         local_steps: int, n_candidates: int = 0, salt_value=0,
                         spherical: bool = False):
    """mapInArrow function for ``localSteps > 1``: several mini-batch steps in one job.

    The partition's rows of the slot range ``[lo, hi)`` are split into ``local_steps``
    sub-batches (equal slot sub-ranges, visited in ascending order); each is assigned
    under the centers that the sub-batches before it moved on this partition, by
    Sculley's rule from the fit's accumulated ``weight_sums``. The function returns the
    partition's statistics summed over its sub-batches. The rule is a running mean per
    center, ``(W c + S_1 + ... + S_m) / (W + w_1 + ... + w_m)``, so one driver update with
    the sums of every partition is exactly where all the local updates lead together.
    On a single partition (Euclidean distance) the job equals ``local_steps`` plain steps.
    """
    C0 = np.asarray(centers, dtype=np.float64)
    W0 = np.asarray(weight_sums, dtype=np.float64)
    d = C0.shape[1]
    lo, hi = (int(v) for v in slot_range)
    salt_value = np.uint64(salt_value)

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = [_rows(b, d, dtype, spherical) for b in batches if b.num_rows]
        if not parts:
            return
        X = np.concatenate([p[0] for p in parts])
        w = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
        keys = np.concatenate([p[2] for p in parts])
        sub = ((keys % N_SLOTS) - lo) * local_steps // (hi - lo)
        order = np.argsort(sub, kind="stable")
        bounds = np.searchsorted(sub[order], np.arange(local_steps + 1))
        C, W, total = C0, W0, BatchStats.empty(*C0.shape)
        for j in range(local_steps):
            idx = order[bounds[j]:bounds[j + 1]]
            if len(idx) == 0:
                continue
            Cj = np.ascontiguousarray(normalize_rows(C) if spherical else C, dtype=dtype)
            part = assignment_stats(X[idx], Cj, row_norms_sq(Cj), None if w is None else w[idx])
            C, W = minibatch_update(C, W, part.sums, part.weights)
            total = total.merge(part)
        if n_candidates:
            total.cand_keys, total.cand_rows = select_candidates(keys, X, salt_value,
                                                                 n_candidates)
        yield stats_to_batch(total)

    return fn


def warmup_function(dtype):
    """mapInArrow function that only loads what a pass needs in a Python worker (NumPy,
    the kernel, its compiled code for ``dtype``) and returns one row per partition."""
    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for _ in batches:
            pass
        warm_up(dtype)
        yield pa.RecordBatch.from_pydict({"ok": pa.array([1], pa.int32())})

    return fn


FARTHEST_SCHEMA = "dist double, features array<double>"


def farthest_function(centers: np.ndarray, dtype, m: int, spherical: bool = False):
    """mapInArrow function: each partition's ``m`` rows farthest from their nearest center
    (input columns ``f0`` ... ``f{d-1}``), as ``FARTHEST_SCHEMA`` rows."""
    C = np.ascontiguousarray(centers, dtype=dtype)
    d = C.shape[1]

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        c_sq = row_norms_sq(C)
        dists, rows = [], []
        for batch in batches:
            if batch.num_rows == 0:
                continue
            X, _, _ = _rows(batch, d, dtype, spherical)
            dist, far = farthest_rows(X, C, c_sq, m)
            dists.append(dist)
            rows.append(far)
        if dists:
            dist, far = np.concatenate(dists), np.concatenate(rows)
            top = np.argsort(-dist, kind="stable")[:m]
            yield pa.RecordBatch.from_pydict({
                "dist": pa.array(dist[top], pa.float64()),
                "features": pa.array(list(far[top]), pa.list_(pa.float64()))})

    return fn


def farthest_rows(X: np.ndarray, C: np.ndarray, c_sq: np.ndarray, m: int):
    """(distances, rows float64) of the ``m`` rows of X farthest from their nearest
    center, farthest first."""
    _, dist = labels_and_distances(X, C, c_sq)
    top = np.argsort(-dist, kind="stable")[:m]
    return dist[top], X[top].astype(np.float64)


def table_to_farthest(table: pa.Table, n_features: int, m: int) -> np.ndarray:
    """The ``m`` farthest rows of a farthest job's partitions, farthest first."""
    if table.num_rows == 0:
        return np.empty((0, n_features))
    dist = table.column("dist").to_numpy()
    rows = arrow_matrix(table.column("features"), n_features, np.float64)
    order = np.lexsort((np.arange(len(dist)), -dist))[:m]
    return rows[order]
