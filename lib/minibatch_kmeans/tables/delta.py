"""Delta Lake tables when the Spark session has no Delta source: delta-rs keeps the log,
Spark reads and writes the data files.

Spark reads and writes Delta itself when the session has Delta (Databricks, or delta-spark
with its jars): :func:`native_delta_available` tells, from settings only (no Spark job, no
``sparkContext``, so also on Spark Connect). Otherwise :mod:`minibatch_kmeans.tables.io` calls
this module, which needs the optional ``deltalake`` package (delta-rs,
``pip install minibatch-kmeans[delta]``), imported only when a Delta table is used.

Reading (:func:`read_snapshot`)
    delta-rs resolves the snapshot from the log (the latest, a version, or the last version
    committed at or before a timestamp) and Spark reads that snapshot's Parquet data files,
    with the schema of the log. Partition values are not in the files: they come from the
    log, one row per file in a small broadcast lookup joined on each row's source file
    (``_metadata.file_path``), so a table of many files and partitions stays one scan.
    Measured here (local[2], 300 partitions of one file each): a count and a sum took
    4.4 s with the join (2.8 s to build the DataFrame), 49 s with one scan per partition
    unioned (12.6 s to build). Filters on partition columns apply after the join: they do
    not skip files, as Spark's Delta source does.
Writing (:func:`commit_write`)
    Spark writes Parquet (timestamps as TIMESTAMP_MICROS) into a staging directory inside
    the table (``_staging_<uuid>``, which Delta and Spark readers skip); the files are moved
    to Delta-style ``col=value/`` directories under their unique Spark names and committed
    in one delta-rs transaction whose add actions carry ``numRecords`` and ``nullCount``
    read from the Parquet footers. Before the commit no reader sees anything; on failure
    the moved files are deleted and the staging directory always is.

Tables whose protocol asks for something that plain Parquet reading cannot honour are
refused with an error naming the feature (see :data:`READER_FEATURES_HONOURED`), and so are
writes to tables with writer features this path would violate
(:data:`WRITER_FEATURES_HONOURED`).

Set the environment variable ``MINIBATCH_KMEANS_DELTA`` to ``spark`` or ``deltalake`` to
override the detection (Databricks Connect from a laptop, for example).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import reduce
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..errors import InvalidInputError, InvalidParamError
from ..paths import local_dir
from ..spark.session import temporary_conf

logger = logging.getLogger(__name__)

#: Overrides the detection of Spark's Delta source: "spark" or "deltalake".
ENGINE_ENV = "MINIBATCH_KMEANS_DELTA"

#: Reader features (protocol version 3) that do not change how data files are read, so
#: reading the snapshot's Parquet files with the log's schema is still exact. Everything
#: else (deletionVectors, typeWidening, variantType, variantShredding, catalogManaged,
#: unknown names) is refused; columnMapping only with ``delta.columnMapping.mode=none``.
READER_FEATURES_HONOURED = {
    "timestampNtz": "timestamp_ntz columns: Parquet timestamps not adjusted to UTC",
    "v2Checkpoint": "how checkpoints are stored: delta-rs reads them",
    "vacuumProtocolCheck": "only VACUUM must check the protocol",
}

#: Writer features a commit of whole Parquet files keeps valid. Features that constrain
#: the rows (invariants, checkConstraints, generatedColumns, identityColumns) are honoured
#: only when no column or constraint uses them; appendOnly refuses overwrites; anything
#: else (rowTracking, deletionVectors, icebergCompat*, clustering, inCommitTimestamp,
#: v2Checkpoint, checkpointProtection, unknown names) is refused.
WRITER_FEATURES_HONOURED = ("appendOnly", "invariants", "checkConstraints", "changeDataFeed",
                            "generatedColumns", "identityColumns", "columnMapping",
                            "timestampNtz", "domainMetadata", "vacuumProtocolCheck")

_SPARK_DELTA = "read it with Spark's Delta source (delta-spark or Databricks)"
_KEY = "__mbk_file"
_HIT = "__mbk_hit"
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_PRIMITIVES = {"string", "long", "integer", "short", "byte", "float", "double", "boolean",
               "binary", "date", "timestamp", "timestamp_ntz"}


# -- detection and the optional dependency -----------------------------------------------


def _conf(spark: SparkSession, key: str) -> str:
    try:
        return spark.conf.get(key, None) or ""
    except Exception:  # noqa: BLE001 - a session may refuse to show a setting
        return ""


def native_delta_available(spark: SparkSession) -> bool:
    """Whether ``spark`` reads and writes Delta itself.

    True on Databricks (``DATABRICKS_RUNTIME_VERSION``, or a Databricks cluster's settings
    seen through Spark Connect) and for sessions configured for delta-spark
    (``spark.sql.extensions`` has ``io.delta.sql.DeltaSparkSessionExtension``, or
    ``spark.sql.catalog.spark_catalog`` is a ``DeltaCatalog``). Reads settings only: no
    Spark job, no ``sparkContext``. ``MINIBATCH_KMEANS_DELTA=spark|deltalake`` overrides.
    """
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    if forced in ("spark", "native"):
        return True
    if forced in ("deltalake", "delta-rs"):
        return False
    if forced:
        raise InvalidParamError(f"{ENGINE_ENV}={forced!r} is not valid: expected 'spark' or "
                                "'deltalake' (or unset to detect)")
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    if "io.delta.sql.DeltaSparkSessionExtension" in _conf(spark, "spark.sql.extensions"):
        return True
    if _conf(spark, "spark.sql.catalog.spark_catalog").endswith("DeltaCatalog"):
        return True
    return bool(_conf(spark, "spark.databricks.clusterUsageTags.sparkVersion"))


def _deltalake():
    try:
        import deltalake
    except ImportError:
        raise ImportError(
            "this Spark session has no Delta source (Databricks, or delta-spark with its "
            "jars) and the deltalake package is not installed: install it with "
            "pip install 'minibatch-kmeans[delta]'") from None
    return deltalake


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(e).__name__)


def log_uri(path: str) -> str:
    """Where delta-rs opens the table: ``file:`` and ``dbfs:`` paths as driver paths,
    local paths made absolute, remote URIs as given."""
    return local_dir(path) or path


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel


# -- opening a snapshot --------------------------------------------------------------------


def _not_found(path: str, error: BaseException) -> InvalidInputError:
    local = local_dir(path)
    if local is not None and not os.path.exists(local):
        why = "the path does not exist"
    elif local is not None and os.path.isdir(local):
        names = sorted(n for n in os.listdir(local) if not n.startswith("."))
        why = ("the directory is empty" if not names else
               f"the directory has no _delta_log (it holds {names[:5]}"
               + (" ..." if len(names) > 5 else "") + ")")
        if any(n.endswith(".parquet") for n in names):
            why += "; for a Parquet table use format 'parquet'"
    else:
        why = _one_line(error)
    return InvalidInputError(f"no delta table at {path!r}: {why}")


def _unsupported(path: str, error: BaseException,
                 version: Optional[int] = None) -> Optional[InvalidInputError]:
    """The refusal for a delta-rs error about a table feature it does not know."""
    found = re.findall(r"[Ff]eature '([^']+)' is not supported", str(error))
    if not found:
        return None
    return unsupported_features_error(path, version, sorted(set(found)), "read")


def open_table(path: str):
    """The latest snapshot of the table at ``path``."""
    dl = _deltalake()
    from deltalake.exceptions import TableNotFoundError

    try:
        return dl.DeltaTable(log_uri(path))
    except TableNotFoundError as e:
        raise _not_found(path, e) from None
    except Exception as e:  # noqa: BLE001 - delta-rs raises DeltaError, OSError, ...
        raise _unsupported(path, e) or InvalidInputError(
            f"cannot open the delta table at {path!r}: {_one_line(e)}") from None


def _versions(path: str) -> Tuple[int, int]:
    """(earliest, latest) version still in the log."""
    dt = open_table(path)
    latest = dt.version()
    try:
        earliest = min(h["version"] for h in dt.history())
    except Exception:  # noqa: BLE001 - only used in messages
        earliest = 0
    return earliest, latest


def session_zone(spark: SparkSession) -> timezone:
    """The session time zone (``spark.sql.session.timeZone``) as a tzinfo."""
    name = _conf(spark, "spark.sql.session.timeZone") or "UTC"
    m = re.fullmatch(r"(?:UTC|GMT)?([+-])(\d{1,2}):?(\d{2})?", name)
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
        return timezone(-delta if m.group(1) == "-" else delta)
    if name.upper() in ("UTC", "GMT", "Z"):
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - unknown to Python: say so, use UTC
        logger.warning("session time zone %r is unknown here; reading timestamps as UTC", name)
        return timezone.utc


def fromiso(text: str) -> datetime:
    """``datetime.fromisoformat`` as Python 3.11 reads it, also on 3.10: a ``Z`` zone and
    fractions of 1 to 9 digits (Spark writes ``00:00:00.1``; micro-seconds are kept)."""
    text = text.strip()
    text = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    text = re.sub(r"(\d{2}:\d{2}:\d{2})\.(\d{1,9})",
                  lambda m: f"{m.group(1)}.{(m.group(2) + '00000')[:6]}", text)
    return datetime.fromisoformat(text)


def parse_timestamp(value: Union[str, datetime, date], zone) -> datetime:
    """An aware datetime for a time-travel timestamp: ISO 8601 text, a datetime or a date;
    without a zone it is in ``zone`` (the session time zone, as Spark reads it)."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            when = fromiso(value)
        except ValueError:
            raise InvalidParamError(f"timestamp {value!r} is not valid: expected ISO 8601, "
                                    "e.g. '2024-05-01T12:00:00Z' or '2024-05-01'") from None
    else:
        raise InvalidParamError(f"timestamp {value!r} is not valid: expected an ISO 8601 "
                                "string or a datetime")
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def open_snapshot(spark: SparkSession, path: str, version: Optional[int] = None,
                  timestamp=None):
    """The delta-rs snapshot of the table at ``path``: the latest, ``version``, or the last
    version committed at or before ``timestamp``.

    Raises
    ------
    InvalidInputError
        No table there, the version does not exist, or the timestamp is before the
        earliest version still in the log.
    """
    dt = open_table(path)
    latest = dt.version()
    if version is not None:
        if version != latest:
            try:
                if version > latest:
                    raise ValueError
                dt.load_as_version(version)
            except Exception as e:  # noqa: BLE001 - delta-rs: version gone or never made
                refusal = _unsupported(path, e, version)
                if refusal is not None:
                    raise refusal from None
                earliest, latest = _versions(path)
                raise InvalidInputError(
                    f"delta table at {path!r} has versions {earliest}..{latest}; version "
                    f"{version} does not exist") from None
    elif timestamp is not None:
        when = parse_timestamp(timestamp, session_zone(spark))
        committed = {h["version"]: h["timestamp"] for h in dt.history()}
        try:
            dt.load_as_version(when)
        except Exception as e:  # noqa: BLE001
            raise _unsupported(path, e) or InvalidInputError(
                f"delta table at {path!r} has no version at {when.isoformat()}: "
                f"{_one_line(e)}") from None
        earliest = min(committed, default=dt.version())
        first = committed.get(earliest)
        if dt.version() == earliest and first is not None and when.timestamp() * 1000 < first:
            raise InvalidInputError(
                f"delta table at {path!r} has no version at {when.isoformat()}: its earliest "
                f"version {earliest} was committed at {_iso(committed[earliest])}")
        if when.timestamp() * 1000 > committed.get(latest, 0):
            logger.info("timestamp %s is after the last commit of %s: reading version %d",
                        when.isoformat(), path, latest)
    return dt


