"""Writing to a Delta table without Spark's Delta source (:func:`commit_write`).

Spark writes Parquet (timestamps as TIMESTAMP_MICROS) into a staging directory inside
the table (``_staging_<uuid>``, which Delta and Spark readers skip); the files are moved
to Delta-style ``col=value/`` directories under their unique Spark names and committed
in one delta-rs transaction whose add actions carry ``numRecords`` and ``nullCount``
read from the Parquet footers. Before the commit no reader sees anything; on failure
the moved files are deleted and the staging directory always is.

Concurrent writers: the commit is optimistic. It is made at the version after the
snapshot read before the write; when another writer committed meanwhile, the commits in
between are checked (:func:`_check_concurrent`) and the write is committed again on top
of them unless one conflicts: it wrote or removed files in a partition this write replaces
(two jobs writing the same new ``run_id`` partition at once), changed data a whole
overwrite replaces, or changed the table's schema or protocol. Then the write fails with
:class:`~minibatch_kmeans.errors.ConcurrentWriteError` naming the table, the version and
the partition, and nothing of it is committed. Failing (rather than committing again and
replacing the other writer's rows) is what Spark's Delta source does
(``ConcurrentAppendException``, translated by :func:`concurrent_write_error`): two runs of
one partition at once are a scheduling mistake whose winner cannot be chosen here, and a
re-run of the loser alone replaces the partition as any re-run does. Appends, and writes
of other partitions, commit again and succeed.
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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ...errors import ConcurrentWriteError, InvalidInputError
from ...paths import local_dir
from ...spark.session import temporary_conf
from .engine import require_deltalake
from .log import (delta_schema_json, join_path, log_uri, new_local_table, open_table,
                  spark_schema, table_filesystem, unsupported_features_error, writer_problems)
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
    if new_local_table(path):
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


def remove_partition(path: str, existing: Existing, values: Mapping[str, str]) -> bool:
    """Remove one partition's files (``values``: {partition column: value as the log writes
    it}) from the Delta table at ``path`` in one commit: a partition replacement
    (:func:`commit_write` with ``replace_partitions``) that adds no files, so with its
    commit metadata, checks and :class:`ConcurrentWriteError`. Returns whether the
    partition had files (no commit when it had none)."""
    from deltalake.transaction import RemoveAction

    parts = list(existing.partition_columns)
    types = {f.name: f.dataType for f in existing.schema.fields}
    part_values = [{p: values[p] for p in parts}]
    written = {tuple(partition_value(v[p], types[p]) for p in parts) for v in part_values}
    now = int(time.time() * 1000)
    if not _files_in(existing.table, parts, written, now, RemoveAction):
        return False
    version, _ = _commit(path, existing, "overwrite", parts, types,
                         delta_schema_json(existing.schema), [], part_values, now, True)
    logger.info("removed partition %s from delta table %s in version %d (delta-rs)",
                dict(values), path, version)
    return True


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
    the partitions replaced.

    Optimistic concurrency, checked here: delta-rs commits at exactly the version after
    the snapshot read (``max_commit_retries=0``); when another writer took that version,
    the commits made since are read (:func:`_check_concurrent`) and the write fails with
    :class:`ConcurrentWriteError` if one touched what it replaces (its partitions, or any
    data for a whole overwrite) or changed the schema or protocol; otherwise it is
    committed again on the new snapshot (concurrent writes of other partitions, and
    appends, both succeed). delta-rs's own conflict checker is not enough: it lets two
    commits that each add files to the same new partition both through.
    """
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    scope = _Scope(path, parts, types, mode, replace_partitions, part_values)
    checked = -1  # the last version whose commits this write has taken into account
    if existing is None:
        try:
            create_table_with_add_actions(log_uri(path), Schema.from_json(schema_json),
                                          adds, mode="error", partition_by=parts or None)
            return 0, []
        except Exception:  # noqa: BLE001 - delta-rs: the table exists now, or another error
            if _landed(path, adds):
                return 0, []
            existing = _created_meanwhile(path, schema_json, parts)
        scope.created_meanwhile = True
    else:
        checked = existing.table.version()
    dt = existing.table
    for _ in range(_COMMIT_ATTEMPTS):
        if dt.version() > checked:
            _check_concurrent(scope, checked + 1, dt.version())
            checked = dt.version()
        version = dt.version() + 1
        actions, commit_mode, props, replaced = _actions(dt, adds, scope, now)
        try:
            dt.create_write_transaction(actions, commit_mode, dt.schema(), parts,
                                        commit_properties=props)
            return version, replaced
        except Exception:  # noqa: BLE001 - delta-rs: the version was taken, or another error
            latest = open_table(path)
            if latest.version() <= dt.version():
                raise  # not a concurrent commit
            if _landed(path, adds):
                return version, replaced
            logger.info("delta table %s: version %d was committed by another writer; "
                        "checking commits %d..%d", path, version, version, latest.version())
            dt = latest
    raise ConcurrentWriteError(
        f"cannot commit to the delta table at {path!r}: other writers committed "
        f"{_COMMIT_ATTEMPTS} times while this write tried to (nothing of it was "
        "committed): re-run it")


