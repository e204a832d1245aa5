"""Delta tables: through Spark's own Delta source when the session has it (:mod:`.native`),
else delta-rs keeps the log and Spark the data files (the fallback). May import the base
modules (errors, paths), core and spark; never ml, evaluate, lifecycle or app.

Spark reads and writes Delta itself when the session has Delta (Databricks, or delta-spark
with its jars): :mod:`minibatch_kmeans.tables.io` then calls :mod:`.native`. Otherwise it
calls the fallback, which needs the optional ``deltalake`` package (delta-rs,
``pip install minibatch-kmeans[delta]``), imported only when a Delta table is used.

native.py
    Spark's Delta source made to behave as the fallback does: its errors as
    InvalidInputError, time travel, ``since_version``, writes and streams.
engine.py
    Which engine a session uses (:func:`native_delta_available`, ``MINIBATCH_KMEANS_DELTA``)
    and importing ``deltalake``.
log.py
    Opening a table or a snapshot (latest, version, timestamp), its schema, and the reader
    and writer feature checks.
values.py
    Partition values and timestamps between the log's text, Spark's and Python's forms.
read.py
    A snapshot read into Spark, with partition values from the log and ``since_version``
    (:func:`read_snapshot`).
write.py
    Spark-written Parquet files committed in one delta-rs transaction (:func:`commit_write`);
    a partition's files removed the same way (:func:`remove_partition`).
stream.py
    The Structured Streaming source (:func:`.stream.read_delta_stream`). Not imported
    here: it needs PySpark's Python streaming data source API, loaded only when a stream
    is read (``from minibatch_kmeans.tables.delta.stream import read_delta_stream``).
"""
from . import native
from .engine import ENGINE_ENV, native_delta_available
from .log import (READER_FEATURES_HONOURED, WRITER_FEATURES_HONOURED, delta_schema_json,
                  is_absolute_uri, log_uri, open_snapshot, open_table, reader_problems,
                  spark_schema, table_filesystem, unsupported_features_error, writer_problems)
from .read import read_snapshot
from .values import fromiso, parse_timestamp, partition_value, session_zone
from .write import Existing, commit_write, existing_table, remove_partition

__all__ = [
    "native", "ENGINE_ENV", "native_delta_available",
    "READER_FEATURES_HONOURED", "WRITER_FEATURES_HONOURED", "delta_schema_json",
    "is_absolute_uri", "log_uri", "open_snapshot", "open_table", "reader_problems",
    "spark_schema", "table_filesystem", "unsupported_features_error", "writer_problems",
    "read_snapshot",
    "fromiso", "parse_timestamp", "partition_value", "session_zone",
    "Existing", "commit_write", "existing_table", "remove_partition",
]
