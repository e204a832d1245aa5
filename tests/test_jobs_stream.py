"""jobs/stream.py as users run it: the exit codes and summary line, and a real stream
process killed with SIGKILL (Python and the JVM) mid-stream and started again from its
checkpoint ends with the state of an uninterrupted run; the lock or lease a killed process
left on the state directory does not block the next run."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import moving_blobs, stream_file
from minibatch_kmeans import MiniBatchKMeansModel
from minibatch_kmeans.spark.checkpoint import open_store
from minibatch_kmeans.app.stream_job import STATE
from minibatch_kmeans_jobs import stream
from test_jobs_checkpoint import kill_group

ROOT = Path(__file__).resolve().parents[1]
FILES = 6


def write_job(tmp_path, out="out", **settings):
    """Input files (one micro-batch each), a start model and the job's config."""
    model = str(tmp_path / "start-model")
    if not os.path.exists(model):
        start = MiniBatchKMeansModel([[1.0, 1.0], [9.0, 1.0], [1.0, 9.0]],
                                     [20.0, 20.0, 20.0]).setInputCols(["a", "b"])
        start.write().save(model)
        for i in range(FILES):
            stream_file(tmp_path / "in", i, moving_blobs(50 + i, 0.4 * i))
    conf = {
        "spark": {"app_name": "stream-test", "master": "local[2]",
                  "conf": {"spark.driver.memory": "512m", "spark.sql.shuffle.partitions": 2,
                           "spark.ui.enabled": False}},
        "input": {"path": str(tmp_path / "in")},
        "stream": dict({"model": model, "max_files_per_trigger": 1, "half_life": 2,
                        "id_columns": ["id"]}, **settings),
        "output": {"dir": str(tmp_path / out)},
        "logging": {"level": "INFO"},
    }
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def state_of(spark, tmp_path, out):
    return open_store(str(tmp_path / out / "state"), spark, STATE).load_latest()


