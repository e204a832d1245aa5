"""Synthetic Gaussian blobs with known centers, generated in parallel by Spark.

The table is cut into fixed chunks of ``chunk_rows`` rows. Chunk ``i`` is generated on
an executor from its own random stream, ``np.random.default_rng([seed, 0, i])``, so the
rows (by ``id``) are the same however the chunks are spread over partitions, and nothing
is built in driver memory. The true centers and cluster weights are drawn on the driver
from ``default_rng([seed, 1])`` and saved beside the data.

Columns: ``x0 .. x{d-1}`` (double), ``label`` (int: the true cluster, -1 for an
outlier) and ``id`` (long, 0 .. rows-1).

Examples
--------
>>> spec = BlobSpec(rows=1000, n_features=2, k=3, seed=1, chunk_rows=400)
>>> centers, weights = true_centers(spec)
>>> centers.shape, spec.n_chunks
((3, 2), 3)
>>> generate_chunk(spec, centers, weights, 2).num_rows   # rows 800 .. 999
200
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..errors import InvalidParamError

logger = logging.getLogger(__name__)

_CHUNK_STREAM = 0
_CENTER_STREAM = 1


@dataclass(frozen=True)
class BlobSpec:
    """What to generate.

    Attributes
    ----------
    rows : int
    n_features : int
    k : int
        Number of true clusters.
    spread : float
        Standard deviation of every blob along each axis (centers lie in
        ``[-center_box, center_box]`` per axis).
    imbalance : float
        Ratio of the largest to the smallest cluster weight; 1 is balanced. Weights
        are geometric between the two, assigned to clusters in random order.
    outlier_fraction : float
        Expected fraction of rows drawn uniformly from the box widened by
        ``3 * spread``, labelled -1.
    seed : int
        Non-negative; the whole table (rows and centers) is a function of the spec.
    chunk_rows : int
        Rows per generated chunk (part of the table's identity, like ``seed``).
    center_box : float
    """

    rows: int
    n_features: int
    k: int
    spread: float = 1.0
    imbalance: float = 1.0
    outlier_fraction: float = 0.0
    seed: int = 0
    chunk_rows: int = 100_000
    center_box: float = 10.0

    def validate(self) -> "BlobSpec":
        def bad(name, value, expected):
            raise InvalidParamError(f"{name}={value!r} is invalid: expected {expected}")

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v):
            return is_int(v) or (isinstance(v, (float, np.floating)) and math.isfinite(v))

        for name in ("rows", "n_features", "k", "chunk_rows"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                bad(name, value, "a positive integer")
        if not is_int(self.seed) or self.seed < 0:
            bad("seed", self.seed, "an integer >= 0")
        if not is_num(self.spread) or self.spread <= 0:
            bad("spread", self.spread, "a finite number > 0")
        if not is_num(self.imbalance) or self.imbalance < 1:
            bad("imbalance", self.imbalance,
                "a finite number >= 1 (largest / smallest cluster weight; 1 = balanced)")
        if not is_num(self.outlier_fraction) or not 0 <= self.outlier_fraction < 1:
            bad("outlier_fraction", self.outlier_fraction, "a number in [0, 1)")
        if not is_num(self.center_box) or self.center_box <= 0:
            bad("center_box", self.center_box, "a finite number > 0")
        return self

    @property
    def n_chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    @property
    def feature_names(self) -> Tuple[str, ...]:
        return tuple(f"x{j}" for j in range(self.n_features))

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c, pa.float64()) for c in self.feature_names]
                         + [pa.field("label", pa.int32()), pa.field("id", pa.int64())])

    def ddl_schema(self) -> str:
        return ", ".join([f"{c} double" for c in self.feature_names] + ["label int", "id long"])


def true_centers(spec: BlobSpec) -> Tuple[np.ndarray, np.ndarray]:
    """The true centers and cluster weights of ``spec`` (drawn from its seed).

    Returns
    -------
    centers : ndarray of shape (k, n_features)
        Uniform in ``[-center_box, center_box]`` per axis.
    weights : ndarray of shape (k,)
        Sum to 1; ``max / min == spec.imbalance``.
    """
    spec.validate()
    rng = np.random.default_rng([spec.seed, _CENTER_STREAM])
    centers = rng.uniform(-spec.center_box, spec.center_box, size=(spec.k, spec.n_features))
    if spec.k == 1:
        return centers, np.ones(1)
    weights = float(spec.imbalance) ** (-np.arange(spec.k) / (spec.k - 1))
    weights = rng.permutation(weights)
    return centers, weights / weights.sum()


def generate_chunk(spec: BlobSpec, centers: np.ndarray, weights: np.ndarray,
                   chunk_id: int) -> pa.RecordBatch:
    """Rows ``[chunk_id * chunk_rows, ...)`` of the table, from the chunk's own stream.

    Each row belongs to cluster ``c`` with probability ``weights[c]`` (or is an outlier
    with probability ``outlier_fraction``) and is ``centers[c]`` plus Gaussian noise of
    standard deviation ``spread``.
    """
    start = int(chunk_id) * spec.chunk_rows
    n = max(0, min(spec.rows, start + spec.chunk_rows) - start)
    k, d = centers.shape
    rng = np.random.default_rng([spec.seed, _CHUNK_STREAM, int(chunk_id)])
    labels = rng.choice(k, size=n, p=weights).astype(np.int32)
    X = centers[labels] + rng.standard_normal((n, d)) * spec.spread
    if spec.outlier_fraction > 0:
        out = rng.random(n) < spec.outlier_fraction
        lim = spec.center_box + 3 * spec.spread
        X[out] = rng.uniform(-lim, lim, size=(int(out.sum()), d))
        labels[out] = -1
    X = np.asfortranarray(X)
    cols = [pa.array(X[:, j]) for j in range(d)]
    cols += [pa.array(labels), pa.array(np.arange(start, start + n, dtype=np.int64))]
    return pa.RecordBatch.from_arrays(cols, schema=spec.arrow_schema())


def _chunk_function(spec: BlobSpec, centers: np.ndarray, weights: np.ndarray):
    """mapInArrow function: chunk ids in, the chunks' rows out (small closure)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for chunk_id in batch.column(0).to_pylist():
                yield generate_chunk(spec, centers, weights, chunk_id)

    return run


def blobs(spark, spec: BlobSpec, partitions: Optional[int] = None):
    """The blob table as a lazy DataFrame, generated on the executors.

    Parameters
    ----------
    spark : SparkSession
    spec : BlobSpec
    partitions : int, optional
        Spark partitions (default: one per chunk). The rows do not depend on it.

    Returns
    -------
    df : DataFrame
        Columns x0 .. x{d-1} (double), label (int), id (long).
    centers : ndarray of shape (k, n_features)
    weights : ndarray of shape (k,)
    """
    spec.validate()
    if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
        raise InvalidParamError(f"partitions={partitions!r} is invalid: expected a positive "
                                "integer (or None for one per chunk)")
    centers, weights = true_centers(spec)
    parts = partitions or spec.n_chunks
    ids = spark.range(0, spec.n_chunks, 1, numPartitions=parts)
    df = ids.mapInArrow(_chunk_function(spec, centers, weights), spec.ddl_schema())
    return df, centers, weights


def centers_path(path: str) -> str:
    """Where the true centers of the table at ``path`` are saved: ``<path>_centers``."""
    return path.rstrip("/") + "_centers"


def centers_frame(spark, centers: np.ndarray, weights: np.ndarray):
    """A small DataFrame: cluster int, center array<double>, weight double."""
    rows = [(i, [float(v) for v in c], float(w))
            for i, (c, w) in enumerate(zip(np.asarray(centers), np.asarray(weights)))]
    return spark.createDataFrame(rows, "cluster int, center array<double>, weight double")


def write_blobs(spark, spec: BlobSpec, path: str, partitions: Optional[int] = None) -> dict:
    """Generate the table into Parquet at ``path`` and its true centers at
    ``<path>_centers`` (both overwritten, so re-runs are safe). Returns what was written."""
    from .io import write_table

    df, centers, weights = blobs(spark, spec, partitions)
    logger.info("generating %d rows x %d features, %d clusters (spread %g, imbalance %g, "
                "outliers %g) in %d chunks", spec.rows, spec.n_features, spec.k, spec.spread,
                spec.imbalance, spec.outlier_fraction, spec.n_chunks)
    write_table(df, path)
    write_table(centers_frame(spark, centers, weights).coalesce(1), centers_path(path))
    return {"path": path, "centersPath": centers_path(path), "rows": spec.rows,
            "numFeatures": spec.n_features, "k": spec.k, "chunks": spec.n_chunks,
            "partitions": partitions or spec.n_chunks}


def read_centers(spark, path: str) -> Tuple[np.ndarray, np.ndarray]:
    """The true centers and weights saved by :func:`write_blobs` for the table at ``path``
    (``path`` is the table's path, or the centers' own path)."""
    from .io import read_table

    where = path if path.rstrip("/").endswith("_centers") else centers_path(path)
    table = read_table(spark, where).toArrow().to_pandas().sort_values("cluster")
    centers = np.vstack([np.asarray(c, dtype=np.float64) for c in table["center"]])
    return centers, table["weight"].to_numpy(dtype=np.float64)
