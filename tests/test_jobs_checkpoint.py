"""A real train job, killed mid-fit (SIGKILL on its process group: Python and the JVM) and
started again with the same run id, resumes and ends with the centers of an uninterrupted
run with the same seed."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import blobs
from minibatch_kmeans import MiniBatchKMeans, MiniBatchKMeansModel
from minibatch_kmeans_jobs import train

ROOT = Path(__file__).resolve().parents[1]
STEPS = 20  # 2000 rows in batches of 100, one epoch, no early stop
KILL_AFTER = 6  # steps checkpointed before the kill


def write_job(tmp_path):
    X, _, _ = blobs(n=2000, k=4, d=3, spread=1.0, seed=2)
    (tmp_path / "data").mkdir()
    pd.DataFrame(X, columns=["x0", "x1", "x2"]).to_parquet(tmp_path / "data" / "part-0.parquet")
    conf = {
        "spark": {"app_name": "resume-test", "master": "local[2]",
                  "conf": {"spark.driver.memory": "512m", "spark.sql.shuffle.partitions": 2,
                           "spark.ui.enabled": False}},
        "input": {"path": str(tmp_path / "data"), "features": {"inputCols": ["x0", "x1", "x2"]}},
        "model": {"k": 4, "seed": 3, "fitMode": "step", "batchSize": 100, "maxIter": 1, "tol": 0,
                  "maxNoImprovement": 0, "checkpointDir": str(tmp_path / "ck"),
                  "checkpointInterval": 3},
        "output": {"dir": str(tmp_path / "out")},
        "logging": {"level": "INFO"},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def start(conf, log, run_id):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.Popen([sys.executable, "jobs/train.py", "--conf", conf, "--run-id", run_id],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, JVM included


def checkpoint_steps(directory):
    names = os.listdir(directory) if directory.exists() else []
    return sorted(int(m.group(1)) for n in names for m in [re.match(r"checkpoint-(\d+)\.json$", n)]
                  if m)


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended by itself, and everything it started
        pass
    proc.wait(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline:  # until the JVM is gone too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError("processes of the killed job are still alive")


@pytest.mark.slow
def test_killed_train_job_resumes_to_the_uninterrupted_centers(spark, tmp_path, monkeypatch):
    conf = write_job(tmp_path)
    ck = tmp_path / "ck" / "r1"
    log1 = tmp_path / "run1.log"
    with open(log1, "w") as log:
        proc = start(conf, log, "r1")
        try:
            deadline = time.time() + 300
            while not any(s >= KILL_AFTER for s in checkpoint_steps(ck)):
                assert proc.poll() is None, "the job ended before it was killed:\n" + \
                    log1.read_text()[-3000:]
                assert time.time() < deadline, "no checkpoint in time:\n" + log1.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    saved = checkpoint_steps(ck)
    assert KILL_AFTER <= saved[-1] < STEPS and len(saved) <= 2, saved
    assert not (tmp_path / "out" / "model").exists()  # it did not get that far

    log2 = tmp_path / "run2.log"
    with open(log2, "w") as log:
        proc = start(conf, log, "r1")
        try:
            assert proc.wait(timeout=600) == 0, log2.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                kill_group(proc)
    text = log2.read_text()
    assert f"resuming from step {saved[-1]} of {STEPS}" in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["resumedFromStep"] == saved[-1]
    assert summary["checkpointDir"] == str(ck)
    assert (summary["numSteps"], summary["stopReason"]) == (STEPS, "maxIter")
    assert checkpoint_steps(ck)[-1] == STEPS
    resumed = np.array(MiniBatchKMeansModel.load(str(tmp_path / "out" / "model"))
                       .clusterCenters())

    # Uninterrupted, in this process: another run id starts afresh in its own directory.
    monkeypatch.chdir(ROOT)
    code = train.main(["--conf", conf, "--run-id", "r2",
                       "--set", f"output.dir={tmp_path / 'out2'}"])
    assert code == 0
    fresh = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert fresh["resumedFromStep"] == 0 and fresh["checkpointDir"] == str(tmp_path / "ck" / "r2")
    assert (fresh["numSteps"], fresh["stopReason"]) == (STEPS, "maxIter")
    uninterrupted = np.array(MiniBatchKMeansModel.load(str(tmp_path / "out2" / "model"))
                             .clusterCenters())
    np.testing.assert_allclose(resumed, uninterrupted, rtol=0, atol=1e-12)
    assert summary["trainingCost"] == pytest.approx(fresh["trainingCost"], rel=1e-12)


@pytest.mark.parametrize("in_file, flag, expected", [
    (None, "r7", "ck/r7"),
    ("from-file", None, "ck/from-file"),
    ("from-file", "r7", "ck/r7"),  # --run-id wins
    (None, None, "ck"),  # no run id: straight into checkpointDir
])
def test_checkpoint_directory_per_run_id(spark, tmp_path, monkeypatch, in_file, flag,
                                         expected):
    conf = write_job(tmp_path)
    raw = yaml.safe_load(Path(conf).read_text())
    raw["run_id"] = in_file
    Path(conf).write_text(yaml.safe_dump(raw))
    seen = []

    def fit(self, df):
        seen.append(self.getCheckpointDir())
        raise RuntimeError("stop here")

    monkeypatch.setattr(MiniBatchKMeans, "fit", fit)
    monkeypatch.chdir(ROOT)
    train.main(["--conf", conf] + (["--run-id", flag] if flag else []))
    assert seen == [str(tmp_path / expected)]


def test_bad_run_id_exits_2(tmp_path, capsys):
    conf = write_job(tmp_path)
    assert train.main(["--conf", conf, "--run-id", "../elsewhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run_id='../elsewhere' is invalid") and "\n" not in err