def test_job_runs_the_stream_and_says_what_it_did(spark, tmp_path, monkeypatch, capsys):
    conf = write_job(tmp_path)
    monkeypatch.chdir(ROOT)
    assert stream.main(["--conf", conf]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"{FILES} micro-batches processed ({FILES} applied, 0 not applied)" in line
    assert f"state at micro-batch {FILES - 1}, model updated {FILES} times" in line
    assert stream.main(["--conf", conf]) == 0  # nothing new: nothing done
    assert "0 micro-batches processed" in capsys.readouterr().out


def test_job_exits_2_on_bad_input_and_bad_config(spark, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    conf = write_job(tmp_path, handle_invalid="error")
    stream_file(tmp_path / "in", FILES, np.full((3, 2), np.nan))
    assert stream.main(["--conf", conf]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: micro-batch {FILES} of parquet") and "\n" not in err
    assert "3 invalid rows" in err and "stream.handle_invalid=error" in err
    assert stream.main(["--conf", conf, "--set", "stream.half_life=-1"]) == 2
    assert "half_life=-1" in capsys.readouterr().err


def start(conf, log):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.Popen([sys.executable, "jobs/stream.py", "--conf", conf], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, JVM included


HOLD = """
import sys, time
from minibatch_kmeans.app.stream_lock import StateDirLock
StateDirLock(sys.argv[1], "a test holder").acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold_and_kill(directory):
    """A process that takes the OS lock on ``directory`` and is killed with SIGKILL
    holding it: its pid."""
    import signal

    from minibatch_kmeans.app.stream_lock import StateDirLock
    from minibatch_kmeans.errors import ConcurrentWriteError

    proc = subprocess.Popen([sys.executable, "-c", HOLD, directory], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ConcurrentWriteError, match=f"pid {proc.pid} on host .* for a "
                                                       "test holder"):
            StateDirLock(directory).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return proc.pid


def test_a_lock_left_by_a_killed_process_does_not_block(spark, tmp_path, monkeypatch, capsys):
    conf = write_job(tmp_path)
    hold_and_kill(str(tmp_path / "out" / "state"))
    assert (tmp_path / "out" / "state" / ".lock").exists()  # the file stays, unlocked
    monkeypatch.chdir(ROOT)
    assert stream.main(["--conf", conf]) == 0
    assert f"{FILES} micro-batches processed" in capsys.readouterr().out


def test_a_lease_of_a_dead_or_silent_owner_is_taken_over(spark, tmp_path):
    """The lease of state directories that are not driver-local, through Spark's reader
    and writer (here on a local path)."""
    import json
    import socket

    from minibatch_kmeans.app.stream_lock import StateDirLease
    from minibatch_kmeans.errors import ConcurrentWriteError

    directory = str(tmp_path / "state")
    dead = hold_and_kill(str(tmp_path / "other"))  # a pid that no longer exists

    def leave(pid, host, age):  # another owner's lease, in both slots
        doc = json.dumps({"host": host, "pid": pid, "token": "t", "since": time.time() - age,
                          "heartbeat": time.time() - age, "at": time.time()})
        for slot in ("slot-0", "slot-1"):
            (spark.createDataFrame([(doc,)], "value string").coalesce(1)
             .write.mode("overwrite").text(f"{directory}/lease/{slot}"))

    leave(os.getpid(), socket.gethostname(), 0)  # alive, fresh: held
    with pytest.raises(ConcurrentWriteError, match=f"{directory} is held by another query "
                                                   f"\\(pid {os.getpid()} on host"):
        StateDirLease(spark, directory, seconds=30).acquire()
    leave(dead, socket.gethostname(), 0)  # killed on this host: taken at once
    lease = StateDirLease(spark, directory, seconds=30).acquire()
    assert lease.held and lease.read()["token"] == lease.owner["token"]
    with pytest.raises(ConcurrentWriteError, match="is held by another query"):
        StateDirLease(spark, directory, seconds=30).acquire()  # a live lease: refused
    assert lease.renew()
    lease.release()
    assert lease.read() is None
    leave(1, "another-host", 100)  # another host's, silent for longer than its life
    taken = StateDirLease(spark, directory, seconds=30).acquire()
    assert taken.held
    leave(1, "another-host", 0)  # taken over by another meanwhile: the heartbeat says so
    assert not taken.renew() and not taken.held


def test_a_lease_is_renewed_while_its_query_runs_and_released_when_it_ends(spark, tmp_path):
    import threading

    from minibatch_kmeans.app.stream_lock import StateDirLease, watch

    lease = StateDirLease(spark, str(tmp_path / "state"), seconds=3).acquire()
    first = lease.read()["heartbeat"]
    running, stopped = threading.Event(), threading.Event()
    running.set()
    watcher = watch(lease, running.is_set, stopped.set)
    deadline = time.time() + 60
    while lease.read()["heartbeat"] == first and time.time() < deadline:
        time.sleep(0.2)
    assert lease.read()["heartbeat"] > first and lease.held  # renewed, still ours
    running.clear()  # the query ended: the lease is let go
    watcher.join(timeout=60)
    assert not lease.held and lease.read() is None and not stopped.is_set()


@pytest.mark.slow
def test_killed_stream_restarts_from_its_checkpoint_to_the_same_state(spark, tmp_path,
                                                                      monkeypatch):
    conf = write_job(tmp_path)
    log1 = tmp_path / "run1.log"
    with open(log1, "w") as log:
        proc = start(conf, log)
        try:
            deadline = time.time() + 300
            while (state_of(spark, tmp_path, "out") or {}).get("batchId", -1) < 2:
                assert proc.poll() is None, "the stream ended before it was killed:\n" + \
                    log1.read_text()[-3000:]
                assert time.time() < deadline, "no state in time:\n" + log1.read_text()[-3000:]
                time.sleep(0.05)
        finally:
            kill_group(proc)
    killed_at = state_of(spark, tmp_path, "out")["batchId"]
    assert 2 <= killed_at < FILES - 1, killed_at

    log2 = tmp_path / "run2.log"
    with open(log2, "w") as log:
        proc = start(conf, log)
        try:
            assert proc.wait(timeout=600) == 0, log2.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                kill_group(proc)
    assert f"resuming from micro-batch {killed_at}" in log2.read_text()

    monkeypatch.chdir(ROOT)  # uninterrupted, in this process, into another output
    assert stream.main(["--conf", write_job(tmp_path, out="out2")]) == 0
    resumed, fresh = (state_of(spark, tmp_path, o) for o in ("out", "out2"))
    assert resumed["batchId"] == fresh["batchId"] == FILES - 1
    assert resumed["applied"] == fresh["applied"] == FILES
    np.testing.assert_allclose(resumed["model"]["centers"], fresh["model"]["centers"],
                               rtol=1e-12)
    np.testing.assert_allclose(resumed["model"]["weightSums"], fresh["model"]["weightSums"],
                               rtol=1e-12)
    for o in ("out", "out2"):  # every micro-batch's rows once, whatever was replayed
        preds = spark.read.parquet(str(tmp_path / o / "predictions"))
        assert preds.count() == preds.select("id").distinct().count() == FILES * 200
        metrics = spark.read.parquet(str(tmp_path / o / "metrics"))
        assert sorted(r[0] for r in metrics.select("batch_id").collect()) == list(range(FILES))
