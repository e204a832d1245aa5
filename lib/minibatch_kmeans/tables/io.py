"""Reading and writing tables: the only module that touches storage.

Everything between :func:`read_table` and :func:`write_table` is DataFrame in, DataFrame
(or model) out. Tables are Parquet or Delta Lake, named by path or by catalog table name
(``main.default.scores``), told apart by one rule, :func:`table_name`: a path has a ``/`` or
a scheme, a name has neither. Delta goes through Spark's own Delta source when the session has one
(Databricks, delta-spark with its jars) and otherwise through :mod:`minibatch_kmeans.tables.delta`,
where delta-rs keeps the transaction log and Spark reads and writes the data files.

Writes never change a table's schema: writing to an existing table whose columns differ
from the DataFrame's raises :class:`~minibatch_kmeans.errors.InvalidInputError` naming the
columns added, removed and retyped, whatever the mode, before anything is written.

A partition is replaced by :func:`write_table` (``replace_partitions``) and removed, when it
is left with no rows, by :func:`remove_partition`. Parquet partition columns are typed by
Spark from their directory names unless read with ``string_partitions`` (``run_id=007``
would read as 7).

Examples
--------
>>> write_table(scores, "out/scores", "delta", partition_by=["run_id"],
...             replace_partitions=True)                      # doctest: +SKIP
>>> read_table(spark, "out/scores", "delta", version=3)      # doctest: +SKIP
>>> read_table(spark, "out/scores", string_partitions=["run_id"])  # doctest: +SKIP
>>> remove_partition(spark, "out/quarantine", "delta", {"run_id": "007"})  # doctest: +SKIP
>>> write_table(scores, "main.ml.scores", "delta", partition_by=["run_id"],
...             replace_partitions={"run_id": "007"})          # doctest: +SKIP
>>> read_table(spark, fmt="delta", table="main.ml.points",
...            timestamp="2024-05-01T00:00:00Z")              # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from datetime import date, datetime
from typing import Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import delta
from ..errors import InvalidInputError, InvalidParamError
from ..paths import local_dir
from ..spark.session import is_connect, temporary_conf

logger = logging.getLogger(__name__)

FORMATS = ("parquet", "delta")
MODES = ("overwrite", "append")
_TABLE_NAME = re.compile(r"^(`[^`]+`|[A-Za-z0-9_]+)(\.(`[^`]+`|[A-Za-z0-9_]+)){0,2}$")


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidParamError(f"table format {fmt!r} is not supported: expected one of "
                                f"{list(FORMATS)}")
    return fmt


def _reason(e: BaseException) -> str:
    """A Spark error in one line: its condition and the first line of its message."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    get = getattr(e, "getCondition", None) or getattr(e, "getErrorClass", None)
    reason = get() if get is not None else None
    return f"{reason} ({first})" if reason and reason not in first else first


def _resolved(what: str, build: Callable[[], DataFrame]) -> DataFrame:
    """``build()``, analysed now (so a missing table fails here, also on Spark Connect where
    reads are lazy), with Spark's errors as InvalidInputError."""
    try:
        df = build()
        df.schema  # noqa: B018 - forces analysis under Spark Connect
    except delta.native.spark_errors() as e:
        raise InvalidInputError(f"cannot read the {what}: {_reason(e)}") from None
    return df


def is_delta_dir(path: str) -> bool:
    """True when ``path`` is a driver-local directory holding a Delta log."""
    local = local_dir(path)
    return local is not None and os.path.isdir(os.path.join(local, "_delta_log"))


def _check_table_name(table: str) -> str:
    if not isinstance(table, str) or not _TABLE_NAME.match(table.strip()):
        raise InvalidParamError(f"table name {table!r} is not valid: expected [catalog.]"
                                "[schema.]table (1 to 3 parts separated by dots, each of "
                                "letters, digits and _, or in backticks), e.g. "
                                "main.default.scores")
    return table.strip()


