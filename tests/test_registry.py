"""minibatch_kmeans.lifecycle.registry on a throwaway local SQLite MLflow store (one per module).

One tiny fit (version 1) and one hand-built model (version 2) are registered once; the tests
then move aliases, load the champion as pyfunc in a fresh process without Spark and as a Spark
model, race two promotions in two processes, and race promotions and rollbacks in two
threads at the moment both have checked the alias (tests/registry_race.py)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402

from helpers import blobs, cols, columns_df  # noqa: E402
from minibatch_kmeans import MiniBatchKMeans, MiniBatchKMeansModel  # noqa: E402
from minibatch_kmeans.lifecycle.registry import (RegistryError, SavedModel,  # noqa: E402
                                                 default_tracking_uri, tracking, version_tags)
from minibatch_kmeans.spark.features import FeatureSpec  # noqa: E402
from registry_race import CheckedAtOnce  # noqa: E402

NAME = "kmeans-test"
EXPERIMENT = "minibatch-kmeans-test"


def ver(mv) -> str:
    return str(mv.version)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The embedded default store (no URI given) rooted in a temp dir, not the repo's out/."""
    root = tmp_path_factory.mktemp("mlflow-root")
    saved_env = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
                 if k in os.environ}
    prev_uri = mlflow.get_tracking_uri()
    reg = tracking(experiment=EXPERIMENT, root=str(root / "out"))
    yield root, reg
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(prev_uri)
    os.environ.update(saved_env)


@pytest.fixture(scope="module")
def reg(store):
    return store[1]


@pytest.fixture(scope="module")
def data():
    X, _, _ = blobs(n=90, k=3, d=3, seed=5)
    return X


@pytest.fixture(scope="module")
def fitted(spark, data):
    df = columns_df(spark, data, partitions=1)
    return MiniBatchKMeans(k=3, inputCols=cols(3), batchSize=90, maxIter=1, seed=1,
                           initMode="random", prepareStorage="memory").fit(df)


@pytest.fixture(scope="module")
def versions(reg, fitted, tmp_path_factory):
    """Version 1: the fit, with its metadata; version 2: a hand-built model."""
    png = tmp_path_factory.mktemp("png") / "convergence.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    with reg.log_run("train", params={"k": 3, "fit": {"batchSize": 90}},
                     metrics={"cost": fitted.summary.trainingCost, "bad": float("nan")},
                     pngs=[str(png)], tags={"job": "train"}) as run:
        v1 = reg.log_model(fitted, NAME, training_table="main.ml.blobs", delta_version=7,
                           holdout_metrics={"cost": 12.5, "silhouette": 0.9},
                           reference_stats={"mean": [1.0, 2.0, 3.0], "count": 90})
    centers = np.array(fitted.clusterCenters())[::-1] + 0.5
    other = MiniBatchKMeansModel(centers, np.ones(3), FeatureSpec("columns", tuple(cols(3)), 3),
                                 {c: "double" for c in cols(3)}).setInputCols(cols(3))
    v2 = reg.log_model(other, NAME, tags={"note": "hand-built"})
    return run.info.run_id, v1, v2


