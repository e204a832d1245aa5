"""The Airflow DAGs of conf/airflow, run by Apache Airflow itself (``make airflow`` installs
it into .venv-airflow, apart from the project's venv: its pins are not ours).

- Both DAGs import into Airflow's DagBag with no error: tasks, order, commands, settings.
- ``airflow dags test`` runs the Databricks twin against a stand-in of the Databricks REST
  API on 127.0.0.1, which records the runs it is asked to submit.
- ``airflow dags test`` runs the spark-submit DAG on a real standalone Spark cluster (a
  master and a worker started from the installed pyspark, as tests/test_cluster.py does),
  twice for the same date: the outputs are there, and the re-run changes none of them.
"""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "conf" / "airflow"
AIRFLOW_VENV = ROOT / ".venv-airflow"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
SPARK_DAG, DATABRICKS_DAG = "minibatch_kmeans_spark_submit", "minibatch_kmeans_databricks"
JOBS = ["train", "score", "monitor"]
DATE, RUN_ID = "2026-11-24", "20261124"  # the logical date, and its {{ ds_nodash }}
DAG_TEST_TIMEOUT = 480  # seconds for one `airflow dags test` of the spark-submit DAG

pytestmark = pytest.mark.skipif(
    not (AIRFLOW_VENV / ".installed").is_file(),
    reason="no .venv-airflow: `make airflow` could not install Apache Airflow (it warned why)")


def airflow_env(home: Path, base=None, **extra) -> dict:
    """The environment of an Airflow command: its own AIRFLOW_HOME (SQLite metadata
    database), the DAGs folder conf/airflow, no example DAGs, nothing of ours leaking in."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("AIRFLOW") and k != "PYTHONPATH"}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """An AIRFLOW_HOME with a migrated SQLite metadata database."""
    home = tmp_path_factory.mktemp("airflow-home")
    run = subprocess.run([str(AIRFLOW), "db", "migrate"], env=airflow_env(home),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return home


def dags_test(dag_id: str, home: Path, *extra_args, env=None, timeout=300):
    """``airflow dags test <dag_id> DATE``: (exit code, output)."""
    run = subprocess.run([str(AIRFLOW), "dags", "test", *extra_args, dag_id, DATE],
                         env=env or airflow_env(home), capture_output=True, text=True,
                         timeout=timeout, cwd=home)
    return run.returncode, run.stdout + run.stderr


# --- the DagBag ------------------------------------------------------------------------

DESCRIBE = r"""
import json, os, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for t in dag.tasks:
        fields = {f: getattr(t, f, None) for f in t.template_fields}
        tasks[t.task_id] = {"operator": type(t).__name__, "upstream": sorted(t.upstream_task_ids),
                            "fields": fields, "conn_id": getattr(t, "_conn_id", None),
                            "retries": t.retries}
    out["dags"][dag_id] = {"schedule": str(dag.schedule), "tasks": tasks,
                           "params": sorted(dag.params), "catchup": dag.catchup,
                           "max_active_runs": dag.max_active_runs}