def table_name(target: str) -> Optional[str]:
    """The rule that tells a table's path from its catalog name, wherever a table is read
    or written: a path has a ``/`` (or ``\\``) or a scheme (``s3a://...``, ``file:/...``,
    ``dbfs:/...``); anything else names a catalog table, ``[catalog.][schema.]table``
    (``main.default.scores``, ``default.scores``, ``scores``), and is returned checked
    (a relative directory without a ``/`` is ``./scores``).

    Raises
    ------
    InvalidParamError
        Not a non-empty string, or neither a path nor a valid table name (``a.b.c.d``,
        ``main..scores``, ``my-scores``), naming what was given and what was expected.
    """
    if not isinstance(target, str) or not target.strip():
        raise InvalidParamError(f"table {target!r} is not valid: expected a path or a "
                                "catalog table name ([catalog.][schema.]table)")
    outside_quotes = re.sub(r"`[^`]*`", "", target)
    if any(c in outside_quotes for c in "/\\:"):
        return None
    if not _TABLE_NAME.match(target.strip()):
        raise InvalidParamError(
            f"{target!r} is neither a path nor a valid table name: expected a path (with a "
            "'/' or a scheme such as s3a:// or file:/; ./name for a relative folder) or a "
            "catalog table name [catalog.][schema.]table (1 to 3 parts separated by dots, "
            "each of letters, digits and _, or in backticks), e.g. main.default.scores")
    return target.strip()


def _column_names(name: str, value) -> List[str]:
    """``value`` as a list of column names; InvalidParamError naming ``name`` otherwise."""
    names = [value] if isinstance(value, str) else value
    if names is None or not isinstance(names, (list, tuple)) or not all(
            isinstance(n, str) and n for n in names):
        raise InvalidParamError(f"{name}={value!r} is not valid: expected a list of column "
                                "names (non-empty strings)")
    return list(names)


# -- reading ---------------------------------------------------------------------------------


def _check_read_args(fmt, path, table, version, timestamp, since_version) -> Optional[str]:
    """Raise InvalidParamError for :func:`read_table` arguments that do not go together;
    return the catalog table name, checked."""
    _check_format(fmt)
    if (path is None) == (table is None):
        raise InvalidParamError("read_table needs exactly one of path and table: got "
                                + ("both" if path is not None else "neither"))
    if path is not None and (not isinstance(path, str) or not path.strip()):
        raise InvalidParamError(f"path {path!r} is not valid: expected a non-empty string")
    if table is not None:
        table = _check_table_name(table)
    if version is not None and timestamp is not None:
        raise InvalidParamError(f"give at most one of version ({version!r}) and timestamp "
                                f"({timestamp!r})")
    if (version is not None or timestamp is not None) and fmt != "delta":
        raise InvalidParamError(f"version and timestamp (time travel) need fmt='delta', not "
                                f"{fmt!r}")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 0):
        raise InvalidParamError(f"version {version!r} is not valid: expected an integer >= 0")
    if since_version is not None and (fmt != "delta" or isinstance(since_version, bool)
                                      or not isinstance(since_version, int)
                                      or since_version < 0):
        raise InvalidParamError(f"since_version {since_version!r} is not valid: expected an "
                                "integer >= 0, with fmt='delta'")
    return table


