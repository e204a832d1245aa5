"""jobs/score.py in-process on the test session: predictions, re-runs, quarantine, the
quality gate, schema checks and exit codes. Delta outputs run on both engines."""
import json
import os

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from minibatch_kmeans import MiniBatchKMeans, MiniBatchKMeansModel
from minibatch_kmeans.app.outputs import read_run_table, write_run_table
from minibatch_kmeans.tables.io import read_table
from minibatch_kmeans_jobs import score

import delta_engines

FEATURES = ["x0", "x1", "x2"]
engine = delta_engines.engine  # a fixture


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """A small table (id, x0..x2, label) and a model trained on it."""
    root = tmp_path_factory.mktemp("score")
    rng = np.random.default_rng(3)
    centers = np.array([[0, 0, 0], [10, 10, 10], [-10, 10, 0]], float)
    labels = rng.integers(0, 3, 600)
    X = centers[labels] + rng.normal(size=(600, 3))
    rows = [(i, *map(float, x), int(c)) for i, (x, c) in enumerate(zip(X, labels))]
    df = spark.createDataFrame(rows, "id long, x0 double, x1 double, x2 double, label int")
    data = str(root / "table")
    df.write.parquet(data)
    model = MiniBatchKMeans(k=3, inputCols=FEATURES, batchSize=200, seed=1).fit(
        spark.read.parquet(data))
    path = str(root / "model")
    model.write().save(path)
    return {"data": data, "model": path, "root": root}


def score_args(data, model, out, run_id="r1", *more):
    return ["--conf", "conf/score.yaml", "--set", f"input.path={data}",
            "--set", f"scoring.model={model}", "--set", f"output.dir={out}",
            "--run-id", run_id, *more]


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_score_writes_predictions_and_reruns_replace(spark, trained, tmp_path, capsys):
    out = tmp_path / "out"
    assert score.main(score_args(trained["data"], trained["model"], out)) == 0, \
        capsys.readouterr().err
    preds = spark.read.parquet(str(out / "predictions"))
    assert sorted(preds.columns) == ["distance", "id", "prediction", "run_id"]
    assert preds.count() == 600
    model = MiniBatchKMeansModel.load(trained["model"]).setDistanceCol("d")
    expected = {r.id: (r.prediction, r.d)
                for r in model.transform(spark.read.parquet(trained["data"])).collect()}
    got = {r.id: (r.prediction, r.distance) for r in preds.collect()}
    assert got.keys() == expected.keys()
    assert all(got[i][0] == expected[i][0] and abs(got[i][1] - expected[i][1]) < 1e-9
               for i in got)
    report = json.loads((out / "quality.json").read_text())
    assert report["rows"] == 600 and report["invalidRows"] == 0 and report["passed"]
    assert "scored 600 rows" in capsys.readouterr().out
    assert not (out / "quarantine").exists()  # no invalid rows: no quarantine table made
    # the same run again replaces; another run adds its own partition
    assert score.main(score_args(trained["data"], trained["model"], out)) == 0
    assert score.main(score_args(trained["data"], trained["model"], out, "r2")) == 0
    counts = {r.run_id: r["count"] for r in spark.read.parquet(str(out / "predictions"))
              .groupBy("run_id").count().collect()}
    assert counts == {"r1": 600, "r2": 600}
    quality = spark.read.parquet(str(out / "quality"))
    assert quality.where("column is null").groupBy("run_id").count().count() == 2


