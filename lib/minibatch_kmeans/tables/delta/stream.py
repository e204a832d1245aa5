"""Structured Streaming from a Delta table without Spark's Delta source: delta-rs and the
commit files of the log say which data files to read, pyarrow reads them.

:func:`read_delta_stream` registers a Python data source (PySpark 4.2's Data Source API,
``spark.dataSource.register``: no ``sparkContext``, so also on Spark Connect) and returns
``spark.readStream.format(...).load()`` with the table's schema, as
``spark.readStream.format("delta")`` does where Spark has Delta.

What the stream delivers (as Delta's own streaming source)
    Without ``starting_version``, first the snapshot of the version that is latest when the
    query first starts (its add files from delta-rs, ordered by path), then the files added
    by every later commit, commit by commit, in the order of the commit's add actions. With
    ``starting_version=N``, only the files added by commits N, N+1, ... Commits that add
    files with ``dataChange: false`` (OPTIMIZE) add nothing. A commit that removes files
    with ``dataChange: true`` (overwrite, delete, update) fails the query, naming the
    version, unless ``skip_change_commits=True``, which skips the whole commit (its adds
    too), like Delta's ``skipChangeCommits``. The files before such a commit are delivered
    first; the query fails when it would read the commit.
Offsets
    ``{"sourceVersion": 1, "tableId": <metaData id>, "version": v, "index": i,
    "snapshot": s}``: the next file to deliver is file ``i`` of the snapshot of version
    ``v`` (``s`` true) or of the data-change adds of commit ``v``. A micro-batch that ends
    with the last file of a unit ends at ``{v + 1, 0, false}``. Offsets depend only on the
    log (immutable commit files and one snapshot), so a query restarted from its checkpoint
    plans the same files and continues exactly; a checkpoint of another table at the same
    path (another ``tableId``) is refused. Spark does not keep a query's first offset
    (``initialOffset``, marked ``"initial": true``) in the checkpoint and asks for it again
    when it replays batch 0 after a restart, when the latest version may have moved on: so
    batch 0's end offset also holds ``"origin"``, the offset the batch started at, which a
    replay plans from (every row once).
Limits
    ``max_files_per_trigger`` caps the files of a micro-batch (:class:`ReadMaxFiles` as the
    default read limit); commits and the snapshot may span micro-batches. Spark 4.2 passes
    the default read limit under ``Trigger.AvailableNow`` (this reader implements
    :class:`SupportsTriggerAvailableNow`, whose target is the latest version when the query
    starts) and :class:`ReadAllAvailable` under ``Trigger.Once``, which reads everything.
Schema
    The table's schema when the query is defined (from the log). A later commit whose
    ``metaData`` changes the columns, their types or the partitioning fails the query
    naming the version (restart from a new checkpoint to read the new schema); commits
    before it (``starting_version``) may have fewer columns (added since: null in their
    rows). A ``protocol`` action asking for a reader feature this fallback cannot honour
    fails the query too.
Reading (executors)
    One Spark task reads up to ~128 MiB of files (each file counts 4 MiB more, as Spark's
    file sources count it) through the table's pyarrow filesystem (delta-rs's storage
    handler, so local paths and object stores alike; absolute URIs in add actions through
    ``pyarrow.fs.FileSystem.from_uri``), adds partition columns from the add action's
    ``partitionValues`` (null stays null), casts to the schema's Arrow types and yields
    Arrow record batches. Columns missing in a file are null. A missing data file
    (vacuumed) fails the query naming the file and the version.

Not supported: deletion vectors and the other reader features that
:func:`minibatch_kmeans.tables.delta.reader_problems` refuses, column mapping, Delta's
``ignoreDeletes``/``ignoreChanges``, ``startingTimestamp``, ``maxBytesPerTrigger``,
change data feed, and filter pushdown (filters apply after the rows are read).
"""
from __future__ import annotations

import json
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import quote, unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (ReadAllAvailable, ReadLimit, ReadMaxFiles,
                                              SupportsTriggerAvailableNow)

from ...errors import InvalidInputError, InvalidParamError
from .log import (is_absolute_uri, log_uri, open_table, reader_problems, spark_schema,
                  table_filesystem, unsupported_features_error)
from .values import check_stream_options, partition_value

logger = logging.getLogger(__name__)

#: The name the data source is registered under (not "delta": that is Spark's own source).
SOURCE_NAME = "minibatch_kmeans_delta_rs"

