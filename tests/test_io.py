"""read_table / write_table for Parquet and Delta. Every Delta test runs on both engines:
Spark's own Delta source (delta-spark, the jars `make jars` fetches; skipped, saying so,
without them) and the delta-rs fallback (minibatch_kmeans.tables.delta), chosen with
MINIBATCH_KMEANS_DELTA. Tables are built and checked with delta-rs itself, log included, so
each native test is also a cross-engine test; tests/test_delta_cross.py checks tables written by
one engine through the other."""
import datetime as dt
import glob
import json
import os
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import functions as F
from pyspark.sql import types as T

from minibatch_kmeans.tables import delta
from minibatch_kmeans.errors import InvalidInputError, InvalidParamError
from minibatch_kmeans.tables.io import read_table, remove_partition, write_table

import delta_engines
from helpers import requires_delta_jars

deltalake = pytest.importorskip("deltalake")
from deltalake import DeltaTable, TableFeatures, write_deltalake  # noqa: E402

UTC = dt.timezone.utc
engine = delta_engines.engine  # a fixture


def rows(df, by):
    """A Spark or delta-rs table as a pandas frame sorted by ``by``, index reset."""
    pdf = df.toPandas() if hasattr(df, "toPandas") else df
    return pdf.sort_values(by).reset_index(drop=True)


