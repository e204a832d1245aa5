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

When the prepared rows would not fit in the cluster's storage memory, a cache cannot keep
steps cheap: a spilled ``MEMORY_AND_DISK_DESER`` block is a whole partition, so every
step would read O(N) rows from disk. Then (``storage="disk"``, or ``"auto"`` deciding so)
prepare writes them once to a scratch Parquet directory partitioned by *block*, a
power-of-two range of slots holding about one batch, each block one file sorted by slot.
A step's slot range then lists and reads only the files of one to three blocks (partition
pruning), however large the table.
"""
from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F

from ..errors import InvalidParamError
from .features import FeatureSpec
from .session import default_parallelism, is_connect, temporary_conf

logger = logging.getLogger(__name__)

SLOT_BITS = 20
N_SLOTS = 1 << SLOT_BITS

STORAGES = ("auto", "memory", "disk")

#: Fraction of the storage memory estimate that "auto" lets a cache take: the steps'
#: execution memory and other cached tables need the rest.
MEMORY_SHARE = 0.5
#: How much larger than Spark's size estimate (compressed file sizes) the prepared rows
#: may be before "auto" counts them rather than trusting the estimate.
COMPRESSION_MARGIN = 3


@dataclass
class Prepared:
    """A prepared, cached training table.

    Attributes
    ----------
    df : DataFrame or None
        Cached; columns ``slot`` (int), ``key`` (long), ``f0`` ... ``f{d-1}`` (the compute
        dtype) and, with a weight column, ``weight`` (double). None until ``make_df``
        builds it (the pass fit, whose jobs seldom need it).
    spec : FeatureSpec
    n_rows : int
        Valid rows.
    weight_total : float
        Sum of the valid rows' weights (``n_rows`` when unweighted).
    invalid : dict of int to int
        Invalid values by reason code (see :meth:`FeatureSpec.invalid_counts`).
    n_invalid : int
        Invalid rows.
    content_hash : int
        XOR of the valid rows' keys: another table of the same shape almost surely has
        another (a checkpoint resumes only on the same rows).
    """

    df: Optional[DataFrame]
    spec: FeatureSpec
    n_rows: int
    weight_total: float
    invalid: Dict[int, int] = field(default_factory=dict)
    n_invalid: int = 0
    n_buckets: int = 1
    content_hash: int = 0
    #: On disk only: ``block = slot >> block_shift`` is the scratch table's partition column.
    block_shift: Optional[int] = None
    scratch_path: Optional[str] = None
    #: Builds ``df`` (lazily, not cached) the first time a job needs it, when it is None.
    make_df: Optional[Callable[[], DataFrame]] = None
    #: At most how many tasks a job over ``df`` runs (None: unknown): how many partial
    #: results the driver would receive from a job that returns one per task.
    n_partitions: Optional[int] = None
    #: In memory: the cache's storage level (:meth:`recache` caches at it again).
    storage_level: Optional[StorageLevel] = None

    def frame(self) -> DataFrame:
        """``df``, built by ``make_df`` on first use."""
        if self.df is None and self.make_df is not None:
            self.df = self.make_df()
        return self.df

    @property
    def storage(self) -> str:
        return "memory" if self.scratch_path is None else "disk"

    @property
    def step_tasks(self) -> Optional[int]:
        """At most how many tasks a step's job runs: one per cached partition in memory,
        about one per block file read on disk (a step reads one to three)."""
        return 3 if self.scratch_path is not None else self.n_partitions

    @property
    def n_blocks(self) -> Optional[int]:
        """Blocks of the disk layout (None in memory)."""
        return None if self.block_shift is None else 1 << (SLOT_BITS - self.block_shift)

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
        rows = self.frame().where((s >= lo) & (s < hi))
        if self.block_shift is not None and hi > lo:  # lists only these blocks' files
            b = F.col("block")
            rows = rows.where((b >= lo >> self.block_shift)
                              & (b <= (hi - 1) >> self.block_shift))
        return rows.select(*self.columns(with_key))

    def bucket(self, bucket: int) -> DataFrame:
        return self.slots(*self.bucket_bounds(bucket))

    def valid(self, with_key: bool = True) -> DataFrame:
        rows = self.frame().where(F.col("slot") >= 0)
        if self.block_shift is not None:
            rows = rows.where(F.col("block") >= 0)
        return rows.select(*self.columns(with_key))

    def recache(self) -> None:
        """Drop the cached blocks and fill the cache again from the input, by one job (one
        pass over the input): its tasks run wherever a task slot is free, so the new
        blocks spread over the executors alive now. The same rows as before, in the same
        partitions and order (a warning tells otherwise: the input changed). In memory
        only."""
        if self.scratch_path is not None or self.df is None:
            raise ValueError("only a table cached in memory can be cached again")
        self.df.unpersist()
        _, counts = _fill_cache(self.df, self.storage_level
                                or StorageLevel.MEMORY_AND_DISK_DESER)
        if (int(counts["n"]), int(counts["h"] or 0)) != (self.n_rows, self.content_hash):
            logger.warning("the input changed since it was prepared: %d valid rows now, "
                           "%d then; the fit goes on with the rows read now",
                           int(counts["n"]), self.n_rows)

    def unpersist(self) -> None:
        """Release the cache, or delete the scratch directory."""
        if self.scratch_path is None:
            self.df.unpersist()
        else:
            remove_path(self.df.sparkSession, self.scratch_path)


def prepare(df: DataFrame, spec: FeatureSpec, seed: int, dtype: str = "float32",
            cosine: bool = False, storage: str = "memory", scratch_dir: Optional[str] = None,
            block_rows: int = 20_000,
            storage_level: StorageLevel = StorageLevel.MEMORY_AND_DISK_DESER,
            partitions: Optional[int] = None) -> Prepared:
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
    storage : {"memory", "disk", "auto"}
        Cache the prepared rows in memory, write them to a scratch Parquet directory by
        block, or choose: "auto" picks disk only when the session's settings tell its
        storage memory and the rows would take more than half of it.
    scratch_dir : str, optional
        Where the disk layout goes (a fresh subdirectory, deleted by :meth:`unpersist`).
        Default: the system's temporary directory, which only a local session can use.
    block_rows : int
        Rows per block on disk, about: the batch size, so a step reads one to three files.
    partitions : int, optional
        In memory: at most this many cached partitions (default: the session's task
        slots); a job over them returns one partial result per partition.
    """
    rows = prepared_rows(df, spec, seed, dtype, cosine)
    if storage not in STORAGES:
        raise InvalidParamError(f"prepareStorage={storage!r} is invalid: expected one of "
                                f"{list(STORAGES)}")
    n_input, bytes_per_row = None, row_bytes(spec, dtype)
    if storage == "auto":
        storage, n_input = choose_storage(df, rows, bytes_per_row)
    layout = {}
    if storage == "memory":
        partitions = partitions or default_parallelism(df.sparkSession)
        data, counts = _cache(rows, storage_level, partitions)
        layout = {"n_partitions": partitions, "storage_level": storage_level}
    else:
        if n_input is None:
            n_input = df.count()
        path = scratch_location(df.sparkSession, scratch_dir)
        try:
            data, counts, shift = _write_blocks(rows, path, n_input, bytes_per_row, block_rows)
        except BaseException:
            remove_path(df.sparkSession, path)
            raise
        layout = {"block_shift": shift, "scratch_path": path,
                  "n_partitions": _read_tasks(n_input, bytes_per_row, df.sparkSession,
                                              1 << (SLOT_BITS - shift))}
    n_rows, n_invalid = int(counts["n"]), int(counts["bad"])
    invalid = spec.invalid_counts(df, cosine) if n_invalid else {}
    logger.info("prepared %d valid rows (%s) in %s, %d invalid", n_rows, spec.describe(),
                storage, n_invalid)
    return Prepared(data, spec, n_rows, float(counts["w"] or 0.0), invalid, n_invalid,
                    content_hash=int(counts["h"] or 0),
                    **layout)