def test_on_databricks_the_default_store_is_the_workspace_and_unity_catalog(monkeypatch):
    """DATABRICKS_RUNTIME_VERSION set (a Databricks cluster or serverless): the workspace's
    tracking server and the Unity Catalog registry, unless configured otherwise."""
    from minibatch_kmeans.lifecycle.registry import default_registry_uri

    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    assert default_tracking_uri() == "databricks"
    assert default_registry_uri("databricks") == "databricks-uc"
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    assert default_tracking_uri().startswith("sqlite:///")
    assert default_registry_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_default_store_is_sqlite_under_out(store, tmp_path):
    root, reg = store
    assert default_tracking_uri() == "sqlite:///" + os.path.abspath("out/mlflow/mlflow.db")
    assert default_tracking_uri(str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert mlflow.get_tracking_uri() == f"sqlite:///{root}/out/mlflow/mlflow.db"
    assert (root / "out" / "mlflow" / "mlflow.db").is_file()
    exp = reg.client.get_experiment(reg.experiment_id)
    assert exp.name == EXPERIMENT
    assert exp.artifact_location == f"file://{root}/out/mlflow/artifacts"


def test_run_logs_params_metrics_pngs_and_tags(reg, versions):
    run_id, v1, _ = versions
    run = reg.client.get_run(run_id)
    assert run.data.params == {"k": "3", "fit.batchSize": "90"}
    assert set(run.data.metrics) == {"cost", "holdout.cost", "holdout.silhouette"}
    assert run.data.tags["job"] == "train"
    assert [a.path for a in reg.client.list_artifacts(run_id, "plots")] == [
        "plots/convergence.png"]
    assert v1.run_id == run_id


def test_versions_carry_metadata_tags(reg, versions, fitted):
    _, v1, v2 = versions
    assert (ver(v1), ver(v2)) == ("1", "2")
    tags = version_tags(reg.client.get_model_version(NAME, "1"))
    assert tags["training_table"] == "main.ml.blobs" and tags["delta_version"] == "7"
    assert tags["feature_schema"] == fitted.featureSchema
    assert tags["input_schema"] == fitted.inputSchema
    assert tags["holdout_metrics"] == {"cost": 12.5, "silhouette": 0.9}
    assert tags["holdout.cost"] == "12.5"
    assert tags["reference_stats"] == {"mean": [1.0, 2.0, 3.0], "count": 90}
    assert tags["training_info"]["trainingCost"] == pytest.approx(fitted.summary.trainingCost)
    assert (tags["k"], tags["num_features"], tags["distance_measure"]) == ("3", "3", "euclidean")
    assert version_tags(reg.client.get_model_version(NAME, "2"))["note"] == "hand-built"


def test_champion_pyfunc_scores_like_spark_in_a_fresh_process_without_spark(
        spark, reg, versions, fitted, data, tmp_path):
    reg.promote(NAME, 1)
    assert ver(reg.champion(NAME)) == "1"
    pdf = pd.DataFrame(data, columns=cols(3))
    pdf.to_parquet(tmp_path / "input.parquet")
    # pyspark cannot even be imported there: a serving image need not carry it
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["pyspark"] = None
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({mlflow.get_tracking_uri()!r})
        model = mlflow.pyfunc.load_model("models:/{NAME}@champion")
        out = model.predict(pd.read_parquet("input.parquet"), params={{"with_distance": True}})
        json.dump({{"prediction": out["prediction"].tolist(),
                   "distance": out["distance"].tolist(),
                   "spark_modules": sorted(m for m in sys.modules
                                           if m.startswith("pyspark") and sys.modules[m])}},
                  sys.stdout)
    """)
    # no Java and no Spark install reachable: starting a JVM would fail
    env = dict(os.environ, JAVA_HOME="/nonexistent-java", SPARK_HOME="/nonexistent-spark",
               PATH=os.path.dirname(sys.executable), PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["spark_modules"] == []
    requirements = mlflow.pyfunc.get_model_dependencies(f"models:/{NAME}@champion")
    with open(requirements) as f:
        assert not [r for r in f.read().split() if r.lower().startswith("pyspark")]

    sdf = spark.createDataFrame(pdf.assign(id=range(len(pdf))))
    want = (fitted.copy().setDistanceCol("distance").transform(sdf).toPandas()
            .sort_values("id"))
    np.testing.assert_array_equal(got["prediction"], want["prediction"].to_numpy())
    np.testing.assert_allclose(got["distance"], want["distance"].to_numpy(), rtol=1e-5)

    # and in this process: the default output is the prediction column alone
    local = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(pdf)
    assert list(local.columns) == ["prediction"]
    np.testing.assert_array_equal(local["prediction"], want["prediction"].to_numpy())


def test_load_champion_spark_is_the_registered_model(spark, reg, versions, fitted, data):
    reg.promote(NAME, 1)
    mv, model = reg.load_champion_spark(NAME)
    assert ver(mv) == "1"
    assert isinstance(model, MiniBatchKMeansModel)
    np.testing.assert_array_equal(np.array(model.clusterCenters()),
                                  np.array(fitted.clusterCenters()))
    assert model.featureSchema == fitted.featureSchema
    assert model.uid == fitted.uid and model.getInputCols() == cols(3)
    df = columns_df(spark, data, partitions=1)
    assert (model.transform(df).select("prediction").collect()
            == fitted.transform(df).select("prediction").collect())


def test_rollback_restores_the_earlier_champion(reg, versions):
    reg.promote(NAME, 1)
    reg.promote(NAME, 2, reason="lower holdout cost")
    v2 = reg.client.get_model_version(NAME, "2")
    assert ver(reg.champion(NAME)) == "2"
    assert v2.tags["previous_champion"] == "1"
    assert v2.tags["champion_reason"] == "lower holdout cost"

    restored = reg.rollback(NAME, reason="drift alarm")
    assert ver(restored) == "1" and ver(reg.champion(NAME)) == "1"
    assert reg.client.get_model_version(NAME, "2").tags["rolled_back_from_champion"].endswith(
        ": drift alarm")
    assert "from version 2" in restored.tags["restored_as_champion"]


def test_compare_and_set_refuses_a_stale_promotion(reg, versions):
    reg.promote(NAME, 1)
    with pytest.raises(RegistryError, match="expected the alias on version 2, but it is on "
                                            "version 1"):
        reg.promote(NAME, 2, expected_current=2)
    assert ver(reg.champion(NAME)) == "1"
    reg.promote(NAME, 2, expected_current=1)
    assert ver(reg.champion(NAME)) == "2"
    reg.promote(NAME, 1, "challenger", expected_current=None)
    assert ver(reg.version_for(NAME, "challenger")) == "1"
    assert ver(reg.champion(NAME)) == "2"


def test_two_promotions_at_once_leave_one_champion(reg, versions, tmp_path):
    # Two processes move the alias of the same model at the same moment, 8 times over
    # (one model each round, so every round races on an alias no version holds yet:
    # MLflow's store inserts it after a read, and one in six such races used to fail).
    _, v1, v2 = versions
    names = [f"kmeans-race-{r}" for r in range(8)]
    for name in names:
        reg.client.create_registered_model(name)
        for mv in (v1, v2):
            reg.client.create_model_version(name, mv.source)
    script = textwrap.dedent(f"""
        import os, sys, time
        from minibatch_kmeans.lifecycle.registry import tracking
        reg = tracking({mlflow.get_tracking_uri()!r}, experiment={EXPERIMENT!r})
        version = sys.argv[1]
        for name in {names!r}:
            open(f"ready-{{name}}-{{version}}", "w").close()
            deadline = time.time() + 60
            while not all(os.path.exists(f"ready-{{name}}-{{v}}") for v in ("1", "2")):
                if time.time() > deadline:
                    sys.exit("the other process did not reach " + name)
                time.sleep(0.001)
            reg.promote(name, version)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, v], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for v in ("1", "2")]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), [err[-2000:] for _, err, _ in results]

    for name in names:
        holders = [v for v in ("1", "2")
                   if "champion" in reg.client.get_model_version(name, v).aliases]
        assert len(holders) == 1, (name, holders)
        assert ver(reg.champion(name)) == holders[0]


