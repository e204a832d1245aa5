"""Checkpoint stores (driver files, and Spark's writer), and a fit that resumes from them
ends as an uninterrupted one."""
import json
import os

import numpy as np
import pytest

from helpers import blobs, cols, columns_df
from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.core.checkpoint import Checkpoint
from minibatch_kmeans.core.minibatch import Convergence, MiniBatchState
from minibatch_kmeans.errors import InvalidParamError
from minibatch_kmeans.spark.checkpoint import (LocalCheckpointStore, SparkCheckpointStore,
                                               open_store)
from minibatch_kmeans.spark.features import resolve
from minibatch_kmeans.spark.fit import FitParams, fit


def ckpt(step, reason=None, k=3):
    state = MiniBatchState(np.arange(2.0 * k).reshape(k, 2) / 7.0, Convergence(100, 10),
                           step=step)
    return Checkpoint(state, {"k": k}, {"numBuckets": 4}, reason)


def files(directory):
    return sorted(os.listdir(directory))


# -- driver-local files -----------------------------------------------------------------------


def test_local_store_keeps_the_latest_two(tmp_path):
    store = LocalCheckpointStore(str(tmp_path / "ck"))
    assert store.load_latest() is None  # no directory yet
    for step in (5, 10, 15):
        store.save(ckpt(step))
    assert files(tmp_path / "ck") == ["checkpoint-000000000010.json",
                                      "checkpoint-000000000015.json"]
    latest = LocalCheckpointStore(str(tmp_path / "ck")).load_latest()
    assert latest.step == 15 and latest.stop_reason is None
    store.save(ckpt(15, "maxIter"))  # the final save of the same step replaces it
    assert [s for s, _ in store.steps()] == [10, 15]
    assert store.load_latest().stop_reason == "maxIter"
    doc = json.loads((tmp_path / "ck" / "checkpoint-000000000015.json").read_text())
    assert doc["format"] == "minibatch_kmeans.checkpoint" and doc["step"] == 15


def test_local_write_is_atomic(tmp_path, monkeypatch):
    """A write that fails before its rename leaves the previous checkpoint whole and no
    partial file; a temporary file left by a killed writer is ignored, then removed."""
    store = LocalCheckpointStore(str(tmp_path))
    store.save(ckpt(5))
    before = (tmp_path / "checkpoint-000000000005.json").read_text()

    def crash(src, dst):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save(ckpt(10))
    monkeypatch.undo()
    assert files(tmp_path) == ["checkpoint-000000000005.json"]
    assert (tmp_path / "checkpoint-000000000005.json").read_text() == before
    (tmp_path / ".checkpoint-abc.tmp").write_text('{"format": "minibatch_kmea')  # SIGKILL
    hour_ago = os.path.getmtime(tmp_path / ".checkpoint-abc.tmp") - 2 * 3600
    os.utime(tmp_path / ".checkpoint-abc.tmp", (hour_ago, hour_ago))
    (tmp_path / ".checkpoint-other.tmp").write_text('{"format"')  # a live writer's, just begun
    assert store.load_latest().step == 5
    store.save(ckpt(10))
    assert files(tmp_path) == [".checkpoint-other.tmp", "checkpoint-000000000005.json",
                               "checkpoint-000000000010.json"]


def test_an_unreadable_newest_checkpoint_falls_back_to_the_older_one(spark, tmp_path):
    """A torn or corrupted newest checkpoint is passed over for the one kept before it, in
    both stores; when none reads, the newest one's error names it."""
    store = LocalCheckpointStore(str(tmp_path / "local"))
    store.save(ckpt(5))
    store.save(ckpt(10))
    (tmp_path / "local" / "checkpoint-000000000010.json").write_text('{"format": "minibat')
    assert LocalCheckpointStore(str(tmp_path / "local")).load_latest().step == 5
    (tmp_path / "local" / "checkpoint-000000000005.json").write_text("garbage")
    with pytest.raises(InvalidParamError, match="checkpoint-000000000010.json.*not a readable"):
        LocalCheckpointStore(str(tmp_path / "local")).load_latest()

    uri = f"file://{tmp_path}/spark"
    remote = SparkCheckpointStore(spark, uri)
    remote.save(ckpt(5))
    remote.save(ckpt(10))  # slot-1
    part = next(p for p in os.listdir(tmp_path / "spark" / "slot-1") if p.startswith("part-"))
    (tmp_path / "spark" / "slot-1" / part).write_text('{"format": "minibat')
    for crc in (tmp_path / "spark" / "slot-1").glob(".*.crc"):
        crc.unlink()
    again = SparkCheckpointStore(spark, uri)
    assert again.load_latest().step == 5
    again.save(ckpt(15))  # overwrites the unreadable slot
    assert SparkCheckpointStore(spark, uri).load_latest().step == 15


def test_a_foreign_file_is_not_resumed(tmp_path):
    (tmp_path / "checkpoint-000000000007.json").write_text('{"format": "pickle?"}')
    with pytest.raises(InvalidParamError, match="checkpoint-000000000007.json.*not a readable"):
        LocalCheckpointStore(str(tmp_path)).load_latest()