def read_table(spark: SparkSession, path: Optional[str] = None, fmt: str = "parquet", *,
               table: Optional[str] = None, version: Optional[int] = None,
               timestamp: Union[str, datetime, date, None] = None,
               since_version: Optional[int] = None,
               string_partitions: Sequence[str] = ()) -> DataFrame:
    """The table at ``path`` (or the catalog table ``table``), resolved now: a missing
    table fails here, also on Spark Connect where reads are lazy.

    Parameters
    ----------
    spark : SparkSession
    path : str, optional
        Any Spark path, or a catalog table name (told apart by :func:`table_name`). Exactly
        one of ``path`` and ``table``.
    fmt : {"parquet", "delta"}
    table : str, optional
        A catalog table name (``[catalog.][schema.]table``).
    version : int, optional
        Delta only: read this version of the table (time travel).
    timestamp : str or datetime, optional
        Delta only: read the last version committed at or before this time (ISO 8601; a
        time without zone is in the session time zone). At most one of version and
        timestamp.
    since_version : int, optional
        Delta only: only the rows appended after this version (up to ``version``,
        ``timestamp`` or the latest), a monitoring job's new slice. The table must only
        have been appended to in between (a removed file is an error). Spark's Delta
        source reads the table's change data feed when it is on (inserts only), else
        the rows of the data files added since (see :mod:`.delta.native`).
    string_partitions : sequence of str
        Parquet by path: these partition columns are read as the text of their directory
        names (``run_id=007`` is ``"007"``), not as the type Spark infers from them (the
        integer 7, the same as ``run_id=7``; ``run_id=2026-11-24`` a date). Through an
        explicit schema, so also on Spark Connect. Delta (the log types its partition
        columns) and catalog tables are read as they are typed.

    Returns
    -------
    DataFrame
        The table's columns, in its order (for Delta, the schema of the log; partition
        columns typed as it says).

    Raises
    ------
    InvalidParamError
        Bad arguments (both or neither of path and table, time travel on Parquet...).
    InvalidInputError
        Nothing readable there (missing, empty, not a table of that format), a Delta
        version or timestamp the table does not have, or a Delta table needing a reader
        feature the engine cannot honour (the error names the table and the feature).
    ImportError
        A Delta table without Spark's Delta source and without the deltalake package.
    """
    if table is None and isinstance(path, str) and path.strip():
        name = table_name(path)  # a catalog table name given as the path
        if name is not None:
            path, table = None, name
    table = _check_read_args(fmt, path, table, version, timestamp, since_version)
    string_partitions = _column_names("string_partitions", string_partitions)
    what = f"{fmt} table {table!r}" if table is not None else f"{fmt} table at {path!r}"
    if fmt == "delta":
        if delta.native_delta_available(spark):
            df = _read_delta_native(spark, path, table, version, timestamp, since_version)
            engine = "Spark's Delta source"
        else:
            location = path if path is not None else _table_location(spark, table)
            df = delta.read_snapshot(spark, location, version, timestamp, since_version)
            engine = "delta-rs snapshot"
    else:
        if path is not None and is_delta_dir(path):
            raise InvalidInputError(
                f"the path {path!r} is a Delta table (it has a _delta_log): read it with "
                "fmt='delta' (as Parquet it would include the files of removed versions)")
        df = _resolved(what, lambda: spark.read.table(table) if table is not None
                       else spark.read.format(fmt).load(path))
        if string_partitions and table is None:
            df = _with_string_partitions(spark, path, df, string_partitions, what)
        engine = "Spark"
    when = (f" version {version}" if version is not None else
            f" as of {timestamp}" if timestamp is not None else "")
    if since_version is not None:
        when += f", rows appended after version {since_version}"
    logger.info("reading %s%s (%d columns, %s)", what, when, len(df.columns), engine)
    return df


def _parquet_partitions(df: DataFrame) -> List[str]:
    """The partition columns of a Parquet table read by path: the ``col=value`` directories
    of its first data file that name its last columns (Spark puts them last)."""
    names = df.columns
    first = df.inputFiles()[:1]
    dirs = first[0].split("/")[:-1] if first else []
    found: List[str] = []
    for d in reversed(dirs):
        name = d.split("=", 1)[0]
        if "=" not in d or name not in names:
            break
        found.insert(0, name)
    return [p for p in found if p in names[len(names) - len(found):]]


def _with_string_partitions(spark: SparkSession, path: str, df: DataFrame,
                            names: Sequence[str], what: str) -> DataFrame:
    """The Parquet table ``df`` read again with the partition columns ``names`` typed as
    strings: given in the schema, Spark takes their directory text as it is."""
    parts = set(_parquet_partitions(df))
    retype = {f.name for f in df.schema.fields if f.name in names and f.name in parts
              and not isinstance(f.dataType, T.StringType)}
    if not retype:
        return df
    schema = T.StructType([T.StructField(f.name, T.StringType(), f.nullable)
                           if f.name in retype else f for f in df.schema.fields])
    logger.info("reading the partition column(s) %s of the %s as strings", sorted(retype),
                what)
    return _resolved(what, lambda: spark.read.schema(schema).parquet(path))


def stream_delta(spark: SparkSession, path: Optional[str] = None, *,
                 table: Optional[str] = None, starting_version: Optional[int] = None,
                 max_files_per_trigger: Optional[int] = 1000,
                 skip_change_commits: bool = False) -> DataFrame:
    """A streaming DataFrame of the rows of a Delta table: through Spark's Delta source
    when the session has it (by path or catalog ``table``), else through the delta-rs
    source (:func:`minibatch_kmeans.tables.delta.stream.read_delta_stream`, by path only).

    ``starting_version``: only the commits from that version on, not the snapshot;
    ``max_files_per_trigger``: at most that many data files per micro-batch;
    ``skip_change_commits``: skip commits that remove data (overwrite, delete, update)
    instead of failing. Both engines check the arguments, the table and the starting
    version when the stream is defined, with the same errors.
    """
    if (path is None) == (table is None):
        raise InvalidParamError("stream_delta needs exactly one of path and table: got "
                                + ("both" if path is not None else "neither"))
    options = dict(starting_version=starting_version,
                   max_files_per_trigger=max_files_per_trigger,
                   skip_change_commits=skip_change_commits)
    if delta.native_delta_available(spark):
        if table is not None:
            table = _check_table_name(table)
        return delta.native.read_stream(spark, path, table, **options)
    if table is not None:
        raise InvalidParamError(f"table={table!r}: streaming a catalog Delta table needs "
                                "Spark's Delta source (delta-spark or Databricks); without "
                                "it give the table's path")
    from .delta.stream import read_delta_stream

    return read_delta_stream(spark, path, **options)