_OFFSET_FORMAT = 1
_TARGET_BYTES = 128 * 1024 * 1024
_OPEN_COST = 4 * 1024 * 1024
_BATCH_ROWS = 10_000
_REGISTERED: "weakref.WeakSet[SparkSession]" = weakref.WeakSet()
_REGISTERED_IDS: set = set()


# -- the public function ------------------------------------------------------------------


def read_delta_stream(spark: SparkSession, path: str, *, starting_version: Optional[int] = None,
                      max_files_per_trigger: Optional[int] = 1000,
                      skip_change_commits: bool = False) -> DataFrame:
    """A streaming DataFrame of the rows of the Delta table at `path` (delta-rs fallback).

    Parameters
    ----------
    spark : SparkSession
        The session (classic or Spark Connect).
    path : str
        The table's directory (local, ``file:``, ``dbfs:`` or an object store URI).
    starting_version : int, optional
        Deliver only the files added by this commit and later ones, not the snapshot.
        None: the snapshot of the latest version when the query first starts, then later
        commits.
    max_files_per_trigger : int, optional
        At most this many data files per micro-batch (at least 1); None: no cap.
    skip_change_commits : bool
        Skip commits that remove data files (overwrite, delete, update) instead of failing.

    Returns
    -------
    DataFrame
        A streaming DataFrame with the table's schema (the log's columns, in its order).

    Raises
    ------
    InvalidParamError
        An argument of the wrong type or out of range.
    InvalidInputError
        No Delta table at ``path``, ``starting_version`` not in its log, or a reader
        feature this fallback cannot honour.
    """
    if not isinstance(path, str) or not path.strip():
        raise InvalidParamError(f"path {path!r} is not valid: expected the path of a delta "
                                "table (a non-empty string)")
    check_stream_options(starting_version, max_files_per_trigger, skip_change_commits)
    dt = open_table(path)
    latest = dt.version()
    problems = reader_problems(dt)
    if problems:
        raise unsupported_features_error(path, latest, problems, "read")
    if starting_version is not None:
        earliest = _earliest_commit(log_uri(path), latest)
        if starting_version > latest or starting_version < earliest:
            raise InvalidInputError(
                f"starting_version={starting_version} is not in the log of the delta table at "
                f"{path!r}: expected a version in {earliest}..{latest} (the commits still in "
                "its log)")
    schema = spark_schema(dt)
    _register(spark)
    reader = (spark.readStream.format(SOURCE_NAME).schema(schema)
              .option("path", path).option("uri", log_uri(path))
              .option("tableId", dt.metadata().id).option("schemaVersion", str(latest))
              .option("skipChangeCommits", str(skip_change_commits).lower()))
    if starting_version is not None:
        reader = reader.option("startingVersion", str(starting_version))
    if max_files_per_trigger is not None:
        reader = reader.option("maxFilesPerTrigger", str(max_files_per_trigger))
    logger.info("streaming delta table %s (version %d, %s, at most %s files per "
                "micro-batch, delta-rs)", path, latest,
                f"from version {starting_version}" if starting_version is not None
                else "latest snapshot first", max_files_per_trigger or "all")
    return reader.load()


def _register(spark: SparkSession) -> None:
    """Register the data source once per session."""
    if spark in _REGISTERED or id(spark) in _REGISTERED_IDS:
        return
    spark.dataSource.register(DeltaRsStreamSource)
    try:
        _REGISTERED.add(spark)
    except TypeError:  # not weak-referenceable
        _REGISTERED_IDS.add(id(spark))


def _earliest_commit(uri: str, latest: int) -> int:
    """The first version whose commit file is still in the log."""
    import pyarrow.fs as pafs

    infos = table_filesystem(uri).get_file_info(pafs.FileSelector("_delta_log"))
    versions = [int(name[:-5]) for name in (i.path.rsplit("/", 1)[-1] for i in infos)
                if name.endswith(".json") and name[:-5].isdigit()]
    return min(versions, default=latest)


# -- the data source ----------------------------------------------------------------------


