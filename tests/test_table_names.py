"""Catalog table names wherever a table is read or written: the one rule that tells a path
from a name (tables.io.table_name), run-keyed writes to catalog tables (Parquet and Delta,
``spark_catalog.default.<name>`` and ``default.<name>``), re-runs, removed partitions, the
config's output keys, and a training job whose output tables are catalog tables."""
import uuid

import pytest
from pyspark.sql import functions as F

from minibatch_kmeans.app.config import Config
from minibatch_kmeans.app.outputs import read_run_table, write_run_table
from minibatch_kmeans.errors import ConfigError, InvalidInputError, InvalidParamError
from minibatch_kmeans.tables import delta
from minibatch_kmeans.tables.io import read_table, remove_partition, table_name, write_table


# -- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "out/scores", "/data/scores", "./scores", "s3a://bucket/scores", "file:///tmp/scores",
    "dbfs:/mnt/scores", "abfss://c@a.dfs.core.windows.net/x", "C:\\data\\scores",
    "/Volumes/main/default/vol/scores"])
def test_paths_are_paths(target):
    assert table_name(target) is None


@pytest.mark.parametrize("target", [
    "scores", "default.scores", "main.default.scores", "spark_catalog.default.scores_2",
    "`my-catalog`.default.`scores v2`", "  main.ml.scores  "])
def test_names_are_names(target):
    assert table_name(target) == target.strip()


@pytest.mark.parametrize("target", ["a.b.c.d", "main..scores", "main.default.my-scores",
                                    "scores;drop", ".scores", "main.default."])
def test_malformed_names_say_what_was_given_and_expected(target):
    with pytest.raises(InvalidParamError) as e:
        table_name(target)
    msg = str(e.value)
    assert repr(target) in msg
    assert "[catalog.][schema.]table" in msg and "'/'" in msg  # both readings explained


@pytest.mark.parametrize("target", ["", "  ", None, 3])
def test_no_name_at_all(target):
    with pytest.raises(InvalidParamError, match="expected a path or a catalog table name"):
        table_name(target)


def test_every_table_taker_applies_the_rule(spark):
    df = spark.createDataFrame([(1.0, "a")], "x double, run_id string")
    for call in (lambda: write_table(df, "main.default.bad-name"),
                 lambda: remove_partition(spark, "a.b.c.d", "parquet", {"run_id": "a"}),
                 lambda: read_table(spark, "a.b.c.d"),
                 lambda: write_run_table(df.drop("run_id"), "x..y", "parquet", "r1"),
                 lambda: read_run_table(spark, "main.default.bad-name")):
        with pytest.raises(InvalidParamError, match="neither a path nor a valid table name"):
            call()


# -- the config -------------------------------------------------------------------------------


def config(**output):
    return Config.from_dict({"input": {"path": "out/data/blobs",
                                       "features": {"inputCols": ["x0", "x1"]}},
                             "model": {"k": 3}, "output": dict({"dir": "out/train"}, **output)})


def test_config_output_tables_take_catalog_names():
    out = config(centers="main.ml.centers", metrics="default.metrics", quality="quality",
                 quarantine="out/train/quarantine").output
    assert (out.centers, out.metrics, out.quality, out.quarantine) == (
        "main.ml.centers", "default.metrics", "quality", "out/train/quarantine")


@pytest.mark.parametrize("key", ["centers", "metrics", "quality", "quarantine"])
def test_config_refuses_a_malformed_table_name_naming_the_key(key):
    with pytest.raises(ConfigError) as e:
        config(**{key: "main.ml.k-means"})
    msg = str(e.value)
    assert f"output.{key}" in msg and "'main.ml.k-means'" in msg
    assert "[catalog.][schema.]table" in msg and "\n" not in msg


# -- writing runs to catalog tables -----------------------------------------------------------


@pytest.fixture
def tables(spark):
    """A maker of fresh table names in the session catalog's default schema; each table is
    dropped (with its files: managed) afterwards."""
    made = []

    def make(prefix="mbkm_names"):
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        made.append(name)
        return name

    yield make
    for name in made:
        spark.sql(f"DROP TABLE IF EXISTS spark_catalog.default.{name}")


def needs_delta(spark, fmt):
    if fmt == "delta" and not delta.native_delta_available(spark):
        pytest.skip("the test session has no Delta source (make jars)")


def rows_of(spark, target, fmt):
    return sorted((r.run_id, r.x) for r in read_run_table(spark, target, fmt).collect())


