"""The Delta log through delta-rs: where a table lives (its URI and filesystem), opening
its latest snapshot or one by version or timestamp, its schema, and its protocol checks.

Tables whose protocol asks for something that plain Parquet reading cannot honour are
refused with an error naming the feature (see :data:`READER_FEATURES_HONOURED`), and so are
writes to tables with writer features this path would violate
(:data:`WRITER_FEATURES_HONOURED`).
"""
from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timezone
from typing import List, Optional, Tuple

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from ...errors import InvalidInputError
from ...paths import local_dir
from .engine import require_deltalake
from .values import parse_timestamp, session_zone

logger = logging.getLogger(__name__)


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


_PRIMITIVES = {"string", "long", "integer", "short", "byte", "float", "double", "boolean",
               "binary", "date", "timestamp", "timestamp_ntz"}


# -- where the table lives ---------------------------------------------------------------



def new_local_table(path: str) -> bool:
    """True when ``path`` is driver-local and holds no Delta log yet (a write creates the
    table); InvalidInputError when that directory holds files but no ``_delta_log``."""
    local = local_dir(path)
    if local is None or os.path.isdir(os.path.join(local, "_delta_log")):
        return False
    if os.path.isdir(local) and any(not n.startswith((".", "_")) for n in os.listdir(local)):
        raise InvalidInputError(f"cannot write a delta table at {path!r}: the directory "
                                "holds files but no _delta_log (not a Delta table)")
    return True

def one_line(e: BaseException) -> str:
    """An error's message on one line, cut at 300 characters (for messages)."""
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(e).__name__)


def log_uri(path: str) -> str:
    """Where delta-rs opens the table: ``file:`` and ``dbfs:`` paths as driver paths,
    local paths made absolute, remote URIs as given."""
    return local_dir(path) or path


def join_path(base: str, rel: str) -> str:
    """``rel`` under the table path ``base`` (a local path or URI)."""
    return base.rstrip("/") + "/" + rel


def is_absolute_uri(rel: str) -> bool:
    """True for an add action's path that is a URI or absolute (not relative to the table)."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", rel)) or rel.startswith("/")


def table_filesystem(path: str):
    """A pyarrow filesystem rooted at the table (delta-rs' storage handler, so the same
    credentials and URIs as its log)."""
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    return pafs.PyFileSystem(DeltaStorageHandler(log_uri(path)))


# -- opening a snapshot --------------------------------------------------------------------


def not_found_error(path: str, error: BaseException) -> InvalidInputError:
    """The error for no Delta table at ``path``, saying what is there instead."""
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
        why = one_line(error)
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
    dl = require_deltalake()
    from deltalake.exceptions import TableNotFoundError

    try:
        return dl.DeltaTable(log_uri(path))
    except TableNotFoundError as e:
        raise not_found_error(path, e) from None
    except Exception as e:  # noqa: BLE001 - delta-rs raises DeltaError, OSError, ...
        raise _unsupported(path, e) or InvalidInputError(
            f"cannot open the delta table at {path!r}: {one_line(e)}") from None


def _versions(path: str) -> Tuple[int, int]:
    """(earliest, latest) version still in the log."""
    dt = open_table(path)
    latest = dt.version()
    try:
        earliest = min(h["version"] for h in dt.history())
    except Exception:  # noqa: BLE001 - only used in messages
        earliest = 0
    return earliest, latest


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
                f"{one_line(e)}") from None
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


# -- schemas ---------------------------------------------------------------------------------


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