def log_actions(path, version):
    with open(os.path.join(path, "_delta_log", f"{version:020d}.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def commit(path, version, *actions):
    """Append a commit to a table's log by hand (how tables with features delta-rs cannot
    create look on disk)."""
    info = {"commitInfo": {"timestamp": int(time.time() * 1000), "operation": "MANUAL"}}
    with open(os.path.join(path, "_delta_log", f"{version:020d}.json"), "x") as f:
        for action in (info, *actions):
            f.write(json.dumps(action) + "\n")


def data_files(path):
    return sorted(os.path.relpath(p, path) for p in glob.glob(f"{path}/**/*.parquet",
                                                                 recursive=True))


# -- reading Delta ---------------------------------------------------------------------------


@pytest.fixture
def versioned(tmp_path):
    """Versions 0 (a=1,2), 1 (append a=3), 2 (overwrite a=10,11), a few ms apart."""
    path = str(tmp_path / "versioned")
    write_deltalake(path, pa.table({"a": [1, 2], "s": ["x", "y"]}))
    time.sleep(0.02)
    write_deltalake(path, pa.table({"a": [3], "s": ["z"]}), mode="append")
    time.sleep(0.02)
    write_deltalake(path, pa.table({"a": [10, 11], "s": ["p", "q"]}), mode="overwrite")
    return path


def test_read_delta_each_version_and_a_timestamp(spark, engine, versioned):
    latest = read_table(spark, versioned, "delta")
    assert latest.dtypes == [("a", "bigint"), ("s", "string")]
    assert rows(latest, "a").equals(rows(DeltaTable(versioned).to_pandas(), "a"))
    for version, expected in [(0, [1, 2]), (1, [1, 2, 3]), (2, [10, 11])]:
        got = rows(read_table(spark, versioned, "delta", version=version), "a")
        assert got["a"].tolist() == expected
        assert got.equals(rows(DeltaTable(versioned, version=version).to_pandas(), "a"))
    commits = {h["version"]: h["timestamp"] for h in DeltaTable(versioned).history()}
    at_1 = dt.datetime.fromtimestamp((commits[1] + 1) / 1000, UTC)
    for when in (at_1, at_1.isoformat().replace("+00:00", "Z"),
                 at_1.replace(tzinfo=None).isoformat()):  # no zone: the session's (UTC)
        got = read_table(spark, versioned, "delta", timestamp=when)
        assert sorted(got.toPandas()["a"]) == [1, 2, 3]
    # at or after the last commit: the latest version (Spark's Delta alone would refuse)
    assert sorted(read_table(spark, versioned, "delta", timestamp=dt.datetime.now(UTC)
                             + dt.timedelta(days=1)).toPandas()["a"]) == [10, 11]


def test_delta_time_travel_errors_name_what_exists(spark, engine, versioned):
    with pytest.raises(InvalidInputError, match=r"has versions 0\.\.2; version 7 does not "
                                                r"exist"):
        read_table(spark, versioned, "delta", version=7)
    first = min(h["timestamp"] for h in DeltaTable(versioned).history())
    before = dt.datetime.fromtimestamp(first / 1000 - 86400, UTC).isoformat()
    with pytest.raises(InvalidInputError, match=r"has no version at .*earliest version 0 "
                                                r"was committed at"):
        read_table(spark, versioned, "delta", timestamp=before)
    with pytest.raises(InvalidParamError, match="ISO 8601"):
        read_table(spark, versioned, "delta", timestamp="yesterday")
    with pytest.raises(InvalidParamError, match="at most one of version"):
        read_table(spark, versioned, "delta", version=0, timestamp=before)
    with pytest.raises(InvalidParamError, match="need fmt='delta'"):
        read_table(spark, versioned, "parquet", version=0)
    with pytest.raises(InvalidParamError, match="version -1"):
        read_table(spark, versioned, "delta", version=-1)


def test_missing_tables_say_what_is_there(spark, engine, tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match=r"no delta table at .*nope'.*does not exist"):
        read_table(spark, missing, "delta")
    with pytest.raises(InvalidInputError, match=r"cannot read the parquet table at .*nope"):
        read_table(spark, missing, "parquet")
    plain = str(tmp_path / "plain")
    write_table(spark.range(3), plain)
    with pytest.raises(InvalidInputError, match=r"no _delta_log.*use format 'parquet'"):
        read_table(spark, plain, "delta")
    with pytest.raises(InvalidInputError, match=r"no delta table at .*the directory is empty"):
        os.makedirs(tmp_path / "empty")
        read_table(spark, str(tmp_path / "empty"), "delta")
    with pytest.raises(InvalidParamError, match="exactly one of path and table"):
        read_table(spark, fmt="delta")


def test_partitioned_delta_restores_typed_partition_values(spark, engine, tmp_path):
    path = str(tmp_path / "parts")
    table = pa.table({
        "x": pa.array([1.5, 2.5, 3.5, 4.5, 5.5], pa.float64()),
        "name": ["a b/c:%", "plain", "a b/c:%", None, "plain"],
        "n": pa.array([1, 2, 1, 2, 3], pa.int32()),
        "day": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 1),
                         dt.date(2024, 1, 2), dt.date(2024, 1, 3)]),
        "at": pa.array([dt.datetime(2024, 1, 1, 12, tzinfo=UTC)] * 5, pa.timestamp("us", "UTC")),
    })
    write_deltalake(path, table.slice(0, 3), partition_by=["name", "n", "day"])
    write_deltalake(path, table.slice(3), mode="append")
    df = read_table(spark, path, "delta")
    assert df.columns == ["x", "name", "n", "day", "at"]  # the log's order
    assert [f.dataType for f in df.schema.fields] == [
        T.DoubleType(), T.StringType(), T.IntegerType(), T.DateType(), T.TimestampType()]
    got = rows(df, "x")
    assert got["name"].tolist() == ["a b/c:%", "plain", "a b/c:%", None, "plain"]
    assert got["n"].tolist() == [1, 2, 1, 2, 3]
    assert got["day"].tolist() == list(table.column("day").to_pylist())
    assert (got["at"] == pd.Timestamp("2024-01-01 12:00")).all()
    assert len(DeltaTable(path).file_uris()) == 4
    # a filter on a partition column keeps working after the join
    assert df.where(F.col("n") == 1).count() == 2


def test_empty_snapshot_has_the_table_schema(spark, engine, tmp_path):
    path = str(tmp_path / "empty")
    DeltaTable.create(path, pa.schema([("a", pa.int64()), ("p", pa.string())]),
                      partition_by=["p"])
    df = read_table(spark, path, "delta")
    assert df.count() == 0 and df.dtypes == [("a", "bigint"), ("p", "string")]