def prepared_rows(df: DataFrame, spec: FeatureSpec, seed: int, dtype: str = "float32",
                  cosine: bool = False) -> DataFrame:
    """``df`` projected to the prepared columns, lazily (nothing is cached): ``slot``
    (-1 for an invalid row), ``key``, ``f0`` ... ``f{d-1}`` in the compute dtype (null
    for an invalid row) and, with a weight column, ``weight``."""
    names = feature_names(spec.n_features)
    key = f"xxhash64({', '.join([str(int(seed))] + names)})"  # weights never move batches
    cols = [f"CASE WHEN _valid THEN CAST(pmod({key}, {N_SLOTS}) AS INT) ELSE -1 END AS slot",
            f"{key} AS key"]
    cols += [f"CASE WHEN _valid THEN CAST({n} AS {dtype_name(dtype)}) END AS {n}"
             for n in names]
    if spec.weight_col is not None:
        cols.append("CASE WHEN _valid THEN weight END AS weight")
    # SQL text: one call for the JVM to parse, not one per expression node
    return _staged(df, spec, cosine).selectExpr(*cols)

def _staged(df: DataFrame, spec: FeatureSpec, cosine: bool) -> DataFrame:
    """``_valid``, ``f0`` ... (double) and ``weight``: two projections, so that validity
    (and the key) are computed once per row, not per column."""
    sql = spec.staged_sql(cosine)
    if sql is not None:
        return df.selectExpr(*sql)
    return df.select(spec.valid_expr(cosine).alias("_valid"),
                     *[x.alias(n) for x, n in zip(spec.feature_exprs(),
                                                  feature_names(spec.n_features))],
                     *([spec.weight_expr().alias("weight")] if spec.weight_col else []))