# -- protocol checks -------------------------------------------------------------------------


def _column_mapping(dt) -> str:
    return (dt.metadata().configuration or {}).get("delta.columnMapping.mode") or "none"


def reader_problems(dt) -> List[str]:
    """Reader features of the snapshot that reading its Parquet files with the log's schema
    would get wrong (empty: readable)."""
    p = dt.protocol()
    mapped = _column_mapping(dt) != "none"
    if p.min_reader_version > 3:
        return [f"readerVersion{p.min_reader_version}"]
    if p.min_reader_version == 2:
        return ["columnMapping"] if mapped else []
    if p.min_reader_version == 3:
        return [f for f in (p.reader_features or [])
                if f not in READER_FEATURES_HONOURED and (f != "columnMapping" or mapped)]
    return []


def _fields(dt_schema: T.StructType):
    """Every field of a schema, nested ones too (struct fields, array and map members)."""
    def walk(t):
        if isinstance(t, T.StructType):
            for f in t.fields:
                yield f
                yield from walk(f.dataType)
        elif isinstance(t, T.ArrayType):
            yield from walk(t.elementType)
        elif isinstance(t, T.MapType):
            yield from walk(t.keyType)
            yield from walk(t.valueType)
    return list(walk(dt_schema))


def writer_problems(dt, schema: T.StructType) -> List[str]:
    """What of the table's protocol a commit of Spark-written Parquet files would violate
    (empty: writable)."""
    p = dt.protocol()
    problems = [f for f in reader_problems(dt)]
    if p.min_writer_version > 7:
        return problems + [f"writerVersion{p.min_writer_version}"]
    if p.min_writer_version == 7:
        problems += [f for f in (p.writer_features or [])
                     if f not in WRITER_FEATURES_HONOURED and f not in problems]
    elif p.min_writer_version >= 5 and _column_mapping(dt) != "none" \
            and "columnMapping" not in problems:
        problems.append("columnMapping")
    config = dt.metadata().configuration or {}
    keys = {k for f in _fields(schema) for k in (f.metadata or {})}
    used = {"invariants": "delta.invariants" in keys,
            "checkConstraints": any(k.startswith("delta.constraints.") for k in config),
            "generatedColumns": "delta.generationExpression" in keys,
            "identityColumns": any(k.startswith("delta.identity.") for k in keys)}
    return problems + [f for f, yes in used.items() if yes and f not in problems]


