"""Delta tables through Spark's own Delta source (delta-spark or Databricks), made to behave
as the delta-rs fallback of this package does: the same arguments, results and errors.

Spark's Delta errors (a Java stack trace under py4j) become
:class:`~minibatch_kmeans.errors.InvalidInputError` naming the table and what is wrong:
no table there, a version or timestamp it does not have, a reader or writer feature this
Delta Lake cannot handle. Time travel by timestamp reads the last version committed at or
before it, also when that is the latest (Spark's Delta refuses a timestamp after the last
commit). Rows appended after a version (``since_version``) come from the change data feed
when the table has it, else from the data files added since that version; either way the
table must only have been appended to in between, as for delta-rs.

Native writes store user-defined types (MLlib's Vector) as their storage struct, as the
fallback does: Spark's Delta would write the UDT itself into the log, which no other Delta
reader (delta-rs, Trino, ...) can read.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Dict, List, Mapping, Optional, Tuple

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ...errors import InvalidInputError
from .log import new_local_table, not_found_error, one_line
from .values import check_stream_options, parse_timestamp, session_zone

logger = logging.getLogger(__name__)

_FEATURES = re.compile(r"requires (reader|writer) table feature\(s\) that are unsupported by "
                       r"Delta Lake \"?([^\":]*)\"?:\s*([^.\n]+)")
_MISSING = ("PATH_NOT_FOUND", "DELTA_TABLE_NOT_FOUND", "DELTA_PATH_DOES_NOT_EXIST",
            "DELTA_MISSING_DELTA_TABLE", "DELTA_NOT_A_DELTA_TABLE")


def spark_errors() -> Tuple[type, ...]:
    """The exceptions a Spark call raises (PySpark's, and py4j's for uncaught Java ones)."""
    try:
        from py4j.protocol import Py4JJavaError
    except ImportError:  # pragma: no cover - Spark Connect only
        return (PySparkException,)
    return (PySparkException, Py4JJavaError)


def condition(e: BaseException) -> str:
    """Spark's error condition (``DELTA_TABLE_NOT_FOUND``...), from the error or its text."""
    get = getattr(e, "getCondition", None) or getattr(e, "getErrorClass", None)
    found = get() if get is not None else None
    if not found:
        m = re.search(r"\[([A-Z][A-Z0-9_.]+)\]", str(e))
        found = m.group(1) if m else ""
    return found or ""


def reason(e: BaseException) -> str:
    """A Spark error in one line: its first line (condition included), no stack trace."""
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("\tat ")]
    first = lines[0] if lines else type(e).__name__
    if first.startswith("An error occurred while calling") and len(lines) > 1:
        first = lines[1].lstrip(": ")
    return one_line(first)


def is_missing(e: BaseException) -> bool:
    """Whether a Spark Delta error says there is no Delta table there."""
    text = str(e)
    return condition(e).split(".")[0] in _MISSING or (
        "FileNotFoundException" in text and "_delta_log" in text)


def _what(path: Optional[str], table: Optional[str]) -> str:
    return f"delta table {table!r}" if table is not None else f"delta table at {path!r}"


def refusal(e: BaseException, path: Optional[str], table: Optional[str] = None,
            verb: str = "read") -> Optional[InvalidInputError]:
    """The InvalidInputError for a Spark Delta error, when it is about the table (not
    there, or a feature this Delta Lake cannot read or write); None for other errors."""
    text = str(e)
    m = _FEATURES.search(text)
    if m:
        features = sorted({f.strip() for f in m.group(3).split(",") if f.strip()})
        return InvalidInputError(
            f"{_what(path, table)} needs {m.group(1)} feature(s) {features} that Spark's Delta "
            f"source (Delta Lake {m.group(2) or 'of this session'}) cannot {verb}: use a "
            "Delta Lake release that supports them")
    missing = is_missing(e)
    if missing and path is not None:
        return not_found_error(path, e)
    if missing:
        return InvalidInputError(f"cannot read the {_what(path, table)}: {reason(e)}")
    return None


