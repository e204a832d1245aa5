"""Writing to a Delta table without Spark's Delta source (:func:`commit_write`).

Spark writes Parquet (timestamps as TIMESTAMP_MICROS) into a staging directory inside
the table (``_staging_<uuid>``, which Delta and Spark readers skip); the files are moved
to Delta-style ``col=value/`` directories under their unique Spark names and committed
in one delta-rs transaction whose add actions carry ``numRecords`` and ``nullCount``
read from the Parquet footers. Before the commit no reader sees anything; on failure
the moved files are deleted and the staging directory always is.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ...errors import InvalidInputError
from ...paths import local_dir
from ...spark.session import temporary_conf
from .engine import require_deltalake
from .log import (delta_schema_json, join_path, log_uri, open_table, spark_schema,
                  table_filesystem, unsupported_features_error, writer_problems)
from .values import log_partition_value, partition_text, partition_value, session_zone

logger = logging.getLogger(__name__)


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
    require_deltalake()
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
    from deltalake.transaction import AddAction

    spark = df.sparkSession
    parts = list(partition_by)
    schema_json = delta_schema_json(df.schema)  # types Delta cannot store fail here
    _check_overwritable(path, existing, mode)
    zone = session_zone(spark)
    types = {f.name: f.dataType for f in df.schema.fields}
    staging = f"_staging_{uuid.uuid4().hex}"
    fs = None
    moved: List[str] = []
    committed = False
    t0 = time.perf_counter()
    try:
        _write_staging(df, path, staging, parts)
        fs = table_filesystem(path)  # after Spark made the directory (delta-rs wants it)
        staged, rels, part_values = _staged_files(fs, staging, parts, types, zone)
        data_schema = T.StructType([f for f in df.schema.fields if f.name not in parts])
        stats, sizes = _move_into_table(fs, staged, rels, data_schema, moved)
        now = int(time.time() * 1000)
        # delta-rs percent-encodes add and remove paths for the log: give them as on disk
        adds = [AddAction(rel, size, values, now, True, st)
                for rel, size, values, (_, st) in zip(rels, sizes, part_values, stats)]
        rows = sum(n for n, _ in stats)
        try:
            version, replaced = _commit(path, existing, mode, parts, types, schema_json, adds,
                                        part_values, now, replace_partitions)
        except BaseException:
            committed = bool(adds) and _in_log(path, adds[0].path)
            raise
    except BaseException:
        if not committed:  # uncommitted files are invisible; delete them anyway
            _delete_uncommitted(fs, path, moved)
        raise
    finally:
        _remove_staging(fs, path, staging)
    logger.info("committed %d files (%d rows) to delta table %s version %d (%s%s, "
                "delta-rs) in %.1f s", len(adds), rows, path, version, mode,
                ", replacing partitions %s" % replaced if replace_partitions else "",
                time.perf_counter() - t0)
    return {"version": version, "files": len(adds), "rows": rows,
            "replacedPartitions": replaced}


def _check_overwritable(path: str, existing: Optional[Existing], mode: str) -> None:
    """Refuse to overwrite an append-only table (``delta.appendOnly=true``)."""
    if existing is not None and mode == "overwrite" and str(
            (existing.table.metadata().configuration or {}).get("delta.appendOnly")
    ).lower() == "true":
        raise InvalidInputError(f"delta table at {path!r} is append-only "
                                "(delta.appendOnly=true): it cannot be overwritten")


def _write_staging(df: DataFrame, path: str, staging: str, parts: List[str]) -> None:
    """Spark writes ``df`` as Parquet (timestamps as TIMESTAMP_MICROS, partitioned by
    ``parts``) into the staging directory ``staging`` of the table."""
    with temporary_conf(df.sparkSession, {"spark.sql.parquet.outputTimestampType":
                                          "TIMESTAMP_MICROS"}) as ok:
        if not ok:
            logger.warning("could not set TIMESTAMP_MICROS for the Parquet files of %s",
                           path)
        writer = df.write.mode("error").option(
            "mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
        if parts:
            writer = writer.partitionBy(*parts)
        writer.parquet(join_path(path, staging))


def _staged_files(fs, staging: str, parts: List[str], types: Dict[str, T.DataType],
                  zone) -> Tuple[List[str], List[str], List[Dict[str, Optional[str]]]]:
    """The Parquet files Spark staged: their paths in the table's filesystem, where they
    go in the table (their path under the staging directory) and their partition values
    for the log. Raises when one is not laid out by ``parts`` or is in the table already."""
    import pyarrow.fs as pafs

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
        part_values.append({p: log_partition_value(d.split("=", 1)[1], types[p], zone)
                            for p, d in zip(parts, dirs)})
    clash = [r for r, i in zip(rels, fs.get_file_info(rels))
             if i.type != pafs.FileType.NotFound]
    if clash:
        raise RuntimeError(f"staged files already exist in the table: {clash[:3]}")
    return staged, rels, part_values


def _move_into_table(fs, staged: List[str], rels: List[str], data_schema: T.StructType,
                     moved: List[str]) -> Tuple[List[Tuple[int, str]], List[int]]:
    """Read each staged file's footer statistics and size, then move it to its place in
    the table, appending each moved file to ``moved`` (to delete it if the commit
    fails). Returns the statistics and the sizes, in ``staged`` order."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        stats = list(pool.map(lambda r: _stats(fs, r, data_schema), staged))
        sizes = [i.size for i in fs.get_file_info(staged)]

        def move(i):
            fs.move(staged[i], rels[i])
            moved.append(rels[i])
        list(pool.map(move, range(len(staged))))
    return stats, sizes