def test_invalid_rows_are_quarantined_and_the_gate_fails_above_threshold(
        spark, trained, tmp_path, capsys):
    df = spark.read.parquet(trained["data"])
    bad = (df.withColumn("x1", F.when(F.col("id") < 12, F.lit(float("nan")))
                         .otherwise(F.col("x1")))
           .withColumn("x2", F.when(F.col("id") == 20, F.lit(None)).otherwise(F.col("x2"))))
    data = str(tmp_path / "bad")
    bad.write.parquet(data)
    out = tmp_path / "out"
    assert score.main(score_args(data, trained["model"], out)) == 0, capsys.readouterr().err
    preds = spark.read.parquet(str(out / "predictions"))
    quarantine = spark.read.parquet(str(out / "quarantine"))
    assert preds.count() == 600 - 13 and quarantine.count() == 13
    reasons = {r.id: r.reason for r in quarantine.collect()}
    assert reasons[0] == "x1: NaN" and reasons[20] == "x2: null"
    assert set(quarantine.columns) >= {"id", "x0", "x1", "x2", "label", "reason", "run_id"}
    report = json.loads((out / "quality.json").read_text())
    assert report["byColumn"] == {"x1": {"NaN": 12}, "x2": {"null": 1}}
    # a re-run does not duplicate the quarantine either
    assert score.main(score_args(data, trained["model"], out)) == 0
    assert spark.read.parquet(str(out / "quarantine")).count() == 13
    # 13 of 600 is 2.2%: a 1% threshold fails the job, after writing the report
    out2 = tmp_path / "out2"
    code = score.main(score_args(data, trained["model"], out2, "r1",
                                 "--set", "quality.max_invalid_fraction=0.01"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "13 invalid rows of 600" in line and "x1: NaN 12" in line
    assert json.loads((out2 / "quality.json").read_text())["passed"] is False
    assert spark.read.parquet(str(out2 / "quarantine")).count() == 13
    assert not (out2 / "predictions").exists()


def test_all_rows_invalid_exit_2(spark, trained, tmp_path, capsys):
    df = spark.read.parquet(trained["data"]).withColumn("x0", F.lit(None).cast("double"))
    data = str(tmp_path / "nulls")
    df.write.parquet(data)
    code = score.main(score_args(data, trained["model"], tmp_path / "o",
                                 "r1", "--set", "quality.max_invalid_fraction=1"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "all 600 rows are invalid" in line and "x0: null 600" in line


@pytest.mark.parametrize("change, expected", [
    (lambda df: df.withColumnRenamed("x1", "x1_new"),
     "feature column(s) ['x1'] removed; column(s) ['x1_new'] added (renamed?)"),
    (lambda df: df.drop("x2"), "feature column(s) ['x2'] removed"),
    (lambda df: df.withColumn("x3", F.col("x0") * 2), "column(s) ['x3'] added"),
    (lambda df: df.withColumn("x0", F.col("x0").cast("string")), "retyped: x0 double -> string"),
    (lambda df: df.withColumn("x0", F.col("x0").cast("float")), "retyped: x0 double -> float"),
])
def test_changed_schema_is_an_error_naming_columns(spark, trained, tmp_path, capsys, change,
                                                   expected):
    data = str(tmp_path / "changed")
    change(spark.read.parquet(trained["data"])).write.parquet(data)
    code = score.main(score_args(data, trained["model"], tmp_path / "o"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and expected in line, line
    assert not (tmp_path / "o").exists()


def test_new_column_may_be_ignored_by_config(spark, trained, tmp_path, capsys):
    data = str(tmp_path / "extra")
    spark.read.parquet(trained["data"]).withColumn("day", F.lit("2026-11-24")) \
        .write.parquet(data)
    code = score.main(score_args(data, trained["model"], tmp_path / "o", "r1",
                                 "--set", "scoring.ignore_columns=[day]",
                                 "--set", "scoring.id_columns=[id, day]"))
    assert code == 0, capsys.readouterr().err
    preds = spark.read.parquet(str(tmp_path / "o" / "predictions"))
    assert {"id", "day"} <= set(preds.columns) and preds.count() == 600


@pytest.mark.parametrize("args, expected", [
    (["--set", "scoring.model=/nonexistent/model"], "/nonexistent/model"),
    (["--set", "input.path=/nonexistent/table"], "/nonexistent/table"),
    (["--set", "scoring.id_columns=[nope]"], "id column(s) ['nope']"),
    (["--set", "scoring.idColumns=[id]"], "scoring.idColumns is not a known key"),
    (["--set", "quality.max_invalid_fraction=abc"], "quality.max_invalid_fraction='abc'"),
    (["--set", "input.features.inputCols=[x0]"], "input.features is not a known key"),
])
def test_bad_config_and_input_exit_2(trained, tmp_path, capsys, args, expected):
    code = score.main(score_args(trained["data"], trained["model"], tmp_path / "o", "r1",
                                 *args))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and expected in line, line


def test_run_id_is_required(trained, tmp_path, capsys):
    args = score_args(trained["data"], trained["model"], tmp_path / "o")
    code = score.main(args[:-2])  # no --run-id, none in the config
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "needs a run id" in line


def test_delta_input_version_and_delta_output(spark, trained, tmp_path, capsys):
    """Score version 0 of a Delta table written by delta-rs into a Delta table: the log
    is valid for delta-rs, and a re-run replaces its partition in a new commit."""
    from deltalake import DeltaTable, write_deltalake

    pdf = spark.read.parquet(trained["data"]).toPandas()
    src = str(tmp_path / "src")
    write_deltalake(src, pdf.iloc[:200])
    write_deltalake(src, pdf.iloc[200:], mode="append")  # version 1: all 600 rows
    out = tmp_path / "out"
    args = score_args(src, trained["model"], out, "r1", "--set", "input.format=delta",
                      "--set", "input.version=0", "--set", "output.format=delta")
    assert score.main(args) == 0, capsys.readouterr().err
    assert score.main(args) == 0
    table = DeltaTable(str(out / "predictions"))
    assert table.metadata().partition_columns == ["run_id"]
    assert table.version() == 1  # created, then the partition replaced
    preds = table.to_pandas()
    assert len(preds) == 200 and sorted(preds["id"]) == sorted(pdf["id"].iloc[:200])
    assert set(preds.columns) == {"id", "prediction", "distance", "run_id"}
    code = score.main(score_args(src, trained["model"], out, "r1", "--set",
                                 "input.format=delta", "--set", "input.version=7"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "version 7" in line


def test_output_table_with_another_schema_exit_2(spark, trained, tmp_path, capsys):
    out = tmp_path / "out"
    spark.createDataFrame([("a", 1)], "name string, run_id int").write \
        .parquet(str(out / "predictions"))
    code = score.main(score_args(trained["data"], trained["model"], out))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "predictions" in line and "name" in line, line


# -- re-runs: a run's quarantine follows its last run; run ids are text ---------------------


def with_nulls(spark, trained, tmp_path, n):
    """The trained table with x0 null in its first ``n`` rows (by id)."""
    path = str(tmp_path / f"nulls{n}")
    spark.read.parquet(trained["data"]).withColumn(
        "x0", F.when(F.col("id") < n, F.lit(None)).otherwise(F.col("x0"))).write.parquet(path)
    return path


def quarantined(spark, out, fmt):
    """{run id: quarantined rows}, read as a user reads the table."""
    table = read_table(spark, str(out / "quarantine"), fmt)
    return {r.run_id: r["count"] for r in table.groupBy("run_id").count().collect()}


def check_clean_rerun_clears_the_runs_quarantine(spark, trained, tmp_path, capsys, fmt):
    dirty = with_nulls(spark, trained, tmp_path, 10)
    out = tmp_path / "out"
    more = ["--set", f"output.format={fmt}"]
    for run in ("r0", "r1"):
        assert score.main(score_args(dirty, trained["model"], out, run, *more)) == 0, \
            capsys.readouterr().err
    assert quarantined(spark, out, fmt) == {"r0": 10, "r1": 10}
    # r1 again on clean input: its 10 quarantine rows go, r0's stay
    assert score.main(score_args(trained["data"], trained["model"], out, "r1", *more)) == 0, \
        capsys.readouterr().err
    report = json.loads((out / "quality.json").read_text())
    assert report["runId"] == "r1" and report["invalidRows"] == 0
    assert "quarantinePath" not in report
    assert quarantined(spark, out, fmt) == {"r0": 10}
    quality = read_table(spark, str(out / "quality"), fmt).where("column is null")
    assert {r.run_id: r["count"] for r in quality.collect()} == {"r0": 10, "r1": 0}
    # a clean run that never had invalid rows leaves the quarantine as it is
    assert score.main(score_args(trained["data"], trained["model"], out, "r2", *more)) == 0
    assert quarantined(spark, out, fmt) == {"r0": 10}
    # r1 dirty again: back in the quarantine
    assert score.main(score_args(dirty, trained["model"], out, "r1", *more)) == 0
    assert quarantined(spark, out, fmt) == {"r0": 10, "r1": 10}


def test_clean_rerun_clears_the_runs_old_quarantine_parquet(spark, trained, tmp_path, capsys):
    check_clean_rerun_clears_the_runs_quarantine(spark, trained, tmp_path, capsys, "parquet")
    table = tmp_path / "out" / "quarantine"
    assert sorted(os.listdir(table / "run_id=r1")) and (table / "run_id=r0").is_dir()
    assert score.main(score_args(trained["data"], trained["model"], tmp_path / "out", "r1")) \
        == 0
    assert not (table / "run_id=r1").exists()  # the partition's directory is gone


def test_clean_rerun_clears_the_runs_old_quarantine_delta(spark, engine, trained, tmp_path,
                                                          capsys):
    from deltalake import DeltaTable

    check_clean_rerun_clears_the_runs_quarantine(spark, trained, tmp_path, capsys, "delta")
    path = str(tmp_path / "out" / "quarantine")
    assert score.main(score_args(trained["data"], trained["model"], tmp_path / "out", "r1",
                                 "--set", "output.format=delta")) == 0
    table = DeltaTable(path)  # delta-rs reads what either engine committed
    assert sorted(table.to_pandas()["run_id"].unique()) == ["r0"]
    last = table.history(1)[0]
    assert last["operation"] == {"spark": "DELETE", "deltalake": "WRITE"}[engine]
    if engine == "deltalake":  # committed as a replacement of r1 by no files
        assert json.loads(last["operationParameters"]["replacedPartitions"]) == [
            {"run_id": "r1"}]


def check_run_ids_007_and_7_stay_apart(spark, path, fmt):
    def rows(n):
        return spark.range(n).withColumn("x", F.col("id") * 0.5)

    write_run_table(rows(3), path, fmt, "7")
    write_run_table(rows(5), path, fmt, "007")
    write_run_table(rows(2), path, fmt, "007")  # a re-run of "007" replaces "007" alone
    df = read_run_table(spark, path, fmt)
    assert df.schema["run_id"].dataType == T.StringType()
    assert {r.run_id: r["count"] for r in df.groupBy("run_id").count().collect()} == {
        "7": 3, "007": 2}
    assert df.where(F.col("run_id") == "007").count() == 2
    write_run_table(rows(0), path, fmt, "007", empty=True)  # "007" gone, "7" stays
    assert {r.run_id: r["count"] for r in read_run_table(spark, path, fmt)
            .groupBy("run_id").count().collect()} == {"7": 3}


def test_run_ids_007_and_7_stay_apart_parquet(spark, tmp_path):
    path = str(tmp_path / "runs")
    check_run_ids_007_and_7_stay_apart(spark, path, "parquet")
    assert [n for n in os.listdir(path) if not n.startswith(("_", "."))] == ["run_id=7"]


def test_run_ids_007_and_7_stay_apart_delta(spark, engine, tmp_path):
    check_run_ids_007_and_7_stay_apart(spark, str(tmp_path / "runs"), "delta")


def test_score_runs_007_and_7_are_two_runs(spark, trained, tmp_path, capsys):
    out = tmp_path / "out"
    dirty = with_nulls(spark, trained, tmp_path, 4)
    for run, data in (("7", dirty), ("007", dirty), ("007", trained["data"])):
        assert score.main(score_args(data, trained["model"], out, run)) == 0, \
            capsys.readouterr().err
    preds = read_run_table(spark, str(out / "predictions"))
    assert {r.run_id: r["count"] for r in preds.groupBy("run_id").count().collect()} == {
        "7": 596, "007": 600}
    assert [r.run_id for r in read_run_table(spark, str(out / "quarantine"))
            .select("run_id").distinct().collect()] == ["7"]
    quality = read_run_table(spark, str(out / "quality")).where("column is null")
    assert {r.run_id: r["count"] for r in quality.collect()} == {"7": 4, "007": 0}