def target(path: Optional[str], table: Optional[str]) -> str:
    """The SQL name of a table by path (``delta.`path```) or its catalog name."""
    return table if table is not None else "delta.`" + path.replace("`", "``") + "`"


def history(spark: SparkSession, path: Optional[str], table: Optional[str]
            ) -> Dict[int, datetime]:
    """{version: commit time (UTC)} of the commits still in the table's log."""
    try:
        rows = spark.sql(f"DESCRIBE HISTORY {target(path, table)}").select(
            "version", (F.unix_micros("timestamp")).alias("us")).collect()
    except spark_errors() as e:
        raise refusal(e, path, table) or InvalidInputError(
            f"cannot read the history of the {_what(path, table)}: {reason(e)}") from None
    return {r["version"]: datetime.fromtimestamp(r["us"] / 1e6, timezone.utc) for r in rows}


def detail(spark: SparkSession, path: Optional[str], table: Optional[str]):
    """``DESCRIBE DETAIL`` of the table (format, partitionColumns, properties...)."""
    return spark.sql(f"DESCRIBE DETAIL {target(path, table)}").first()


def _version_error(spark, path, table, version: int) -> InvalidInputError:
    versions = history(spark, path, table)
    lo, hi = min(versions), max(versions)
    return InvalidInputError(f"{_what(path, table)} has versions {lo}..{hi}; version "
                             f"{version} does not exist")


def _as_of(spark, path, table, timestamp) -> Tuple[Dict[str, str], Optional[InvalidInputError]]:
    """Reader options for the last version committed at or before ``timestamp``, or the
    error when the table has none that early."""
    when = parse_timestamp(timestamp, session_zone(spark)).astimezone(timezone.utc)
    commits = history(spark, path, table)
    earliest, latest = min(commits), max(commits)
    if when < commits[earliest].replace(microsecond=commits[earliest].microsecond // 1000
                                        * 1000):
        return {}, InvalidInputError(
            f"{_what(path, table)} has no version at {when.isoformat()}: its earliest version "
            f"{earliest} was committed at "
            f"{commits[earliest].isoformat(timespec='milliseconds')}")
    if when >= commits[latest]:
        logger.info("timestamp %s is at or after the last commit of the %s: reading version "
                    "%d", when.isoformat(), _what(path, table), latest)
        return {"versionAsOf": str(latest)}, None
    return {"timestampAsOf": when.strftime("%Y-%m-%d %H:%M:%S.%f") + "Z"}, None


def _load(spark, path, table, options: Dict[str, str]) -> DataFrame:
    reader = spark.read.format("delta").options(**options)
    df = reader.table(table) if table is not None else reader.load(path)
    df.schema  # noqa: B018 - forces analysis under Spark Connect
    return df


def read(spark: SparkSession, path: Optional[str], table: Optional[str],
         version: Optional[int] = None, timestamp=None,
         since_version: Optional[int] = None) -> DataFrame:
    """The Delta table at ``path`` or the catalog table ``table`` through Spark's Delta
    source: the latest version, ``version`` or the last one committed at or before
    ``timestamp``; with ``since_version`` only the rows appended after that version.

    Raises
    ------
    InvalidInputError
        No Delta table there, a version or timestamp it does not have, a reader feature
        Spark's Delta cannot read, or (``since_version``) files removed in between.
    """
    options: Dict[str, str] = {}
    if version is not None:
        options["versionAsOf"] = str(version)
    try:
        if timestamp is not None:
            options, problem = _as_of(spark, path, table, timestamp)
            if problem is not None:
                raise problem
        df = _load(spark, path, table, options)
    except spark_errors() as e:
        found = refusal(e, path, table)
        if found is not None:
            raise found from None
        if version is not None and condition(e).startswith(("DELTA_VERSION", "DELTA_CANNOT_TIME")):
            raise _version_error(spark, path, table, version) from None
        if version is not None and version not in history(spark, path, table):
            raise _version_error(spark, path, table, version) from None
        raise InvalidInputError(f"cannot read the {_what(path, table)}: {reason(e)}") from None
    if since_version is not None:
        df = _appended_since(spark, path, table, since_version, df, options)
    return df


