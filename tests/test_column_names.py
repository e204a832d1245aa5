"""Hostile column names (issue 18): input columns named like the library's own columns
(``key``, ``slot``, ``weight``, ``prediction``, ``reason``, ``run_id``, ``_valid``...) are
kept intact or refused with an error naming the column and what to do, never overwritten
or confused with internal columns; names with spaces, dots, unicode, ``(`` or ``#`` work
end to end (estimator, score and train jobs, MLflow)."""
import json

import numpy as np
import pytest
import mlflow
import pandas as pd
import yaml
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F

from minibatch_kmeans import MiniBatchKMeans, MiniBatchKMeansModel
from minibatch_kmeans.app.config.score import parse_score_config
from minibatch_kmeans.errors import ConfigError, InvalidInputError
from minibatch_kmeans.lifecycle.registry import tracking
from minibatch_kmeans_jobs import score, train

CENTERS = np.array([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0], [-10.0, 10.0, 0.0]])
ODD = ["a.b", "a b", "ü", "f(x)", "#1"]


def blobs(n=300, seed=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return CENTERS[labels] + rng.normal(scale=0.5, size=(n, 3)), labels


def frame(spark, names, extra=None, n=300):
    """Three feature columns named ``names`` (blobs around CENTERS), an ``id`` and
    ``extra`` columns: name -> function of the row index giving a value."""
    X, _ = blobs(n)
    extra = extra or {}
    rows = [(i, *map(float, x), *[f(i) for f in extra.values()]) for i, x in enumerate(X)]
    return spark.createDataFrame(rows, ["id", *names, *extra])


def sorted_centers(model):
    return np.array(sorted(map(tuple, np.round(model.clusterCenters(), 6))))


def fit(df, cols, **params):
    return MiniBatchKMeans(k=3, inputCols=cols, batchSize=100, seed=1, **params).fit(df)


# -- names of the library's own columns as input columns -------------------------------------

@pytest.mark.parametrize("mode", ["local", "pass", "step"])
def test_features_named_key_slot_weight_fit_as_plain_features(spark, mode):
    """Prepared rows have columns key, slot, weight and f0...: input features of those
    names give the same centers as any other names, in every fit mode."""
    plain = fit(frame(spark, ["x", "y", "z"]), ["x", "y", "z"], fitMode=mode)
    named = fit(frame(spark, ["key", "slot", "weight"]), ["key", "slot", "weight"],
                fitMode=mode)
    assert np.allclose(sorted_centers(plain), sorted_centers(named))
    assert named.summary.numRows == 300


@pytest.mark.parametrize("mode", ["local", "pass", "step"])
def test_columns_named_like_internal_ones_are_not_used_unless_named(spark, mode):
    """A ``weight`` column that is not the weightCol, ``_valid`` and ``f0`` columns that
    are not features change nothing; weightCol elsewhere still weighs."""
    plain = fit(frame(spark, ["x", "y", "z"]), ["x", "y", "z"], fitMode=mode)
    hostile = frame(spark, ["x", "y", "z"],
                    {"weight": lambda i: -1e9 if i % 2 else None, "_valid": lambda i: False,
                     "f0": lambda i: float("nan"), "slot": lambda i: -1,
                     "key": lambda i: "k", "__mbkm_prediction": lambda i: 1.0})
    got = fit(hostile, ["x", "y", "z"], fitMode=mode, handleInvalid="skip")
    assert got.summary.numRows == 300
    assert np.allclose(sorted_centers(plain), sorted_centers(got))
    weighted = fit(hostile.withColumn("w", F.lit(2.0)), ["x", "y", "z"], fitMode=mode,
                   weightCol="w")
    assert np.allclose(sorted_centers(plain), sorted_centers(weighted), atol=1e-4)


def test_a_weight_feature_next_to_another_weight_column(spark):
    df = frame(spark, ["weight", "y", "z"], {"w": lambda i: 1.0})
    model = fit(df, ["weight", "y", "z"], weightCol="w")
    assert np.allclose(sorted_centers(model),
                       sorted_centers(fit(frame(spark, ["x", "y", "z"]), ["x", "y", "z"])))
    out = model.transform(df)
    assert out.columns == df.columns + ["prediction"]


def test_valid_named_feature_and_transform_with_skip(spark):
    df = frame(spark, ["_valid", "x", "y"], {"flag": lambda i: i})
    df = df.withColumn("_valid", F.when(F.col("id") == 7, F.lit(None)).otherwise(F.col("_valid")))
    model = fit(df, ["_valid", "x", "y"], handleInvalid="skip")
    assert model.summary.numRows == 299
    out = model.setDistanceCol("distance").transform(df)
    assert out.count() == 299
    assert out.columns == df.columns + ["prediction", "distance"]
    kept = {r.id: r._valid for r in out.collect()}
    src = {r.id: r._valid for r in df.collect()}
    assert all(kept[i] == src[i] for i in kept)


def test_transform_refuses_output_columns_that_exist(spark):
    """As MLlib: predictionCol or distanceCol naming an input column (a feature or not,
    in any case) is refused, naming the column and the Param to change."""
    df = frame(spark, ["prediction", "y", "z"])
    model = fit(df, ["prediction", "y", "z"])
    with pytest.raises(InvalidInputError, match="'prediction'.*predictionCol"):
        model.transform(df)
    out = model.setPredictionCol("cluster").transform(df)
    assert out.columns == df.columns + ["cluster"]
    assert out.select("prediction").collect() == df.select("prediction").collect()
    with pytest.raises(InvalidInputError, match="'y'.*distanceCol"):
        model.setDistanceCol("Y").transform(df)
    with pytest.raises(InvalidInputError, match="'id'.*predictionCol='ID'"):
        model.setPredictionCol("ID").transform(df)
    with pytest.raises(InvalidInputError, match="predictionCol and distanceCol are both"):
        model.setPredictionCol("c").setDistanceCol("C").transform(df)


def test_internal_struct_column_of_transform_never_overwrites_input(spark):
    df = frame(spark, ["x", "y", "z"], {"__mbkm_prediction": lambda i: i * 1.5})
    model = fit(df, ["x", "y", "z"]).setDistanceCol("distance")
    out = model.transform(df)
    assert out.columns == df.columns + ["prediction", "distance"]
    assert [r["__mbkm_prediction"] for r in out.orderBy("id").collect()] == \
        [i * 1.5 for i in range(300)]


# -- names with dots, spaces, unicode, parentheses and # --------------------------------------

def test_odd_names_as_input_columns_fit_transform_save_load(spark, tmp_path):
    cols = ["a.b", "a b", "ü"]
    df = frame(spark, cols, {"f(x)": lambda i: 1.0 + i % 2, "#1": lambda i: i})
    for mode in ("local", "pass", "step"):
        model = fit(df, cols, fitMode=mode, weightCol="f(x)")
        assert model.summary.numRows == 300
    model.setPredictionCol("c.l u(s)#").setDistanceCol("d ü.1")
    out = model.transform(df)
    assert out.columns == df.columns + ["c.l u(s)#", "d ü.1"]
    path = str(tmp_path / "model")
    model.write().save(path)
    same = MiniBatchKMeansModel.load(path)
    assert same.featureSchema["columns"] == cols
    again = same.transform(df)
    assert again.select("`c.l u(s)#`").collect() == out.select("`c.l u(s)#`").collect()
    assert np.isclose(same.computeCost(df), model.computeCost(df))


@pytest.mark.parametrize("name", ODD)
def test_odd_names_as_features_and_weight_columns(spark, name):
    X, _ = blobs()
    rows = [(Vectors.dense(x), [float(v) for v in x], 1.0 + i % 2) for i, x in enumerate(X)]
    df = spark.createDataFrame(rows, [name, name + " arr", "w " + name])
    for col in (name, name + " arr"):
        for mode in ("local", "step"):
            model = MiniBatchKMeans(k=3, featuresCol=col, weightCol="w " + name,
                                    batchSize=100, seed=1, fitMode=mode,
                                    distanceCol="d").fit(df)
            assert model.summary.numRows == 300
        out = model.transform(df.withColumn("id", F.monotonically_increasing_id()))
        assert out.where("d is null").count() == 0


# -- the jobs ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def write_conf(tmp_path, name, conf):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    return str(path)


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def odd_table(spark, tmp_path_factory):
    """Features with odd names, an odd id column, and 6 invalid rows."""
    root = tmp_path_factory.mktemp("odd")
    X, _ = blobs(600)
    rows = [(f"#{i}", *map(float, x)) for i, x in enumerate(X)]
    rows[5] = (rows[5][0], None, rows[5][2], rows[5][3])
    rows[6] = (rows[6][0], rows[6][1], float("nan"), rows[6][3])
    for i in (7, 8, 9, 10):
        rows[i] = (rows[i][0], rows[i][1], rows[i][2], 1e6)
    df = spark.createDataFrame(rows, ["#id", "a.b", "a b", "f(x)ü"])
    path = str(root / "table")
    df.write.parquet(path)
    return {"root": root, "data": path}


def score_conf(data, model, out, **more):
    conf = {"input": {"path": data}, "scoring": {"model": model, "id_columns": ["#id"]},
            "quality": {"max_invalid_fraction": 0.05, "ranges": {"f(x)ü": [None, 100]}},
            "output": {"dir": str(out)}, "run_id": "r.1"}
    for key, value in more.items():
        conf[key].update(value)
    return conf


def test_train_and_score_jobs_with_odd_column_names(spark, odd_table, tmp_path, capsys):
    cols = ["a.b", "a b", "f(x)ü"]
    train_out = tmp_path / "train"
    conf = {"input": {"path": odd_table["data"], "features": {"inputCols": cols}},
            "model": {"k": 3, "batchSize": 200, "handleInvalid": "skip"},
            "quality": {"ranges": {"f(x)ü": [None, 100]}},
            "output": {"dir": str(train_out)},
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "model_name": "odd",
                       "holdout_fraction": 0.2}}
    code = train.main(["--conf", write_conf(tmp_path, "train.yaml", conf), "--run-id", "t1"])
    assert code == 0, capsys.readouterr().err
    model = str(train_out / "model")
    registry = tracking(f"sqlite:///{tmp_path}/mlflow.db", "minibatch-kmeans")
    champion = registry.champion("odd")
    assert json.loads(champion.tags["feature_schema"])["columns"] == cols
    assert set(registry.json_tag(champion, "reference_stats")["features"]) == set(cols)
    pyfunc = mlflow.pyfunc.load_model("models:/odd@champion")
    X, _ = blobs(5)
    got = pyfunc.predict(pd.DataFrame(X, columns=cols))["prediction"].tolist()
    assert got == [MiniBatchKMeansModel.load(model).predict(x) for x in X]
    quarantine = spark.read.parquet(str(train_out / "quarantine"))
    assert quarantine.count() == 6
    out = tmp_path / "score"
    code = score.main(["--conf", write_conf(tmp_path, "score.yaml", score_conf(
        odd_table["data"], model, out, scoring={"prediction_col": "clu ster.#",
                                                "distance_col": "dist(ü)"}))])
    assert code == 0, capsys.readouterr().err
    preds = spark.read.parquet(str(out / "predictions"))
    assert sorted(preds.columns) == ["#id", "clu ster.#", "dist(ü)", "run_id"]
    assert preds.count() == 594
    reasons = {r["#id"]: r.reason for r in spark.read.parquet(str(out / "quarantine"))
               .collect()}
    assert reasons["#5"] == "a.b: null" and reasons["#6"] == "a b: NaN"
    assert reasons["#7"] == "f(x)ü: above max"
    report = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    assert report["byColumn"] == {"a.b": {"null": 1}, "a b": {"NaN": 1},
                                  "f(x)ü": {"above max": 4}}
    quality = {(r.column, r.reason): r["count"]
               for r in spark.read.parquet(str(out / "quality")).collect()}
    assert quality[("f(x)ü", "above max")] == 4