def _read_delta_native(spark, path, table, version, timestamp, since_version) -> DataFrame:
    """Spark's Delta source; a catalog table that is not registered as Delta (``USING
    parquet`` over a Delta directory) is read by its location, as delta-rs reads it."""
    if table is not None:
        provider, location = _table_info(spark, table)
        if provider != "delta" and location:
            path, table = location, None
    return delta.native.read(spark, path, table, version, timestamp, since_version)


def _table_info(spark: SparkSession, table: str) -> Tuple[str, Optional[str]]:
    """(provider, location) of a catalog table (``DESCRIBE TABLE EXTENDED``)."""
    try:
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table}").collect()
    except delta.native.spark_errors() as e:
        raise InvalidInputError(f"cannot read the delta table {table!r}: {_reason(e)}") from None
    info = {(r[0] or "").strip(): r[1] for r in rows}
    return (info.get("Provider") or "").strip().lower(), info.get("Location") or None


def _table_location(spark: SparkSession, table: str) -> str:
    """Where a catalog table's files are (``DESCRIBE TABLE EXTENDED``), for delta-rs."""
    try:
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table}").collect()
    except delta.native.spark_errors() as e:
        raise InvalidInputError(f"cannot read the delta table {table!r}: {_reason(e)}") from None
    info = {(r[0] or "").strip(): r[1] for r in rows}
    if not info.get("Location"):
        raise InvalidInputError(f"cannot read the delta table {table!r}: the catalog gives no "
                                f"location (type {info.get('Type')!r})")
    return info["Location"]


# -- schemas ----------------------------------------------------------------------------------


def _shape(t) -> object:
    """A data type's JSON without nullability and metadata, user-defined types as their
    storage type, char/varchar as string: what must match for data to fit a table."""
    if isinstance(t, str):
        return "string" if re.fullmatch(r"(var)?char\(\d+\)", t) else t
    kind = t.get("type")
    if kind == "udt":
        return _shape(t["sqlType"])
    if kind == "struct":
        return ["struct", [(f["name"], _shape(f["type"])) for f in t["fields"]]]
    if kind == "array":
        return ["array", _shape(t["elementType"])]
    if kind == "map":
        return ["map", _shape(t["keyType"]), _shape(t["valueType"])]
    return json.dumps(t, sort_keys=True)


def schema_changes(existing: T.StructType, new: T.StructType,
                   untyped: Sequence[str] = ()) -> List[str]:
    """How ``new`` differs from ``existing`` (column names and types; nullability and
    metadata ignored; the types of ``untyped`` columns not compared). Empty: the same."""
    old = {f.name: f.dataType for f in existing.fields}
    cur = {f.name: f.dataType for f in new.fields}
    added = [n for n in cur if n not in old]
    removed = [n for n in old if n not in cur]
    retyped = [f"{n} ({old[n].simpleString()} in the table, {cur[n].simpleString()} in the "
               f"DataFrame)" for n in cur if n in old and n not in untyped
               and _shape(old[n].jsonValue()) != _shape(cur[n].jsonValue())]
    return ([f"columns added {added}"] if added else []) \
        + ([f"columns removed {removed}"] if removed else []) \
        + ([f"columns retyped [{', '.join(retyped)}]"] if retyped else [])


def _check_fits(what: str, existing: T.StructType, existing_parts: Sequence[str],
                df: DataFrame, parts: Optional[List[str]], untyped: Sequence[str] = ()
                ) -> List[str]:
    """Raise unless ``df`` fits the existing table; return the partition columns to use
    (the table's when ``parts`` is None)."""
    changes = schema_changes(existing, df.schema, untyped)
    if changes:
        raise InvalidInputError(
            f"cannot write to the {what}: the DataFrame's schema differs from the table's: "
            + "; ".join(changes) + ". Nothing was written: write to a new path, or select and "
            "cast the columns to match")
    if parts is not None and list(parts) != list(existing_parts):
        raise InvalidInputError(f"cannot write to the {what}: it is partitioned by "
                                f"{list(existing_parts)}, not {list(parts)}")
    return list(existing_parts)