def test_open_store_picks_by_path(spark, tmp_path):
    store = open_store(f"file://{tmp_path}/ck")
    assert isinstance(store, LocalCheckpointStore) and store.directory == f"{tmp_path}/ck"
    assert isinstance(open_store(str(tmp_path)), LocalCheckpointStore)
    assert open_store("dbfs:/tmp/ck").directory == "/dbfs/tmp/ck"
    remote = open_store("s3a://bucket/ck/", spark)
    assert isinstance(remote, SparkCheckpointStore) and remote.path == "s3a://bucket/ck"


# -- through Spark's writer (what s3a:, abfss:, hdfs: use), here on a file: URI ----------------


def test_spark_store_alternates_two_slots(spark, tmp_path):
    uri = f"file://{tmp_path}/ck"
    store = SparkCheckpointStore(spark, uri)
    assert store.load_latest() is None
    store.save(ckpt(5))
    store.save(ckpt(10))
    store.save(ckpt(15))  # overwrites slot-0, which held step 5
    assert files(tmp_path / "ck") == ["slot-0", "slot-1"]
    again = SparkCheckpointStore(spark, uri)
    latest = again.load_latest()
    assert latest.step == 15
    assert np.array_equal(latest.state.centers, ckpt(15).state.centers)
    again.save(ckpt(20, "tol"))  # goes to slot-1, keeping 15 in slot-0
    assert SparkCheckpointStore(spark, uri).read_slot(0).step == 15
    final = SparkCheckpointStore(spark, uri).load_latest()
    assert (final.step, final.stop_reason) == (20, "tol")


def test_spark_store_skips_an_uncommitted_slot(spark, tmp_path):
    """An overwrite killed before its commit leaves an empty slot (or only _temporary)."""
    uri = f"file://{tmp_path}/ck"
    SparkCheckpointStore(spark, uri).save(ckpt(5))
    (tmp_path / "ck" / "slot-1" / "_temporary").mkdir(parents=True)
    store = SparkCheckpointStore(spark, uri)
    assert store.load_latest().step == 5
    store.save(ckpt(10))  # into the broken slot, not over step 5
    assert SparkCheckpointStore(spark, uri).load_latest().step == 10
    assert SparkCheckpointStore(spark, uri).read_slot(0).step == 5


# -- the fit ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(spark):
    X, _, _ = blobs(n=600, k=3, d=2, seed=4)
    df = columns_df(spark, X, partitions=2).cache()
    return df, resolve(df, "features", cols(2)), (X[:3] + 0.5).tolist()


def params(**kw):
    """6 buckets of about 100 rows, 2 epochs: 12 steps, and reassignments (a poor start
    and a high ratio), so the reassignment counter must resume too."""
    base = dict(k=3, batch_size=100, max_iter=2, seed=5, tol=0.0, max_no_improvement=None,
                reassignment_ratio=0.3, checkpoint_interval=3, fit_mode="step")
    base.update(kw)
    return FitParams(**base)


@pytest.fixture(scope="module")
def reference(data):
    df, spec, init = data
    return fit(df, spec, params(initial_centers=init))


def assert_same_fit(res, ref):
    np.testing.assert_allclose(res.centers, ref.centers, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.weight_sums, ref.weight_sums, rtol=0, atol=1e-12)
    for key in ("numSteps", "stopReason", "rowsSeen", "numIter"):
        assert res.summary[key] == ref.summary[key], key
    assert res.summary["trainingCost"] == pytest.approx(ref.summary["trainingCost"], rel=1e-12)
    assert [(r.step, r.bucket, r.rows, r.reassigned) for r in res.history] == \
        [(r.step, r.bucket, r.rows, r.reassigned) for r in ref.history]
    np.testing.assert_allclose([r.batch_inertia for r in res.history],
                               [r.batch_inertia for r in ref.history], rtol=1e-12)


def stop_after(n):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > n
    return should_stop


@pytest.mark.parametrize("through", ["files", "spark"])
def test_interrupted_fit_resumes_to_the_same_centers(data, reference, tmp_path, monkeypatch,
                                                     through, caplog):
    df, spec, init = data
    directory = f"file://{tmp_path}/ck"
    if through == "spark":  # force the remote path's Spark writer onto a file: URI
        monkeypatch.setattr("minibatch_kmeans.spark.checkpoint.is_remote", lambda path: True)
    p = params(checkpoint_dir=directory, initial_centers=init)
    assert reference.summary["numSteps"] == 12 and reference.summary["stopReason"] == "maxIter"
    assert sum(r.reassigned for r in reference.history) > 0  # the counter matters

    first = fit(df, spec, p, should_stop=stop_after(7))
    assert first.summary["stopReason"] == "interrupted" and first.summary["numSteps"] == 7
    assert first.summary["resumedFromStep"] == 0 and first.summary["checkpointDir"] == directory
    expected = ["slot-0", "slot-1"] if through == "spark" else \
        ["checkpoint-000000000006.json", "checkpoint-000000000007.json"]
    assert files(tmp_path / "ck") == expected

    with caplog.at_level("INFO", logger="minibatch_kmeans"):
        resumed = fit(df, spec, params(checkpoint_dir=directory, initial_centers=init))
    assert "resuming from step 7 of 12" in caplog.text
    assert resumed.summary["resumedFromStep"] == 7
    assert_same_fit(resumed, reference)


