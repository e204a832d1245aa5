"""A DataFrame's rows onto the driver as one NumPy matrix, written batch by batch as Spark's
tasks deliver them.

``toArrow()`` holds every Arrow batch until the last one arrives, and the matrix built from
them is a second copy of the table. Here each batch is written into the matrix as it
arrives and then freed, so the driver holds the table once. Tasks finish in any order, so
the rows are put back into the DataFrame's own order at the end by rotating whole runs of
batches in place (no second matrix), and the result is the same whatever order the tasks
finished in.

On classic Spark the batches come from the JVM as ``toArrow()`` gets them
(``collectAsArrowToPython``); on Spark Connect, and on a pyspark without that call, from
``toArrow()`` itself.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import pyarrow as pa

from .session import is_connect
from .udfs import feature_matrix

logger = logging.getLogger(__name__)

#: rows swapped at a time when runs of batches are rotated into place
SWAP_ROWS = 4096
#: Seconds the memory of a fit's largest collected matrix is kept for the next fit (see
#: :func:`matrix_memory`).
KEEP_SECONDS = 60.0


def arrow_batches(df) -> Iterator[Union[pa.RecordBatch, List[int]]]:
    """Every Arrow record batch of ``df`` as its tasks deliver them, then (last) the order:
    a list whose i-th entry is the arrival index of ``df``'s i-th batch."""
    jdf = None if is_connect(df.sparkSession) else getattr(df, "_jdf", None)
    if jdf is None or not hasattr(jdf, "collectAsArrowToPython"):
        batches = df.toArrow().to_batches()
        yield from batches
        yield list(range(len(batches)))
        return
    from pyspark.errors.exceptions.captured import unwrap_spark_exception
    from pyspark.sql.pandas.serializers import ArrowCollectSerializer
    from pyspark.util import _load_from_socket

    port, secret, server = jdf.collectAsArrowToPython()
    try:
        stream = _load_from_socket((port, secret), ArrowCollectSerializer())
        if hasattr(stream, "__enter__"):  # pyspark 4.2: a context manager closing the socket
            with stream as batches:
                yield from batches
        else:  # pyspark 4.1: a generator (its socket closes when collected)
            yield from stream
    finally:
        with unwrap_spark_exception():
            server.getResult()  # the job's own error, if it failed