# -- writing ----------------------------------------------------------------------------------


def write_table(df: DataFrame, path: str, fmt: str = "parquet", mode: str = "overwrite",
                partition_by: Optional[Sequence[str]] = None,
                replace_partitions: Union[bool, Mapping[str, str]] = False) -> None:
    """Write ``df`` to the table at ``path``.

    Parameters
    ----------
    df : DataFrame
    path : str
        Any Spark path (delta-rs must reach it too for Delta without Spark's Delta source),
        or a catalog table name (``main.default.scores``; told apart by
        :func:`table_name`). A catalog table is created on its first write, as a managed
        table of ``fmt`` partitioned by ``partition_by``; an existing one keeps its own
        format, which must be ``fmt``.
    fmt : {"parquet", "delta"}
    mode : {"overwrite", "append"}
        ``"overwrite"`` (default) makes re-runs safe: the table holds ``df`` afterwards.
    partition_by : sequence of str, optional
        Partition columns of a new table; for an existing table they must be its own
        (default: the table's).
    replace_partitions : bool or mapping of str to str
        Replace only the partitions ``df`` has rows for and leave the others (a scoring
        job's ``run_id`` partition: a re-run never duplicates rows). Needs mode
        ``"overwrite"`` and a partitioned table. Parquet and Spark's Delta source use
        dynamic partition overwrite (``insertInto`` for a catalog table); the delta-rs
        fallback removes those partitions' files and adds the new ones in one commit. A
        mapping ``{"run_id": "007"}`` says which partition ``df`` replaces: a catalog
        Delta table then replaces exactly it (Delta's ``replaceWhere``, which refuses rows
        of other partitions); elsewhere it is the same as True.

    Raises
    ------
    InvalidParamError
        Unknown format or mode, partition columns not in ``df``, replace_partitions
        without partitions or with mode ``"append"``.
    InvalidInputError
        The table exists with another schema or partitioning (nothing is written), the
        path holds something else, or (delta-rs fallback) a protocol feature it cannot
        honour or a type Delta cannot store.
    """
    _check_format(fmt)
    if mode not in MODES:
        raise InvalidParamError(f"write mode {mode!r} is not supported: expected one of "
                                f"{list(MODES)}")
    parts = None
    if partition_by is not None:
        parts = [partition_by] if isinstance(partition_by, str) else list(partition_by)
        unknown = [p for p in parts if p not in df.columns]
        if unknown or len(set(parts)) != len(parts) or not parts:
            raise InvalidParamError(f"partition_by {parts} is not valid: expected distinct "
                                    f"columns of the DataFrame {df.columns}")
    if replace_partitions and mode != "overwrite":
        raise InvalidParamError("replace_partitions=True replaces the partitions written: it "
                                f"needs mode='overwrite', not {mode!r}")
    if isinstance(replace_partitions, Mapping):
        _check_partition_values(replace_partitions)
    spark = df.sparkSession
    name = table_name(path)
    if name is not None:
        _write_catalog(spark, df, name, fmt, mode, parts, replace_partitions)
        return
    replace = bool(replace_partitions)  # by path: the partitions written, whichever
    if fmt == "parquet":
        _write_parquet(spark, df, path, mode, parts, replace)
    elif delta.native_delta_available(spark):
        _write_delta_native(spark, df, path, mode, parts, replace)
    else:
        _write_delta_fallback(df, path, mode, parts, replace)


def _needs_parts(what: str, parts: List[str], replace_partitions: bool) -> None:
    if replace_partitions and not parts:
        raise InvalidParamError(f"replace_partitions=True needs partition columns: the {what} "
                                "is new or not partitioned, so give partition_by")


def _parquet_existing(spark: SparkSession, path: str
                      ) -> Optional[Tuple[T.StructType, List[str]]]:
    """Schema and partition columns (the ``col=value`` directories of its first file) of
    the Parquet table at ``path``; None when there is none."""
    local = local_dir(path)
    if local is not None and not os.path.exists(local):
        return None
    try:
        existing = spark.read.parquet(path)
        return existing.schema, _parquet_partitions(existing)
    except delta.native.spark_errors():
        return None  # missing, or no Parquet files (empty directory)


