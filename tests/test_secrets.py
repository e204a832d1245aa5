"""Secrets given to a job (Spark settings by name, passwords and signatures inside values, a
tracking URI's user:password@) never come out: not in the job's output or Spark's log, its
summary, its MLflow run or registered model, nor in the error of a run that fails."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from minibatch_kmeans_jobs import generate_data

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECRETS = {
    "fs.azure.sas.data.acct.blob.core.windows.net": "sv=2022-11-02&sig=S3CRET-SAS",
    "spark.sql.catalog.lake.credential": "S3CRET-CATALOG",
    "spark.hadoop.db.pwd": "S3CRET-PWD",
    "spark.mbkm.test.url": "jdbc:postgresql://127.0.0.1/db?user=u&password=S3CRET-JDBC",
    "spark.hadoop.fs.s3a.access.key": "S3CRET-ACCESS-KEY",
}


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data") / "blobs")
    assert generate_data.main(["--out", out, "--rows", "600", "--features", "3", "--k", "3",
                               "--seed", "2", "--partitions", "2"]) == 0
    return out


def run_train(data, out, tracking_uri, env=None):
    """jobs/train.py in its own process, so that it builds its own Spark session with the
    secret settings: (exit code, stdout + stderr)."""
    args = [sys.executable, "jobs/train.py", "--conf", "conf/local.yaml",
            "--set", f"input.path={data}", "--set", "input.features.inputCols=[x0, x1, x2]",
            "--set", "model.k=3", "--set", f"output.dir={out}", "--set", "run_id=s1",
            "--set", f"mlflow.tracking_uri={tracking_uri}", "--set", "mlflow.model_name=sec",
            "--set", "spark.conf.spark.driver.memory=1g"]
    for name, value in SECRETS.items():
        args += ["--set", f"spark.conf.{name}={value}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}/lib:{ROOT}/jobs",
                               **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr


def text_files(folder: pathlib.Path):
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".yaml", ".txt", ".md", ".log", ""}:
            yield path, path.read_text(errors="replace")


@pytest.mark.slow
def test_a_train_job_shows_none_of_its_secrets(data, tmp_path):
    """A successful run logs its settings (redacted) and leaves no secret in its output,
    its files, its MLflow run (params, tags) or its registered model's tags."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code, output = run_train(data, tmp_path / "out", uri)
    assert code == 0, output[-3000:]
    assert "S3CRET" not in output
    assert "redacted" in output  # the settings were logged, hidden
    for path, text in text_files(tmp_path / "out"):
        assert "S3CRET" not in text, path
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["registeredModel"] == "sec"
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    for run in runs:
        shown = json.dumps({"params": run.data.params, "tags": run.data.tags})
        assert "S3CRET" not in shown
    for version in client.search_model_versions("name='sec'"):
        assert "S3CRET" not in json.dumps(version.tags)


@pytest.mark.slow
def test_a_failing_tracking_server_error_hides_the_uri_password(data, tmp_path):
    """A tracking server that cannot be reached ends the job with an error that names the
    server without the password in its URI."""
    code, output = run_train(data, tmp_path / "out", "http://bob:S3CRET-URI@127.0.0.1:9",
                             env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    assert code != 0
    assert "S3CRET" not in output, output[-3000:]
    assert "127.0.0.1:9" in output