def _files(df: DataFrame) -> set:
    """The data files of a Delta snapshot, from its log (no data is read)."""
    return set(df.inputFiles())


def _version_of(spark, path, table, options: Dict[str, str]) -> int:
    if "versionAsOf" in options:
        return int(options["versionAsOf"])
    if "timestampAsOf" in options:
        when = parse_timestamp(options["timestampAsOf"], timezone.utc)
        return max(v for v, t in history(spark, path, table).items() if t <= when)
    return max(history(spark, path, table))


def _appended_since(spark, path, table, since: int, snapshot: DataFrame,
                    options: Dict[str, str]) -> DataFrame:
    """The rows of ``snapshot`` in the files added after version ``since``: from the
    change data feed when the table has it, else the snapshot's rows of those files."""
    version = _version_of(spark, path, table, options)
    what = _what(path, table)
    if since > version:
        raise InvalidInputError(f"since_version {since} is after the version read ({version}) "
                                f"of the {what}")
    before = _files(read(spark, path, table, version=since))
    now = _files(snapshot)
    gone = before - now
    if gone:
        raise InvalidInputError(
            f"the {what} was not only appended to between versions {since} and {version} "
            f"({len(gone)} files removed, e.g. {sorted(gone)[0].rsplit('/', 1)[-1]!r}): the "
            "rows appended since a version are not defined; read a whole version instead")
    added = sorted(now - before)
    logger.info("%d files appended to the %s after version %d", len(added), what, since)
    if not added:
        return snapshot.limit(0)
    props = detail(spark, path, table)["properties"] or {}
    if since < version and props.get("delta.enableChangeDataFeed", "").lower() == "true":
        try:
            feed = _load(spark, path, table, {"readChangeFeed": "true",
                                              "startingVersion": str(since + 1),
                                              "endingVersion": str(version)})
            return (feed.where(F.col("_change_type") == "insert")
                    .drop("_change_type", "_commit_version", "_commit_timestamp"))
        except spark_errors() as e:  # enabled after ``since``: no feed for all of it
            logger.info("no change data feed of the %s from version %d (%s): reading the "
                        "files added", what, since + 1, reason(e))
    file_path = snapshot.metadataColumn("_metadata").getField("file_path")
    decoded = F.url_decode(F.replace(file_path, F.lit("+"), F.lit("%2B")))
    return snapshot.where(decoded.isin(added))


# -- writing -----------------------------------------------------------------------------------


def existing(spark: SparkSession, path: str) -> Optional[Tuple[T.StructType, List[str]]]:
    """Schema and partition columns of the Delta table at ``path``; None when there is
    none yet.

    Raises
    ------
    InvalidInputError
        The path holds files but no Delta log, or the table needs a feature Spark's Delta
        cannot write.
    """
    if new_local_table(path):
        return None
    try:
        schema = _load(spark, path, None, {}).schema
        parts = list(detail(spark, path, None)["partitionColumns"] or [])
    except spark_errors() as e:
        if _FEATURES.search(str(e)):
            raise refusal(e, path, None, "write") from None
        if is_missing(e):
            return None
        raise InvalidInputError(f"cannot write to the delta table at {path!r}: "
                                f"{reason(e)}") from None
    return schema, parts


def _storage_type(t: T.DataType) -> T.DataType:
    """``t`` with user-defined types replaced by their storage (SQL) type."""
    if isinstance(t, T.UserDefinedType):
        return _storage_type(t.sqlType())
    if isinstance(t, T.StructType):
        return T.StructType([T.StructField(f.name, _storage_type(f.dataType), f.nullable,
                                           f.metadata) for f in t.fields])
    if isinstance(t, T.ArrayType):
        return T.ArrayType(_storage_type(t.elementType), t.containsNull)
    if isinstance(t, T.MapType):
        return T.MapType(_storage_type(t.keyType), _storage_type(t.valueType),
                         t.valueContainsNull)
    return t