def _commit(path: str, existing: Optional[Existing], mode: str, parts: List[str],
            types: Dict[str, T.DataType], schema_json: str, adds: list,
            part_values: List[Dict[str, Optional[str]]], now: int,
            replace_partitions: bool) -> Tuple[int, List[Dict[str, Any]]]:
    """The delta-rs transaction of the moved files: create the table, or append to it,
    overwrite it, or replace the partitions written. Returns the version committed and
    the partitions replaced."""
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    if existing is None:
        create_table_with_add_actions(log_uri(path), Schema.from_json(schema_json),
                                      adds, mode="error", partition_by=parts or None)
        return 0, []
    dt = existing.table
    actions: List[Any] = list(adds)
    commit_mode = mode
    props = None
    replaced: List[Dict[str, Any]] = []
    if replace_partitions:  # the written partitions' files out, the new ones in
        commit_mode = "append"
        removes, replaced, props = _partition_replacement(dt, parts, types, part_values, now)
        actions = removes + actions
    dt.create_write_transaction(actions, commit_mode, dt.schema(), parts,
                                commit_properties=props)
    dt.update_incremental()
    return dt.version(), replaced


def _partition_replacement(dt, parts: List[str], types: Dict[str, T.DataType],
                           part_values: List[Dict[str, Optional[str]]], now: int):
    """What replacing the partitions written takes: remove actions for the table's files
    in them, the partitions (typed values) and the commit properties recording them as
    Spark's dynamic partition overwrite does."""
    from deltalake import CommitProperties
    from deltalake.transaction import RemoveAction

    written = {tuple(partition_value(v[p], types[p]) for p in parts) for v in part_values}
    replaced = [dict(zip(parts, t)) for t in sorted(written, key=repr)]
    removes = _files_in(dt, parts, written, now, RemoveAction)
    props = CommitProperties(custom_metadata={"operationParameters": {
        "partitionOverwriteMode": "DYNAMIC",
        "replacedPartitions": json.dumps(
            [{k: partition_text(v) for k, v in r.items()} for r in replaced])}})
    return removes, replaced, props


def _delete_uncommitted(fs, path: str, moved: List[str]) -> None:
    """Delete the files moved into the table for a commit that did not happen."""
    for rel in moved:
        try:
            fs.delete_file(rel)
        except Exception:  # noqa: BLE001 - best effort
            logger.warning("could not delete uncommitted file %s/%s", path, rel)


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
