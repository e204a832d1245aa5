"""Choosing k (minibatch_kmeans.lifecycle.tune and jobs/tune.py) on 4 well-separated blobs
in 3-D."""
import json

import numpy as np
import pytest

from minibatch_kmeans.app.config import Config
from minibatch_kmeans.errors import ConfigError, InvalidInputError, InvalidParamError
from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.lifecycle.tune import choose_k, elbow, recommend
from minibatch_kmeans_jobs import tune as tune_job

COLS = ["x0", "x1", "x2"]
GRID = [2, 3, 4, 5, 6]
PARAMS = dict(inputCols=COLS, batchSize=1000, maxIter=3, seed=7)


@pytest.fixture(scope="module")
def blobs(spark):
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]], dtype=float)
    X = centers[np.repeat(np.arange(4), 750)] + rng.normal(size=(3000, 3))
    return spark.createDataFrame([tuple(map(float, r)) for r in X], ", ".join(
        f"{c} double" for c in COLS)).repartition(3)


@pytest.fixture(scope="module")
def blobs_path(blobs, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tune") / "blobs")
    blobs.write.parquet(path)
    return path


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


# -- the elbow, on plain numbers -------------------------------------------------------


def test_elbow_of_a_convex_decreasing_curve():
    assert elbow([2, 3, 4, 5, 6], [90.0, 40.0, 5.0, 4.5, 4.0]) == 4
    assert elbow([1, 2, 3, 4, 5, 6], [100, 20, 12, 9, 8, 7.5]) == 2
    # unevenly spaced k: x is normalised as well
    assert elbow([5, 10, 20, 40], [50.0, 10.0, 8.0, 7.0]) == 10


def test_elbow_is_none_without_a_bend():
    assert elbow([2, 3, 4], [3.0, 2.0, 1.0]) is None        # a straight line
    assert elbow([2, 3], [9.0, 1.0]) is None                # too few points
    assert elbow([2, 3, 4], [1.0, 1.0, 1.0]) is None        # flat
    assert elbow([2, 3, 4], [5.0, float("nan"), 1.0]) is None
    with pytest.raises(InvalidParamError, match="increasing"):
        elbow([3, 2, 4], [3.0, 2.0, 1.0])


def test_recommend_takes_the_largest_silhouette_and_smallest_k_on_ties():
    grid = [{"k": k, "batch_size": 100, "silhouette": s, "holdout_cost_per_row": c}
            for k, s, c in [(2, 0.5, 90), (3, 0.7, 40), (4, 0.7, 5), (5, None, 4.5),
                            (6, 0.2, 4)]]
    out = recommend(grid)
    assert out["recommended"]["k"] == 3 and out["recommended"]["silhouette"] == 0.7
    assert out["elbow"]["k"] == 4 and out["elbows"] == {"100": 4}
    assert out["metrics"]["recommended_k"] == 3 and out["metrics"]["elbow_k"] == 4


# -- the job and choose_k on Spark -------------------------------------------------------


def job_args(data, out, *more):
    return ["--conf", "conf/tune.yaml", "--set", f"input.path={data}",
            "--set", f"input.features.inputCols=[{', '.join(COLS)}]",
            "--set", f"model.batchSize={PARAMS['batchSize']}",
            "--set", f"model.maxIter={PARAMS['maxIter']}", "--set", f"model.seed={PARAMS['seed']}",
            "--set", f"tune.k={GRID}", "--set", "tune.sample_size=400",
            "--set", f"output.dir={out}", *more]


@pytest.fixture(scope="module")
def job_run(spark, blobs_path, tmp_path_factory):
    """jobs/tune.py run in-process once: (exit code, stdout, stderr, output folder)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("tune_job") / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = tune_job.main(job_args(blobs_path, out))
    return code, stdout.getvalue(), stderr.getvalue(), out


@pytest.fixture(scope="module")
def result(job_run):
    code, _, err, out = job_run
    assert code == 0, err
    return json.loads((out / "tune.json").read_text())


def test_tune_job_end_to_end(spark, job_run, blobs_path):
    code, printed, err, out = job_run
    assert code == 0, err
    for name in ("tune.json", "tune.md", "k_curves.png"):
        assert (out / name).exists(), name
    png = (out / "k_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    md = (out / "tune.md").read_text()
    assert md == printed.rstrip("\n") + "\n"
    assert "**Recommended k = 4**" in md and "Elbow of the holdout cost curve: **k = 4**" in md
    assert "| k | batch size | holdout cost per row | silhouette | seconds |" in md
    assert md.count("\n| ") == 2 + len(GRID)                   # header, rule, one row per k
    saved = json.loads((out / "tune.json").read_text())
    assert saved["files"]["k_curves.png"] == str(out / "k_curves.png")
    assert blobs_path in saved["data"]["input"] and saved["configPath"] == "conf/tune.yaml"
    assert spark.range(3).count() == 3  # the test session is not stopped by the job


def test_choose_k_recommends_4_for_4_blobs(result):
    assert result["recommended"]["k"] == 4
    assert result["elbow"]["k"] == 4 and "Kneedle" in result["elbow"]["method"]
    assert [g["k"] for g in result["grid"]] == GRID
    assert {g["batch_size"] for g in result["grid"]} == {PARAMS["batchSize"]}
    d = result["data"]
    assert d["train_rows"] + d["holdout_rows"] == 3000 and d["invalid_rows"] == 0
    assert 450 < d["holdout_rows"] < 750 and d["sample_rows"] == 400
    costs = [g["holdout_cost_per_row"] for g in result["grid"]]
    assert costs[2] < 0.2 * costs[1]                         # the cost collapses at k=4
    assert costs[2] == pytest.approx(3.0, rel=0.25)          # ~ 3 dims x unit variance
    sil = [g["silhouette"] for g in result["grid"]]
    assert max(sil) == sil[2] > 0.8
    assert all(sum(g["holdout_sizes"]) == d["holdout_rows"] for g in result["grid"])
    assert result["metrics"]["recommended_k"] == 4 and result["metrics"]["elbow_k"] == 4
    assert result["params"]["k_values"] == GRID and result["params"]["seed"] == PARAMS["seed"]


def test_split_and_fit_do_not_depend_on_partitioning(blobs, result):
    """choose_k on the in-memory DataFrame (other partitions than the job's Parquet input)
    holds out the same rows and fits the same model."""
    again = choose_k(blobs.repartition(5), MiniBatchKMeans(**PARAMS), [4],
                     holdout_fraction=0.2, sample_size=400)
    assert again["data"]["holdout_rows"] == result["data"]["holdout_rows"]
    assert again["grid"][0]["holdout_cost_per_row"] == pytest.approx(
        result["grid"][2]["holdout_cost_per_row"], rel=1e-5)
    assert again["elbow"]["k"] is None  # one k: no curve


def test_choose_k_with_batch_sizes_fits_every_pair(blobs):
    params = {k: v for k, v in PARAMS.items() if k != "batchSize"}
    out = choose_k(blobs, MiniBatchKMeans(**params), [4], batch_sizes=[1200, 300],
                   sample_size=300)
    assert [(g["batch_size"], g["k"]) for g in out["grid"]] == [(1200, 4), (300, 4)]
    best = max(out["grid"], key=lambda g: g["silhouette"])
    assert out["recommended"]["batch_size"] == best["batch_size"]
    assert out["elbows"] == {"1200": None, "300": None}  # one k makes no curve


@pytest.mark.parametrize("k_values, params, kwargs, match", [
    ([4, 3], {}, {}, "k_values"),
    ([1, 2], {}, {}, "k_values"),
    ([2, 2, 3], {}, {}, "k_values"),
    ([], {}, {}, "k_values"),
    ([2, 3], {}, dict(holdout_fraction=1.0), "holdout_fraction"),
    ([2, 3], {}, dict(sample_size=2_000_000), r"sample_size=2000000 is invalid"),
    ([2, 3], {}, dict(batch_sizes=[0]), "batch_sizes"),
    ([2, 3], dict(checkpointDir="/tmp/x"), {}, "checkpointDir is set"),
    ([2, 3], dict(distanceMeasure="cosine"), {}, "euclidean"),
    ([2, 3], dict(initSteps=0), {}, "initSteps=0 is invalid"),
])
def test_choose_k_rejects_bad_options_before_any_job(blobs, k_values, params, kwargs, match):
    with pytest.raises(InvalidParamError, match=match):
        choose_k(blobs, MiniBatchKMeans(**PARAMS, **params), k_values, **kwargs)
    with pytest.raises(InvalidParamError, match="expected a configured MiniBatchKMeans"):
        choose_k(blobs, {"k": 3}, [2, 3])


def test_invalid_rows_raise_under_handle_invalid_error(spark):
    df = spark.createDataFrame([(float(i), float(i % 7), float("nan") if i == 3 else 0.0)
                                for i in range(40)], "x0 double, x1 double, x2 double")
    with pytest.raises(InvalidInputError, match=r"1 invalid rows .*NaN.*handleInvalid='skip'"):
        choose_k(df, MiniBatchKMeans(**PARAMS), [2, 3])


def test_fewer_holdout_rows_than_k_is_a_clear_error(spark):
    df = spark.createDataFrame([(float(i), float(i % 7), 0.0) for i in range(40)],
                               "x0 double, x1 double, x2 double")
    with pytest.raises(InvalidInputError, match=r"holdout rows .*largest k=30"):
        choose_k(df, MiniBatchKMeans(**PARAMS), [10, 30], holdout_fraction=0.2)


# -- configuration and the job ---------------------------------------------------------


def _cfg(tune):
    return Config.from_dict({"input": {"path": "p", "features": {"inputCols": COLS}},
                             "output": {"dir": "out/t"}, "tune": tune})


def test_tune_config_is_validated_with_named_errors():
    t = _cfg({"k": [2, 4, 8], "batch_sizes": [100, 50], "holdout_fraction": 0.3}).tune
    assert t.k == (2, 4, 8) and t.batch_sizes == (100, 50) and t.holdout_fraction == 0.3
    assert _cfg(None).tune.k == () and _cfg(None).tune.batch_sizes is None
    for tune, field in [({"k": [4, 2]}, "tune.k"), ({"k": [1, 2]}, "tune.k[0]"),
                        ({"k": 5}, "tune.k"), ({"k": [2, "x"]}, "tune.k[1]"),
                        ({"batch_sizes": [5, 5]}, "tune.batch_sizes"),
                        ({"holdout_fraction": 0}, "tune.holdout_fraction"),
                        ({"sample_size": 1}, "tune.sample_size"),
                        ({"kk": [2]}, "tune.kk")]:
        with pytest.raises(ConfigError, match=field.replace("[", r"\[")):
            _cfg(tune)


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("override, field", [
    ("tune.k=[5, 3]", "tune.k="), ("tune.k=[1, 2]", "tune.k[0]=1"),
    ("tune.k=[]", "tune.k="), ("tune.holdout_fraction=2", "tune.holdout_fraction=2"),
    ("tune.k=null", "tune.k="),
])
def test_bad_grid_exits_2_with_one_line_naming_the_field(blobs_path, tmp_path, capsys,
                                                         override, field):
    code = tune_job.main(job_args(blobs_path, tmp_path / "t", "--set", override))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and field in line
    assert not (tmp_path / "t").exists()


def test_missing_grid_exits_2(blobs_path, tmp_path, capsys):
    code = tune_job.main(job_args(blobs_path, tmp_path / "t", "--set", "tune={}"))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "tune.k is missing" in line


def test_tune_job_logs_an_mlflow_run(result):
    """conf/tune.yaml has an mlflow section: the run goes to the tests' store
    (MLFLOW_TRACKING_URI, set in conftest) with the recommendation and the picture."""
    import os

    from mlflow import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("minibatch-kmeans")
    runs = client.search_runs([exp.experiment_id], "tags.job = 'tune'")
    assert runs, "no tune run logged"
    run = runs[0]
    assert run.data.metrics["recommended_k"] == result["recommended"]["k"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == \
        ["plots/k_curves.png"]