def valid_features(df: DataFrame, spec: FeatureSpec, dtype: str = "float32",
                   cosine: bool = False, with_invalid: bool = False) -> DataFrame:
    """The valid rows' ``f0`` ... ``f{d-1}`` (compute dtype) and ``weight``, lazily: what
    :func:`prepared_rows` gives for them, without computing their keys. ``with_invalid``:
    every row, with its validity in a first column ``_valid`` (an invalid row's features
    are whatever its input held)."""
    single = spec.staged_sql(cosine, cast_to=dtype_name(dtype)) if with_invalid else None
    if single is not None:  # one projection: each row's validity is computed once anyway
        return df.selectExpr(*single)
    cols = [f"CAST({n} AS {dtype_name(dtype)}) AS {n}" for n in feature_names(spec.n_features)]
    cols += ["weight"] if spec.weight_col else []
    staged = _staged(df, spec, cosine)
    if with_invalid:
        return staged.selectExpr("_valid", *cols)
    return staged.where("_valid").selectExpr(*cols)


def count_columns(weighted: bool, content_hash: bool = True, ok: Optional[Column] = None):
    """Valid rows, invalid rows, the valid rows' weight and (``content_hash``) the XOR of
    their keys, as aggregate columns; ``ok`` tells a valid row (default ``slot >= 0``)."""
    ok = F.col("slot") >= 0 if ok is None else ok
    weight = F.col("weight") if weighted else F.lit(1.0)
    cols = [F.count(F.when(ok, 1)).alias("n"), F.count(F.when(~ok, 1)).alias("bad"),
            F.sum(F.when(ok, weight)).alias("w")]
    if content_hash:
        cols.append(F.bit_xor(F.when(ok, F.col("key"))).alias("h"))
    return cols


def count_rows(df: DataFrame, spec: FeatureSpec, seed: int, dtype: str = "float32",
               cosine: bool = False, content_hash: bool = False) -> dict:
    """One JVM job over ``df``: its counts as :func:`count_columns` names them. Without
    ``content_hash`` no row's key is computed (hashing every row is the costly part)."""
    weighted = spec.weight_col is not None
    if content_hash:
        agg = prepared_rows(df, spec, seed, dtype, cosine).agg(*count_columns(weighted))
    else:
        agg = _staged(df, spec, cosine).agg(*count_columns(weighted, False, F.col("_valid")))
    return agg.first().asDict()


def _cache(rows: DataFrame, storage_level: StorageLevel, partitions: int):
    """Cache in memory: (cached DataFrame, its counts as :func:`count_columns` names them)."""
    # One cached partition per task slot, however many the input has: a step runs one
    # task per cached partition, so the step time must not grow with the input's size.
    # coalesce merges partitions without a shuffle.
    # The storage level must be deserialized: pyspark's MEMORY_AND_DISK is serialized, and
    # then every step deserializes whole partitions (O(N) per step: 0.69 s against 0.20 s
    # for one bucket of 10M rows).
    # Nothing here compresses: float features only pass through, and the 64-bit keys are
    # unique, yet for every cached batch Spark fills a dictionary of the keys before giving
    # up on it (11% of prepare's CPU time on 2M x 32 rows, by a JFR profile). The setting
    # is read when persist() plans the cache, so it must hold from there.
    return _fill_cache(rows.coalesce(partitions).sortWithinPartitions("slot"),
                       storage_level)