class DeltaRsStreamSource(DataSource):
    """The Delta table at option ``path`` as a stream (see the module docstring).

    Options: ``path``; ``uri`` (where to open it, default ``path``); ``startingVersion``;
    ``maxFilesPerTrigger``; ``skipChangeCommits`` (``true``/``false``); ``tableId`` (the
    table's metaData id, checked against the table); ``schemaVersion`` (the version the
    schema was read at: commits up to it may have fewer columns).
    """

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> T.StructType:
        path = self.options.get("path")
        if not path:
            raise InvalidParamError(f"the {SOURCE_NAME} data source needs option 'path'")
        dt = open_table(self.options.get("uri") or path)
        problems = reader_problems(dt)
        if problems:
            raise unsupported_features_error(path, dt.version(), problems, "read")
        return spark_schema(dt)

    def streamReader(self, schema: T.StructType) -> DataSourceStreamReader:
        return _DeltaStreamReader({k.lower(): v for k, v in self.options.items()}, schema)


# -- what the log says ---------------------------------------------------------------------


# one data file to read: (path as in the log, size, partition values typed, version)
_File = Tuple[str, int, Dict[str, Any], int]


@dataclass
class _Commit:
    """What one commit file means for the stream."""

    version: int
    adds: List[_File] = field(default_factory=list)  # dataChange adds, in log order
    removes: int = 0  # dataChange removes
    schema: Optional[T.StructType] = None  # from a metaData action
    partition_columns: Optional[List[str]] = None
    configuration: Optional[Dict[str, str]] = None
    protocol: Optional[Dict[str, Any]] = None


class _Protocol:
    def __init__(self, action: Dict[str, Any]):
        self.min_reader_version = int(action.get("minReaderVersion") or 1)
        self.reader_features = action.get("readerFeatures")


class _LogState:
    """Enough of a delta-rs table for :func:`reader_problems`: a protocol action and the
    table configuration."""

    def __init__(self, protocol: Dict[str, Any], configuration: Dict[str, str]):
        self._protocol = _Protocol(protocol)
        self._configuration = configuration

    def protocol(self):
        return self._protocol

    def metadata(self):
        return self

    @property
    def configuration(self):
        return self._configuration


def _columns(schema: T.StructType) -> List[Tuple[str, str]]:
    """Names and types (nullability and field metadata aside)."""
    return [(f.name, f.dataType.simpleString()) for f in schema.fields]


def _partition_value(text: Optional[str], data_type: T.DataType):
    """A ``partitionValues`` entry of a commit file as a Python value of its column's type."""
    if text is None or text == "":
        return None
    if isinstance(data_type, T.BinaryType):
        return text.encode("latin-1") if max(map(ord, text)) < 256 else text.encode("utf-8")
    return partition_value(text, data_type)


def _start(start: Dict[str, Any], end: Dict[str, Any]) -> Dict[str, Any]:
    """Where the micro-batch ``start..end`` starts: ``start``, except for batch 0, whose
    ``start`` is the initial offset computed anew (on a restart, from the latest version
    then): there the ``origin`` that :meth:`_DeltaStreamReader.latestOffset` put in
    ``end`` when it planned the batch, so a replayed batch 0 reads what it first would."""
    origin = end.get("origin")
    if start.get("initial") and isinstance(origin, dict):
        return dict(start, **origin)
    return start


def _offset(table_id: str, version: int, index: int, snapshot: bool) -> Dict[str, Any]:
    # always the same keys in the same order: Spark compares offsets as JSON text
    return {"sourceVersion": _OFFSET_FORMAT, "tableId": table_id, "version": int(version),
            "index": int(index), "snapshot": bool(snapshot)}


# -- the stream reader ---------------------------------------------------------------------