def unsupported_features_error(path: str, version: Optional[int], problems: List[str],
                               verb: str) -> InvalidInputError:
    """The error for a table whose protocol needs features the delta-rs fallback cannot
    honour (``verb``: "read" or "write"), saying how to use Spark's Delta instead."""
    how = _SPARK_DELTA if verb == "read" else _SPARK_DELTA.replace("read it", "write it")
    at = f" (version {version})" if version is not None else ""
    return InvalidInputError(
        f"delta table at {path!r}{at} needs "
        f"{'reader' if verb == 'read' else 'reader/writer'} feature(s) {problems} that the "
        f"delta-rs fallback cannot honour: {how}")


# -- schemas --------------------------------------------------------------------------------


def spark_schema(dt) -> T.StructType:
    """The table's schema, from the Delta log, as a Spark StructType."""
    return T.StructType.fromJson(json.loads(dt.schema().to_json()))


def _delta_type(t, where: str):
    if isinstance(t, str):
        if t in _PRIMITIVES or re.fullmatch(r"decimal\(\d+,\s*\d+\)", t):
            return t
        if re.fullmatch(r"(var)?char\(\d+\)", t):
            return "string"
        raise InvalidInputError(f"column {where!r} has type {t}, which a Delta table cannot "
                                "store through the delta-rs fallback")
    kind = t["type"]
    if kind == "udt":
        return _delta_type(t["sqlType"], where)
    if kind == "struct":
        return {"type": "struct", "fields": [
            {"name": f["name"], "type": _delta_type(f["type"], f"{where}.{f['name']}"),
             "nullable": True, "metadata": f.get("metadata") or {}} for f in t["fields"]]}
    if kind == "array":
        return {"type": "array", "elementType": _delta_type(t["elementType"], f"{where}[]"),
                "containsNull": True}
    if kind == "map":
        return {"type": "map", "keyType": _delta_type(t["keyType"], f"{where}.key"),
                "valueType": _delta_type(t["valueType"], f"{where}.value"),
                "valueContainsNull": True}
    raise InvalidInputError(f"column {where!r} has type {kind}, which a Delta table cannot "
                            "store through the delta-rs fallback")


