"""Streaming a Delta table (minibatch_kmeans.tables.io.stream_delta) on small tables written with
deltalake: snapshot then commits, caps, restarts, starting versions, change commits and bad
arguments on both engines (Spark's own Delta source, and the delta-rs source of
minibatch_kmeans.tables.delta.stream); partition values, schema changes, vacuumed files and
refused features of the delta-rs source, whose errors are its own (Spark's Delta reports
those itself)."""
import datetime as dt
import glob
import json
import os
import time

import pyarrow as pa
import pytest
from deltalake import DeltaTable, TableFeatures, write_deltalake
from pyspark.errors import StreamingQueryException
from pyspark.sql import types as T

from minibatch_kmeans.tables.delta.stream import read_delta_stream
from minibatch_kmeans.tables.io import stream_delta
from minibatch_kmeans.errors import InvalidInputError, InvalidParamError

import delta_engines

UTC = dt.timezone.utc
engine = delta_engines.engine  # a fixture


def chunk(start, n=2):
    """``n`` rows with a long, a double, a string, a timestamp and a date."""
    ids = list(range(start, start + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "x": pa.array([i / 4 for i in ids], pa.float64()),
        "s": pa.array([f"s{i}" for i in ids]),
        "ts": pa.array([dt.datetime(2024, 1, 1, 12, tzinfo=UTC) + dt.timedelta(hours=i)
                        for i in ids], pa.timestamp("us", "UTC")),
        "d": pa.array([dt.date(2024, 2, 1) + dt.timedelta(days=i) for i in ids], pa.date32()),
    })


def expected(start, n=2):
    return [(i, i / 4, f"s{i}", dt.datetime(2024, 1, 1, 12) + dt.timedelta(hours=i),
             dt.date(2024, 2, 1) + dt.timedelta(days=i)) for i in range(start, start + n)]