class _Spare:
    """One block of memory kept between fits, dropped after :data:`KEEP_SECONDS`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.buf: Optional[np.ndarray] = None
        self.timer: Optional[threading.Timer] = None

    def take(self, nbytes: int) -> Optional[np.ndarray]:
        with self.lock:
            buf = self.buf
            if buf is None or buf.nbytes < nbytes:
                return None
            self._set(None)
            return buf

    def give(self, buf: np.ndarray) -> None:
        with self.lock:
            if self.buf is None or buf.nbytes > self.buf.nbytes:
                self._set(buf)

    def give_up(self) -> None:
        with self.lock:
            self._set(None)

    def _set(self, buf: Optional[np.ndarray]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.buf, self.timer = buf, None
        if buf is not None:
            self.timer = threading.Timer(KEEP_SECONDS, self._drop, (buf,))
            self.timer.daemon = True
            self.timer.start()

    def _drop(self, buf: np.ndarray) -> None:
        with self.lock:
            if self.buf is buf:
                self.buf, self.timer = None, None


_SPARE = _Spare()
#: the buffers collect_matrix used inside a :func:`matrix_memory` block (None outside one)
_LENT: ContextVar[Optional[List[np.ndarray]]] = ContextVar("mbkm_lent", default=None)


@contextmanager
def matrix_memory() -> Iterator[None]:
    """Let :func:`collect_matrix` reuse memory across fits: inside the block it writes its
    matrix into the memory the previous block left (when large enough), and when the
    block ends, the largest matrix's memory is kept for :data:`KEEP_SECONDS`. The block
    must not use its matrices after it ends.

    Where the host reclaims the memory a process frees (a VM with free page reporting,
    as here: within about 3 s), writing a freshly allocated matrix costs 5-8 ms per MB
    (64 MB: 0.3-0.5 s, a third of a local fit of ``make demo``'s table) against 0.1 ms in
    pages the process still has. Back-to-back fits (CrossValidator, a search over k,
    repeated runs) then pay it once. At most one block of memory is kept (the largest
    matrix, at most what a "local" fit collects), never longer than KEEP_SECONDS
    (:func:`release_kept_memory` frees it at once).
    """
    lent: List[np.ndarray] = []
    token = _LENT.set(lent)
    try:
        yield
    finally:
        _LENT.reset(token)
        for buf in lent:
            _SPARE.give(buf)


def release_kept_memory() -> None:
    """Free the memory :func:`matrix_memory` keeps for the next fit now, not after
    :data:`KEEP_SECONDS`."""
    _SPARE.give_up()


def _matrix(rows: int, n_features: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised (rows, n_features) matrix, in kept memory inside a
    :func:`matrix_memory` block."""
    lent = _LENT.get()
    nbytes = rows * n_features * dtype.itemsize
    if lent is None or nbytes == 0:
        return np.empty((rows, n_features), dtype)
    buf = _SPARE.take(nbytes)
    if buf is None:
        buf = np.empty(nbytes, np.uint8)
    lent.append(buf)
    return buf[:nbytes].view(dtype).reshape(rows, n_features)


class Collected(NamedTuple):
    """:func:`collect_matrix`'s result: the valid rows in the DataFrame's order."""

    X: np.ndarray
    #: the ``weight`` column's values (float64), or None without one
    w: Optional[np.ndarray]
    #: rows left out because their ``_valid`` column was false
    n_invalid: int


def collect_matrix(df, n_features: int, dtype, expected_rows: int = 0) -> Collected:
    """The rows of ``df`` (columns ``f0`` ... ``f{d-1}``, optional ``weight`` and
    ``_valid``) as an (n, d) matrix of ``dtype``, leaving out rows whose ``_valid`` is false.
    ``expected_rows`` (an estimate, 0 when unknown) sizes the matrix up front; it grows when
    more rows come."""
    out = _Rows(n_features, np.dtype(dtype), max(int(expected_rows), 0))
    order = None
    t0 = time.perf_counter()
    first = None
    for item in arrow_batches(df):
        if isinstance(item, pa.RecordBatch):
            first = time.perf_counter() - t0 if first is None else first
            out.add(item)
        else:
            order = item
    t1 = time.perf_counter()
    result = out.finish(order if order is not None else list(range(len(out.lengths))))
    logger.debug("collected %d rows in %d batches: first after %.2f s, last after %.2f s, "
                 "in order after %.2f s", out.n, len(out.lengths), first or 0.0, t1 - t0,
                 time.perf_counter() - t0)
    return result


class _Rows:
    """The matrix :func:`collect_matrix` fills, batch by batch."""

    def __init__(self, n_features: int, dtype: np.dtype, capacity: int):
        self.d, self.dtype = n_features, dtype
        self.X = _matrix(capacity, n_features, dtype)  # untouched until written
        self.w: Optional[np.ndarray] = None
        self.n = self.n_invalid = 0
        self.lengths: List[int] = []

    def add(self, batch: pa.RecordBatch) -> None:
        if "_valid" in batch.schema.names:
            valid = batch.column("_valid").to_numpy(zero_copy_only=False).astype(bool)
            bad = int(len(valid) - valid.sum())
            if bad:
                self.n_invalid += bad
                batch = batch.filter(pa.array(valid))
        m = batch.num_rows
        self._reserve(self.n + m, "weight" in batch.schema.names)
        stop = self.n + m
        if m:
            feature_matrix(batch, self.d, self.dtype, out=self.X[self.n:stop])
            if self.w is not None:
                self.w[self.n:stop] = batch.column("weight").to_numpy(zero_copy_only=False)
        self.n = stop
        self.lengths.append(m)

    def _reserve(self, rows: int, weighted: bool) -> None:
        if weighted and self.w is None:
            self.w = np.empty(len(self.X), np.float64)
        if rows <= len(self.X):
            return
        capacity = max(rows, 2 * len(self.X), 1024)
        X = _matrix(capacity, self.d, self.dtype)
        X[:self.n] = self.X[:self.n]
        self.X = X
        if self.w is not None:
            w = np.empty(capacity, np.float64)
            w[:self.n] = self.w[:self.n]
            self.w = w

    def finish(self, order: Sequence[int]) -> Collected:
        X = self.X[:self.n]
        w = None if self.w is None else self.w[:self.n]
        if len(order) != len(self.lengths):
            raise RuntimeError(f"Spark sent {len(self.lengths)} Arrow batches but an order "
                               f"of {len(order)}")
        put_in_order([a for a in (X, w) if a is not None], self.lengths, order)
        return Collected(X, w, self.n_invalid)


def put_in_order(arrays: Sequence[np.ndarray], lengths: Sequence[int],
                 order: Sequence[int]) -> None:
    """Rearrange the rows of ``arrays`` in place: they hold blocks of ``lengths[a]`` rows in
    arrival order a = 0, 1, ...; afterwards they hold block ``order[0]``, then
    ``order[1]``, ... Each run of blocks already in sequence moves as one, by a rotation
    (three in-place reversals), so rows move about as far as their run is out of place."""
    layout = list(range(len(lengths)))  # the blocks' arrival indices, in current position
    pos = 0  # first row of position i
    i = 0
    while i < len(order):
        j = layout.index(order[i], i)
        run = 1
        while (i + run < len(order) and j + run < len(layout)
               and layout[j + run] == order[i + run]):
            run += 1
        if j > i:  # the run at j moves to i, the blocks at i..j-1 after it
            before = sum(lengths[a] for a in layout[i:j])
            size = sum(lengths[a] for a in layout[j:j + run])
            for arr in arrays:
                _rotate(arr, pos, pos + before, pos + before + size)
            layout[i:j + run] = layout[j:j + run] + layout[i:j]
        pos += sum(lengths[a] for a in layout[i:i + run])
        i += run


def _rotate(arr: np.ndarray, lo: int, mid: int, hi: int) -> None:
    """arr[lo:hi] = arr[mid:hi] followed by arr[lo:mid], in place."""
    _reverse(arr, lo, mid)
    _reverse(arr, mid, hi)
    _reverse(arr, lo, hi)


def _reverse(arr: np.ndarray, lo: int, hi: int) -> None:
    """Reverse the rows arr[lo:hi] in place, swapping a chunk from each end at a time."""
    while hi - lo >= 2 * SWAP_ROWS:
        c = SWAP_ROWS
        head = arr[lo:lo + c][::-1].copy()
        arr[lo:lo + c] = arr[hi - c:hi][::-1]
        arr[hi - c:hi] = head
        lo, hi = lo + c, hi - c
    if hi - lo > 1:
        arr[lo:hi] = arr[lo:hi][::-1].copy()