def test_a_crashed_fit_resumes_from_its_last_periodic_checkpoint(data, reference, tmp_path):
    df, spec, init = data
    p = params(checkpoint_dir=str(tmp_path), initial_centers=init)

    def crash(rec, state):
        if rec.step == 8:
            raise RuntimeError("the driver died")

    with pytest.raises(RuntimeError, match="driver died"):
        fit(df, spec, p, on_step=crash)
    assert [s for s, _ in LocalCheckpointStore(str(tmp_path)).steps()] == [3, 6]
    resumed = fit(df, spec, p)
    assert resumed.summary["resumedFromStep"] == 6
    assert_same_fit(resumed, reference)
    # saved on the same grid of steps as a fit that never stopped, and once at the end
    assert [s for s, _ in LocalCheckpointStore(str(tmp_path)).steps()] == [9, 12]


def test_a_finished_run_returns_at_once_with_the_same_centers(data, reference, tmp_path):
    df, spec, init = data
    p = params(checkpoint_dir=str(tmp_path), initial_centers=init)
    done = fit(df, spec, p)
    assert_same_fit(done, reference)
    assert LocalCheckpointStore(str(tmp_path)).load_latest().stop_reason == "maxIter"
    steps = []
    again = fit(df, spec, p, on_step=lambda rec, state: steps.append(rec.step))
    assert steps == []  # no step ran
    assert again.summary["resumedFromStep"] == 12
    assert_same_fit(again, reference)  # the final cost pass ran again


def test_early_stop_is_final_too(data, tmp_path):
    df, spec, init = data
    p = params(checkpoint_dir=str(tmp_path), tol=1e-2, max_iter=20)
    done = fit(df, spec, p)
    assert done.summary["stopReason"] == "tol" and done.summary["numSteps"] < 120
    again = fit(df, spec, p)
    assert again.summary["stopReason"] == "tol"
    assert again.summary["numSteps"] == again.summary["resumedFromStep"] \
        == done.summary["numSteps"]
    np.testing.assert_array_equal(again.centers, done.centers)


def test_another_fit_does_not_resume(data, tmp_path):
    df, spec, init = data
    p = params(checkpoint_dir=str(tmp_path), initial_centers=init)
    fit(df, spec, p, should_stop=stop_after(6))
    with pytest.raises(InvalidParamError) as e:
        fit(df, spec, params(checkpoint_dir=str(tmp_path), k=4, seed=6))
    msg = str(e.value)
    assert "k=3 there but 4 now" in msg and "seed=5 there but 6 now" in msg
    assert "step 6" in msg and str(tmp_path) in msg
    with pytest.raises(InvalidParamError, match="numRows=600 there but 599 now"):
        fit(df.limit(599), spec, p)
    # same shape, one value changed: the rows' keys differ
    from pyspark.sql import functions as F

    changed = df.withColumn(spec.columns[0], F.when(F.col(spec.columns[0]) == df.first()[
        spec.columns[0]], F.lit(1e6)).otherwise(F.col(spec.columns[0])))
    with pytest.raises(InvalidParamError, match="contentHash="):
        fit(changed, spec, p)


def test_estimator_params(data, tmp_path):
    df, _, _ = data
    est = MiniBatchKMeans(k=3, inputCols=cols(2), batchSize=50, maxIter=1, seed=5,
                          fitMode="step", checkpointDir=str(tmp_path / "ck"), checkpointInterval=3)
    assert (est.getCheckpointDir(), est.getCheckpointInterval()) == (str(tmp_path / "ck"), 3)
    model = est.fit(df)
    assert model.summary.checkpointDir == str(tmp_path / "ck")
    assert model.summary.resumedFromStep == 0
    assert est.copy().setCheckpointInterval(4).getCheckpointInterval() == 4
    assert MiniBatchKMeans().getCheckpointDir() is None
    assert MiniBatchKMeans().getCheckpointInterval() == 10
    with pytest.raises(InvalidParamError, match="checkpointInterval=0"):
        MiniBatchKMeans(checkpointInterval=0).validateParams()
    with pytest.raises(InvalidParamError, match="checkpointDir=' '"):
        MiniBatchKMeans(checkpointDir=" ").validateParams()
    plain = MiniBatchKMeans(k=3, inputCols=cols(2), batchSize=50, maxIter=1, seed=5,
                            fitMode="step").fit(df)
    assert plain.summary.checkpointDir is None and plain.summary.resumedFromStep == 0
    np.testing.assert_array_equal(np.array(model.clusterCenters()),
                                  np.array(plain.clusterCenters()))