def describe(spark, name):
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
    info = {(r[0] or "").strip(): (r[1] or "").strip() for r in rows}
    after = [(r[0] or "").strip() for r in rows]
    start = after.index("# Partition Information")
    parts = [c for c in after[start + 2:] if c and not c.startswith("#")]
    return info.get("Provider", "").lower(), parts[:1]


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_runs_to_a_catalog_table_replace_only_their_partition(spark, tables, fmt):
    needs_delta(spark, fmt)
    short = tables()
    full, two = f"spark_catalog.default.{short}", f"default.{short}"

    def points(*xs):
        return spark.createDataFrame([(float(x),) for x in xs], "x double")

    write_run_table(points(1, 2), full, fmt, "007")  # creates the table
    assert describe(spark, full) == (fmt, ["run_id"])
    write_run_table(points(3), two, fmt, "7")        # the same table, by its 2-part name
    assert rows_of(spark, full, fmt) == [("007", 1.0), ("007", 2.0), ("7", 3.0)]
    # a re-run of run 007 replaces its rows, never duplicates them, and leaves run 7 alone
    write_run_table(points(4, 5, 6), full, fmt, "007")
    write_run_table(points(4, 5, 6), two, fmt, "007")
    assert rows_of(spark, two, fmt) == [("007", 4.0), ("007", 5.0), ("007", 6.0),
                                        ("7", 3.0)]
    typed = read_table(spark, two, fmt).schema["run_id"].dataType.simpleString()
    assert typed == "string"  # "007" and "7" are two runs, in the catalog as in the data
    # a re-run with no rows removes its partition, and only it
    write_run_table(points(), two, fmt, "7", empty=True)
    assert rows_of(spark, full, fmt) == [("007", 4.0), ("007", 5.0), ("007", 6.0)]
    assert remove_partition(spark, full, fmt, {"run_id": "7"}) is False
    assert remove_partition(spark, two, fmt, {"run_id": "007"}) is True
    assert rows_of(spark, full, fmt) == []
    write_run_table(points(8), full, fmt, "7")  # the emptied table takes runs again
    assert rows_of(spark, two, fmt) == [("7", 8.0)]


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_write_table_to_a_catalog_table(spark, tables, fmt):
    """write_table itself (the stream job's micro-batch partitions): dynamic partition
    overwrite, append and overwrite by name; refusals before anything is written."""
    needs_delta(spark, fmt)
    name = f"default.{tables()}"
    frame = lambda batch, *xs: spark.createDataFrame(  # noqa: E731
        [(float(x), batch) for x in xs], "x double, batch_id long")
    write_table(frame(0, 1, 2), name, fmt, partition_by=["batch_id"], replace_partitions=True)
    write_table(frame(1, 3), name, fmt, replace_partitions=True)
    write_table(frame(1, 4), name, fmt, replace_partitions=True)  # a replayed micro-batch
    got = lambda: sorted(tuple(r) for r in read_table(spark, name, fmt).collect())  # noqa: E731
    assert got() == [(1.0, 0), (2.0, 0), (4.0, 1)]
    write_table(frame(2, 5), name, fmt, mode="append")
    assert got() == [(1.0, 0), (2.0, 0), (4.0, 1), (5.0, 2)]
    with pytest.raises(InvalidInputError, match=r"columns added \['y'\]"):
        write_table(frame(3, 6).withColumn("y", F.col("x")), name, fmt)
    with pytest.raises(InvalidInputError, match="partitioned by"):
        write_table(frame(3, 6), name, fmt, partition_by=["x"])
    other = "delta" if fmt == "parquet" else "parquet"
    if delta.native_delta_available(spark):
        with pytest.raises(InvalidInputError, match=f"it is a {fmt} table, not {other}"):
            write_table(frame(3, 6), name, other)
    assert got() == [(1.0, 0), (2.0, 0), (4.0, 1), (5.0, 2)]  # nothing was written
    write_table(frame(9, 9), name, fmt)  # overwrite: the whole table
    assert got() == [(9.0, 9)]


def test_a_missing_catalog_table_has_no_partition_to_remove(spark, tables):
    assert remove_partition(spark, f"default.{tables()}", "parquet", {"run_id": "1"}) is False
    with pytest.raises(InvalidInputError, match="mbkm_nothing"):
        read_run_table(spark, "default.mbkm_nothing_here")


def test_train_job_writes_its_tables_to_the_catalog(spark, tables, tmp_path, capsys,
                                                   monkeypatch, request):
    """jobs/train.py with output.centers, metrics, quality and quarantine as catalog table
    names; a re-run of the same run id leaves one run's rows."""
    from minibatch_kmeans_jobs import train

    monkeypatch.chdir(request.config.rootpath)
    data = str(tmp_path / "points")
    rows = [(float(i % 3) * 10 + (i % 7) * 0.01, float(i % 3) * 5.0) for i in range(300)]
    rows[0] = (float("nan"), 0.0)
    spark.createDataFrame(rows, "x0 double, x1 double").coalesce(1).write.parquet(data)
    names = {key: tables(f"mbkm_train_{key}") for key in ("centers", "metrics", "quality",
                                                          "quarantine")}
    args = ["--conf", "conf/local.yaml", "--set", f"input.path={data}",
            "--set", "input.features.inputCols=[x0, x1]", "--set", "model.k=3",
            "--set", "model.handleInvalid=skip", "--set", f"output.dir={tmp_path / 'train'}",
            "--set", "mlflow=", "--run-id", "007",
            *[a for key, name in names.items()
              for a in ("--set", f"output.{key}=spark_catalog.default.{name}")]]
    for _ in range(2):  # the second run replaces the first's rows
        assert train.main(args) == 0, capsys.readouterr().err
    centers = read_run_table(spark, f"default.{names['centers']}").collect()
    assert len(centers) == 3 and {r.run_id for r in centers} == {"007"}
    assert sum(r.size for r in centers) == 299
    metrics = read_run_table(spark, f"default.{names['metrics']}").collect()
    assert [(m.run_id, m.num_rows, m.invalid_rows) for m in metrics] == [("007", 299, 1)]
    quarantine = read_run_table(spark, f"default.{names['quarantine']}").collect()
    assert [(q.run_id, q.reason) for q in quarantine] == [("007", "x0: NaN")]
    assert read_run_table(spark, f"default.{names['quality']}").count() > 0
    assert not (tmp_path / "train" / "centers").exists()  # a table, not a folder