def delta_schema_json(schema: T.StructType) -> str:
    """The Delta log schema for a DataFrame's schema: user-defined types (Vector) as their
    storage struct, char/varchar as string, every field nullable (as Delta's DataFrame
    writers create tables). Raises InvalidInputError for types Delta cannot store."""
    fields = [{"name": f.name, "type": _delta_type(f.dataType.jsonValue(), f.name),
               "nullable": True, "metadata": f.metadata or {}} for f in schema.fields]
    return json.dumps({"type": "struct", "fields": fields})


# -- reading ---------------------------------------------------------------------------------


def _data_file(path: str, rel: str) -> str:
    """The Spark path of a file named by an add action (relative, or an absolute URI)."""
    return rel if is_absolute_uri(rel) else _join(path, rel)


def _partition_text(value) -> Optional[str]:
    """A partition value parsed by delta-rs, as text Spark casts back exactly."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:  # timestamp_ntz
            return value.isoformat(sep=" ")
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _cast(column, data_type: T.DataType):
    if isinstance(data_type, T.BinaryType):
        return F.unbase64(column)
    return column.cast(data_type)


def is_absolute_uri(rel: str) -> bool:
    """True for an add action's path that is a URI or absolute (not relative to the table)."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", rel)) or rel.startswith("/")