def test_score_job_keeps_or_refuses_columns_named_like_its_outputs(
        spark, odd_table, tmp_path, capsys):
    """A scoring table with columns ``reason``, ``run_id`` or ``prediction``: kept where
    they reach no output, refused up front where they would be overwritten."""
    cols = ["a.b", "a b", "f(x)ü"]
    clean = spark.read.parquet(odd_table["data"]).where(F.col("`#id`") > "#2")
    model = fit(clean, cols, handleInvalid="skip")
    model_path = str(tmp_path / "model")
    model.write().save(model_path)
    hostile = (spark.read.parquet(odd_table["data"])
               .withColumn("reason", F.lit("mine")).withColumn("run_id", F.lit("theirs"))
               .withColumn("prediction", F.lit(-5)))
    data = str(tmp_path / "hostile")
    hostile.write.parquet(data)
    ignore = {"ignore_columns": ["reason", "run_id", "prediction"]}
    out = tmp_path / "out"
    conf = score_conf(data, model_path, out, scoring=ignore)
    assert score.main(["--conf", write_conf(tmp_path, "s.yaml", conf)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "'reason'" in line and "'run_id'" in line and "quarantine" in line
    assert not out.exists()
    # without a quarantine table they reach no output: scored, and the input kept as is
    conf["output"]["quarantine"] = None
    assert score.main(["--conf", write_conf(tmp_path, "s.yaml", conf)]) == 0, \
        capsys.readouterr().err
    preds = spark.read.parquet(str(out / "predictions"))
    assert preds.count() == 594 and preds.where("run_id != 'r.1'").count() == 0
    assert sorted(preds.columns) == ["#id", "distance", "prediction", "run_id"]
    assert preds.where("prediction < 0").count() == 0


def test_train_job_refuses_input_columns_its_quarantine_would_overwrite(
        spark, odd_table, tmp_path, capsys):
    df = spark.read.parquet(odd_table["data"]).withColumn("Reason", F.lit("mine"))
    data = str(tmp_path / "t")
    df.write.parquet(data)
    conf = {"input": {"path": data, "features": {"inputCols": ["a.b", "a b", "f(x)ü"]}},
            "model": {"k": 3, "batchSize": 200, "handleInvalid": "skip"},
            "output": {"dir": str(tmp_path / "train")}, "mlflow": None}
    assert train.main(["--conf", write_conf(tmp_path, "t.yaml", conf)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "'Reason'" in line and "output.quarantine" in line
    assert not (tmp_path / "train").exists()


def test_score_config_refuses_id_columns_named_like_its_outputs_in_any_case():
    base = {"input": {"path": "t"}, "output": {"dir": "o"}}
    for ids, more in ((["Run_ID"], {}), (["Prediction"], {}),
                      (["id"], {"prediction_col": "D", "distance_col": "d"})):
        with pytest.raises(ConfigError, match="distinct output column names"):
            parse_score_config({**base, "scoring": {"model": "m", "id_columns": ids, **more}})


def test_mlflow_names_from_column_names_are_sanitised(tmp_path):
    """Metric, param and tag names made of column names are logged under names MLflow
    accepts (it refuses ``(``, ``#``, ``/`` paths, a leading ``..``, more than 250
    characters), distinct from each other; the values are not changed."""
    registry = tracking(f"sqlite:///{tmp_path}/mlflow.db", "names")
    long = "x" * 300
    metrics = {"psi.f(x)ü": 0.1, "psi.f_x_ü": 0.2, "psi.#1": 0.3, "psi.a b.c": 0.4,
               "..": 0.5, "a/../b": 0.6, long: 0.7, "k:v": 0.8}
    params = {"features": {"f(x)": "f(x)", "#1": 1}, "ok name": "a.b"}
    with registry.log_run("odd", params=params, metrics=metrics,
                          tags={"column.#id": "#id"}) as run:
        run_id = run.info.run_id
    data = registry.client.get_run(run_id).data
    assert sorted(data.metrics.values()) == sorted(metrics.values())
    assert data.metrics["psi.f_x_ü"] == 0.2 and data.metrics["psi.a b.c"] == 0.4
    assert data.metrics["psi._1"] == 0.3 and data.metrics["_.."] == 0.5
    renamed = [k for k, v in data.metrics.items() if v == 0.1][0]
    assert renamed.startswith("psi.f_x_ü-") and len(renamed) == len("psi.f_x_ü-") + 8
    assert max(map(len, data.metrics)) == 250
    assert data.params == {"features.f_x_": "f(x)", "features._1": "1", "ok name": "a.b"}
    assert data.tags["column._id"] == "#id"


def test_features_named_like_the_evaluation_columns(spark):
    """choose_k and the holdout measures add columns of their own (``_part``, ``_h``,
    ``_pred``) next to the features: features of those names, or with dots and spaces,
    are measured as any others."""
    from minibatch_kmeans.lifecycle.tune import choose_k

    names = ["_part", "_h", "_pred"]
    results = []
    for cols in (["x", "y", "z"], names, ["_part_1", "a.b", "_pred c"]):
        df = frame(spark, cols, n=400)
        est = MiniBatchKMeans(inputCols=cols, batchSize=100, seed=1)
        result = choose_k(df, est, [2, 3], holdout_fraction=0.3, sample_size=200)
        results.append([(r["k"], round(r["holdout_cost_per_row"], 6), round(r["silhouette"], 6))
                        for r in result["grid"]])
    assert results[0] == results[1] == results[2]
