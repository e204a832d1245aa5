"""Concurrent writers of one Delta table (both engines) and the delta-rs stream's first
offset across a restart.

Two writes of the same new ``run_id`` partition at once: one commits, the other fails with
:class:`ConcurrentWriteError` naming the table and the partition, and the table holds the
partition's rows once. Writes of different partitions at once both commit.
"""
import os
import subprocess
import sys
import threading
import time

import pytest
from pyspark.sql import functions as F

from minibatch_kmeans.errors import ConcurrentWriteError
from minibatch_kmeans.tables import delta
from minibatch_kmeans.tables.io import read_table, write_table

import delta_engines

engine = delta_engines.engine  # a fixture: both Delta engines


def scores(spark, run_id, n=2000, first=0):
    return (spark.range(first, first + n, numPartitions=2)
            .withColumn("prediction", (F.col("id") % 3).cast("int"))
            .withColumn("run_id", F.lit(run_id)))


def write_run(df, path):
    write_table(df, path, "delta", mode="overwrite", partition_by=["run_id"],
                replace_partitions=True)


def counts(spark, path):
    return {r.run_id: r["count"] for r in read_table(spark, path, "delta")
            .groupBy("run_id").count().collect()}


def race(*writes):
    """Run the callables at once (threads behind a barrier); their errors, in order."""
    barrier = threading.Barrier(len(writes))
    errors = [None] * len(writes)

    def run(i):
        barrier.wait()
        try:
            writes[i]()
        except Exception as e:  # noqa: BLE001 - the test looks at it
            errors[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return errors


def assert_conflict(error, path, partition="run_id='r2'"):
    """A ConcurrentWriteError in one line naming the table and the partition (as this
    package writes it, or as Delta does: ``[run_id=r2]``)."""
    assert isinstance(error, ConcurrentWriteError), repr(error)
    text = str(error)
    assert path in text and (partition in text or partition.replace("'", "") in text), text
    assert "Traceback" not in text and "at org.apache" not in text and "\n" not in text


# -- the delta-rs fallback, deterministically: a commit on a stale snapshot ----------------


def test_fallback_commit_on_a_stale_snapshot_of_the_same_new_partition_fails(
        spark, tmp_path, monkeypatch):
    monkeypatch.setenv(delta.ENGINE_ENV, "deltalake")
    path = str(tmp_path / "t")
    write_run(scores(spark, "r1", 100), path)
    first, second = delta.existing_table(path), delta.existing_table(path)  # both at v0
    a, b = scores(spark, "r2", 300), scores(spark, "r2", 300, first=1000)
    assert delta.commit_write(a, path, first, "overwrite", ["run_id"], True)["version"] == 1
    with pytest.raises(ConcurrentWriteError) as e:
        delta.commit_write(b, path, second, "overwrite", ["run_id"], True)
    assert_conflict(e.value, path)
    assert "version 1" in str(e.value)
    assert counts(spark, path) == {"r1": 100, "r2": 300}
    assert read_table(spark, path, "delta").where("run_id = 'r2'").agg(
        F.max("id")).first()[0] == 299  # the winner's rows
    assert delta.open_table(path).version() == 1
    # the loser's files were deleted, its staging directory too
    files = {f for _, _, fs in os.walk(path) for f in fs if f.endswith(".parquet")}
    assert len(files) == len(delta.open_table(path).file_uris())
    assert not [d for d in os.listdir(path) if d.startswith("_staging")]


@pytest.mark.parametrize("mode,replace,conflict", [
    ("overwrite", True, False),   # another partition: committed after the other
    ("append", False, False),     # appends never conflict with appends
    ("overwrite", False, True),   # a whole overwrite conflicts with any new data
])
def test_fallback_stale_snapshot_of_other_partitions(spark, tmp_path, monkeypatch, mode,
                                                     replace, conflict):
    monkeypatch.setenv(delta.ENGINE_ENV, "deltalake")
    path = str(tmp_path / "t")
    write_run(scores(spark, "r1", 100), path)
    first, second = delta.existing_table(path), delta.existing_table(path)
    delta.commit_write(scores(spark, "r2", 200), path, first, "overwrite", ["run_id"], True)
    late = scores(spark, "r3", 50)
    if conflict:
        with pytest.raises(ConcurrentWriteError, match="changing data this overwrite"):
            delta.commit_write(late, path, second, mode, ["run_id"], replace)
        assert counts(spark, path) == {"r1": 100, "r2": 200}
    else:
        assert delta.commit_write(late, path, second, mode, ["run_id"], replace)[
            "version"] == 2
        assert counts(spark, path) == {"r1": 100, "r2": 200, "r3": 50}


def test_fallback_two_creators_of_one_table(spark, tmp_path, monkeypatch):
    """Both see no table; the second commits into the table the first created (another
    partition), or fails when it would replace the same partition."""
    monkeypatch.setenv(delta.ENGINE_ENV, "deltalake")
    path = str(tmp_path / "t")
    delta.commit_write(scores(spark, "r1", 100), path, None, "overwrite", ["run_id"], True)
    assert delta.commit_write(scores(spark, "r2", 70), path, None, "overwrite", ["run_id"],
                              True)["version"] == 1
    with pytest.raises(ConcurrentWriteError) as e:
        delta.commit_write(scores(spark, "r1", 30), path, None, "overwrite", ["run_id"], True)
    assert_conflict(e.value, path, "run_id='r1'")
    other = scores(spark, "r9", 10).withColumn("extra", F.lit(1))
    with pytest.raises(ConcurrentWriteError, match="another writer created it"):
        delta.commit_write(other, str(tmp_path / "t"), None, "overwrite", ["run_id"], True)
    assert counts(spark, path) == {"r1": 100, "r2": 70}


# -- both engines: two writers at once -----------------------------------------------------


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_two_writers_of_one_partition_one_fails(spark, tmp_path, engine, existing):
    """Two writes of the same run's partition at once, new or already there: one
    commits, the other fails cleanly, and the partition holds one writer's rows."""
    path = str(tmp_path / "t")
    write_run(scores(spark, "r1", 100), path)
    if existing:
        write_run(scores(spark, "r2", 100), path)
    a, b = scores(spark, "r2", 6000), scores(spark, "r2", 6000, first=100000)
    errors = race(lambda: write_run(a, path), lambda: write_run(b, path))
    failed = [e for e in errors if e is not None]
    assert len(failed) == 1, errors
    assert_conflict(failed[0], path)
    assert counts(spark, path) == {"r1": 100, "r2": 6000}
    ids = read_table(spark, path, "delta").where("run_id = 'r2'").agg(
        F.min("id").alias("lo"), F.max("id").alias("hi")).first()
    assert (ids.lo, ids.hi) in ((0, 5999), (100000, 105999))  # one writer's rows only
    # the loser's run, re-run alone, replaces the partition
    write_run(b, path)
    assert counts(spark, path) == {"r1": 100, "r2": 6000}


def test_two_writers_of_different_new_partitions_both_commit(spark, tmp_path, engine):
    path = str(tmp_path / "t")
    write_run(scores(spark, "r1", 100), path)
    errors = race(lambda: write_run(scores(spark, "r2", 5000), path),
                  lambda: write_run(scores(spark, "r3", 4000), path))
    assert errors == [None, None], errors
    assert counts(spark, path) == {"r1": 100, "r2": 5000, "r3": 4000}


# -- two real scoring jobs at once --------------------------------------------------------


@pytest.mark.slow
def test_two_score_jobs_of_the_same_new_run_id_one_fails(spark, tmp_path, monkeypatch,
                                                         request):
    """The issue's case: two ``jobs/score.py`` processes started together for the same
    new run id into one Delta output (delta-rs fallback; here a new output, so both also
    race to create its tables). One exits 0; the other exits 2 with one line naming the
    table and the partition, or (when it started after the first committed) replaces
    the partition: the run's rows are there once."""
    from minibatch_kmeans import MiniBatchKMeans

    monkeypatch.setenv(delta.ENGINE_ENV, "deltalake")
    monkeypatch.chdir(request.config.rootpath)
    n = 20000
    data, model, out = (str(tmp_path / d) for d in ("data", "model", "out"))
    (spark.range(n, numPartitions=2).select(
        "id", *[(F.rand(seed=i) * 10 + F.col("id") % 3 * 20).alias(f"x{i}") for i in range(3)])
     .write.parquet(data))
    MiniBatchKMeans(k=3, inputCols=["x0", "x1", "x2"], seed=1).fit(
        spark.read.parquet(data)).write().save(model)

    def args(run_id):
        return ["--conf", "conf/score.yaml", "--set", f"input.path={data}",
                "--set", f"scoring.model={model}", "--set", f"output.dir={out}",
                "--set", "output.format=delta", "--run-id", run_id]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    logs = [open(tmp_path / f"job{i}.log", "w+") for i in range(2)]
    t0 = time.time()
    jobs = [subprocess.Popen([sys.executable, "jobs/score.py", *args("r1")], env=env,
                             stdout=log, stderr=subprocess.STDOUT) for log in logs]
    codes = sorted(j.wait(timeout=600) for j in jobs)
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    assert codes in ([0, 2], [0, 0]), texts
    if codes == [0, 2]:
        line = next(line for text in texts for line in text.splitlines()
                    if line.startswith("error: "))
        assert "ConcurrentWriteError" not in line and "Traceback" not in "".join(texts)
        assert f"delta table at '{out}/" in line and "run_id='r1'" in line, line
    print(f"two score jobs: exit codes {codes} in {time.time() - t0:.0f} s")
    preds = read_table(spark, f"{out}/predictions", "delta")
    assert {r.run_id: r["count"] for r in preds.groupBy("run_id").count().collect()} == \
        {"r1": n}
    assert preds.where("run_id = 'r1'").select("id").distinct().count() == n


# -- the delta-rs stream keeps its first offset across a restart ---------------------------


def test_stream_restarted_inside_batch_0_delivers_every_row_once(spark, tmp_path,
                                                                 monkeypatch):
    """Batch 0 fails before it commits (its offsets are in the checkpoint, its commit is
    not); a version is appended; the restarted query replays batch 0 from the snapshot the
    query first started on, then reads the new version: every row once."""
    from pyspark.errors import StreamingQueryException

    from minibatch_kmeans.tables.delta.stream import read_delta_stream

    monkeypatch.setenv(delta.ENGINE_ENV, "deltalake")
    path, checkpoint = str(tmp_path / "t"), str(tmp_path / "checkpoint")
    write_table(spark.range(0, 100, numPartitions=2), path, "delta")

    def fail(batch, batch_id):
        raise RuntimeError(f"crash in batch {batch_id}")

    def start(each):
        return (read_delta_stream(spark, path).writeStream.foreachBatch(each)
                .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())

    with pytest.raises(StreamingQueryException, match="crash in batch 0"):
        start(fail).awaitTermination(120)
    assert os.path.exists(os.path.join(checkpoint, "offsets", "0"))
    assert not os.path.exists(os.path.join(checkpoint, "commits", "0"))
    write_table(spark.range(100, 250, numPartitions=2), path, "delta", mode="append")
    got = []
    query = start(lambda batch, batch_id: got.append(
        (batch_id, [r.id for r in batch.select("id").collect()])))
    query.awaitTermination(120)
    assert query.exception() is None
    ids = sorted(i for _, batch in got for i in batch)
    assert ids == list(range(250)), (len(ids), len(set(ids)))
    assert sorted(got[0][1]) == list(range(100))  # batch 0 replayed as first planned