def _write_parquet(spark, df, path, mode, parts, replace_partitions) -> None:
    what = f"parquet table at {path!r}"
    if is_delta_dir(path):
        raise InvalidInputError(f"cannot write to the {what}: it is a Delta table (it has a "
                                "_delta_log); write it with fmt='delta'")
    existing = _parquet_existing(spark, path)
    if existing is not None:
        # partition column types are inferred from directory names: compare names only
        parts = _check_fits(what, existing[0], existing[1], df, parts, untyped=existing[1])
    parts = parts or []
    _needs_parts(what, parts, replace_partitions)
    _spark_writer(df, "parquet", mode, parts, replace_partitions).save(path)
    logger.info("wrote %s (mode %s%s%s)", what, mode,
                f", partitioned by {parts}" if parts else "",
                ", replacing the partitions written" if replace_partitions else "")


def _spark_writer(df: DataFrame, fmt: str, mode: str, parts: List[str],
                  replace_partitions: bool):
    """Spark's writer of ``df``: partitioned by ``parts``, and with dynamic partition
    overwrite (only the partitions written are replaced) under ``replace_partitions``."""
    writer = df.write.format(fmt).mode(mode)
    if parts:
        writer = writer.partitionBy(*parts)
    if replace_partitions:
        writer = writer.option("partitionOverwriteMode", "dynamic")
    return writer


def _write_delta_native(spark, df, path, mode, parts, replace_partitions) -> None:
    what = f"delta table at {path!r}"
    existing = delta.native.existing(spark, path)
    if existing is not None:
        parts = _check_fits(what, existing[0], existing[1], df, parts)
    parts = parts or []
    _needs_parts(what, parts, replace_partitions)
    writer = _spark_writer(delta.native.without_udts(df), "delta", mode, parts,
                           replace_partitions)
    # timestamps as TIMESTAMP_MICROS (not Spark's INT96), as delta-rs writes them
    with _native_write_errors(path), temporary_conf(
            spark, {"spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS"}):
        writer.save(path)
    logger.info("wrote %s (mode %s%s, Spark's Delta source)", what, mode,
                ", replacing the partitions written" if replace_partitions else "")


@contextmanager
def _native_write_errors(path: str) -> Iterator[None]:
    """A change to the Delta table at ``path`` through Spark's Delta source, its refusals
    (a feature it cannot write, a concurrent commit) as this package's errors."""
    try:
        yield
    except delta.native.spark_errors() as e:
        refused = (delta.native.write_refusal(e, path)
                   or delta.write.concurrent_write_error(e, path))
        if refused is None:
            raise
        raise refused from None


def _write_delta_fallback(df, path, mode, parts, replace_partitions) -> None:
    what = f"delta table at {path!r}"
    existing = delta.existing_table(path)
    if existing is not None:
        parts = _check_fits(what, existing.schema, existing.partition_columns, df, parts)
        current = {f.name: f for f in df.schema.fields}
        strict = [f.name for f in existing.schema.fields
                  if not f.nullable and current[f.name].nullable]
        if strict:
            raise InvalidInputError(f"cannot write to the {what}: columns {strict} are NOT NULL "
                                    "in the table but nullable in the DataFrame")
    parts = parts or []
    _needs_parts(what, parts, replace_partitions)
    delta.commit_write(df, path, existing, mode, parts, replace_partitions)


# -- removing a partition ---------------------------------------------------------------------


