"""jobs/monitor.py in-process on the test session and a throwaway SQLite MLflow store: no
drift, drift and promotion, schema drift judged by the absolute gate, a worse challenger
kept; plus the decision rule and the monitor config.

A module fixture registers and promotes the first champion (3 blobs, 5 features) with its
reference statistics, as jobs/train.py does. The job tests run in file order and each reads
the champion it starts from."""
import json
import os
import threading

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("mlflow")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402

from minibatch_kmeans import MiniBatchKMeans  # noqa: E402
from minibatch_kmeans.app.config import (AbsoluteGate, MonitorConfig,  # noqa: E402
                                         load_monitor_config)
from minibatch_kmeans.app.monitor_job import run_monitor  # noqa: E402
from minibatch_kmeans.lifecycle.drift import holdout_split, reference_statistics  # noqa: E402
from minibatch_kmeans.errors import ConfigError  # noqa: E402
from minibatch_kmeans.lifecycle.monitor import decide, promote_challenger  # noqa: E402
from minibatch_kmeans.lifecycle.registry import tracking, version_tags  # noqa: E402
from minibatch_kmeans_jobs import monitor  # noqa: E402
from registry_race import CheckedAtOnce  # noqa: E402

NAME = "monitor-test"
D, K = 5, 3
COLS = [f"x{i}" for i in range(D)]
CENTERS = np.array([[-4.0, 0.0, 3.0, 1.0, -2.0], [3.0, 4.0, -3.0, 0.0, 2.0],
                    [0.0, -4.0, 0.0, -3.0, 4.0]])
FIT = {"seed": 3, "batchSize": 2000, "maxIter": 3, "computeTrainingCost": False,
       "prepareStorage": "memory"}


def sample(n, seed, shift=None):
    """n rows of three Gaussian blobs (weights 0.5, 0.3, 0.2); ``shift`` adds to columns."""
    rng = np.random.default_rng(seed)
    X = CENTERS[rng.choice(K, size=n, p=[0.5, 0.3, 0.2])] + rng.normal(0, 1.0, size=(n, D))
    for j, v in (shift or {}).items():
        X[:, j] += v
    return X


@pytest.fixture(scope="module")
def store(tmp_path_factory, spark):
    """A SQLite store in a temp dir with a first champion (version 1) that has reference
    statistics."""
    root = tmp_path_factory.mktemp("monitor")
    saved_env = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
                 if k in os.environ}
    prev_uri = mlflow.get_tracking_uri()
    uri = f"sqlite:///{root}/mlflow/mlflow.db"
    reg = tracking(uri, experiment="monitor-test")
    df = spark.createDataFrame(pd.DataFrame(sample(3000, seed=1), columns=COLS))
    train, holdout = holdout_split(df, 0.2, seed=7, cols=COLS)
    model = MiniBatchKMeans(k=K, inputCols=COLS, **FIT).fit(train)
    mv = reg.log_model(model, NAME, reference_stats=reference_statistics(model, holdout))
    reg.promote(NAME, mv.version, expected_current=None, reason="first model")
    yield {"root": root, "uri": uri, "reg": reg}
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(prev_uri)
    os.environ.update(saved_env)


def config(store, tmp_path, data, cols=COLS, **monitor_keys):
    raw = {"input": {"path": str(data), "features": {"inputCols": list(cols)}},
           "model": {**{k: v for k, v in FIT.items() if k != "seed"}, "batchSize": 1000},
           "mlflow": {"tracking_uri": store["uri"], "experiment": "monitor-test",
                      "model_name": NAME},
           "monitor": {"holdout_fraction": 0.25, "sample_size": 500,
                       "absolute_gate": {"min_silhouette": 0.2}, **monitor_keys},
           "output": {"dir": str(tmp_path / "out")}, "logging": {"level": "WARNING"}}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def write_slice(spark, tmp_path, X, cols=COLS):
    path = tmp_path / "slice"
    spark.createDataFrame(pd.DataFrame(X, columns=cols)).write.parquet(str(path))
    return path