def test_delta_reader_features_refused_by_name(spark, engine, tmp_path):
    """delta-rs refuses what reading Parquet files cannot honour; Spark's Delta reads
    deletion vectors and column mapping and refuses only what it does not know."""
    dv = str(tmp_path / "dv")
    write_deltalake(dv, pa.table({"a": [1, 2]}))
    DeltaTable(dv).alter.add_feature(TableFeatures.DeletionVectors,
                                     allow_protocol_versions_increase=True)
    assert DeltaTable(dv).protocol().reader_features == ["deletionVectors"]
    unknown = str(tmp_path / "unknown")
    write_deltalake(unknown, pa.table({"a": [1]}))
    commit(unknown, 1, {"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                                     "readerFeatures": ["fooBar"], "writerFeatures": ["fooBar"]}})
    if engine == "spark":
        assert read_table(spark, dv, "delta").count() == 2
        spark.sql(f"DELETE FROM delta.`{dv}` WHERE a = 1")
        assert read_table(spark, dv, "delta").toPandas()["a"].tolist() == [2]
        write_table(spark.range(1).withColumnRenamed("id", "a"), dv, "delta", mode="append")
        assert sorted(read_table(spark, dv, "delta").toPandas()["a"]) == [0, 2]
        for call in (lambda: read_table(spark, unknown, "delta"),
                     lambda: read_table(spark, unknown, "delta", version=0, since_version=0),
                     lambda: write_table(spark.range(1).withColumnRenamed("id", "a"), unknown,
                                         "delta", mode="append")):
            with pytest.raises(InvalidInputError) as e:
                call()
            assert str(e.value).startswith(
                f"delta table at 'file:{unknown}' needs reader feature(s) ['fooBar'] that "
                "Spark's Delta source (Delta Lake 4.4.0) cannot ") or str(e.value).startswith(
                f"delta table at {unknown!r} needs reader feature(s) ['fooBar'] that "
                "Spark's Delta source (Delta Lake 4.4.0) cannot "), str(e.value)
            assert "\tat " not in str(e.value) and "Py4J" not in str(e.value)
        return  # (Spark's Delta checks the latest protocol also to time travel)
    with pytest.raises(InvalidInputError) as e:
        read_table(spark, dv, "delta")
    assert str(e.value) == (
        f"delta table at {dv!r} (version 1) needs reader feature(s) ['deletionVectors'] that "
        "the delta-rs fallback cannot honour: read it with Spark's Delta source (delta-spark "
        "or Databricks)")
    assert read_table(spark, dv, "delta", version=0).count() == 2  # before the feature
    with pytest.raises(InvalidInputError, match=r"\['deletionVectors'\].*write it with"):
        write_table(spark.range(1).withColumnRenamed("id", "a"), dv, "delta", mode="append")

    # column mapping (reader version 2): a commit as Spark's Delta writes it
    cm = str(tmp_path / "cm")
    write_deltalake(cm, pa.table({"a": [1, 2]}))
    meta = next(a["metaData"] for a in log_actions(cm, 0) if "metaData" in a)
    schema = json.loads(meta["schemaString"])
    schema["fields"][0]["metadata"] = {"delta.columnMapping.id": 1,
                                       "delta.columnMapping.physicalName": "col-1a2b"}
    commit(cm, 1, {"protocol": {"minReaderVersion": 2, "minWriterVersion": 5}},
           {"metaData": dict(meta, schemaString=json.dumps(schema), configuration={
               "delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "1"})})
    with pytest.raises(InvalidInputError, match=r"\(version 1\) needs reader feature\(s\) "
                                                r"\['columnMapping'\]"):
        read_table(spark, cm, "delta")

    # an unknown reader feature, which delta-rs itself refuses to load
    with pytest.raises(InvalidInputError, match=r"needs reader feature\(s\) \['fooBar'\]"):
        read_table(spark, unknown, "delta")


def test_timestamp_ntz_reader_feature_is_honoured(spark, engine, tmp_path):
    path = str(tmp_path / "ntz")
    local = dt.datetime(2024, 3, 1, 8, 30)
    write_deltalake(path, pa.table({"t": pa.array([local], pa.timestamp("us"))}))
    assert "timestampNtz" in DeltaTable(path).protocol().reader_features
    df = read_table(spark, path, "delta")
    assert df.schema["t"].dataType == T.TimestampNTZType()
    assert df.first()["t"] == local


def test_read_delta_by_table_name(spark, engine, tmp_path, versioned):
    name = "io_test_versioned"
    location = "file:" + versioned
    for using in ("parquet", "delta"):  # registered as Parquet over the Delta directory too
        spark.sql(f"CREATE TABLE {name} USING {using} LOCATION '{location}'")
        try:
            if using == "parquet":  # Spark's Parquet reader sees the removed files too
                assert spark.read.table(name).count() == 5
            assert sorted(read_table(spark, fmt="delta", table=name).toPandas()["a"]) == [10, 11]
            got = read_table(spark, table=name, fmt="delta", version=1).toPandas()
            assert sorted(got["a"]) == [1, 2, 3]
            with pytest.raises(InvalidInputError, match=r"has versions 0\.\.2; version 9"):
                read_table(spark, table=name, fmt="delta", version=9)
        finally:
            spark.sql(f"DROP TABLE IF EXISTS {name}")
    with pytest.raises(InvalidInputError, match="io_test_missing"):
        read_table(spark, fmt="delta", table="io_test_missing")
    with pytest.raises(InvalidParamError, match="table name"):
        read_table(spark, fmt="delta", table="a; DROP TABLE x")


def test_native_delta_detection_reads_settings_only(spark, monkeypatch):
    from minibatch_kmeans.spark.session import connector_jars

    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    monkeypatch.delenv(delta.ENGINE_ENV, raising=False)
    has_jars = any(os.path.basename(j).startswith("delta-spark") for j in connector_jars())
    assert delta.native_delta_available(spark) is has_jars  # the default when it has Delta
    monkeypatch.setenv(delta.ENGINE_ENV, "spark")
    assert delta.native_delta_available(spark) is True
    monkeypatch.delenv(delta.ENGINE_ENV)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    assert delta.native_delta_available(spark) is True
    monkeypatch.setenv(delta.ENGINE_ENV, "deltalake")
    assert delta.native_delta_available(spark) is False
    monkeypatch.setenv(delta.ENGINE_ENV, "jars")
    with pytest.raises(InvalidParamError, match=delta.ENGINE_ENV):
        delta.native_delta_available(spark)


# -- writing Delta ---------------------------------------------------------------------------


def scores(spark, run, values, extra=None):
    pdf = pd.DataFrame({"id": range(len(values)), "score": values, "run_id": run})
    return spark.createDataFrame(pdf, "id long, score double, run_id string")


def test_write_delta_new_overwrite_append(spark, engine, tmp_path):
    path = str(tmp_path / "out")
    at = dt.datetime(2024, 5, 1, 12, 0, 0, 123456)
    df = spark.createDataFrame([(1, 0.5, at), (2, 1.5, at), (3, None, at)],
                               "id long, x double, at timestamp")
    write_table(df, path, "delta")
    table = DeltaTable(path)
    assert table.version() == 0 and table.metadata().partition_columns == []
    assert [(f.name, f.type.type) for f in table.schema().fields] == [
        ("id", "long"), ("x", "double"), ("at", "timestamp")]
    adds = pa.table(table.get_add_actions(flatten=True))
    assert sum(adds.column("num_records").to_pylist()) == 3
    assert sum(adds.column("null_count.x").to_pylist()) == 1
    assert table.history()[0]["operation"] == {"spark": "WRITE",
                                               "deltalake": "CREATE TABLE"}[engine]
    assert not [n for n in os.listdir(path) if n.startswith("_staging")]
    for file in table.file_uris():  # Delta wants TIMESTAMP_MICROS, not Spark's INT96
        assert pq.read_schema(file).field("at").type == pa.timestamp("us", "UTC")
    via_rs = table.to_pandas()
    assert sorted(via_rs["id"]) == [1, 2, 3]
    assert (via_rs["at"].dt.tz_convert(None) == pd.Timestamp(at)).all()
    assert rows(read_table(spark, path, "delta"), "id")["at"].tolist() == [pd.Timestamp(at)] * 3

    write_table(df.where("id = 1"), path, "delta")  # overwrite (the default)
    table = DeltaTable(path)
    assert table.version() == 1 and table.to_pandas()["id"].tolist() == [1]
    assert table.history(1)[0]["operationParameters"]["mode"] == "Overwrite"
    write_table(df.where("id > 1"), path, "delta", mode="append")
    table = DeltaTable(path)
    assert table.version() == 2 and sorted(table.to_pandas()["id"]) == [1, 2, 3]
    assert sorted(read_table(spark, path, "delta").toPandas()["id"]) == [1, 2, 3]
    assert sorted(read_table(spark, path, "delta", version=1).toPandas()["id"]) == [1]


def test_write_delta_replace_partitions_is_rerunnable(spark, engine, tmp_path):
    path = str(tmp_path / "scores")
    write_table(scores(spark, "r=a", [1.0, 2.0]), path, "delta", partition_by=["run_id"],
                replace_partitions=True)
    write_table(scores(spark, "b", [5.0]), path, "delta", partition_by=["run_id"],
                replace_partitions=True)
    for values in ([7.0, 8.0, 9.0], [3.0]):  # the same run twice: replaced, never duplicated
        write_table(scores(spark, "r=a", values), path, "delta", partition_by=["run_id"],
                    replace_partitions=True)
    table = DeltaTable(path)
    assert table.version() == 3 and table.metadata().partition_columns == ["run_id"]
    assert sorted(map(tuple, (p.items() for p in table.partitions()))) == [
        (("run_id", "b"),), (("run_id", "r=a"),)]
    got = rows(table.to_pandas(), ["run_id", "id"])
    assert list(zip(got["run_id"], got["score"])) == [("b", 5.0), ("r=a", 3.0)]
    ours = rows(read_table(spark, path, "delta"), ["run_id", "id"])
    assert ours[["id", "score", "run_id"]].equals(got[["id", "score", "run_id"]])
    last = log_actions(path, 3)
    removed = [a["remove"]["path"] for a in last if "remove" in a]
    assert removed and all(p.startswith("run_id=r%253Da/") for p in removed)
    assert [a["add"]["partitionValues"] for a in last if "add" in a] == [{"run_id": "r=a"}]
    params = table.history(1)[0]["operationParameters"]
    if engine == "spark":
        assert params["isDynamicPartitionOverwrite"] in (True, "true")
    else:
        assert params["partitionOverwriteMode"] == "DYNAMIC"
        assert json.loads(params["replacedPartitions"]) == [{"run_id": "r=a"}]
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first() if engine == "spark" else None
    if detail is not None:
        assert detail["partitionColumns"] == ["run_id"] and detail["numFiles"] == 2
        ops = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
        assert [r["operationParameters"]["mode"] for r in ops] == ["Overwrite"] * 4
    # the table's partitioning is used when none is given
    write_table(scores(spark, "b", [6.0]), path, "delta", replace_partitions=True)
    assert sorted(DeltaTable(path).to_pandas()["score"]) == [3.0, 6.0]


def test_write_delta_partition_values_and_vectors(spark, engine, tmp_path):
    path = str(tmp_path / "special")
    df = spark.createDataFrame(
        [(1, "a:b c%", dt.date(2024, 1, 2), Vectors.dense([1.0, 2.0])),
         (2, None, dt.date(2024, 1, 2), Vectors.dense([3.0, 4.0])),
         (3, "é/x", dt.date(2024, 1, 3), Vectors.sparse(2, [1], [5.0]))],
        T.StructType([T.StructField("id", T.LongType()), T.StructField("key", T.StringType()),
                      T.StructField("day", T.DateType()), T.StructField("v", VectorUDT())]))
    write_table(df, path, "delta", partition_by=["key", "day"])
    table = DeltaTable(path)
    assert table.metadata().partition_columns == ["key", "day"]
    assert table.schema().fields[3].type.type == "struct"  # the Vector storage struct
    got = rows(table.to_pandas(), "id")
    assert got["key"].tolist() == ["a:b c%", None, "é/x"]
    assert got["day"].tolist() == [dt.date(2024, 1, 2)] * 2 + [dt.date(2024, 1, 3)]
    ours = rows(read_table(spark, path, "delta"), "id")
    assert ours["key"].tolist() == ["a:b c%", None, "é/x"]
    assert ours["v"][2]["values"] == [5.0] and ours["v"][2]["indices"] == [1]
    assert ours["day"].tolist() == got["day"].tolist()


def test_failed_delta_write_leaves_nothing(spark, engine, tmp_path):
    path = str(tmp_path / "atomic")
    write_table(scores(spark, "a", [1.0]), path, "delta", partition_by=["run_id"])
    before = data_files(path)
    bad = scores(spark, "b", [1.0, 2.0]).withColumn(
        "score", F.when(F.col("id") > 0, F.raise_error(F.lit("boom"))).otherwise(F.col("score")))
    with pytest.raises(Exception, match="boom"):
        write_table(bad, path, "delta", replace_partitions=True)
    assert DeltaTable(path).version() == 0
    assert rows(read_table(spark, path, "delta"), "id")["score"].tolist() == [1.0]
    if engine == "spark":  # Spark's Delta may leave the failed tasks' files (not in the log)
        return
    assert data_files(path) == before
    assert not [n for n in os.listdir(path) if n.startswith("_staging")]


def test_schema_mismatch_is_refused(spark, engine, tmp_path):
    for fmt in ("delta", "parquet"):
        path = str(tmp_path / fmt)
        write_table(scores(spark, "a", [1.0]), path, fmt, partition_by=["run_id"])
        before = data_files(path)
        changed = scores(spark, "a", [1.0]).withColumn("id", F.col("id").cast("int")) \
            .withColumn("extra", F.lit(1)).drop("score")
        for mode in ("overwrite", "append"):
            with pytest.raises(InvalidInputError) as e:
                write_table(changed, path, fmt, mode=mode)
            text = str(e.value)
            assert "columns added ['extra']" in text and "columns removed ['score']" in text
            assert "columns retyped [id (bigint in the table, int in the DataFrame)]" in text
        with pytest.raises(InvalidInputError, match=r"partitioned by \['run_id'\], not \['id'\]"):
            write_table(scores(spark, "a", [1.0]), path, fmt, partition_by=["id"])
        assert data_files(path) == before
    assert DeltaTable(str(tmp_path / "delta")).version() == 0


def test_write_parquet_modes_and_replace_partitions(spark, tmp_path):
    path = str(tmp_path / "pq")
    write_table(scores(spark, "a", [1.0, 2.0]), path, partition_by=["run_id"])
    write_table(scores(spark, "b", [5.0]), path, mode="append")
    write_table(scores(spark, "a", [3.0]), path, replace_partitions=True)
    write_table(scores(spark, "a", [4.0]), path, replace_partitions=True)
    got = rows(read_table(spark, path), ["run_id", "score"])
    assert list(zip(got["run_id"], got["score"])) == [("a", 4.0), ("b", 5.0)]
    with pytest.raises(InvalidParamError, match="needs mode='overwrite'"):
        write_table(scores(spark, "a", [1.0]), path, mode="append", replace_partitions=True)
    flat = str(tmp_path / "flat")
    with pytest.raises(InvalidParamError, match="needs partition columns"):
        write_table(scores(spark, "a", [1.0]), flat, replace_partitions=True)
    with pytest.raises(InvalidParamError, match="partition_by"):
        write_table(scores(spark, "a", [1.0]), flat, partition_by=["nope"])


def test_string_partitions_read_the_directory_text(spark, tmp_path):
    path = str(tmp_path / "runs")
    write_table(scores(spark, "7", [1.0]), path, partition_by=["run_id"])
    write_table(scores(spark, "007", [2.0, 3.0]), path, replace_partitions=True)
    inferred = read_table(spark, path)  # what Spark makes of run_id=7 and run_id=007
    assert inferred.schema["run_id"].dataType == T.IntegerType()
    assert {r.run_id for r in inferred.collect()} == {7}
    got = read_table(spark, path, string_partitions=["run_id"])
    assert got.columns == ["id", "score", "run_id"]
    assert got.schema["run_id"].dataType == T.StringType()
    assert sorted((r.run_id, r.score) for r in got.collect()) == [
        ("007", 2.0), ("007", 3.0), ("7", 1.0)]
    day = str(tmp_path / "day")
    write_table(scores(spark, "2026-11-24", [1.0]), day, partition_by=["run_id"])
    assert read_table(spark, day).schema["run_id"].dataType == T.DateType()
    assert read_table(spark, day, string_partitions=["run_id", "id"]).first().run_id \
        == "2026-11-24"  # id is a data column: read as stored
    with pytest.raises(InvalidParamError, match=r"string_partitions=\[7\] is not valid"):
        read_table(spark, path, string_partitions=[7])


def test_remove_partition_removes_one_and_leaves_the_others(spark, engine, tmp_path):
    odd = "a:b/c=d 'q' \\ é%"  # escaped in directory names, quoted in predicates
    for fmt in ("parquet", "delta"):
        path = str(tmp_path / fmt)
        for run, values in ((odd, [1.0, 2.0]), ("b", [5.0])):
            write_table(scores(spark, run, values), path, fmt, partition_by=["run_id"],
                        replace_partitions=True)
        assert remove_partition(spark, path, fmt, {"run_id": odd}) is True
        assert remove_partition(spark, path, fmt, {"run_id": odd}) is False
        got = read_table(spark, path, fmt).collect()
        assert [(r.run_id, r.score) for r in got] == [("b", 5.0)]
        missing = str(tmp_path / f"none-{fmt}")
        assert remove_partition(spark, missing, fmt, {"run_id": "b"}) is False
        assert not os.path.exists(missing)  # no table made
        with pytest.raises(InvalidInputError, match=r"partitioned by \['run_id'\], not \['day'\]"):
            remove_partition(spark, path, fmt, {"day": "b"})
    assert json.loads(DeltaTable(str(tmp_path / "delta")).to_pandas()["run_id"].to_json()) \
        == {"0": "b"}
    for bad in ({"run_id": 7}, {}, ["run_id"]):
        with pytest.raises(InvalidParamError, match="expected a mapping of each partition"):
            remove_partition(spark, str(tmp_path / "delta"), "delta", bad)


def test_formats_do_not_mix(spark, engine, tmp_path):
    path = str(tmp_path / "d")
    write_table(spark.range(2), path, "delta")
    with pytest.raises(InvalidInputError, match="is a Delta table.*fmt='delta'"):
        read_table(spark, path)
    with pytest.raises(InvalidInputError, match="is a Delta table"):
        write_table(spark.range(2), path)
    plain = str(tmp_path / "p")
    write_table(spark.range(2), plain)
    with pytest.raises(InvalidInputError, match="holds files but no _delta_log"):
        write_table(spark.range(2), plain, "delta")


def test_delta_rows_appended_since_a_version(spark, engine, tmp_path):
    """since_version: only the rows of the files added after that version; an overwrite in
    between is refused. Spark's Delta reads them from the change data feed when the table
    has it, else from the files added."""
    import pandas as pd
    from deltalake import write_deltalake

    from minibatch_kmeans.errors import InvalidInputError as Bad
    from minibatch_kmeans.tables.io import read_table as read

    path = str(tmp_path / "appends")
    frame = pd.DataFrame({"id": range(30), "x": [float(i) for i in range(30)]})
    write_deltalake(path, frame.iloc[:10])                # version 0
    write_deltalake(path, frame.iloc[10:20], mode="append")  # 1
    write_deltalake(path, frame.iloc[20:], mode="append")    # 2
    ids = lambda df: sorted(r.id for r in df.collect())  # noqa: E731
    assert ids(read(spark, path, "delta", since_version=0)) == list(range(10, 30))
    assert ids(read(spark, path, "delta", since_version=0, version=1)) == list(range(10, 20))
    assert read(spark, path, "delta", since_version=2).count() == 0
    write_deltalake(path, frame.iloc[:5], mode="overwrite")  # 3
    with pytest.raises(Bad, match="not only appended to between versions 2 and 3"):
        read(spark, path, "delta", since_version=2)
    with pytest.raises(Bad, match="since_version 3 is after the version read"):
        read(spark, path, "delta", since_version=3, version=1)
    if engine != "spark":
        return
    feed = str(tmp_path / "feed")  # with the change data feed: a partitioned Spark table
    part = spark.createDataFrame(frame.assign(p=frame["id"] % 2))
    write_table(part.where("id < 10"), feed, "delta", partition_by=["p"])  # version 0
    spark.sql(f"ALTER TABLE delta.`{feed}` SET TBLPROPERTIES "
              "(delta.enableChangeDataFeed = true)")  # 1
    write_table(part.where("id >= 10 AND id < 20"), feed, "delta", mode="append")  # 2
    write_table(part.where("id >= 20"), feed, "delta", mode="append")  # 3
    got = read(spark, feed, "delta", since_version=1)
    assert ids(got) == list(range(10, 30)) and got.columns == ["id", "x", "p"]
    assert ids(read(spark, feed, "delta", since_version=0, version=2)) == list(range(10, 20))


# -- one engine writes, the other reads ---------------------------------------------------------


def _both_read(spark, monkeypatch, path, by, **kw):
    """The table as each engine reads it (pandas, sorted by ``by``): they must agree."""
    got = {}
    for name in ("spark", "deltalake"):
        monkeypatch.setenv(delta.ENGINE_ENV, name)
        got[name] = rows(read_table(spark, path, "delta", **kw), by)
    assert got["spark"].equals(got["deltalake"]), got
    return got["spark"]


@requires_delta_jars
def test_tables_written_by_one_engine_read_by_the_other(spark, monkeypatch, tmp_path):
    """History, statistics and partition values survive: Spark's Delta writes, delta-rs
    reads (its log API and our fallback), and the other way round."""
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    at = dt.datetime(2024, 5, 1, 12, 30)
    for writer, other in (("spark", "deltalake"), ("deltalake", "spark")):
        path = str(tmp_path / writer)
        monkeypatch.setenv(delta.ENGINE_ENV, writer)
        write_table(scores(spark, "r=a", [1.0, 2.0]).withColumn("at", F.lit(at)), path,
                    "delta", partition_by=["run_id"])  # 0
        monkeypatch.setenv(delta.ENGINE_ENV, other)
        write_table(scores(spark, "b", [5.0, None]).withColumn("at", F.lit(at)), path,
                    "delta", mode="append")  # 1, by the other engine
        monkeypatch.setenv(delta.ENGINE_ENV, writer)
        write_table(scores(spark, "r=a", [3.0]).withColumn("at", F.lit(at)), path, "delta",
                    replace_partitions=True)  # 2

        table = DeltaTable(path)  # delta-rs' view of the log
        assert table.version() == 2 and table.metadata().partition_columns == ["run_id"]
        assert [h["version"] for h in table.history()] == [2, 1, 0]
        adds = pa.table(table.get_add_actions(flatten=True)).to_pandas()
        assert sorted(set(adds["partition.run_id"])) == ["b", "r=a"]
        assert adds["num_records"].sum() == 3 and adds["null_count.score"].sum() == 1
        # min/max: Spark's Delta writes them, the delta-rs fallback only counts
        native = adds["partition.run_id"] == ("r=a" if writer == "spark" else "b")
        assert adds[native]["min.id"].notna().all() and adds["max.id"].max() <= 1
        assert adds[~native]["min.id"].isna().all()
        history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
        assert [r["version"] for r in history] == [0, 1, 2]
        assert history[1]["operationParameters"]["mode"] == "Append"
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
        assert detail["partitionColumns"] == ["run_id"] and detail["numFiles"] == len(adds)

        latest = _both_read(spark, monkeypatch, path, ["run_id", "id"])
        assert list(zip(latest["run_id"], latest["score"].fillna(-1))) == [
            ("b", 5.0), ("b", -1.0), ("r=a", 3.0)]
        assert (latest["at"] == pd.Timestamp(at)).all()
        assert _both_read(spark, monkeypatch, path, ["run_id", "id"], version=1)[
            "score"].fillna(-1).tolist() == [5.0, -1.0, 1.0, 2.0]
        assert _both_read(spark, monkeypatch, path, ["run_id", "id"], version=1,
                          since_version=0)["run_id"].tolist() == ["b", "b"]