def new_model(reg, versions, name, n=3):
    """A registered model ``name`` with ``n`` versions (of version 1's artifact)."""
    reg.client.create_registered_model(name)
    for _ in range(n):
        reg.client.create_model_version(name, versions[1].source)


def test_two_promoters_checked_at_once_exactly_one_wins(reg, versions):
    name = "kmeans-cas"
    new_model(reg, versions, name)
    reg.promote(name, 1)
    racing = CheckedAtOnce(reg)
    results = racing.race(lambda: racing.promote(name, 2, expected_current=1),
                          lambda: racing.promote(name, 3, expected_current=1))
    lost = [r for r in results if isinstance(r, Exception)]
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1, results
    winner, loser = ver(won[0]), "3" if ver(won[0]) == "2" else "2"
    assert isinstance(lost[0], RegistryError)
    assert (f"cannot promote {name} version {loser} to 'champion': expected the alias on "
            f"version 1, but it is on version {winner}") == str(lost[0])
    assert ver(reg.champion(name)) == winner
    assert reg.client.get_model_version(name, winner).tags["previous_champion"] == "1"
    assert "previous_champion" not in reg.client.get_model_version(name, loser).tags


def test_a_rollback_racing_a_promotion_leaves_a_consistent_alias(reg, versions):
    def tags(name, v):
        return reg.client.get_model_version(name, v).tags

    # both unconditional: they take turns, and the end state is one order or the other
    name = "kmeans-rollback-race"
    new_model(reg, versions, name)
    reg.promote(name, 1)
    reg.promote(name, 2)
    racing = CheckedAtOnce(reg)
    results = racing.race(lambda: racing.promote(name, 3), lambda: racing.rollback(name))
    assert not any(isinstance(r, Exception) for r in results), results
    if ver(reg.champion(name)) == "2":  # promoted 3, then rolled it back
        assert tags(name, "3")["previous_champion"] == "2"
        assert "rolled_back_from_champion" in tags(name, "3")
        assert "from version 3" in tags(name, "2")["restored_as_champion"]
    else:  # rolled 2 back to 1, then promoted 3 over 1
        assert ver(reg.champion(name)) == "3"
        assert tags(name, "3")["previous_champion"] == "1"
        assert "rolled_back_from_champion" in tags(name, "2")
        assert "from version 2" in tags(name, "1")["restored_as_champion"]
        assert "rolled_back_from_champion" not in tags(name, "3")

    # both against the champion they saw: exactly one moves it
    name = "kmeans-rollback-cas"
    new_model(reg, versions, name)
    reg.promote(name, 1)
    reg.promote(name, 2)
    racing = CheckedAtOnce(reg)
    promoted, rolled = racing.race(lambda: racing.promote(name, 3, expected_current=2),
                                   lambda: racing.rollback(name, expected_current=2))
    assert isinstance(promoted, RegistryError) != isinstance(rolled, RegistryError), (
        promoted, rolled)
    if isinstance(rolled, RegistryError):
        assert ver(reg.champion(name)) == "3" and tags(name, "3")["previous_champion"] == "2"
        assert "expected the alias on version 2, but it is on version 3" in str(rolled)
    else:
        assert ver(reg.champion(name)) == "1" and "previous_champion" not in tags(name, "3")
        assert "expected the alias on version 2, but it is on version 1" in str(promoted)