#: How many times a write commits again after other writers took the version it tried.
_COMMIT_ATTEMPTS = 20


@dataclass
class _Scope:
    """What a write replaces, so what a concurrent commit must not have touched."""

    path: str
    parts: List[str]
    types: Dict[str, T.DataType]
    mode: str
    replace_partitions: bool
    part_values: List[Dict[str, Optional[str]]]
    created_meanwhile: bool = False  # another writer created the table (version 0)

    def written(self) -> set:
        """The partitions written: tuples of typed values in ``parts`` order."""
        return {tuple(partition_value(v[p], self.types[p]) for p in self.parts)
                for v in self.part_values}


def _actions(dt, adds: list, scope: _Scope, now: int):
    """The actions, save mode, commit properties and partitions replaced of a commit on
    the snapshot ``dt``."""
    from deltalake import CommitProperties

    if not scope.replace_partitions:
        return (list(adds), scope.mode, CommitProperties(max_commit_retries=0), [])
    # the written partitions' files out, the new ones in
    removes, replaced, metadata = _partition_replacement(dt, scope.parts, scope.types,
                                                         scope.part_values, now)
    props = CommitProperties(custom_metadata=metadata, max_commit_retries=0)
    return removes + list(adds), "append", props, replaced


def _created_meanwhile(path: str, schema_json: str, parts: List[str]) -> Existing:
    """The table another writer created at ``path`` while this write wanted to create it
    (re-raises the current error when there is none); ConcurrentWriteError when its
    columns or partitioning are not this write's."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(log_uri(path)):
        raise  # noqa: PLE0704 - called from an except block: the create failed otherwise
    existing = existing_table(path)
    mine = T.StructType.fromJson(json.loads(schema_json))
    if (_columns(existing.schema) != _columns(mine)
            or list(existing.partition_columns) != list(parts)):
        raise ConcurrentWriteError(
            f"cannot create the delta table at {path!r}: another writer created it at the "
            f"same time with columns {_columns(existing.schema)} partitioned by "
            f"{list(existing.partition_columns)}, not this write's {_columns(mine)} "
            f"partitioned by {list(parts)} (nothing of this write was committed)") from None
    logger.info("delta table %s was created by another writer meanwhile: committing to it",
                path)
    return existing


def _columns(schema: T.StructType) -> List[Tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in schema.fields]


def _check_concurrent(scope: _Scope, first: int, last: int) -> None:
    """Raise ConcurrentWriteError when one of the commits ``first..last`` (made by other
    writers since this write read the table) conflicts with it: it changed the table's
    metadata or protocol, or (an overwrite) added or removed data this write replaces."""
    whole = scope.mode == "overwrite" and not scope.replace_partitions
    written = scope.written() if scope.replace_partitions else set()
    fs = table_filesystem(scope.path)
    after = " (nothing of this write was committed; re-run it when the other is done)"

    def conflict(v: int, why: str) -> ConcurrentWriteError:
        return ConcurrentWriteError(
            f"cannot commit to the delta table at {scope.path!r}: another writer committed "
            f"version {v} while this write was in progress, {why}{after}")
    for v in range(first, last + 1):
        try:
            with fs.open_input_stream(f"_delta_log/{v:020d}.json") as f:
                lines = f.read().decode("utf-8").splitlines()
        except FileNotFoundError:
            raise conflict(v, "but its commit file is gone") from None
        for action in (json.loads(line) for line in lines if line.strip()):
            if ("metaData" in action or "protocol" in action) and not (
                    v == 0 and scope.created_meanwhile):
                raise conflict(v, "changing the table's schema, properties or protocol")
            change = action.get("add") or action.get("remove")
            if change is None or not change.get("dataChange", True):
                continue
            if whole:
                raise conflict(v, "changing data this overwrite replaces")
            values = change.get("partitionValues") or {}
            key = tuple(partition_value(values.get(p) or None, scope.types[p])
                        for p in scope.parts)
            if key in written:
                named = ", ".join(f"{p}={partition_text(k)!r}"
                                  for p, k in zip(scope.parts, key))
                raise conflict(v, f"writing the same partition ({named}): two writes of one "
                               "partition at once cannot both replace it")


def _partition_replacement(dt, parts: List[str], types: Dict[str, T.DataType],
                           part_values: List[Dict[str, Optional[str]]], now: int):
    """What replacing the partitions written takes: remove actions for the table's files
    in them, the partitions (typed values) and the commit's custom metadata recording them
    as Spark's dynamic partition overwrite does."""
    from deltalake.transaction import RemoveAction

    written = {tuple(partition_value(v[p], types[p]) for p in parts) for v in part_values}
    replaced = [dict(zip(parts, t)) for t in sorted(written, key=repr)]
    removes = _files_in(dt, parts, written, now, RemoveAction)
    metadata = {"operationParameters": {
        "partitionOverwriteMode": "DYNAMIC",
        "replacedPartitions": json.dumps(
            [{k: partition_text(v) for k, v in r.items()} for r in replaced])}}
    return removes, replaced, metadata