class _DeltaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Offsets, planning (on the driver) and reading (on executors) of the stream.

    Spark creates it on the driver for planning and again, pickled, for :meth:`read`:
    nothing is opened in ``__init__``.
    """

    def __init__(self, options: Dict[str, str], schema: T.StructType):
        self.path = options["path"]
        self.uri = options.get("uri") or self.path
        self.table_id = options.get("tableid") or None
        start = options.get("startingversion")
        self.starting_version = int(start) if start not in (None, "") else None
        cap = options.get("maxfilespertrigger")
        self.max_files = int(cap) if cap not in (None, "") else None
        if self.max_files is not None and self.max_files < 1:
            raise InvalidParamError(f"maxFilesPerTrigger={cap!r} is not valid: expected an "
                                    "integer >= 1")
        self.skip_change_commits = str(options.get("skipchangecommits", "false")).lower() \
            == "true"
        self.schema = schema
        known = options.get("schemaversion")
        self.schema_version = int(known) if known not in (None, "") else None
        self.partition_columns: Optional[List[str]] = None
        self._table = None
        self._target: Optional[int] = None
        self._commits: Dict[int, _Commit] = {}
        self._snapshot: Optional[Tuple[int, List[_File]]] = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_table=None, _commits={}, _snapshot=None)
        return state

    # -- the table and its log (driver)

    def _dt(self):
        if self._table is None:
            dt = open_table(self.uri)
            table_id = dt.metadata().id
            if self.table_id is None:
                self.table_id = table_id
            elif table_id != self.table_id:
                raise InvalidInputError(
                    f"the delta table at {self.path!r} is not the table this query started "
                    f"on (table id {table_id}, expected {self.table_id}): it was replaced; "
                    "restart the query from a new checkpoint")
            self.partition_columns = list(dt.metadata().partition_columns)
            self._table = dt
        return self._table

    def _latest(self) -> int:
        dt = self._dt()
        dt.update_incremental()
        return dt.version()

    def _check_offset(self, offset: Dict[str, Any]) -> None:
        self._dt()
        if offset.get("sourceVersion") != _OFFSET_FORMAT or "version" not in offset:
            raise InvalidInputError(f"offset {offset} in the checkpoint is not an offset of the "
                                    f"{SOURCE_NAME} source: restart from a new checkpoint")
        if offset.get("tableId") != self.table_id:
            raise InvalidInputError(
                f"the checkpoint of this query is for delta table id {offset.get('tableId')} "
                f"but the table at {self.path!r} has id {self.table_id}: restart the query "
                "from a new checkpoint")

    def _snapshot_files(self, version: int) -> List[_File]:
        """The add files of ``version``, ordered by path."""
        import pyarrow as pa

        if self._snapshot is not None and self._snapshot[0] == version:
            return self._snapshot[1]
        dt = open_table(self.uri)
        if dt.version() != version:
            try:
                dt.load_as_version(version)
            except Exception as e:  # noqa: BLE001 - delta-rs: version gone
                raise InvalidInputError(
                    f"cannot load version {version} of the delta table at {self.path!r} to "
                    f"stream its snapshot ({' '.join(str(e).split())[:200]}): restart the "
                    "query from a new checkpoint") from None
        problems = reader_problems(dt)
        if problems:
            raise unsupported_features_error(self.path, version, problems, "read")
        if _columns(spark_schema(dt)) != _columns(self.schema):
            raise InvalidInputError(
                f"the schema of the delta table at {self.path!r} changed at or before version "
                f"{version}: {_columns(spark_schema(dt))}, but the query reads "
                f"{_columns(self.schema)}; define the stream again")
        adds = pa.table(dt.get_add_actions(flatten=False))
        adds = adds.select([c for c in ("path", "size_bytes", "partition")
                            if c in adds.column_names]).to_pylist()
        files = sorted(((a["path"], int(a["size_bytes"]), dict(a.get("partition") or {}),
                         version) for a in adds), key=lambda f: f[0])
        self._snapshot = (version, files)
        return files

    def _commit(self, version: int) -> Optional[_Commit]:
        """Commit ``version`` of the log, or None when it is not committed yet."""
        if version in self._commits:
            return self._commits[version]
        name = f"_delta_log/{version:020d}.json"
        try:
            with table_filesystem(self.uri).open_input_stream(name) as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            if self._latest() > version:
                raise InvalidInputError(
                    f"commit {version} of the delta table at {self.path!r} is no longer in its "
                    "log (log retention removed it before the query read it): restart the "
                    "query from a new checkpoint, with a starting_version still in the log"
                ) from None
            return None
        self._dt()
        types = {f.name: f.dataType for f in self.schema.fields}
        commit = _Commit(version)
        for line in text.splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if "add" in action:
                add = action["add"]
                if add.get("dataChange", True):
                    values = {k: _partition_value(v, types[k]) if k in types else v
                              for k, v in (add.get("partitionValues") or {}).items()}
                    commit.adds.append((add["path"], int(add.get("size") or 0), values, version))
            elif "remove" in action:
                if action["remove"].get("dataChange", True):
                    commit.removes += 1
            elif "metaData" in action:
                meta = action["metaData"]
                commit.schema = T.StructType.fromJson(json.loads(meta["schemaString"]))
                commit.partition_columns = list(meta.get("partitionColumns") or [])
                commit.configuration = dict(meta.get("configuration") or {})
            elif "protocol" in action:
                commit.protocol = action["protocol"]
        self._commits[version] = commit
        return commit

    def _problem(self, commit: _Commit) -> Optional[InvalidInputError]:
        """Why the stream cannot go past ``commit`` (None: it can)."""
        v = commit.version
        if commit.protocol is not None:
            config = commit.configuration
            if config is None:
                config = dict(self._dt().metadata().configuration or {})
            problems = reader_problems(_LogState(commit.protocol, config))
            if problems:
                return unsupported_features_error(self.path, v, problems, "read")
        if commit.schema is not None and not self._compatible(commit):
            return InvalidInputError(
                f"the schema of the delta table at {self.path!r} changed in version {v}: "
                f"columns {_columns(commit.schema)} partitioned by {commit.partition_columns}, "
                f"but the stream reads {_columns(self.schema)} partitioned by "
                f"{self.partition_columns}; restart the query from a new checkpoint")
        if commit.removes and not self.skip_change_commits:
            return InvalidInputError(
                f"version {v} of the delta table at {self.path!r} removes or rewrites data "
                f"({commit.removes} files removed with dataChange=true: an overwrite, delete "
                "or update), which a stream of appended rows cannot follow: set "
                "skip_change_commits=True to skip such commits, or restart the query from a "
                "new checkpoint")
        return None

    def _compatible(self, commit: _Commit) -> bool:
        """Whether the files of ``commit`` read right with the stream's schema: its schema
        equal to the stream's, or, for a commit not after the version the stream's schema
        was read at, a subset of its columns (those that the table added later are null)."""
        if commit.partition_columns != self.partition_columns:
            return False
        if _columns(commit.schema) == _columns(self.schema):
            return True
        return (self.schema_version is not None and commit.version <= self.schema_version
                and set(_columns(commit.schema)) <= set(_columns(self.schema)))

    def _files(self, version: int, snapshot: bool) -> Optional[List[_File]]:
        """The files a unit delivers; None when the commit does not exist yet."""
        if snapshot:
            return self._snapshot_files(version)
        commit = self._commit(version)
        if commit is None:
            return None
        problem = self._problem(commit)
        if problem is not None:
            raise problem
        return [] if commit.removes else commit.adds

    # -- the DataSourceStreamReader API (driver)

    def initialOffset(self) -> Dict[str, Any]:
        """Where the stream starts, marked ``initial``: Spark does not keep it in the
        checkpoint but asks again when it replays batch 0 after a restart, and the latest
        version may have moved on by then; batch 0's end offset keeps the real start
        (``origin``, see :func:`_start`)."""
        self._dt()
        if self.starting_version is not None:
            offset = _offset(self.table_id, self.starting_version, 0, False)
        else:
            latest = self._latest()
            offset = _offset(self.table_id, latest + 1, 0, False) \
                if not self._snapshot_files(latest) else _offset(self.table_id, latest, 0, True)
        offset["initial"] = True
        return offset

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadAllAvailable() if self.max_files is None else ReadMaxFiles(self.max_files)

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._latest()
        logger.info("delta table %s: Trigger.AvailableNow reads up to version %d", self.path,
                    self._target)

    def latestOffset(self, start: Dict[str, Any], limit: ReadLimit) -> Dict[str, Any]:
        self._check_offset(start)
        if isinstance(limit, ReadMaxFiles):
            cap: Optional[int] = max(1, int(limit.max_files))
        elif isinstance(limit, ReadAllAvailable):
            cap = None
        else:  # rows or bytes: not known before reading; the option's cap
            cap = self.max_files
        logger.debug("latestOffset(%s, %r): cap %s", start, limit, cap)
        v, i, snap = int(start["version"]), int(start["index"]), bool(start["snapshot"])
        self._forget_before(v)
        origin = {"version": v, "index": i, "snapshot": snap}
        end = dict(start)
        taken = 0
        while cap is None or taken < cap:
            if not snap and self._target is not None and v > self._target:
                break
            try:
                files = self._files(v, snap)
            except InvalidInputError:
                if taken:  # deliver what comes before the commit first
                    break
                raise
            if files is None:
                break
            n = len(files)
            take = n - i if cap is None else min(n - i, cap - taken)
            taken += max(take, 0)
            i += max(take, 0)
            if i >= n:
                v, i, snap = v + 1, 0, False
                if taken:
                    end = _offset(self.table_id, v, 0, False)
            else:
                end = _offset(self.table_id, v, i, snap)
        if start.get("initial") and taken:  # batch 0: keep where it starts (see _start)
            end["origin"] = origin
        return end

    def partitions(self, start: Dict[str, Any], end: Dict[str, Any]) -> List[InputPartition]:
        self._check_offset(start)
        start = _start(start, end)
        v, i, snap = int(start["version"]), int(start["index"]), bool(start["snapshot"])
        ev, ei, esnap = int(end["version"]), int(end["index"]), bool(end["snapshot"])
        chosen: List[_File] = []
        while v <= ev:
            last = (v, snap) == (ev, esnap)
            if last and ei <= i:
                break
            files = self._files(v, snap)
            if files is None:
                raise InvalidInputError(f"commit {v} of the delta table at {self.path!r} is "
                                        f"not in its log, but the offset {end} needs it")
            chosen.extend(files[i:ei] if last else files[i:])
            if last:
                break
            v, i, snap = v + 1, 0, False
        groups: List[List[_File]] = []
        size = 0
        for f in chosen:
            cost = f[1] + _OPEN_COST
            if not groups or size + cost > _TARGET_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(f)
            size += cost
        logger.info("delta table %s: micro-batch %s..%s reads %d files in %d tasks", self.path,
                    start, end, len(chosen), len(groups))
        return [InputPartition(g) for g in groups]

    def commit(self, end: Dict[str, Any]) -> None:
        self._forget_before(int(end["version"]))

    def _forget_before(self, version: int) -> None:
        for v in [v for v in self._commits if v < version]:
            del self._commits[v]
        if self._snapshot is not None and self._snapshot[0] < version:
            self._snapshot = None

    # -- reading (executors)

    def read(self, partition: InputPartition) -> Iterator[Any]:
        from pyspark.sql.pandas.types import to_arrow_schema

        arrow_schema = to_arrow_schema(self.schema, timezone="UTC")
        table_fs = None
        for rel, _, values, version in partition.value:
            if is_absolute_uri(rel):
                fs, name = _absolute(rel)
            else:
                table_fs = table_fs or table_filesystem(self.uri)
                fs, name = table_fs, unquote(rel)
            yield from _read_file(fs, name, values, arrow_schema, self.schema,
                                  f"data file {unquote(rel)!r} of the delta table at "
                                  f"{self.path!r} (added in version {version})")


def _absolute(rel: str):
    """(filesystem, path) of an add action's absolute path: a URI (percent-encoded, as in
    the log) or a local path."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    if rel.startswith("/"):
        return pafs.LocalFileSystem(), unquote(rel)
    try:
        return pafs.FileSystem.from_uri(rel)
    except pa.ArrowInvalid:  # characters a URI must encode
        return pafs.FileSystem.from_uri(quote(unquote(rel), safe=":/@"))


