"""The one-time prepare step: validate, hash rows into slots, cache.

Every row gets a 64-bit ``key`` (``xxhash64`` of the seed and the row's features) and a
``slot = key mod 2^20``. A batch is a contiguous range of slots, so reading one batch is
a range filter on a cached table sorted by slot within each partition: Spark's in-memory
column store keeps min/max statistics per cached batch and skips every batch outside the
range, which makes a step read O(batch) rows, not O(N).

Features are cached as one primitive column per feature (``f0``, ``f1``, ...) in the
compute dtype: on 2M x 32 rows that builds the cache in about half the time of one
``array<float>`` column, and Arrow hands each column to NumPy without a copy.

Because keys come from row content, bucket membership, the init sample and every
per-row random choice are the same however the input is partitioned. Rows that cannot
be used get ``slot = -1`` and no features; they are counted in the same pass that fills
the cache, and only when there are some does a second pass count them by reason.

Exact duplicate rows share a key and so a batch; a value repeated far more often than
the batch size makes one larger batch per epoch (logged as a warning), never a wrong
update.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .features import FeatureSpec
from .session import default_parallelism, temporary_conf

logger = logging.getLogger(__name__)

N_SLOTS = 1 << 20


@dataclass
class Prepared:
    """A prepared, cached training table.

    Attributes
    ----------
    df : DataFrame
        Cached; columns ``slot`` (int), ``key`` (long), ``f0`` ... ``f{d-1}`` (the compute
        dtype) and, with a weight column, ``weight`` (double).
    spec : FeatureSpec
    n_rows : int
        Valid rows.
    weight_total : float
        Sum of the valid rows' weights (``n_rows`` when unweighted).
    invalid : dict of int to int
        Invalid values by reason code (see :meth:`FeatureSpec.invalid_counts`).
    n_invalid : int
        Invalid rows.
    """

    df: DataFrame
    spec: FeatureSpec
    n_rows: int
    weight_total: float
    invalid: Dict[int, int] = field(default_factory=dict)
    n_invalid: int = 0
    n_buckets: int = 1

    @property
    def weighted(self) -> bool:
        return self.spec.weight_col is not None

    @property
    def feature_names(self) -> List[str]:
        return feature_names(self.spec.n_features)

    def columns(self, with_key: bool = True) -> List[str]:
        cols = (["key"] if with_key else []) + self.feature_names
        return cols + (["weight"] if self.weighted else [])

    def bucket_bounds(self, bucket: int) -> Tuple[int, int]:
        """Slot range [lo, hi) of a bucket."""
        return (bucket * N_SLOTS // self.n_buckets, (bucket + 1) * N_SLOTS // self.n_buckets)

    def slots(self, lo: int, hi: int, with_key: bool = True) -> DataFrame:
        """Valid rows whose slot is in [lo, hi)."""
        s = F.col("slot")
        return self.df.where((s >= lo) & (s < hi)).select(*self.columns(with_key))

    def bucket(self, bucket: int) -> DataFrame:
        return self.slots(*self.bucket_bounds(bucket))

    def valid(self, with_key: bool = True) -> DataFrame:
        return self.df.where(F.col("slot") >= 0).select(*self.columns(with_key))

    def unpersist(self) -> None:
        self.df.unpersist()


def prepare(df: DataFrame, spec: FeatureSpec, seed: int, dtype: str = "float32",
            cosine: bool = False,
            storage_level: StorageLevel = StorageLevel.MEMORY_AND_DISK_DESER) -> Prepared:
    """Hash, validate and cache ``df``'s features; count rows by validity in one pass.

    Parameters
    ----------
    df : DataFrame
    spec : FeatureSpec
    seed : int
        Part of every row's key: another seed gives other batches.
    dtype : {"float32", "float64"}
        Storage and compute precision of the cached features.
    cosine : bool
        Zero vectors are invalid under cosine distance.
    """
    names = feature_names(spec.n_features)
    # Two projections: validity and the key are computed once per row, not per column.
    staged = df.select(spec.valid_expr(cosine).alias("_valid"),
                       *[x.alias(n) for x, n in zip(spec.feature_exprs(), names)],
                       *([spec.weight_expr().alias("weight")] if spec.weight_col else []))
    key = F.xxhash64(F.lit(int(seed)), *[F.col(n) for n in names])  # weights never move batches
    valid = F.col("_valid")
    cols = [F.when(valid, F.pmod(key, F.lit(N_SLOTS)).cast("int")).otherwise(-1).alias("slot"),
            key.alias("key")]
    cols += [F.when(valid, F.col(n).cast(dtype_name(dtype))).alias(n) for n in names]
    if spec.weight_col is not None:
        cols.append(F.when(valid, F.col("weight")).alias("weight"))
    # One cached partition per task slot, however many the input has: a step runs one
    # task per cached partition, so the step time must not grow with the input's size.
    # coalesce merges partitions without a shuffle.
    # The storage level must be deserialized: pyspark's MEMORY_AND_DISK is serialized, and
    # then every step deserializes whole partitions (O(N) per step: 0.69 s against 0.20 s
    # for one bucket of 10M rows).
    weight = F.col("weight") if spec.weight_col is not None else F.lit(1.0)
    # Nothing here compresses: float features only pass through, and the 64-bit keys are
    # unique, yet for every cached batch Spark fills a dictionary of the keys before giving
    # up on it (11% of prepare's CPU time on 2M x 32 rows, by a JFR profile). The setting
    # is read when persist() plans the cache, so it must hold from there.
    with temporary_conf(df.sparkSession, {"spark.sql.inMemoryColumnarStorage.compressed":
                                          "false"}):
        prepared = (staged.select(*cols).coalesce(default_parallelism(df.sparkSession))
                    .sortWithinPartitions("slot").persist(storage_level))
        row = prepared.agg(F.count(F.when(F.col("slot") >= 0, 1)).alias("n"),
                           F.count(F.when(F.col("slot") < 0, 1)).alias("bad"),
                           F.sum(F.when(F.col("slot") >= 0, weight)).alias("w")).first()
    n_rows, n_invalid = int(row["n"]), int(row["bad"])
    invalid = spec.invalid_counts(df, cosine) if n_invalid else {}
    logger.info("prepared %d valid rows (%s), %d invalid", n_rows, spec.describe(), n_invalid)
    return Prepared(prepared, spec, n_rows, float(row["w"] or 0.0), invalid, n_invalid)


def feature_names(n_features: int) -> List[str]:
    """Names of the per-feature columns of prepared data: f0, f1, ..."""
    return [f"f{i}" for i in range(n_features)]


def dtype_name(dtype: str) -> str:
    """Spark SQL type of the compute dtype."""
    return "float" if dtype == "float32" else "double"