def versions(reg):
    return sorted(int(v.version) for v in reg.client.search_model_versions(f"name='{NAME}'"))


def run_job(conf, capsys, *more):
    code = monitor.main(["--conf", conf, "--run-id", "t1", *more])
    return code, capsys.readouterr()


def decision_of(reg, version):
    tags = reg.client.get_model_version(NAME, str(version)).tags
    return tags["decision"], json.loads(tags["decision_reasons"])


def test_same_distribution_no_drift_no_retrain(spark, store, tmp_path, capsys):
    reg = store["reg"]
    before, champion = versions(reg), reg.champion(NAME).version
    data = write_slice(spark, tmp_path, sample(2000, seed=2))
    code, out = run_job(config(store, tmp_path, data), capsys)
    assert code == 0, out.err
    assert versions(reg) == before and reg.champion(NAME).version == champion
    report = json.loads((tmp_path / "out" / "t1" / "drift.json").read_text())
    assert report["drift"] is False and report["outcome"]["outcome"] == "no drift"
    assert (tmp_path / "out" / "t1" / "drift.png").stat().st_size > 0
    assert "| feature | PSI" in (tmp_path / "out" / "t1" / "drift.md").read_text()
    runs = mlflow.search_runs([reg.experiment_id], filter_string="tags.job = 'monitor'")
    assert runs["tags.drift"].iloc[0] == "false"
    assert "metrics.psi.x0" in runs.columns and "metrics.js" in runs.columns