def _fill_cache(df: DataFrame, storage_level: StorageLevel):
    """Persist ``df`` and fill its cache by one job that counts it: (``df``, its counts
    as :func:`count_columns` names them)."""
    with temporary_conf(df.sparkSession,
                        {"spark.sql.inMemoryColumnarStorage.compressed": "false"}):
        cached = df.persist(storage_level)
        counts = cached.agg(*count_columns("weight" in df.columns)).first()
    return cached, counts


def _write_blocks(rows: DataFrame, path: str, n_input: int, bytes_per_row: int,
                  block_rows: int):
    """Write ``rows`` to ``path`` partitioned by block (``slot >> shift``), one file per
    block sorted by slot, counting them on the way: (the table, its counts as
    :func:`count_columns` names them, the block shift). Invalid rows go to block -1."""
    spark = rows.sparkSession
    blocks_log2 = min(12, max(0, round(math.log2(max(n_input, 1) / max(block_rows, 1)))))
    shift = SLOT_BITS - blocks_log2
    # Each task writes a contiguous run of whole blocks (so one file per block): about
    # 128 MB of rows a task, and at least one task per slot of the session.
    tasks_log2 = min(blocks_log2, max(math.ceil(math.log2(max(n_input * bytes_per_row
                                                              / 2 ** 27, 1))),
                                      math.ceil(math.log2(default_parallelism(spark)))))
    slot = F.col("slot")
    blocks = rows.withColumn("block", F.when(slot >= 0, F.shiftright(slot, shift))
                             .otherwise(F.lit(-1)))
    obs = Observation("prepare")
    (blocks.observe(obs, *count_columns("weight" in rows.columns))
     .repartitionById(1 << tasks_log2, F.shiftright(F.col("block"), blocks_log2 - tasks_log2))
     .sortWithinPartitions("block", "slot")
     .write.partitionBy("block").option("compression", "none").parquet(path))
    logger.info("wrote %d blocks of about %d rows each to %s", 1 << blocks_log2,
                n_input >> blocks_log2, path)
    return spark.read.schema(blocks.schema).parquet(path), obs.get, shift


def _read_tasks(n_input: int, bytes_per_row: int, spark, n_files: int = 4096) -> int:
    """About how many tasks a scan of the disk layout runs: one per 128 MB of rows and
    4 MB per file (Spark's ``maxPartitionBytes`` and ``openCostInBytes``), and at least
    the session's task slots."""
    total = n_input * bytes_per_row + n_files * 2 ** 22
    return max(default_parallelism(spark), math.ceil(total / 2 ** 27))


def row_bytes(spec: FeatureSpec, dtype: str) -> int:
    """Bytes of one prepared row: slot, key, features and weight."""
    return 12 + spec.n_features * (4 if dtype == "float32" else 8) + 8 * bool(spec.weight_col)


def choose_storage(df: DataFrame, rows: DataFrame,
                   bytes_per_row: int) -> Tuple[str, Optional[int]]:
    """"memory" or "disk" for ``storage="auto"``, and the input's row count when it was
    counted.

    Memory when the session's settings do not tell its storage memory, or when Spark's
    own size estimate of the prepared ``rows`` (no job: file sizes scaled to the
    projection) is far below it; only otherwise is ``df`` counted (a whole job, which
    on an input that is not a plain table recomputes it)."""
    memory = storage_memory(df.sparkSession)
    if memory is None:
        return "memory", None
    estimate = plan_bytes(rows)
    if estimate is not None and estimate * COMPRESSION_MARGIN < MEMORY_SHARE * memory:
        return "memory", None
    n = df.count()
    need = n * bytes_per_row
    choice = "disk" if need > MEMORY_SHARE * memory else "memory"
    logger.info("prepareStorage=auto: %d rows need about %.0f MB against %.0f MB of "
                "storage memory: %s", n, need / 2 ** 20, memory / 2 ** 20, choice)
    return choice, n