def remove_partition(spark: SparkSession, path: str, fmt: str,
                     values: Mapping[str, str]) -> bool:
    """Remove one partition's rows from the table at ``path``: what replacing the partition
    with no rows leaves (a scoring job's re-run whose run has no invalid rows left). The
    other partitions stay; a missing table, or one without that partition, is left alone.

    Parameters
    ----------
    spark : SparkSession
    path : str
        Any Spark path, or a catalog table name (:func:`table_name`).
    fmt : {"parquet", "delta"}
    values : mapping of str to str
        The partition: a value for each of the table's partition columns, as written
        (``{"run_id": "007"}``).

    Parquet: the partition's directory is deleted (the driver's file system for a local,
    ``file:`` or ``dbfs:`` path, else Hadoop's FileSystem; over Spark Connect, which has
    neither, Spark overwrites the directory with no rows). Spark's Delta source: a
    ``DELETE`` of the partition's rows (its files, from the log). delta-rs: the partition's
    files removed in one commit, as a partition replacement removes them
    (:func:`.delta.write.remove_partition`). A catalog table: ``ALTER TABLE ... DROP
    PARTITION`` (Parquet and other file formats), or the partition replaced by no rows
    (Delta, ``replaceWhere``).

    Returns
    -------
    bool
        Whether the table had that partition.

    Raises
    ------
    InvalidParamError
        Unknown format, or ``values`` not a mapping of column names to strings.
    InvalidInputError
        The table is not partitioned by exactly the columns of ``values``, or (Delta)
        needs a feature the engine cannot write; ``ConcurrentWriteError`` when another
        writer changed that partition meanwhile.
    """
    _check_format(fmt)
    _check_partition_values(values)
    name = table_name(path)
    if name is not None:
        return _remove_catalog_partition(spark, name, fmt, values)
    what = f"{fmt} table at {path!r}"
    if fmt == "parquet":
        existing = _parquet_existing(spark, path)
        parts = None if existing is None else existing[1]
    elif delta.native_delta_available(spark):
        existing = delta.native.existing(spark, path)
        parts = None if existing is None else existing[1]
    else:
        existing = delta.existing_table(path)
        parts = None if existing is None else list(existing.partition_columns)
    if parts is None:
        logger.info("no %s: no partition %s to remove", what, dict(values))
        return False
    if sorted(parts) != sorted(values):
        raise InvalidInputError(f"cannot remove the partition {dict(values)} of the {what}: "
                                f"it is partitioned by {parts}, not {sorted(values)}")
    if fmt == "parquet":
        found = _remove_parquet_partition(spark, path, existing[0], parts, values)
    elif delta.native_delta_available(spark):
        with _native_write_errors(path):
            found = delta.native.delete_partition(spark, path, values)
    else:
        found = delta.remove_partition(path, existing, values)
    logger.info("%s partition %s of the %s", "removed" if found else "there is no",
                dict(values), what)
    return found


def _check_partition_values(values) -> None:
    if (not isinstance(values, Mapping) or not values
            or not all(isinstance(k, str) and k and isinstance(v, str)
                       for k, v in values.items())):
        raise InvalidParamError(f"partition values {values!r} are not valid: expected a "
                                "mapping of each partition column to its value as a string, "
                                "e.g. {'run_id': '007'}")


# -- catalog tables ---------------------------------------------------------------------------


def _catalog_table(spark: SparkSession, name: str
                   ) -> Optional[Tuple[str, T.StructType, List[str]]]:
    """(provider, schema, partition columns) of the catalog table ``name``; None when there
    is none."""
    what = f"table {name!r}"
    try:
        if not spark.catalog.tableExists(name):
            return None
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
        schema = spark.read.table(name).schema
    except delta.native.spark_errors() as e:
        raise InvalidInputError(f"cannot use the {what}: {_reason(e)}") from None
    provider, parts, section = "", [], None
    for r in rows:
        key = (r[0] or "").strip()
        if key.startswith("#"):
            section = section if key == "# col_name" else key
        elif not key:
            section = None
        elif section == "# Partition Information" and key in schema.names:
            parts.append(key)
        elif key == "Provider":
            provider = (r[1] or "").strip().lower()
    return provider, schema, parts


def _col(name: str):
    return F.col("`" + name.replace("`", "``") + "`")


def _partition_condition(values: Mapping[str, str]):
    """The Column that holds for the rows of one partition (``values``)."""
    cond = None
    for c, v in values.items():
        term = _col(c) == F.lit(v)
        cond = term if cond is None else cond & term
    return cond


