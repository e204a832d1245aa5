"""The jobs, run in-process on the test session: generate_data, then train."""
import json

import pytest

from minibatch_kmeans import MiniBatchKMeansModel
from minibatch_kmeans_jobs import generate_data, train

FEATURES = "[x0, x1, x2, x3]"


@pytest.fixture(scope="module")
def blobs_path(spark, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data") / "blobs")
    code = generate_data.main(["--out", out, "--rows", "2000", "--features", "4", "--k", "3",
                               "--seed", "5", "--imbalance", "2", "--outlier-fraction", "0.01",
                               "--chunk-rows", "500", "--partitions", "2"])
    assert code == 0
    return out


def train_args(data, out, *more):
    return ["--conf", "conf/local.yaml", "--set", f"input.path={data}",
            "--set", f"input.features.inputCols={FEATURES}", "--set", "model.k=3",
            "--set", "model.batchSize=500", "--set", f"output.dir={out}",
            "--set", "mlflow=", *more]  # no MLflow unless a test says so


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def test_generate_data_writes_table_and_centers(spark, blobs_path, capsys):
    df = spark.read.parquet(blobs_path)
    assert df.count() == 2000
    assert [c for c in df.columns if c.startswith("x")] == ["x0", "x1", "x2", "x3"]
    centers = spark.read.parquet(blobs_path + "_centers")
    assert centers.count() == 3


def test_train_end_to_end(spark, blobs_path, tmp_path, capsys):
    out = tmp_path / "train"
    code = train.main(train_args(blobs_path, out))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    model = MiniBatchKMeansModel.load(str(out / "model"))
    assert len(model.clusterCenters()) == 3 and model.numFeatures == 4
    summary = json.loads((out / "summary.json").read_text())
    for key in ("trainingCost", "numSteps", "stopReason", "history", "clusterSizes",
                "inputPath", "modelPath", "jobFitSeconds"):
        assert key in summary
    assert summary["inputRows"] == 2000 and summary["k"] == 3
    assert summary["numPasses"] == len(summary["history"]) >= 2  # epochs, then exact
    assert summary["numSteps"] >= 1
    assert summary["modelPath"] == str(out / "model")
    png = (out / "convergence.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert "| stop reason" in captured.out and "| training cost" in captured.out
    assert str(out / "model") in captured.out and str(out / "convergence.png") in captured.out
    # the test session is not stopped by the job
    assert spark.range(3).count() == 3


def test_bad_config_exits_2_with_one_line(blobs_path, tmp_path, capsys):
    code = train.main(train_args(blobs_path, tmp_path / "t", "--set", "model.k=1"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "model.k=1" in line


def test_a_database_tracking_uri_without_its_driver_exits_2_before_training(
        blobs_path, tmp_path, capsys):
    """postgresql:// without psycopg2 installed: one line naming the package, exit 2,
    nothing trained or written, and the URI's password not shown."""
    pytest.importorskip("sqlalchemy")
    if __import__("importlib").util.find_spec("psycopg2") is not None:
        pytest.skip("psycopg2 is installed here")
    code = train.main(train_args(blobs_path, tmp_path / "t", "--set",
                                 "mlflow.tracking_uri=postgresql://bob:S3CRET@127.0.0.1/m"))
    err = capsys.readouterr().err
    line = one_error_line(err)
    assert code == 2 and "psycopg2" in line and "pip install psycopg2-binary" in line
    assert "S3CRET" not in err and not (tmp_path / "t").exists()


def test_unknown_key_and_missing_conf_exit_2(blobs_path, tmp_path, capsys):
    assert train.main(train_args(blobs_path, tmp_path / "t", "--set", "model.kk=3")) == 2
    assert "model.kk" in one_error_line(capsys.readouterr().err)
    assert train.main(["--conf", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in one_error_line(capsys.readouterr().err)


def test_missing_input_exits_2(spark, tmp_path, capsys):
    missing = str(tmp_path / "no_such_table")
    code = train.main(train_args(missing, tmp_path / "t"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "no_such_table" in line
    assert not (tmp_path / "t").exists()


def test_input_without_the_feature_columns_exits_2(spark, blobs_path, tmp_path, capsys):
    code = train.main(train_args(blobs_path, tmp_path / "t", "--set",
                                 "input.features.inputCols=[x0, nope]"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "'nope'" in line


def test_generate_data_bad_arguments_exit_2(tmp_path, capsys):
    assert generate_data.main(["--out", str(tmp_path / "b"), "--imbalance", "0.5"]) == 2
    assert "imbalance=0.5" in one_error_line(capsys.readouterr().err)
    assert generate_data.main(["--rows", "many"]) == 2  # argparse says why
    assert "--rows" in capsys.readouterr().err
    assert generate_data.main(["--help"]) == 0


@pytest.fixture(scope="module")
def dirty_path(spark, blobs_path, tmp_path_factory):
    """The blobs with x1 NaN on 10 rows and x3 null on 2 (12 of 2000: 0.6%)."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(blobs_path)
    df = (df.withColumn("x1", F.when(F.col("id") < 10, F.lit(float("nan")))
                        .otherwise(F.col("x1")))
          .withColumn("x3", F.when(F.col("id").isin(100, 101), F.lit(None))
                      .otherwise(F.col("x3"))))
    out = str(tmp_path_factory.mktemp("dirty") / "blobs")
    df.write.parquet(out)
    return out


def test_train_quality_gate_quarantine_and_output_tables(spark, dirty_path, tmp_path, capsys):
    out = tmp_path / "train"
    code = train.main(train_args(dirty_path, out, "--set", "model.handleInvalid=skip",
                                 "--set", "run_id=day1"))
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputRows"], summary["invalidRows"], summary["numRows"]) == \
        (2000, 12, 1988)
    assert summary["runId"] == "day1"
    quarantine = spark.read.parquet(str(out / "quarantine"))
    assert quarantine.count() == 12
    assert {r.reason for r in quarantine.collect()} == {"x1: NaN", "x3: null"}
    report = json.loads((out / "quality.json").read_text())
    assert report["byColumn"] == {"x1": {"NaN": 10}, "x3": {"null": 2}} and report["passed"]
    centers = spark.read.parquet(str(out / "centers"))
    assert centers.count() == 3 and set(centers.columns) == {"cluster", "center", "weight",
                                                             "size", "run_id"}
    assert sum(r.size for r in centers.collect()) == 1988
    metrics = spark.read.parquet(str(out / "metrics")).collect()
    assert len(metrics) == 1 and metrics[0].num_rows == 1988 and metrics[0].run_id == "day1"
    assert metrics[0].training_cost == pytest.approx(summary["trainingCost"])
    # a re-run of the same run id replaces its rows
    assert train.main(train_args(dirty_path, out, "--set", "model.handleInvalid=skip",
                                 "--set", "run_id=day1")) == 0
    assert spark.read.parquet(str(out / "metrics")).count() == 1
    assert spark.read.parquet(str(out / "centers")).count() == 3


def test_train_gate_fails_on_threshold_or_handle_invalid_error(dirty_path, tmp_path, capsys):
    code = train.main(train_args(dirty_path, tmp_path / "a", "--set", "model.handleInvalid=skip",
                                 "--set", "quality.max_invalid_fraction=0.001"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "12 invalid rows of 2000 (0.60%)" in line
    assert not (tmp_path / "a" / "model").exists()
    assert (tmp_path / "a" / "quality.json").exists()
    code = train.main(train_args(dirty_path, tmp_path / "b"))  # handleInvalid=error
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "12 invalid rows" in line and "model.handleInvalid=error" in line
    assert str(tmp_path / "b" / "quarantine") in line


def test_train_registers_the_model_in_mlflow(spark, blobs_path, tmp_path, capsys):
    from minibatch_kmeans.lifecycle.registry import tracking, version_tags

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "train"
    args = train_args(blobs_path, out, "--set", f"mlflow.tracking_uri={uri}",
                      "--set", "mlflow.model_name=blobs", "--set", "mlflow.holdout_fraction=0.2",
                      "--set", "run_id=r1")
    assert train.main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["registeredModel"] == "blobs" and summary["registeredVersion"] == "1"
    assert 1400 < summary["numRows"] < 1800  # about 20% held out
    registry = tracking(uri, "minibatch-kmeans")
    champion = registry.champion("blobs")
    assert champion is not None and str(champion.version) == "1"
    tags = version_tags(champion)
    assert tags["training_table"] == summary["inputPath"]
    assert tags["holdout_metrics"]["rows"] == 2000 - summary["numRows"]
    # measured as the monitor measures a challenger: cost per row and silhouette
    assert tags["holdout_metrics"]["costPerRow"] > 0
    assert 0.5 < tags["holdout_metrics"]["silhouette"] <= 1
    reference = registry.json_tag(champion, "reference_stats")
    assert set(reference["features"]) == {"x0", "x1", "x2", "x3"}
    run = registry.client.get_run(champion.run_id)
    assert run.data.tags["run_id"] == "r1" and "trainingCost" in run.data.metrics
    # a second run registers version 2 and leaves the champion alone
    assert train.main(args) == 0
    assert str(registry.champion("blobs").version) == "1"