# the spark-submit DAG's settings: the run's param, else the Variable, else the default
sys.path.insert(0, sys.argv[1])
import minibatch_kmeans_spark_submit as m
os.environ.pop("AIRFLOW_VAR_MBKM_PY_FILES", None)
out["settings"] = {
    "default": m.mbkm_setting({}, "py_files"),
    "param": m.mbkm_setting({"py_files": "/p/zip.zip"}, "py_files"),
    "project_param": m.mbkm_setting({"project_dir": "/checkout/"}, "score_conf"),
}
os.environ["AIRFLOW_VAR_MBKM_PY_FILES"] = "/v/zip.zip"
out["settings"]["variable"] = m.mbkm_setting({"py_files": ""}, "py_files")
out["settings"]["param_over_variable"] = m.mbkm_setting({"py_files": "/p/zip.zip"}, "py_files")
print("DESCRIBE:" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    """What Airflow's DagBag makes of conf/airflow (run in .venv-airflow)."""
    home = tmp_path_factory.mktemp("airflow-dagbag")
    run = subprocess.run([str(AIRFLOW_VENV / "bin" / "python"), "-c", DESCRIBE, str(DAGS)],
                         env=airflow_env(home, AIRFLOW_VAR_MBKM_SPARK_CONN_ID="spark_prod"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (line,) = [l for l in run.stdout.splitlines() if l.startswith("DESCRIBE:")]
    return json.loads(line[len("DESCRIBE:"):])


def test_dags_import_with_no_errors(dagbag):
    assert dagbag["errors"] == {}
    assert sorted(dagbag["dags"]) == [DATABRICKS_DAG, SPARK_DAG]
    for dag in dagbag["dags"].values():
        assert list(dag["tasks"]) == JOBS
        assert [dag["tasks"][j]["upstream"] for j in JOBS] == [[], ["train"], ["score"]]
        assert dag["schedule"] == "@daily" and dag["catchup"] is False
        assert dag["max_active_runs"] == 1
        assert all(t["retries"] == 1 for t in dag["tasks"].values())


def test_spark_submit_dag_submits_each_job_with_the_zip_its_config_and_the_date(dagbag):
    dag = dagbag["dags"][SPARK_DAG]
    assert dag["params"] == ["monitor_conf", "project_dir", "py_files", "score_conf",
                             "train_conf"]
    for job in JOBS:
        task = dag["tasks"][job]
        assert task["operator"] == "SparkSubmitOperator"
        assert task["conn_id"] == "spark_prod"  # the Variable mbkm_spark_conn_id
        fields = task["fields"]
        assert fields["application"] == ("{{ mbkm_setting(params, 'project_dir') }}"
                                         f"/jobs/{job}.py")
        assert (ROOT / "jobs" / f"{job}.py").is_file()
        assert fields["py_files"] == "{{ mbkm_setting(params, 'py_files') }}"
        assert fields["application_args"] == [
            "--conf", f"{{{{ mbkm_setting(params, '{job}_conf') }}}}",
            "--run-id", "{{ ds_nodash }}"]
    settings = dagbag["settings"]
    assert settings["default"] == f"{ROOT}/dist/minibatch_kmeans.zip"
    assert settings["param"] == "/p/zip.zip"
    assert settings["project_param"] == "/checkout/conf/airflow/score.yaml"
    assert settings["variable"] == "/v/zip.zip"
    assert settings["param_over_variable"] == "/p/zip.zip"


def test_spark_submit_dag_default_configs_load():
    """The configs the spark-submit DAG names by default load, and chain: score reads the
    model train writes, monitor watches the model train registers."""
    from minibatch_kmeans.app.config import load_config
    from minibatch_kmeans.app.config.monitor import load_monitor_config
    from minibatch_kmeans.app.config.score import load_score_config

    train = load_config(str(DAGS / "train.yaml"))
    score = load_score_config(str(DAGS / "score.yaml"))
    monitor = load_monitor_config(str(DAGS / "monitor.yaml"))
    assert score.scoring.model == f"{train.output.dir}/model"
    assert monitor.mlflow.model_name == train.mlflow.model_name
    assert monitor.mlflow.tracking_uri == train.mlflow.tracking_uri
    assert train.input.path == score.input.path == monitor.input.path


# --- the Databricks twin, against a stand-in of the Databricks REST API ----------------

class FakeDatabricks(ThreadingHTTPServer):
    """Answers runs/submit with a new run id and runs/get with that run TERMINATED with
    ``result_state``; records every submitted payload."""

    def __init__(self, result_state="SUCCESS"):
        self.submitted, self.result_state = [], result_state
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.submitted.append({"path": self.path, "json": payload,
                                         "auth": self.headers.get("Authorization")})
                self._answer({"run_id": len(server.submitted)})

            def do_GET(self):
                run_id = int(self.path.rsplit("run_id=", 1)[1].split("&")[0])
                self._answer({"run_id": run_id, "run_page_url": f"http://127.0.0.1/run/{run_id}",
                              "state": {"life_cycle_state": "TERMINATED",
                                        "result_state": server.result_state,
                                        "state_message": ""}})

        super().__init__(("127.0.0.1", 0), Handler)

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


def test_databricks_dag_submits_the_three_wheel_tasks(airflow_home):
    """`airflow dags test` of the twin submits one wheel-task run per job, in order, each
    with its entry point, a config that exists, the date as run id and the wheel."""
    from minibatch_kmeans.app.config import load_config
    from minibatch_kmeans.app.config.monitor import load_monitor_config
    from minibatch_kmeans.app.config.score import load_score_config
    from minibatch_kmeans_jobs.entry_points import JOBS as ENTRY_JOBS, script_name

    loaders = {"mbkm-train": load_config, "mbkm-score": load_score_config,
               "mbkm-monitor": load_monitor_config}
    with FakeDatabricks() as api:
        conn = {"conn_type": "databricks", "host": "127.0.0.1", "port": api.server_port,
                "schema": "http", "password": "dapi-not-a-token"}
        code, out = dags_test(DATABRICKS_DAG, airflow_home, env=airflow_env(
            airflow_home, AIRFLOW_CONN_MBKM_TEST_DATABRICKS=json.dumps(conn),
            AIRFLOW_VAR_MBKM_DATABRICKS_CONN_ID="mbkm_test_databricks",
            AIRFLOW_VAR_MBKM_DATABRICKS_WHEEL="/Volumes/c/s/v/minibatch_kmeans.whl"))
    assert code == 0, out[-5000:]
    runs = api.submitted
    assert [r["path"] for r in runs] == ["/api/2.2/jobs/runs/submit"] * 3
    assert all(r["auth"] == "Bearer dapi-not-a-token" for r in runs)
    scripts = {script_name(j) for j in ENTRY_JOBS}
    for job, run in zip(JOBS, runs):
        body = run["json"]
        (task,) = body["tasks"]
        assert task["task_key"] == job and body["run_name"] == f"minibatch-kmeans {job} {RUN_ID}"
        wheel = task["python_wheel_task"]
        # the DAG has no params, so the provider put none into named_parameters
        assert set(wheel) == {"package_name", "entry_point", "parameters"}, wheel
        assert wheel["package_name"] == "minibatch_kmeans"
        assert wheel["entry_point"] == f"mbkm-{job}" and wheel["entry_point"] in scripts
        args = wheel["parameters"]
        assert args[args.index("--run-id") + 1] == RUN_ID
        conf = args[args.index("--conf") + 1]
        assert conf.startswith("/Volumes/main/default/minibatch_kmeans/conf/")
        local = ROOT / "conf" / conf.rsplit("/", 1)[1]
        cfg = loaders[wheel["entry_point"]](str(local))
        assert cfg.output.dir.startswith("/Volumes/")
        if job != "score":
            assert args[args.index("--set") + 1] == \
                "mlflow.model_name=main.default.minibatch_kmeans"
        (env,) = body["environments"]
        assert env["environment_key"] == task["environment_key"]
        assert env["spec"]["dependencies"] == ["/Volumes/c/s/v/minibatch_kmeans.whl"]
        assert body["idempotency_token"] == f"mbkm-{job}-{RUN_ID}-1"
    assert "state=success" in out


def test_databricks_dag_fails_when_the_run_fails(airflow_home):
    """A wheel task that fails on Databricks (an entry point exits non-zero) fails the
    Airflow task, and nothing after it runs."""
    with FakeDatabricks(result_state="FAILED") as api:
        conn = {"conn_type": "databricks", "host": "127.0.0.1", "port": api.server_port,
                "schema": "http", "password": "dapi-not-a-token"}
        # no retry (the Variable mbkm_retries): a retry would wait its 10 minutes' delay
        code, out = dags_test(DATABRICKS_DAG, airflow_home, timeout=120, env=airflow_env(
            airflow_home, AIRFLOW_CONN_DATABRICKS_DEFAULT=json.dumps(conn),
            AIRFLOW_VAR_MBKM_RETRIES="0"))
    assert code != 0
    assert [r["json"]["tasks"][0]["task_key"] for r in api.submitted] == ["train"]


# --- the spark-submit DAG on a standalone Spark cluster ---------------------------------

K, FEATURES, ROWS = 4, ["x0", "x1", "x2", "x3"], 4000


def _blobs(where: Path) -> Path:
    """ROWS rows in K blobs (id, x0..x3), as two Parquet files."""
    rng = np.random.default_rng(5)
    centers = rng.uniform(-20, 20, size=(K, len(FEATURES)))
    X = centers[rng.integers(0, K, ROWS)] + rng.normal(0, 0.5, size=(ROWS, len(FEATURES)))
    frame = pd.DataFrame(X, columns=FEATURES)
    frame.insert(0, "id", np.arange(ROWS, dtype=np.int64))
    where.mkdir(parents=True)
    for i, part in enumerate((frame.iloc[:ROWS // 2], frame.iloc[ROWS // 2:])):
        part.to_parquet(where / f"part-{i}.parquet", index=False)
    return where


def _job_configs(work: Path, data: Path) -> dict:
    """The three jobs' configs, chained as conf/airflow's: score reads train's model,
    monitor watches the model train registers (in a SQLite MLflow store)."""
    out, mlflow = work / "out", {"tracking_uri": f"sqlite:///{work}/mlflow.db",
                                 "experiment": "mbkm-airflow-test",
                                 "model_name": "mbkm-airflow-test"}
    configs = {
        "train": {"input": {"path": str(data), "format": "parquet",
                            "features": {"inputCols": FEATURES}},
                  "model": {"k": K, "maxIter": 3, "seed": 3, "batchSize": 1000,
                            "checkpointDir": str(out / "checkpoints")},
                  "output": {"dir": str(out / "train")},
                  "mlflow": {**mlflow, "holdout_fraction": 0.1, "promote_first": True}},
        "score": {"input": {"path": str(data), "format": "parquet"},
                  "scoring": {"model": str(out / "train" / "model"), "id_columns": ["id"]},
                  "output": {"dir": str(out / "score")}},
        "monitor": {"input": {"path": str(data), "format": "parquet",
                              "features": {"inputCols": FEATURES}},
                    "model": {"maxIter": 3, "seed": 7},
                    "mlflow": mlflow, "monitor": {"ignore_columns": ["id"]},
                    "output": {"dir": str(out / "monitor")}},
    }
    params = {}
    for job, cfg in configs.items():
        path = work / f"{job}.yaml"
        path.write_text(yaml.safe_dump({"spark": {"app_name": f"mbkm-airflow-test-{job}"},
                                        **cfg, "logging": {"level": "INFO"}}))
        params[f"{job}_conf"] = str(path)
    return params


def _run_table(path: Path) -> pd.DataFrame:
    """One run's partition of an output table (run_id=RUN_ID), sorted, as pandas."""
    partitions = sorted(p.name for p in path.iterdir() if p.name.startswith("run_id="))
    assert partitions == [f"run_id={RUN_ID}"], (path, partitions)
    files = sorted((path / partitions[0]).glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    for column in frame.columns:  # array columns (the centers) as tuples, to sort by
        if frame[column].map(lambda v: isinstance(v, np.ndarray)).any():
            frame[column] = frame[column].map(tuple)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _outputs(out: Path) -> dict:
    """What the three tasks left that a re-run must not change."""
    summary = json.loads((out / "train" / "summary.json").read_text())
    drift = json.loads((out / "monitor" / RUN_ID / "drift.json").read_text())
    model_dir = out / "train" / "model"
    return {
        "predictions": _run_table(out / "score" / "predictions"),
        "centers": _run_table(out / "train" / "centers"),
        "metrics_rows": len(_run_table(out / "train" / "metrics")),
        # the saved model's data (its file names are new at every save)
        "model_data": [{k: [x.tolist() if isinstance(x, np.ndarray) else x for x in v]
                        for k, v in pd.read_parquet(f).to_dict("list").items()}
                       for f in sorted(model_dir.glob("data*/*.parquet"))],
        "summary": {k: summary.get(k) for k in ("runId", "numRows", "trainingCost", "k")},
        "drift_outcome": (drift.get("outcome") or {}).get("outcome"),
    }


@pytest.mark.slow
def test_spark_submit_dag_runs_on_a_standalone_cluster_and_a_rerun_changes_nothing(
        airflow_home, tmp_path):
    """`airflow dags test` of the spark-submit DAG on a standalone cluster: train, score and
    monitor each spark-submitted with the zip, its config and the date as run id; then the
    same date again, which leaves every output as it was (no duplicate rows)."""
    import test_cluster as tc

    data = _blobs(tmp_path / "data")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, str(ROOT / ".ci" / "dist.py"), str(dist)], check=True,
                   capture_output=True)
    params = _job_configs(tmp_path, data)
    # driver and executor: a Python with the dependencies but not this project, which the
    # jobs can then only import from the zip that --py-files ships
    python = tc._venv_with_deps(tmp_path / "python")
    cluster = tc.StandaloneCluster(tmp_path / "cluster", str(python), workers=1)
    spark_conf = tmp_path / "spark-conf"  # spark-submit's defaults (small, C1-only JVMs)
    spark_conf.mkdir()
    (spark_conf / "spark-defaults.conf").write_text("\n".join([
        "spark.executor.cores 1", "spark.cores.max 1", "spark.executor.memory 512m",
        "spark.sql.shuffle.partitions 4", "spark.ui.enabled false",
        f"spark.driver.extraJavaOptions {tc.JVM_OPTS}",
        f"spark.executor.extraJavaOptions {tc.JVM_OPTS}"]) + "\n")
    try:
        cluster.start()
        cluster.wait_for_workers()
        conn = {"conn_type": "spark", "host": "spark://127.0.0.1", "port": cluster.port,
                "extra": {"deploy-mode": "client"}}
        env = airflow_env(
            airflow_home, base=cluster.env(),
            PATH=f"{tc.SPARK_HOME / 'bin'}{os.pathsep}{os.environ['PATH']}",
            SPARK_CONF_DIR=str(spark_conf),
            AIRFLOW_CONN_MBKM_TEST_SPARK=json.dumps(conn),
            AIRFLOW_VAR_MBKM_SPARK_CONN_ID="mbkm_test_spark",
            AIRFLOW_VAR_MBKM_PY_FILES=str(dist / "minibatch_kmeans.zip"),
            AIRFLOW_VAR_MBKM_RETRIES="0")
        runs = []
        for attempt in (1, 2):
            name = f"airflow-dags-test-{attempt}"
            (cluster.root / name).mkdir()
            # in the cluster's directory and process groups: stop() ends what it leaves
            proc = cluster._spawn(name, [AIRFLOW, "dags", "test", "-c", json.dumps(params),
                                         SPARK_DAG, DATE], env, cluster.root / name)
            try:
                code = proc.wait(timeout=DAG_TEST_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not finish in {DAG_TEST_TIMEOUT} s\n"
                            f"{cluster.log_tails()}")
            log = cluster.logs[name].read_text(errors="replace")
            assert code == 0, f"{name} exited with {code}\n{cluster.log_tails()}"
            assert "state=success" in log
            runs.append((log, _outputs(tmp_path / "out")))
        state = cluster.state()
    finally:
        leftovers = cluster.stop()
        assert not leftovers, f"processes of the test cluster survived SIGKILL: {leftovers}"

    log, first = runs[0]
    # each task spark-submitted its job to this cluster with the zip, config and date
    commands = [l.split("Spark-Submit cmd: ", 1)[1] for l in log.splitlines()
                if "Spark-Submit cmd: " in l]
    assert len(commands) == 3, log[-5000:]
    for job, cmd in zip(JOBS, commands):
        assert f"--master spark://127.0.0.1:{cluster.port}" in cmd, cmd
        assert f"--py-files {dist / 'minibatch_kmeans.zip'}" in cmd, cmd
        assert f"{ROOT / 'jobs' / job}.py --conf {params[job + '_conf']} --run-id {RUN_ID}" \
            in cmd, cmd
    apps = sorted(a["name"] for a in state["completedapps"] if a["state"] == "FINISHED")
    # (the job's spark.app_name names its application, not spark-submit's --name)
    assert apps == sorted(f"mbkm-airflow-test-{job}" for job in JOBS for _ in (1, 2)), apps
    # the outputs: every row scored once, K centers, one metrics row, the monitor's report
    assert len(first["predictions"]) == ROWS
    assert first["predictions"]["id"].is_unique
    assert sorted(first["predictions"]["prediction"].unique()) == list(range(K))
    assert len(first["centers"]) == K and first["metrics_rows"] == 1
    assert first["summary"]["runId"] == RUN_ID and len(first["model_data"]) == 1
    assert first["drift_outcome"] == "no drift"  # the same rows as the champion's
    # the re-run of the same date changed nothing: same rows, no duplicates
    second = runs[1][1]
    for key in ("centers", "predictions"):
        pd.testing.assert_frame_equal(second[key], first[key])
    assert {k: v for k, v in second.items() if k not in ("centers", "predictions")} == \
        {k: v for k, v in first.items() if k not in ("centers", "predictions")}
    print("airflow dags test:", [l for l in log.splitlines() if "DagRun Finished" in l])