def _key_depth(rel: str, n_parts: int) -> int:
    """How many trailing path components name a file: all of a relative path's (unique
    in a table), the partition directories and file name of an absolute one."""
    if is_absolute_uri(rel):
        return min(n_parts + 1, rel.rstrip("/").count("/") + 1)
    return rel.count("/") + 1


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _with_partition_values(spark: SparkSession, reader, path: str, rels: List[str],
                           values: List[Dict[str, Any]], schema: T.StructType,
                           parts: List[str]) -> DataFrame:
    """Scan the files and add each row's partition values from the log: a broadcast join of
    a one-row-per-file lookup on the trailing components of ``_metadata.file_path``
    (decoded), which equal the file's path relative to the table."""
    aliases = {p: f"__mbk_part_{i}" for i, p in enumerate(parts)}
    types = {f.name: f.dataType for f in schema.fields}
    data_cols = [f.name for f in schema.fields if f.name not in aliases]
    lookup_schema = T.StructType(
        [T.StructField(_KEY, T.StringType()), T.StructField(_HIT, T.BooleanType())]
        + [T.StructField(aliases[p], T.StringType()) for p in parts])
    groups: Dict[int, List[int]] = {}
    for i, rel in enumerate(rels):
        groups.setdefault(_key_depth(rel, len(parts)), []).append(i)
    frames = []
    for depth, members in sorted(groups.items()):
        rows = [("/".join(rels[i].split("/")[-depth:]), True,
                 *[_partition_text(values[i].get(p)) for p in parts]) for i in members]
        if len({r[0] for r in rows}) != len(rows):
            raise InvalidInputError(f"delta table at {path!r} has data files whose last "
                                    f"{depth} path components repeat; cannot tell their "
                                    "partitions apart")
        lookup = spark.createDataFrame(rows, lookup_schema)
        scan = reader.parquet(*[_data_file(path, rels[i]) for i in members])
        file_path = scan.metadataColumn("_metadata").getField("file_path")
        # file_path is a URI: percent-decode it ('+' is a literal plus in a URI path)
        key = F.url_decode(F.replace(F.substring_index(file_path, "/", -depth),
                                     F.lit("+"), F.lit("%2B")))
        joined = scan.withColumn(_KEY, key).join(F.broadcast(lookup), _KEY, "left")
        missing = F.raise_error(F.concat(F.lit("no partition values in the delta log for "
                                               "data file "), F.col(_KEY)))
        frames.append(joined.select(
            *[F.col(_quoted(c)) for c in data_cols],
            *[F.when(F.col(_HIT).isNull(), missing)
              .otherwise(_cast(F.col(aliases[p]), types[p])).alias(p) for p in parts]))
    return reduce(DataFrame.unionByName, frames).select(
        *[F.col(_quoted(f.name)) for f in schema.fields])