def _read_file(fs, name: str, values: Dict[str, Any], arrow_schema, schema: T.StructType,
               what: str) -> Iterator[Any]:
    """Arrow record batches of one data file with ``arrow_schema``: its columns cast, the
    partition columns from ``values``, columns missing in the file null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = fs.open_input_file(name)
    except FileNotFoundError:
        raise InvalidInputError(f"{what} does not exist: it was probably removed by VACUUM; "
                                "restart the query from a new checkpoint (with a later "
                                "starting_version)") from None
    with f:
        pf = pq.ParquetFile(f)
        present = {n.lower(): n for n in pf.schema_arrow.names}
        exact = set(pf.schema_arrow.names)
        sources = {}
        for fld in schema.fields:
            if fld.name in values:
                continue
            if fld.name in exact:
                sources[fld.name] = fld.name
            elif fld.name.lower() in present:
                sources[fld.name] = present[fld.name.lower()]
        columns = sorted(set(sources.values()))
        if columns:
            batches = ((b.num_rows, b) for b in
                       pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns))
        else:  # only partition columns: the row counts
            batches = ((n, None) for n in _row_counts(pf))
        for n, batch in batches:
            arrays = []
            for fld, target in zip(schema.fields, arrow_schema):
                if fld.name in values:
                    value = values[fld.name]
                    arrays.append(pa.nulls(n, target.type) if value is None
                                  else pa.array([value] * n, type=target.type))
                elif fld.name in sources:
                    col = batch.column(sources[fld.name])
                    safe = not pa.types.is_timestamp(target.type)
                    arrays.append(col if col.type == target.type
                                  else col.cast(target.type, safe=safe))
                else:
                    arrays.append(pa.nulls(n, target.type))
            yield pa.RecordBatch.from_arrays(arrays, schema=arrow_schema)


def _row_counts(pf) -> Iterator[int]:
    for g in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        for s in range(0, rows, _BATCH_ROWS):
            yield min(_BATCH_ROWS, rows - s)