def test_a_lease_serialises_stores_without_a_lock_file(reg, versions):
    """Database stores and Databricks get the lease (a lock registered model): taken by one
    holder at a time, given back at the end, and broken once its holder is past its
    expiry."""
    from minibatch_kmeans.lifecycle.alias_lock import (AliasLockError, EXPIRES_TAG, lease,
                                                       local_store_path, read_lease)

    assert local_store_path("sqlite:////tmp/m.db") == "/tmp/m.db"
    assert local_store_path("file:///tmp/mlruns") == "/tmp/mlruns"
    for remote in ("databricks", "databricks-uc", "postgresql://u@h/db", "http://h:5000"):
        assert local_store_path(remote) is None
    lock = "kmeans-lease__champion__lock"
    with lease(reg.client, lock, wait=1, ttl=60) as held:
        held.check()
        assert read_lease(reg.client, lock) is not None
        with pytest.raises(AliasLockError, match="is still held by .* after 0.3 s"):
            with lease(reg.client, lock, wait=0.3, ttl=60):
                pass
    assert read_lease(reg.client, lock) is None
    # a holder that died: its lease expired, and the next job breaks it
    reg.client.create_registered_model(lock, tags={EXPIRES_TAG: "1.0"})
    with lease(reg.client, lock, wait=5, ttl=60):
        assert read_lease(reg.client, lock)[1] > 1.0
    assert read_lease(reg.client, lock) is None


def test_record_decision_tags_version_and_run(reg, versions):
    with reg.log_run("compare") as run:
        reg.record_decision(NAME, 2, "reject", {"holdout_cost_ratio": 1.2, "why": "worse"})
    tags = reg.client.get_model_version(NAME, "2").tags
    assert tags["decision"] == "reject" and tags["decision_run_id"] == run.info.run_id
    assert json.loads(tags["decision_reasons"]) == {"holdout_cost_ratio": 1.2, "why": "worse"}
    data = reg.client.get_run(run.info.run_id).data
    assert data.tags["decision"] == "reject" and data.tags["decision.version"] == "2"
    assert data.metrics == {"decision.holdout_cost_ratio": 1.2}


def test_saved_model_scores_vector_and_list_columns_like_spark(spark, tmp_path):
    from pyspark.ml.linalg import Vectors

    centers = np.array([[0.0, 0.0], [5.0, 5.0], [-4.0, 6.0]])
    model = MiniBatchKMeansModel(centers, np.ones(3), FeatureSpec("vector", ("features",), 2))
    model.setDistanceCol("distance")
    rows = [(0, Vectors.dense([0.1, -0.2])), (1, Vectors.dense([4.0, 6.0])),
            (2, Vectors.dense([-3.0, 5.5]))]
    want = model.transform(spark.createDataFrame(rows, ["id", "features"])).toPandas()
    model.write().save(str(tmp_path / "m"))
    saved = SavedModel.read(str(tmp_path / "m"))
    for column in ([list(v.toArray()) for _, v in rows], [v for _, v in rows]):
        got = saved.predict_pandas(pd.DataFrame({"features": column}), with_distance=True)
        np.testing.assert_array_equal(got["prediction"], want.sort_values("id")["prediction"])
        np.testing.assert_allclose(got["distance"], want.sort_values("id")["distance"],
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="1 rows have null"):
        saved.predict_pandas(pd.DataFrame({"features": [[1.0, 2.0], [1.0, 2.0, 3.0]]}))