def read_snapshot(spark: SparkSession, path: str, version: Optional[int] = None,
                  timestamp=None, since_version: Optional[int] = None) -> DataFrame:
    """The Delta table at ``path`` (latest, ``version`` or ``timestamp``) as a DataFrame,
    without Spark's Delta source; with ``since_version``, only the rows of the files added
    after that version (the table must only have been appended to in between).

    Columns are the log's schema in its order; partition columns typed as the schema says.
    An empty snapshot is an empty DataFrame with that schema.

    Raises
    ------
    InvalidInputError
        No table there, a version or timestamp it does not have, a reader feature this
        path cannot honour, or data files missing (vacuumed).
    """
    import pyarrow as pa

    dt = open_snapshot(spark, path, version, timestamp)
    problems = reader_problems(dt)
    if problems:
        raise unsupported_features_error(path, dt.version(), problems, "read")
    schema = spark_schema(dt)
    parts = list(dt.metadata().partition_columns)
    adds = pa.table(dt.get_add_actions(flatten=False))
    logger.info("delta table %s version %d: %d files, partitioned by %s (delta-rs)", path,
                dt.version(), adds.num_rows, parts or "nothing")
    if adds.num_rows == 0:
        return spark.createDataFrame([], schema)
    rels = [unquote(p) for p in adds.column("path").to_pylist()]
    if since_version is not None:
        keep = _appended_since(path, since_version, dt.version(), rels)
        adds, rels = adds.filter(pa.array(keep)), [r for r, k in zip(rels, keep) if k]
        logger.info("%d files appended after version %d", len(rels), since_version)
        if not rels:
            return spark.createDataFrame([], schema)
    reader = spark.read.schema(T.StructType([f for f in schema.fields if f.name not in parts]))
    try:
        if parts:
            values = adds.column("partition").to_pylist()
            df = _with_partition_values(spark, reader, path, rels, values, schema, parts)
        else:
            df = reader.parquet(*[_data_file(path, r) for r in rels])
        df.schema  # noqa: B018 - resolve now (Spark Connect is lazy)
    except PySparkException as e:
        raise InvalidInputError(f"cannot read the data files of the delta table at {path!r} "
                                f"(version {dt.version()}; vacuumed?): {_one_line(e)}") from None
    return df


def _appended_since(path: str, since: int, version: int, rels: List[str]) -> List[bool]:
    """Which of version ``version``'s files (``rels``) were added after version ``since``;
    an error when a file of ``since`` is gone (not only appends in between)."""
    import pyarrow as pa

    if since > version:
        raise InvalidInputError(f"since_version {since} is after the version read ({version}) "
                                f"of the delta table at {path!r}")
    old = open_table(path)
    old.load_as_version(since)
    before = {unquote(p) for p in pa.table(old.get_add_actions(flatten=False))
              .column("path").to_pylist()}
    gone = before.difference(rels)
    if gone:
        raise InvalidInputError(
            f"the delta table at {path!r} was not only appended to between versions {since} "
            f"and {version} ({len(gone)} files removed, e.g. {sorted(gone)[0]!r}): the rows "
            "appended since a version are not defined; read a whole version instead")
    return [r not in before for r in rels]


# -- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    """A Delta table about to be written: its latest snapshot, schema and partitioning."""

    table: Any
    schema: T.StructType
    partition_columns: Tuple[str, ...]


def existing_table(path: str) -> Optional[Existing]:
    """The Delta table at ``path``, or None when there is none yet.

    Raises
    ------
    InvalidInputError
        The path holds files but no Delta log, or the table has features a commit of
        Spark-written files would violate.
    """
    _deltalake()
    local = local_dir(path)
    if local is not None and not os.path.isdir(os.path.join(local, "_delta_log")):
        if os.path.isdir(local) and any(not n.startswith((".", "_")) for n in os.listdir(local)):
            raise InvalidInputError(f"cannot write a delta table at {path!r}: the directory "
                                    "holds files but no _delta_log (not a Delta table)")
        return None
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(log_uri(path)):
        return None
    dt = open_table(path)
    schema = spark_schema(dt)
    problems = writer_problems(dt, schema)
    if problems:
        raise unsupported_features_error(path, dt.version(), problems, "write")
    return Existing(dt, schema, tuple(dt.metadata().partition_columns))


def table_filesystem(path: str):
    """A pyarrow filesystem rooted at the table (delta-rs' storage handler, so the same
    credentials and URIs as its log)."""
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    return pafs.PyFileSystem(DeltaStorageHandler(log_uri(path)))