def run(df, checkpoint, got=None):
    """Run the stream to the end (availableNow): [(batch id, sorted rows)], appended to
    ``got`` as they arrive (to see what came before a failure)."""
    got = [] if got is None else got

    def collect(batch, batch_id):
        got.append((batch_id, sorted(tuple(r) for r in batch.collect())))

    query = (df.writeStream.foreachBatch(collect).option("checkpointLocation", str(checkpoint))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    return got


def rows(batches):
    return sorted(r for _, b in batches for r in b)


def commit(path, version, *actions):
    info = {"commitInfo": {"timestamp": int(time.time() * 1000), "operation": "MANUAL"}}
    with open(os.path.join(path, "_delta_log", f"{version:020d}.json"), "x") as f:
        for action in (info, *actions):
            f.write(json.dumps(action) + "\n")


def test_snapshot_then_commits_every_row_once_with_types(spark, engine, tmp_path):
    path = str(tmp_path / "t")
    for k in range(3):
        write_deltalake(path, chunk(10 * k), mode="append")
    df = stream_delta(spark, path)
    assert df.isStreaming
    assert [(f.name, f.dataType) for f in df.schema.fields] == [
        ("id", T.LongType()), ("x", T.DoubleType()), ("s", T.StringType()),
        ("ts", T.TimestampType()), ("d", T.DateType())]
    got = run(df, tmp_path / "ck")
    assert [i for i, _ in got] == [0]  # 3 files < the default cap: one micro-batch
    assert rows(got) == sorted(expected(0) + expected(10) + expected(20))

    # restart from the checkpoint after two more appends and an OPTIMIZE (dataChange false)
    write_deltalake(path, chunk(30), mode="append")
    DeltaTable(path).optimize.compact()
    write_deltalake(path, chunk(40), mode="append")
    log = [json.loads(line) for line in open(f"{path}/_delta_log/{4:020d}.json")]
    assert any("add" in a and a["add"]["dataChange"] is False for a in log)
    got = run(stream_delta(spark, path), tmp_path / "ck")
    assert [i for i, _ in got] == [1]
    assert rows(got) == sorted(expected(30) + expected(40))
    assert run(stream_delta(spark, path), tmp_path / "ck") == []  # nothing new


def test_max_files_per_trigger_and_starting_version(spark, engine, tmp_path):
    path = str(tmp_path / "t")
    write_deltalake(path, chunk(0), mode="append")  # version 0
    write_deltalake(path, chunk(10), mode="append")  # 1
    write_deltalake(path, chunk(20, 4), mode="append")  # 2
    write_deltalake(path, chunk(30), mode="append")  # 3
    one = stream_delta(spark, path, starting_version=0, max_files_per_trigger=1)
    got = run(one, tmp_path / "ck1")
    assert got == [(0, expected(0)), (1, expected(10)), (2, expected(20, 4)),
                   (3, expected(30))]  # one file per micro-batch, in commit order

    # a snapshot of 3 files in batches of 2, ordered by path; then the later commits
    snap = str(tmp_path / "snap")
    for k in range(3):
        write_deltalake(snap, chunk(10 * k), mode="append")
    by_path = sorted((a["add"]["path"], v) for v in range(3)
                     for a in map(json.loads, open(f"{snap}/_delta_log/{v:020d}.json"))
                     if "add" in a)
    got = run(stream_delta(spark, snap, max_files_per_trigger=2), tmp_path / "ck2")
    if engine == "spark":  # Spark's Delta orders a snapshot's files by time, then path
        by_path.sort(key=lambda f: f[1])
    assert got == [(0, sorted(expected(10 * by_path[0][1]) + expected(10 * by_path[1][1]))),
                   (1, expected(10 * by_path[2][1]))]

    # starting_version: only the commits from that version on, not the snapshot
    got = run(stream_delta(spark, path, starting_version=2), tmp_path / "ck3")
    assert rows(got) == sorted(expected(20, 4) + expected(30))
    write_deltalake(path, chunk(40), mode="append")  # 4
    got = run(stream_delta(spark, path, starting_version=2), tmp_path / "ck3")
    assert rows(got) == expected(40)


def test_a_commit_of_many_files_spans_micro_batches(spark, tmp_path):
    path = str(tmp_path / "t")
    write_deltalake(path, chunk(0, 3).append_column("p", pa.array(["a", "b", "c"])),
                    partition_by=["p"])
    write_deltalake(path, chunk(10, 3).append_column("p", pa.array(["a", "b", "c"])),
                    mode="append")
    order = [a["add"]["partitionValues"]["p"]
             for a in map(json.loads, open(f"{path}/_delta_log/{1:020d}.json")) if "add" in a]
    got = run(read_delta_stream(spark, path, starting_version=1, max_files_per_trigger=2),
              tmp_path / "ck")
    # in the order of the commit's add actions
    assert [sorted(r[-1] for r in b) for _, b in got] == [sorted(order[:2]), order[2:]]


def test_partition_values_typed_and_null(spark, tmp_path):
    path = str(tmp_path / "t")
    table = pa.table({
        "v": pa.array([1.5, 2.5, 3.5, 4.5]),
        "name": pa.array(["a b/c:%", "plain", None, "plain"]),
        "n": pa.array([1, None, 3, 2], pa.int32()),
    })
    write_deltalake(path, table.slice(0, 2), partition_by=["name", "n"])
    df = read_delta_stream(spark, path)
    assert df.dtypes == [("v", "double"), ("name", "string"), ("n", "int")]
    got = run(df, tmp_path / "ck")  # the snapshot: partition values from delta-rs
    write_deltalake(path, table.slice(2), mode="append")
    got += run(read_delta_stream(spark, path), tmp_path / "ck")  # from the commit file
    assert [i for i, _ in got] == [0, 1]
    assert got[0][1] == [(1.5, "a b/c:%", 1), (2.5, "plain", None)]
    assert got[1][1] == [(3.5, None, 3), (4.5, "plain", 2)]


def test_change_commits_fail_unless_skipped(spark, engine, tmp_path):
    path = str(tmp_path / "t")
    write_deltalake(path, chunk(0), mode="append")  # version 0
    assert rows(run(stream_delta(spark, path), tmp_path / "ck")) == expected(0)
    write_deltalake(path, chunk(10), mode="append")  # 1
    write_deltalake(path, chunk(20), mode="overwrite")  # 2: removes with dataChange
    write_deltalake(path, chunk(30), mode="append")  # 3
    got = []
    with pytest.raises(StreamingQueryException) as e:
        run(stream_delta(spark, path), tmp_path / "ck", got)
    message = str(e.value)
    if engine == "spark":  # Spark's Delta says it its own way
        assert "DELTA_SOURCE_TABLE_IGNORE_CHANGES" in message and "version 2" in message
        assert "skipChangeCommits" in message
    else:
        assert "version 2 of the delta table" in message and repr(path) in message
        assert "skip_change_commits=True" in message
    # version 1 came before the failure at version 2 (delta-rs), or the batch of versions
    # 1 to 3 failed whole (Spark's Delta checks a batch's commits before reading it)
    assert rows(got) == (expected(10) if engine == "deltalake" else [])
    # the same checkpoint with skip_change_commits: the overwrite (and its adds) skipped
    skipped = run(stream_delta(spark, path, skip_change_commits=True), tmp_path / "ck")
    assert rows(skipped) == sorted(expected(30) + (expected(10) if not got else []))

    # from version 0, skipping the overwrite (its adds too)
    got = run(stream_delta(spark, path, starting_version=0, skip_change_commits=True),
              tmp_path / "ck2")
    assert rows(got) == sorted(expected(0) + expected(10) + expected(30))


def test_schema_change_and_vacuumed_file_fail_naming_the_version(spark, tmp_path):
    path = str(tmp_path / "t")
    write_deltalake(path, chunk(0), mode="append")  # version 0
    df = read_delta_stream(spark, path, starting_version=0)
    write_deltalake(path, chunk(10).append_column("extra", pa.array([1, 2])), mode="append",
                    schema_mode="merge")  # 1: a metaData action with a new column
    with pytest.raises(StreamingQueryException) as e:
        run(df, tmp_path / "ck")
    assert "schema of the delta table" in str(e.value) and "changed in version 1" in str(e.value)
    # defined after the change, from before it: the older rows have the new column null
    got = run(read_delta_stream(spark, path, starting_version=0), tmp_path / "ck1")
    assert rows(got) == sorted([r + (None,) for r in expected(0)]
                               + [r + (e,) for r, e in zip(expected(10), [1, 2])])

    gone = str(tmp_path / "gone")
    write_deltalake(gone, chunk(0), mode="append")
    write_deltalake(gone, chunk(10), mode="append")
    name = next(a["add"]["path"] for a in map(json.loads, open(f"{gone}/_delta_log/{1:020d}.json"))
                if "add" in a)
    os.remove(os.path.join(gone, name))
    with pytest.raises(StreamingQueryException) as e:
        run(read_delta_stream(spark, gone, starting_version=1), tmp_path / "ck2")
    assert f"data file {name!r}" in str(e.value) and "(added in version 1)" in str(e.value)
    assert "does not exist" in str(e.value)


def test_bad_arguments_are_clear(spark, engine, tmp_path):
    read_delta_stream = stream_delta  # noqa: F811 - both engines, the same errors
    path = str(tmp_path / "t")
    write_deltalake(path, chunk(0), mode="append")
    write_deltalake(path, chunk(10), mode="append")
    with pytest.raises(InvalidInputError, match=r"no delta table at .*the path does not exist"):
        read_delta_stream(spark, str(tmp_path / "nothing"))
    os.makedirs(tmp_path / "plain")
    with pytest.raises(InvalidInputError, match="no delta table at"):
        read_delta_stream(spark, str(tmp_path / "plain"))
    with pytest.raises(InvalidInputError) as e:
        read_delta_stream(spark, path, starting_version=5)
    assert str(e.value) == (f"starting_version=5 is not in the log of the delta table at "
                            f"{path!r}: expected a version in 0..1 (the commits still in "
                            "its log)")
    DeltaTable(path).create_checkpoint()
    os.remove(f"{path}/_delta_log/{0:020d}.json")  # as log cleanup does after a checkpoint
    with pytest.raises(InvalidInputError, match=r"starting_version=0 .* expected a version in "
                                                r"1\.\.1"):
        read_delta_stream(spark, path, starting_version=0)
    for bad in (-1, "2", 1.0, True):
        with pytest.raises(InvalidParamError, match=rf"starting_version={bad!r} is not valid"):
            read_delta_stream(spark, path, starting_version=bad)
    for bad in (0, -3, 2.5, "10", False):
        with pytest.raises(InvalidParamError,
                           match=rf"max_files_per_trigger={bad!r} is not valid: expected an "
                                 r"integer >= 1"):
            read_delta_stream(spark, path, max_files_per_trigger=bad)
    with pytest.raises(InvalidParamError, match="skip_change_commits='yes' is not valid"):
        read_delta_stream(spark, path, skip_change_commits="yes")
    with pytest.raises(InvalidParamError, match="exactly one of path and table: got both"):
        stream_delta(spark, path, table="t")
    if engine == "deltalake":
        with pytest.raises(InvalidParamError, match="table='t': streaming a catalog Delta "
                                                    "table needs Spark's Delta source"):
            stream_delta(spark, table="t")
    else:
        with pytest.raises(InvalidInputError, match="stream_test_missing"):
            stream_delta(spark, table="stream_test_missing")


def test_reader_features_refused_by_name(spark, tmp_path):
    dv = str(tmp_path / "dv")
    write_deltalake(dv, pa.table({"a": [1, 2]}))
    df = read_delta_stream(spark, dv, starting_version=0)  # before the feature
    DeltaTable(dv).alter.add_feature(TableFeatures.DeletionVectors,
                                     allow_protocol_versions_increase=True)
    with pytest.raises(InvalidInputError) as e:
        read_delta_stream(spark, dv)
    assert str(e.value) == (
        f"delta table at {dv!r} (version 1) needs reader feature(s) ['deletionVectors'] that "
        "the delta-rs fallback cannot honour: read it with Spark's Delta source (delta-spark "
        "or Databricks)")
    # a query defined before: fails when it reaches the commit that asks for the feature
    got = []
    with pytest.raises(StreamingQueryException) as e:
        run(df, tmp_path / "ck", got)
    assert "(version 1) needs reader feature(s) ['deletionVectors']" in str(e.value)
    assert got == [(0, [(1,), (2,)])]  # version 0 first

    unknown = str(tmp_path / "unknown")
    write_deltalake(unknown, pa.table({"a": [1]}))
    commit(unknown, 1, {"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                                     "readerFeatures": ["fooBar"], "writerFeatures": ["fooBar"]}})
    with pytest.raises(InvalidInputError, match=r"needs reader feature\(s\) \['fooBar'\]"):
        read_delta_stream(spark, unknown)
    assert glob.glob(f"{unknown}/*.parquet")