def without_udts(df: DataFrame) -> DataFrame:
    """``df`` with every column holding a user-defined type (MLlib's Vector) as its
    storage struct, as the Delta log can hold it (through JSON, which Spark writes
    user-defined types as their storage form; doubles round-trip exactly)."""
    if all(_storage_type(f.dataType) == f.dataType for f in df.schema.fields):
        return df
    cols = []
    for f in df.schema.fields:
        col = F.col("`" + f.name.replace("`", "``") + "`")
        stored = _storage_type(f.dataType)
        if stored != f.dataType:
            wrapped = T.StructType([T.StructField("c", stored)])
            col = F.from_json(F.to_json(F.struct(col.alias("c"))), wrapped,
                              {"allowNonNumericNumbers": "true"}).getField("c").alias(f.name)
        cols.append(col)
    return df.select(*cols)


def write_refusal(e: BaseException, path: str) -> Optional[InvalidInputError]:
    """The InvalidInputError for a failed native write that is about the table's
    features; None for other errors (the caller re-raises those)."""
    return refusal(e, path, None, "write") if _FEATURES.search(str(e)) else None


def _text_literal(value: str) -> str:
    """A SQL string literal of ``value`` that no quoting or escaping setting changes: its
    UTF-8 bytes as a binary literal, cast to string."""
    return f"CAST(X'{value.encode('utf-8').hex()}' AS STRING)"


def delete_partition(spark: SparkSession, path: str, values: Mapping[str, str]) -> bool:
    """``DELETE`` the rows of one partition (``values``: {partition column: value}) of the
    Delta table at ``path``; a predicate on partition columns alone, so Delta removes the
    partition's files from the log without rewriting any. Returns whether it had rows."""
    condition = " AND ".join(f"`{c.replace('`', '``')}` = {_text_literal(v)}"
                             for c, v in values.items())
    result = spark.sql(f"DELETE FROM {target(path, None)} WHERE {condition}").first()
    deleted = result["num_affected_rows"] if result is not None and (
        "num_affected_rows" in result.asDict()) else None
    return deleted is None or deleted > 0


# -- streaming --------------------------------------------------------------------------------


def read_stream(spark: SparkSession, path: Optional[str], table: Optional[str] = None, *,
                starting_version: Optional[int] = None,
                max_files_per_trigger: Optional[int] = 1000,
                skip_change_commits: bool = False) -> DataFrame:
    """A streaming DataFrame of the Delta table through Spark's Delta source, with the
    arguments and errors of the delta-rs source (:func:`.stream.read_delta_stream`):
    ``startingVersion`` (only commits from that version on, not the snapshot),
    ``maxFilesPerTrigger`` and ``skipChangeCommits``. The table and starting version are
    checked now."""
    check_stream_options(starting_version, max_files_per_trigger, skip_change_commits)
    read(spark, path, table)  # the table is there and readable
    if starting_version is not None:
        versions = history(spark, path, table)
        if starting_version not in versions:
            raise InvalidInputError(
                f"starting_version={starting_version} is not in the log of the "
                f"{_what(path, table)}: expected a version in {min(versions)}..{max(versions)}"
                " (the commits still in its log)")
    reader = spark.readStream.format("delta")
    for key, value in (("maxFilesPerTrigger", max_files_per_trigger),
                       ("startingVersion", starting_version),
                       ("skipChangeCommits", skip_change_commits or None)):
        if value is not None:
            reader = reader.option(key, str(value).lower())
    try:
        df = reader.table(table) if table is not None else reader.load(path)
        df.schema  # noqa: B018
    except spark_errors() as e:
        raise refusal(e, path, table) or InvalidInputError(
            f"cannot stream the {_what(path, table)}: {reason(e)}") from None
    logger.info("streaming the %s (%s, at most %s files per micro-batch, Spark's Delta "
                "source)", _what(path, table), f"from version {starting_version}"
                if starting_version is not None else "latest snapshot first",
                max_files_per_trigger or "all")
    return df