def _unescape(text: str) -> str:
    """Spark's (Hive's) partition directory unescaping: ``%XX`` is a character."""
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _log_partition_value(text: str, data_type: T.DataType, zone) -> Optional[str]:
    """The Delta partition value for a Spark partition directory's value."""
    value = _unescape(text)
    if value == _NULL_PARTITION:
        return None
    if isinstance(data_type, T.TimestampType):  # Spark wrote it in the session zone
        when = fromiso(value)
        when = when if when.tzinfo else when.replace(tzinfo=zone)
        return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def partition_value(text: Optional[str], data_type: T.DataType):
    """A Delta partition value as the Python value delta-rs parses it to (for matching)."""
    if text is None:
        return None
    if isinstance(data_type, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return int(text)
    if isinstance(data_type, (T.FloatType, T.DoubleType)):
        return float(text)
    if isinstance(data_type, T.DecimalType):
        return Decimal(text)
    if isinstance(data_type, T.BooleanType):
        return text.lower() == "true"
    if isinstance(data_type, T.DateType):
        return date.fromisoformat(text)
    if isinstance(data_type, T.TimestampType):
        when = fromiso(text)
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    if isinstance(data_type, T.TimestampNTZType):
        return fromiso(text)
    return text


def _stats(fs, rel: str, schema: T.StructType) -> Tuple[int, str]:
    """(numRecords, stats JSON) from a Parquet footer: numRecords and the nullCount of
    top-level primitive columns."""
    import pyarrow.parquet as pq

    with fs.open_input_file(rel) as f:
        meta = pq.ParquetFile(f).metadata
    nulls: Dict[str, int] = {}
    leaves = {f.name for f in schema.fields if "." not in f.name
              and not isinstance(f.dataType, (T.StructType, T.ArrayType, T.MapType,
                                             T.UserDefinedType))}
    complete = set(leaves)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            name = col.path_in_schema
            if name not in leaves:
                continue
            st = col.statistics
            if st is None or not st.has_null_count:
                complete.discard(name)
            else:
                nulls[name] = nulls.get(name, 0) + st.null_count
    stats = {"numRecords": meta.num_rows,
             "nullCount": {k: v for k, v in nulls.items() if k in complete}}
    return meta.num_rows, json.dumps(stats)


def commit_write(df: DataFrame, path: str, existing: Optional[Existing], mode: str,
                 partition_by: Sequence[str], replace_partitions: bool) -> Dict[str, Any]:
    """Write ``df`` as Parquet files into the table at ``path`` and commit them with
    delta-rs (the caller checked the schema against ``existing``).

    ``mode="overwrite"`` replaces every file, or with ``replace_partitions`` only those of
    the partitions ``df`` writes; ``"append"`` adds. Creates the table when ``existing``
    is None. Returns what was committed (version, files, rows, partitions replaced).
    """
    from deltalake import CommitProperties, Schema
    from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

    spark = df.sparkSession
    parts = list(partition_by)
    schema_json = delta_schema_json(df.schema)  # types Delta cannot store fail here
    if existing is not None and mode == "overwrite" and str(
            (existing.table.metadata().configuration or {}).get("delta.appendOnly")
    ).lower() == "true":
        raise InvalidInputError(f"delta table at {path!r} is append-only "
                                "(delta.appendOnly=true): it cannot be overwritten")
    zone = session_zone(spark)
    types = {f.name: f.dataType for f in df.schema.fields}
    staging = f"_staging_{uuid.uuid4().hex}"
    fs = None
    moved: List[str] = []
    committed = False
    t0 = time.perf_counter()
    try:
        with temporary_conf(spark, {"spark.sql.parquet.outputTimestampType":
                                    "TIMESTAMP_MICROS"}) as ok:
            if not ok:
                logger.warning("could not set TIMESTAMP_MICROS for the Parquet files of %s",
                               path)
            writer = df.write.mode("error").option(
                "mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
            if parts:
                writer = writer.partitionBy(*parts)
            writer.parquet(_join(path, staging))
        import pyarrow.fs as pafs

        fs = table_filesystem(path)  # after Spark made the directory (delta-rs wants it)

        staged = [i.path for i in fs.get_file_info(pafs.FileSelector(staging, recursive=True))
                  if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                  and not i.path.rsplit("/", 1)[-1].startswith((".", "_"))]
        rels = [p[len(staging) + 1:] for p in staged]
        part_values = []
        for rel in rels:
            dirs = rel.split("/")[:-1]
            names = [d.split("=", 1)[0] for d in dirs]
            if names != parts:
                raise RuntimeError(f"unexpected staged file {rel!r} for partitions {parts}")
            part_values.append({p: _log_partition_value(d.split("=", 1)[1], types[p], zone)
                                for p, d in zip(parts, dirs)})
        clash = [r for r, i in zip(rels, fs.get_file_info(rels))
                 if i.type != pafs.FileType.NotFound]
        if clash:
            raise RuntimeError(f"staged files already exist in the table: {clash[:3]}")
        data_schema = T.StructType([f for f in df.schema.fields if f.name not in parts])
        with ThreadPoolExecutor(max_workers=8) as pool:
            stats = list(pool.map(lambda r: _stats(fs, r, data_schema), staged))
            sizes = [i.size for i in fs.get_file_info(staged)]

            def move(i):
                fs.move(staged[i], rels[i])
                moved.append(rels[i])
            list(pool.map(move, range(len(staged))))
        now = int(time.time() * 1000)
        # delta-rs percent-encodes add and remove paths for the log: give them as on disk
        adds = [AddAction(rel, size, values, now, True, st)
                for rel, size, values, (_, st) in zip(rels, sizes, part_values, stats)]
        rows = sum(n for n, _ in stats)
        replaced: List[Dict[str, Optional[str]]] = []
        try:
            if existing is None:
                create_table_with_add_actions(log_uri(path),
                                              Schema.from_json(schema_json),
                                              adds, mode="error", partition_by=parts or None)
                version = 0
            else:
                dt = existing.table
                actions: List[Any] = list(adds)
                commit_mode = mode
                props = None
                if replace_partitions:  # the written partitions' files out, the new ones in
                    commit_mode = "append"
                    written = {tuple(partition_value(v[p], types[p]) for p in parts)
                               for v in part_values}
                    replaced = [dict(zip(parts, t)) for t in sorted(written, key=repr)]
                    actions = _files_in(dt, parts, written, now, RemoveAction) + actions
                    props = CommitProperties(custom_metadata={"operationParameters": {
                        "partitionOverwriteMode": "DYNAMIC",
                        "replacedPartitions": json.dumps(
                            [{k: _partition_text(v) for k, v in r.items()} for r in replaced])}})
                dt.create_write_transaction(actions, commit_mode, dt.schema(), parts,
                                            commit_properties=props)
                dt.update_incremental()
                version = dt.version()
        except BaseException:
            committed = bool(adds) and _in_log(path, adds[0].path)
            raise
    except BaseException:
        if not committed:  # uncommitted files are invisible; delete them anyway
            for rel in moved:
                try:
                    fs.delete_file(rel)
                except Exception:  # noqa: BLE001 - best effort
                    logger.warning("could not delete uncommitted file %s/%s", path, rel)
        raise
    finally:
        _remove_staging(fs, path, staging)
    logger.info("committed %d files (%d rows) to delta table %s version %d (%s%s, "
                "delta-rs) in %.1f s", len(adds), rows, path, version, mode,
                ", replacing partitions %s" % replaced if replace_partitions else "",
                time.perf_counter() - t0)
    return {"version": version, "files": len(adds), "rows": rows,
            "replacedPartitions": replaced}


def _files_in(dt, parts: List[str], written, now: int, RemoveAction) -> list:
    """Remove actions for the table's files whose partition values are one of ``written``
    (tuples of typed values in ``parts`` order)."""
    import pyarrow as pa

    adds = pa.table(dt.get_add_actions(flatten=False))
    if adds.num_rows == 0:
        return []
    out = []
    for rel, size, values in zip(adds.column("path").to_pylist(),
                                 adds.column("size_bytes").to_pylist(),
                                 adds.column("partition").to_pylist()):
        if tuple(values.get(p) for p in parts) in written:
            out.append(RemoveAction(unquote(rel), True, now, size, None))
    return out


def _in_log(path: str, rel: str) -> bool:
    """Whether the latest snapshot of the table at ``path`` has the file ``rel``."""
    import pyarrow as pa

    try:
        adds = pa.table(open_table(path).get_add_actions(flatten=False))
        return rel in {unquote(p) for p in adds.column("path").to_pylist()}
    except Exception:  # noqa: BLE001 - cannot tell: keep the files
        return True


def _remove_staging(fs, path: str, staging: str) -> None:
    try:
        (fs or table_filesystem(path)).delete_dir(staging)
    except Exception:  # noqa: BLE001 - best effort
        pass
    local = local_dir(path)
    if local is not None:
        shutil.rmtree(os.path.join(local, staging), ignore_errors=True)