_NATIVE_CONFLICT = re.compile(
    r"\b(DELTA_CONCURRENT_\w+|DELTA_METADATA_CHANGED|DELTA_PROTOCOL_CHANGED)\b"
    r"|io\.delta\.exceptions\.(Concurrent\w+|MetadataChanged\w+|ProtocolChanged\w+)")


def concurrent_write_error(e: BaseException, path: str) -> Optional[ConcurrentWriteError]:
    """The ConcurrentWriteError for a write through Spark's Delta source that lost to a
    concurrent commit (Delta's optimistic concurrency: ``ConcurrentAppendException`` and
    the other ``DeltaConcurrentModificationException``s), in one line naming the table and
    Delta's reason (with the partition, when Delta names it); None for other errors."""
    lines = [line.strip() for line in str(e).splitlines()]
    hit = next((line for line in lines if _NATIVE_CONFLICT.search(line)), None)
    if hit is None:
        return None
    kind = _NATIVE_CONFLICT.search(hit)
    name = kind.group(2) or kind.group(1)
    detail = hit.split("Refer to", 1)[0]
    detail = re.sub(r"^(: )?[\w.]*Exception: ", "", detail).strip()
    return ConcurrentWriteError(
        f"cannot write to the delta table at {path!r}: another writer committed to it while "
        f"this write was in progress ({name}: {detail[:400]}); nothing of this write was "
        "committed: re-run it when the other is done")


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


def _landed(path: str, adds: list) -> bool:
    """Whether this write's commit is in the table although delta-rs raised (after the
    commit file was written: a post-commit hook)."""
    if adds and _in_log(path, adds[0].path):
        logger.warning("delta table %s: the commit of %s succeeded although delta-rs "
                       "raised", path, adds[0].path)
        return True
    return False


def _remove_staging(fs, path: str, staging: str) -> None:
    try:
        (fs or table_filesystem(path)).delete_dir(staging)
    except Exception:  # noqa: BLE001 - best effort
        pass
    local = local_dir(path)
    if local is not None:
        shutil.rmtree(os.path.join(local, staging), ignore_errors=True)