def test_two_monitors_sharing_an_output_directory_write_apart(spark, store, tmp_path):
    # two monitor jobs, run ids r1 and r2, one output directory, at the same time: the job's
    # runner in two threads of this session (monitor.main in a thread would stop the
    # session at its end, as a thread has no active session and the job then owns one)
    data = write_slice(spark, tmp_path, sample(2000, seed=2))
    conf = config(store, tmp_path, data)
    codes = {}

    def job(run_id):
        try:
            cfg = load_monitor_config(conf, [f"run_id={run_id}"])
            codes[run_id] = run_monitor(spark, cfg, cfg.run_id).code
        except Exception as e:  # noqa: BLE001 - reported below
            codes[run_id] = e

    threads = [threading.Thread(target=job, args=(r,)) for r in ("r1", "r2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert codes == {"r1": 0, "r2": 0}, codes
    out = tmp_path / "out"
    for run_id in ("r1", "r2"):
        report = json.loads((out / run_id / "drift.json").read_text())
        assert report["drift"] is False and report["outcome"]["outcome"] == "no drift"
        assert "| feature | PSI" in (out / run_id / "drift.md").read_text()
        assert (out / run_id / "drift.png").read_bytes().startswith(b"\x89PNG")
        assert json.loads((out / run_id / "quality.json").read_text())["runId"] == run_id
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == []  # nothing shared
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    quality = spark.read.parquet(str(out / "quality"))
    assert sorted(r.run_id for r in quality.select("run_id").distinct().collect()) == [
        "r1", "r2"]


def test_two_monitors_promoting_against_one_champion_exactly_one_wins(spark, store):
    # both found version 1 champion, registered a challenger and judged it better; their
    # promotions start together and both check the champion before either moves it
    # (register_challenger's promotion step in two threads: saving a model needs the
    # session, which a thread does not have active)
    reg, name = store["reg"], "monitor-race"
    df = spark.createDataFrame(pd.DataFrame(sample(600, seed=8), columns=COLS))
    model = MiniBatchKMeans(k=K, inputCols=COLS, **FIT).fit(df)
    first = reg.log_model(model, name, reference_stats=reference_statistics(model, df))
    reg.promote(name, first.version, expected_current=None)
    challengers = [reg.log_model(model, name) for _ in range(2)]
    racing = CheckedAtOnce(reg)
    results = racing.race(*[
        lambda mv=mv: promote_challenger(racing, name, mv, first, "promoted",
                                         {"why": "better"})
        for mv in challengers])
    assert not any(isinstance(r, Exception) for r in results), results
    decisions = {decision: str(mv.version) for mv, (decision, _) in zip(challengers, results)}
    assert sorted(decisions) == ["kept", "promoted"], results
    winner, loser = decisions["promoted"], decisions["kept"]
    assert str(reg.champion(name).version) == winner
    assert reg.client.get_model_version(name, winner).tags["previous_champion"] == str(
        first.version)
    tags = reg.client.get_model_version(name, loser).tags
    assert tags["decision"] == "kept" and "champion_since" not in tags
    assert json.loads(tags["decision_reasons"])["why"] == (
        f"better; but not promoted: cannot promote {name} version {loser} to 'champion': "
        f"expected the alias on version {first.version}, but it is on version {winner}")


@pytest.mark.slow
def test_worse_challenger_is_kept_with_its_reason(spark, store, tmp_path, capsys):
    reg = store["reg"]
    champion = reg.champion(NAME).version
    data = write_slice(spark, tmp_path, sample(2000, seed=3))
    conf = config(store, tmp_path, data, force_retrain=True, min_improvement=0.5)
    code, out = run_job(conf, capsys, "--fail-on-drift")
    assert code == 4, out.err
    assert reg.champion(NAME).version == champion
    new = versions(reg)[-1]
    assert int(reg.version_for(NAME, "challenger").version) == new
    decision, reasons = decision_of(reg, new)
    assert decision == "kept" and reasons["rule"] == "relative"
    assert "not better by the required margin" in reasons["why"]
    tags = version_tags(reg.client.get_model_version(NAME, str(new)))
    assert tags["warm_start"] == "true" and tags["trigger"] == "forced"
    run = reg.client.get_run(tags["decision_run_id"])
    assert run.data.tags["decision"] == "kept"
    assert "required margin" in run.data.tags["decision.reasons"]


@pytest.mark.slow
def test_mean_shift_in_three_features_promotes_the_challenger(spark, store, tmp_path, capsys):
    reg = store["reg"]
    champion = reg.champion(NAME).version
    data = write_slice(spark, tmp_path, sample(2000, seed=4, shift={0: 3.0, 1: -3.0, 2: 3.0}))
    code, out = run_job(config(store, tmp_path, data), capsys)
    assert code == 0, out.err  # drift handled: a success for the scheduler
    report = json.loads((tmp_path / "out" / "t1" / "drift.json").read_text())
    assert report["drift"] and set(report["driftedFeatures"]) >= {"x0", "x1", "x2"}
    assert report["outcome"]["code"] == 3 and report["outcome"]["decision"] == "promoted"
    assert "promoted" in out.out
    new = versions(reg)[-1]
    assert int(reg.champion(NAME).version) == new != int(champion)
    decision, reasons = decision_of(reg, new)
    assert decision == "promoted" and reasons["champion_scored"] is True
    assert reasons["challenger_cost_per_row"] < reasons["champion_cost_per_row"] * 0.98
    mv = reg.client.get_model_version(NAME, str(new))
    assert mv.tags["previous_champion"] == str(champion)
    run = reg.client.get_run(mv.tags["decision_run_id"])
    assert run.data.tags["outcome"] == report["outcome"]["outcome"]
    assert reg.json_tag(mv, "reference_stats")["k"] == K  # the next monitor run's reference


@pytest.mark.slow
def test_schema_drift_challenger_judged_by_absolute_gate(spark, store, tmp_path, capsys):
    reg = store["reg"]
    champion = reg.champion(NAME).version
    X = sample(2000, seed=5)
    X[:, 4] = np.random.default_rng(6).normal(size=len(X))  # x4 is gone, x5 is new
    cols = ["x0", "x1", "x2", "x3", "x5"]
    data = write_slice(spark, tmp_path, X, cols)
    code, out = run_job(config(store, tmp_path, data, cols), capsys, "--fail-on-drift")
    assert code == 3, out.err
    report = json.loads((tmp_path / "out" / "t1" / "drift.json").read_text())
    assert report["schema"]["removed"] == ["x4"] and report["schema"]["added"] == ["x5"]
    new = versions(reg)[-1]
    assert int(reg.champion(NAME).version) == new != int(champion)
    decision, reasons = decision_of(reg, new)
    assert decision == "promoted" and reasons["rule"] == "absolute"
    assert "champion could not score" in reasons["why"] and "x4" in reasons["why"]
    assert reasons["challenger_silhouette"] >= 0.2
    mv = reg.client.get_model_version(NAME, str(new))
    assert mv.tags["warm_start"] == "false"
    assert json.loads(mv.tags["feature_schema"])["columns"] == cols


def test_no_champion_is_a_config_error(spark, store, tmp_path, capsys):
    data = tmp_path / "none"
    conf = config(store, tmp_path, data)
    code, out = run_job(conf, capsys, "--set", "mlflow.model_name=nobody")
    assert code == 2
    assert "has no champion: train one and promote it first" in out.err


def test_decide_rules():
    champ = {"holdout_cost_per_row": 10.0, "silhouette": 0.5}
    assert decide({"holdout_cost_per_row": 9.7, "silhouette": 0.5}, champ, 0.02,
                  AbsoluteGate())[0] == "promoted"
    kept, why = decide({"holdout_cost_per_row": 9.9, "silhouette": 0.6}, champ, 0.02,
                       AbsoluteGate())
    assert kept == "kept" and why["required_cost_per_row"] == pytest.approx(9.8)
    gate = AbsoluteGate(max_cost_per_row=5.0, min_silhouette=0.4)
    assert decide({"holdout_cost_per_row": 4.0, "silhouette": 0.5}, None, 0.02, gate,
                  "x retyped")[0] == "promoted"
    kept, why = decide({"holdout_cost_per_row": 4.0, "silhouette": 0.3}, None, 0.02, gate, "x")
    assert kept == "kept" and why["gate_failed"] == ["min_silhouette"]
    assert decide({"holdout_cost_per_row": 1.0, "silhouette": 0.9}, None, 0.02,
                  AbsoluteGate(), "x")[0] == "kept"  # no gate configured


def test_monitor_config_example_and_errors():
    with open("conf/monitor.yaml" if os.path.exists("conf/monitor.yaml")
              else os.path.join(os.path.dirname(__file__), "..", "conf", "monitor.yaml")) as f:
        raw = yaml.safe_load(f)
    cfg = MonitorConfig.from_dict(raw)
    assert cfg.monitor.thresholds.psi == 0.2
    assert cfg.drift_files.png == "out/monitor/{run_id}/drift.png"
    run = cfg.for_run("2026-11-24")
    assert (run.drift_files.png, run.drift_files.json, run.output.quality_report) == (
        "out/monitor/2026-11-24/drift.png", "out/monitor/2026-11-24/drift.json",
        "out/monitor/2026-11-24/quality.json")
    assert run.output.quality == "out/monitor/quality"  # tables: shared, by run_id
    with pytest.raises(ConfigError, match="run_id='../up'"):
        cfg.for_run("../up")
    assert cfg.estimator_params()["inputCols"][0] == "x0"
    for path, value, match in [("monitor.min_improvement", 1.5, "monitor.min_improvement=1.5"),
                               ("monitor.thresholds.js", 0, "drift threshold js=0"),
                               ("mlflow.promote_first", True, "mlflow.promote_first"),
                               ("output.quality", "main.ml.bad-name", "output.quality"),
                               ("output.drift_png", "out/{day}/d.png",
                                "output.drift_png='out/{day}/d.png'")]:
        bad = yaml.safe_load(yaml.safe_dump(raw))
        section, *rest = path.split(".")
        node = bad[section]
        for key in rest[:-1]:
            node = node.setdefault(key, {})
        node[rest[-1]] = value
        with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
            MonitorConfig.from_dict(bad)