def _write_catalog(spark: SparkSession, df: DataFrame, name: str, fmt: str, mode: str,
                   parts: Optional[List[str]],
                   replace_partitions: Union[bool, Mapping[str, str]]) -> None:
    """:func:`write_table` to the catalog table ``name``: created by ``saveAsTable`` on
    the first write; then a partition replaced by Delta's ``replaceWhere`` (a mapping), or
    rows inserted (``insertInto``, with dynamic partition overwrite to replace the
    partitions written)."""
    what = f"{fmt} table {name!r}"
    existing = _catalog_table(spark, name)
    if fmt == "delta":
        if not delta.native_delta_available(spark):
            raise InvalidParamError(
                f"cannot write the {what}: a catalog Delta table needs Spark's Delta source "
                "(Databricks, or delta-spark with its jars); without it give a path")
        df = delta.native.without_udts(df)
    if existing is not None:
        provider, schema, table_parts = existing
        if provider and provider != fmt:
            raise InvalidInputError(f"cannot write to the table {name!r}: it is a {provider} "
                                    f"table, not {fmt}: set the output format to {provider}, "
                                    "or name another table")
        parts = _check_fits(what, schema, table_parts, df, parts)
    parts = parts or []
    _needs_parts(what, parts, replace_partitions)
    settings = {"spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS"} \
        if fmt == "delta" else {}
    if existing is None:
        how = "created"
    elif fmt == "delta" and isinstance(replace_partitions, Mapping):
        how = f"replacing the partition {dict(replace_partitions)} (replaceWhere)"
    else:
        how = "replacing the partitions written" if replace_partitions else f"mode {mode}"
        settings["spark.sql.sources.partitionOverwriteMode"] = \
            "dynamic" if replace_partitions else "static"
    with _native_write_errors(name), temporary_conf(spark, settings):
        if existing is None:  # append: never replaces a table created meanwhile
            writer = df.write.format(fmt).mode("append")
            (writer.partitionBy(*parts) if parts else writer).saveAsTable(name)
        elif fmt == "delta" and isinstance(replace_partitions, Mapping):
            df.writeTo(name).overwrite(_partition_condition(replace_partitions))
        else:  # insertInto goes by position: the table's column order
            df.select(*[_col(c) for c in existing[1].names]).write.insertInto(
                name, overwrite=mode == "overwrite")
    logger.info("wrote %s (%s%s)", what, how, f", partitioned by {parts}" if parts else "")


def _remove_catalog_partition(spark: SparkSession, name: str, fmt: str,
                              values: Mapping[str, str]) -> bool:
    """:func:`remove_partition` of the catalog table ``name``."""
    what = f"{fmt} table {name!r}"
    existing = _catalog_table(spark, name)
    if existing is None:
        logger.info("no %s: no partition %s to remove", what, dict(values))
        return False
    provider, schema, parts = existing
    if sorted(parts) != sorted(values):
        raise InvalidInputError(f"cannot remove the partition {dict(values)} of the {what}: "
                                f"it is partitioned by {parts}, not {sorted(values)}")
    cond = _partition_condition(values)
    found = spark.read.table(name).where(cond).limit(1).count() > 0
    if found:
        with _native_write_errors(name):
            if provider == "delta":  # the partition replaced by no rows
                spark.createDataFrame([], schema).writeTo(name).overwrite(cond)
            else:
                spec = ", ".join(f"`{c.replace('`', '``')}` = {_sql_text(v)}"
                                 for c, v in values.items())
                spark.sql(f"ALTER TABLE {name} DROP IF EXISTS PARTITION ({spec})")
    logger.info("%s partition %s of the %s", "removed" if found else "there is no",
                dict(values), what)
    return found


def _sql_text(value: str) -> str:
    """A SQL string literal of ``value`` (a partition spec takes literals only)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


#: The characters Spark (Hive) escapes as %XX in a partition directory's name.
_ESCAPED = set(chr(c) for c in range(1, 32)) | set('"#%\'*/:=?\\\x7f{[]^')
if os.name == "nt":  # pragma: no cover - as Spark escapes them on Windows
    _ESCAPED |= set(" <>|")


def partition_directory(parts: Sequence[str], values: Mapping[str, str]) -> str:
    """The relative directory Spark writes a partition's files to: ``col=value`` per
    partition column, names and values escaped as Spark escapes them (``a:b`` is
    ``a%3Ab``; an empty value is Hive's default partition)."""
    def escape(text: str) -> str:
        return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in text)

    return "/".join(f"{escape(p)}={escape(values[p]) or '__HIVE_DEFAULT_PARTITION__'}"
                    for p in parts)


def _remove_parquet_partition(spark: SparkSession, path: str, schema: T.StructType,
                              parts: Sequence[str], values: Mapping[str, str]) -> bool:
    """Delete a Parquet table's partition directory; whether it was there."""
    directory = path.rstrip("/") + "/" + partition_directory(parts, values)
    local = local_dir(directory)
    if local is not None:
        if not os.path.isdir(local):
            return False
        shutil.rmtree(local)
        return True
    if not is_connect(spark):
        jvm = spark.sparkContext._jvm
        jpath = jvm.org.apache.hadoop.fs.Path(directory)
        fs = jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        return bool(fs.exists(jpath) and fs.delete(jpath, True))
    # Spark Connect reaches no file system: overwrite the directory with no rows
    data = T.StructType([f for f in schema.fields if f.name not in parts])
    spark.createDataFrame([], data).write.mode("overwrite").parquet(directory)
    return True