def plan_bytes(df: DataFrame) -> Optional[int]:
    """Spark's size estimate of ``df``'s optimized plan, in bytes, without running a job;
    None on Spark Connect or when Spark has none."""
    if is_connect(df.sparkSession):
        return None
    try:
        value = df._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()
        return int(value if isinstance(value, int) else value.toString())  # a Scala BigInt
    except Exception:  # noqa: BLE001 - only an estimate: without it, count
        return None


def plan_rows(df: DataFrame) -> Optional[int]:
    """Spark's row count estimate of ``df``'s optimized plan without running a job (exact
    for a materialised cache or a table with statistics); None on Spark Connect or when
    Spark has none."""
    if is_connect(df.sparkSession):
        return None
    try:
        rows = df._jdf.queryExecution().optimizedPlan().stats().rowCount()
        if rows.isEmpty():
            return None
        value = rows.get()
        return int(value if isinstance(value, int) else value.toString())
    except Exception:  # noqa: BLE001 - only an estimate
        return None


def storage_memory(spark) -> Optional[int]:
    """Unified (storage and execution) memory of the session's executors, in bytes, from
    its settings: the driver's in local mode, executor memory times
    ``spark.executor.instances`` on a cluster; None when the settings do not tell (Spark
    Connect, dynamic allocation)."""
    if is_connect(spark):
        return None
    conf = spark.conf
    fraction = float(conf.get("spark.memory.fraction", "0.6"))
    if _is_local(spark):
        heap, count = conf.get("spark.driver.memory", "1g"), 1
    else:
        instances = conf.get("spark.executor.instances", None)
        if not instances or conf.get("spark.dynamicAllocation.enabled", "false") == "true":
            return None
        heap, count = conf.get("spark.executor.memory", "1g"), int(instances)
    reserved = 300 * 2 ** 20  # Spark's reserved system memory
    return int(max(parse_bytes(heap) - reserved, 0) * fraction * count)


def _is_local(spark) -> bool:
    """Whether the session's master is local (executors in the driver's JVM)."""
    return str(spark.conf.get("spark.master", "")).startswith("local")


_UNITS = {"": 2 ** 20, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}


def parse_bytes(value: str) -> int:
    """Bytes of a JVM memory setting such as "2g", "512m" or "1024" (MiB)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)b?\s*", str(value).lower())
    if m is None:
        raise InvalidParamError(f"memory setting {value!r} is invalid: expected a size "
                                "such as 512m or 2g")
    return int(m.group(1)) * _UNITS[m.group(2)]


def scratch_location(spark, scratch_dir: Optional[str]) -> str:
    """A fresh directory under ``scratch_dir`` for the disk layout."""
    if not scratch_dir:
        if is_connect(spark) or not _is_local(spark):
            raise InvalidParamError(
                "prepareStorage='disk' on a cluster or over Spark Connect needs scratchDir: "
                "a directory the driver and every executor can reach (for example "
                "dbfs:/tmp/mbkm, s3://bucket/tmp or hdfs:///tmp); got none")
        scratch_dir = tempfile.gettempdir()
    return f"{scratch_dir.rstrip('/')}/mbkm-prepare-{uuid.uuid4().hex}"


def remove_path(spark, path: str) -> None:
    """Delete a directory: with the Python file system when it is local, else through
    Hadoop's FileSystem (not on Spark Connect, where it is left and logged)."""
    local = re.sub(r"^file:(//)?", "", path)
    if "://" not in local and not re.match(r"^[a-z][a-z0-9+.-]*:", local):
        shutil.rmtree(local, ignore_errors=True)
    elif is_connect(spark):
        logger.warning("left the scratch directory %s (Spark Connect cannot delete it): "
                       "delete it by hand", path)
    else:
        jvm = spark.sparkContext._jvm
        jpath = jvm.org.apache.hadoop.fs.Path(path)
        jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(jpath, True)


def feature_names(n_features: int) -> List[str]:
    """Names of the per-feature columns of prepared data: f0, f1, ..."""
    return [f"f{i}" for i in range(n_features)]


def dtype_name(dtype: str) -> str:
    """Spark SQL type of the compute dtype."""
    return "float" if dtype == "float32" else "double"
