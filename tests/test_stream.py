"""The streaming job's library part (minibatch_kmeans.app.stream_job) on real
Structured Streaming queries over Parquet files written in stages: the centers follow
moving data, the streamed model equals partialFit on the same micro-batches, a replayed
micro-batch is not applied twice, bad rows are quarantined without stopping the stream,
a first micro-batch short of k distinct rows waits for more, and one query at a time holds
a state directory."""
import os
import shutil
import time

import numpy as np
import pytest

from helpers import STREAM_CENTERS as CENTERS
from helpers import moving_blobs as blobs
from helpers import stream_file as write_file
from minibatch_kmeans import MiniBatchKMeansModel
from minibatch_kmeans.app.config import StreamConfig
from minibatch_kmeans.errors import ConcurrentWriteError, ConfigError, InvalidInputError
from minibatch_kmeans.app.stream_job import STATE, run_stream
from minibatch_kmeans.spark.checkpoint import open_store

SCHEMA = "id long, a double, b double"


@pytest.fixture(scope="module")
def start_model(spark, tmp_path_factory):
    """A model near the first stage's clusters, saved where stream.model points."""
    path = str(tmp_path_factory.mktemp("model") / "m")
    model = MiniBatchKMeansModel(CENTERS + 0.3, [50.0, 50.0, 50.0]).setInputCols(["a", "b"])
    model._set(dtype="float64")
    model.write().save(path)
    return path


def config(root, model=None, **stream):
    raw = {"input": {"path": str(root / "in")},
           "stream": dict({"model": model, "max_files_per_trigger": 1, "id_columns": ["id"],
                           "schema": SCHEMA}, **stream),
           "output": {"dir": str(root / "out")}}
    if model is None:
        raw["input"]["features"] = {"inputCols": ["a", "b"]}
        raw["model"] = {"k": 3, "seed": 3, "batchSize": 100, "dtype": "float64"}
    return StreamConfig.from_dict(raw)


def saved_state(spark, cfg):
    return open_store(cfg.output.state, spark, STATE).load_latest()


def centers(model):
    return np.array(model.clusterCenters())


def test_centers_follow_data_whose_means_move(spark, tmp_path, start_model):
    cfg = config(tmp_path, start_model, half_life=1)
    for i in range(3):
        write_file(tmp_path / "in", i, blobs(i))
    first = run_stream(spark, cfg)
    assert first.applied == [0, 1, 2] and first.num_updates == 3
    np.testing.assert_allclose(centers(MiniBatchKMeansModel.load(cfg.output.model)), CENTERS,
                               atol=0.15)
    shift = np.array([3.0, -2.0])
    for i in range(3, 7):  # the stage after: every cluster moved
        write_file(tmp_path / "in", i, blobs(i, shift))
    second = run_stream(spark, cfg)  # a re-run: only the new files
    assert second.applied == [3, 4, 5, 6] and second.num_updates == 7
    moved = centers(MiniBatchKMeansModel.load(cfg.output.model))
    np.testing.assert_allclose(moved, CENTERS + shift, atol=0.2)
    metrics = spark.read.parquet(cfg.output.metrics).toPandas().sort_values("batch_id")
    assert metrics["batch_id"].tolist() == list(range(7)) and metrics["applied"].all()
    assert metrics["discount"].tolist() == [0.5] * 7
    # the prequential cost jumps when the data moves, then falls as the centers follow
    cost = metrics["cost_per_row"].to_numpy()
    assert cost[3] > 5 * cost[2] and cost[6] < cost[3] / 5
    preds = spark.read.parquet(cfg.output.predictions)
    assert preds.count() == 7 * 200 and preds.select("id").distinct().count() == 7 * 200
    assert sorted(preds.columns) == ["batch_id", "distance", "id", "prediction"]


def test_streamed_model_equals_partial_fit_on_the_same_batches(spark, tmp_path, start_model):
    cfg = config(tmp_path, start_model)  # decay factor 1
    files = [write_file(tmp_path / "in", i, blobs(10 + i, 0.5 * i)) for i in range(4)]
    result = run_stream(spark, cfg)
    assert result.applied == [0, 1, 2, 3]
    expected = MiniBatchKMeansModel.load(start_model)
    for path in files:
        expected = expected.partialFit(spark.read.parquet(path))
    streamed = MiniBatchKMeansModel.load(cfg.output.model)
    np.testing.assert_allclose(centers(streamed), centers(expected), rtol=1e-12)
    np.testing.assert_allclose(streamed.weightSums, expected.weightSums, rtol=1e-12)
    assert streamed.numUpdates == expected.numUpdates == 4
    assert streamed.getDtype() == "float64"  # the start model's Params carry over

    # Spark replays a micro-batch it had not committed (a crash after foreachBatch ran):
    # the state says it was applied, so it is skipped, and nothing is written twice.
    commits = tmp_path / "out" / "checkpoint" / "commits"
    for name in ("3", ".3.crc"):
        os.remove(commits / name)
    shutil.rmtree(cfg.output.model)  # and it died before saving the current model
    replay = run_stream(spark, cfg)
    assert replay.replayed == [3] and replay.applied == [] and replay.num_updates == 4
    again = MiniBatchKMeansModel.load(cfg.output.model)
    np.testing.assert_array_equal(centers(again), centers(streamed))
    assert spark.read.parquet(cfg.output.metrics).count() == 4
    assert spark.read.parquet(cfg.output.predictions).count() == 4 * 200

    # a state paired with a new checkpoint would see batch ids from 0 again: refused
    shutil.rmtree(tmp_path / "out" / "checkpoint")
    with pytest.raises(ConfigError, match="checkpoint .* is missing"):
        run_stream(spark, cfg)


def test_bad_rows_are_quarantined_and_do_not_stop_the_stream(spark, tmp_path, start_model):
    cfg = config(tmp_path, start_model)
    good = blobs(20)
    dirty = good.copy()
    dirty[:5, 0] = np.nan  # 5 of 200 rows (2.5%, under max_invalid_fraction): null in Parquet
    write_file(tmp_path / "in", 0, dirty)
    write_file(tmp_path / "in", 1, np.full((50, 2), np.inf))  # all invalid: not applied
    write_file(tmp_path / "in", 2, blobs(21))
    result = run_stream(spark, cfg)
    assert result.applied == [0, 2] and result.skipped == [1]
    expected = (MiniBatchKMeansModel.load(start_model)
                .partialFit(spark.createDataFrame(
                    [(float(a), float(b)) for a, b in good[5:]], "a double, b double"))
                .partialFit(spark.read.parquet(str(tmp_path / "in" / "part-002.parquet"))))
    np.testing.assert_allclose(centers(MiniBatchKMeansModel.load(cfg.output.model)),
                               centers(expected), rtol=1e-12)
    q = spark.read.parquet(cfg.output.quarantine).toPandas()
    assert sorted(q.groupby("batch_id").size().items()) == [(0, 5), (1, 50)]
    assert set(q[q.batch_id == 0]["id"]) == set(range(5))
    assert q[q.batch_id == 0]["reason"].str.contains("a: null").all()
    m = spark.read.parquet(cfg.output.metrics).toPandas().set_index("batch_id")
    assert m.loc[0, "invalid_rows"] == 5 and m.loc[0, "valid_rows"] == 195
    assert not m.loc[1, "applied"] and "no valid rows" in m.loc[1, "reason"]
    assert spark.read.parquet(cfg.output.predictions).count() == 195 + 200


def test_handle_invalid_error_stops_the_stream_naming_the_batch(spark, tmp_path, start_model):
    cfg = config(tmp_path, start_model, handle_invalid="error")
    write_file(tmp_path / "in", 0, blobs(30))
    bad = blobs(31)
    bad[7, 1] = np.nan
    write_file(tmp_path / "in", 1, bad)
    with pytest.raises(InvalidInputError, match=r"micro-batch 1 of .* 1 invalid rows"):
        run_stream(spark, cfg)
    assert saved_state(spark, cfg)["batchId"] == 0  # batch 0 applied, 1 not
    q = spark.read.parquet(cfg.output.quarantine).toPandas()
    assert q["id"].tolist() == [1007] and q["batch_id"].tolist() == [1]


def test_without_a_model_the_first_micro_batch_is_fitted(spark, tmp_path):
    cfg = config(tmp_path, None, decay_factor=0.9)
    for i in range(2):
        write_file(tmp_path / "in", i, blobs(40 + i))
    result = run_stream(spark, cfg)
    assert result.applied == [0, 1] and result.num_updates == 1  # a fit, then one update
    model = MiniBatchKMeansModel.load(cfg.output.model)
    got = sorted(map(tuple, np.round(centers(model))))
    assert got == sorted(map(tuple, CENTERS))
    assert model.getK() == 3 and model.trainingInfo["numRows"] == 200
    state = saved_state(spark, cfg)
    assert state["applied"] == 2 and state["lastBatch"]["discount"] == 0.9


def test_initial_weight_sets_how_much_the_start_model_weighs(spark, tmp_path, start_model):
    cfg = config(tmp_path, start_model, initial_weight=7)
    path = write_file(tmp_path / "in", 0, blobs(95))
    run_stream(spark, cfg)
    start = MiniBatchKMeansModel.load(start_model)
    start._weight_sums = np.full(3, 7.0)
    expected = start.partialFit(spark.read.parquet(path))
    streamed = MiniBatchKMeansModel.load(cfg.output.model)
    np.testing.assert_allclose(streamed.weightSums, expected.weightSums, rtol=1e-12)
    np.testing.assert_allclose(centers(streamed), centers(expected), rtol=1e-12)
    with pytest.raises(ConfigError, match="initial_weight=sizes but the model"):
        run_stream(spark, config(tmp_path / "other", start_model, initial_weight="sizes"))


def test_config_errors(tmp_path, start_model):
    with pytest.raises(ConfigError, match="input.features is missing"):
        StreamConfig.from_dict({"input": {"path": "x"}, "output": {"dir": "o"}})
    with pytest.raises(ConfigError, match="both set"):
        config(tmp_path, start_model, half_life=2, decay_factor=0.5)
    with pytest.raises(ConfigError, match="stream.trigger"):
        config(tmp_path, start_model, trigger="soon")
    with pytest.raises(ConfigError, match="register_every=2 needs an mlflow"):
        config(tmp_path, start_model, register_every=2)
    with pytest.raises(ConfigError, match="stream.initial_weight"):
        config(tmp_path, start_model, initial_weight="heavy")
    with pytest.raises(ConfigError, match="starting_version .* delta input only"):
        config(tmp_path, start_model, starting_version=3)
    with pytest.raises(ConfigError, match="stream.lease_seconds"):
        config(tmp_path, start_model, lease_seconds=1)
    assert config(tmp_path, start_model, lease_seconds=20).stream.lease_seconds == 20


def test_registers_a_version_every_n_micro_batches_once(spark, tmp_path, start_model):
    from minibatch_kmeans.lifecycle.registry import tracking

    name = "stream-test-model"
    cfg = StreamConfig.from_dict({
        "input": {"path": str(tmp_path / "in")},
        "stream": {"model": start_model, "max_files_per_trigger": 1, "register_every": 2},
        "mlflow": {"model_name": name, "experiment": "stream-test"},
        "output": {"dir": str(tmp_path / "out"), "predictions": None}})
    for i in range(5):
        write_file(tmp_path / "in", i, blobs(60 + i))
    assert run_stream(spark, cfg).applied == [0, 1, 2, 3, 4]
    registry = tracking(experiment="stream-test")
    versions = registry.find_versions(name, {"stream_state": cfg.output.state})
    assert [v.tags["stream_batch_id"] for v in versions] == ["1", "3"]
    assert [v.tags["stream_updates"] for v in versions] == ["2", "4"]
    m = spark.read.parquet(cfg.output.metrics).toPandas().sort_values("batch_id")
    assert m["registered_version"].tolist() == [None, str(versions[0].version), None,
                                                str(versions[1].version), None]
    assert not os.path.exists(tmp_path / "out" / "predictions")  # predictions: null
    # a micro-batch replayed after its version was registered but before its state was
    # saved finds that version instead of registering another
    from minibatch_kmeans.app.stream_job import BatchUpdater

    updater = BatchUpdater(cfg, None, "replay")
    model = MiniBatchKMeansModel.load(cfg.output.model)
    assert updater._register(model, 3) == str(versions[1].version)
    assert len(registry.find_versions(name, {"stream_state": cfg.output.state})) == 2

    # another stream starts from a registered version: models:/<name>@<alias>
    registry.promote(name, versions[0].version)
    other = StreamConfig.from_dict({
        "input": {"path": str(tmp_path / "in")},
        "stream": {"model": f"models:/{name}@champion", "max_files_per_trigger": 1},
        "mlflow": {"model_name": name, "experiment": "stream-test"},
        "output": {"dir": str(tmp_path / "out2")}})
    assert run_stream(spark, other).num_updates == 2 + 5  # version 1 had 2 updates
    with pytest.raises(ConfigError, match="needs an mlflow section"):
        StreamConfig.from_dict({"input": {"path": "x"}, "stream": {"model": "models:/m@a"},
                                "output": {"dir": "o"}})


def test_stream_from_a_delta_table_into_delta_tables(spark, tmp_path, start_model):
    """Delta in (the delta-rs streaming source here; Spark's own where the session has
    Delta) and Delta out: appends after a run are the next run's micro-batches."""
    import pandas as pd
    from deltalake import write_deltalake

    from minibatch_kmeans.tables.io import read_table

    table = str(tmp_path / "in")

    def append(i, shift=0.0):
        X = blobs(80 + i, shift)
        write_deltalake(table, pd.DataFrame({"id": np.arange(i * 1000, i * 1000 + len(X)),
                                             "a": X[:, 0], "b": X[:, 1]}), mode="append")

    cfg = StreamConfig.from_dict({
        "input": {"path": table, "format": "delta"},
        "stream": {"model": start_model, "max_files_per_trigger": 1, "half_life": 1,
                   "id_columns": ["id"]},
        "output": {"dir": str(tmp_path / "out"), "format": "delta"}})
    for i in range(2):
        append(i)
    assert run_stream(spark, cfg).applied == [0, 1]
    for i in range(2, 5):
        append(i, shift=np.array([-2.0, 3.0]))
    assert run_stream(spark, cfg).applied == [2, 3, 4]
    np.testing.assert_allclose(centers(MiniBatchKMeansModel.load(cfg.output.model)),
                               CENTERS + [-2.0, 3.0], atol=0.6)  # moved 3.6, 3 batches
    preds = read_table(spark, cfg.output.predictions, "delta")
    assert preds.count() == preds.select("id").distinct().count() == 5 * 200
    assert read_table(spark, cfg.output.metrics, "delta").count() == 5


def test_an_interval_trigger_runs_until_the_timeout(spark, tmp_path, start_model):
    cfg = config(tmp_path, start_model, trigger="1 second", timeout_seconds=8)
    for i in range(2):
        write_file(tmp_path / "in", i, blobs(90 + i))
    t0 = time.perf_counter()
    result = run_stream(spark, cfg)
    assert result.applied == [0, 1] and result.batches == 2
    assert time.perf_counter() - t0 >= 8


def test_a_first_micro_batch_short_of_k_distinct_rows_waits_for_more(spark, tmp_path):
    cfg = config(tmp_path, None)  # no stream.model: k=3 fitted on the first micro-batch
    write_file(tmp_path / "in", 0, np.array([[0.0, 0.0], [10.0, 0.0]] * 4))  # 2 distinct
    first = run_stream(spark, cfg)
    assert first.applied == [] and first.skipped == [0] and first.num_updates is None
    assert first.text().endswith("no model yet: 2 distinct valid rows of k=3 carried from "
                                 "micro-batches [0]")
    reason = ("2 distinct valid rows, fewer than k=3: carried to the next micro-batch to fit "
              "the first model")
    state = saved_state(spark, cfg)
    assert state["batchId"] == 0 and state["model"] is None
    assert state["lastBatch"]["reason"] == reason and not state["lastBatch"]["applied"]
    pending = dict(state["pending"], rows=sorted(state["pending"]["rows"]))
    assert pending == {"k": 3, "batches": [0], "weights": None,
                       "rows": [[0.0, 0.0], [10.0, 0.0]]}
    m = spark.read.parquet(cfg.output.metrics).toPandas()
    assert m["reason"].tolist() == [reason] and not m["applied"].any()
    assert not os.path.exists(cfg.output.model)

    assert run_stream(spark, cfg).batches == 0  # a restart does not stop on that batch

    # one new distinct row (and a repeat): with the carried ones, k distinct rows
    write_file(tmp_path / "in", 1, np.array([[0.0, 10.0], [0.0, 0.0]]))
    second = run_stream(spark, cfg)
    assert second.applied == [1] and second.waiting is None
    model = MiniBatchKMeansModel.load(cfg.output.model)
    assert sorted(map(tuple, centers(model))) == sorted(map(tuple, CENTERS))
    assert model.trainingInfo["numRows"] == 2 + 2  # this batch's and the carried rows
    assert saved_state(spark, cfg)["pending"] is None
    preds = spark.read.parquet(cfg.output.predictions).toPandas()
    assert sorted(preds["id"]) == [1000, 1001]  # the carried rows were predicted nowhere

    write_file(tmp_path / "in", 2, blobs(43))
    assert run_stream(spark, cfg).applied == [2]
    assert MiniBatchKMeansModel.load(cfg.output.model).numUpdates == 1


def test_a_short_micro_batch_after_another_short_one_adds_its_rows(spark, tmp_path):
    cfg = config(tmp_path, None)
    write_file(tmp_path / "in", 0, np.array([[0.0, 0.0]] * 3))
    write_file(tmp_path / "in", 1, np.array([[0.0, 0.0]]))  # a repeat
    write_file(tmp_path / "in", 2, np.full((2, 2), np.nan))  # none valid: the rows wait
    write_file(tmp_path / "in", 3, np.array([[10.0, 0.0]]))
    write_file(tmp_path / "in", 4, np.array([[0.0, 10.0]]))
    result = run_stream(spark, cfg)
    assert result.skipped == [0, 1, 2, 3] and result.applied == [4]
    m = spark.read.parquet(cfg.output.metrics).toPandas().set_index("batch_id")
    assert m.loc[1, "reason"].startswith("1 distinct valid rows, fewer than k=3 (with those "
                                         "carried from micro-batches [0])")
    assert "no valid rows" in m.loc[2, "reason"]
    assert m.loc[3, "reason"].startswith("2 distinct valid rows, fewer than k=3 (with those "
                                         "carried from micro-batches [0, 1])")
    model = MiniBatchKMeansModel.load(cfg.output.model)
    assert sorted(map(tuple, centers(model))) == sorted(map(tuple, CENTERS))


def test_a_second_query_on_the_same_state_directory_is_refused(spark, tmp_path, start_model):
    from minibatch_kmeans.app.stream_job import start_stream

    cfg = config(tmp_path, start_model, trigger="1 second")
    write_file(tmp_path / "in", 0, blobs(70))
    first = start_stream(spark, cfg)
    try:
        assert first.query.isActive
        with pytest.raises(ConcurrentWriteError) as e:
            start_stream(spark, cfg)
        assert str(e.value).startswith(f"the stream state directory {cfg.output.state} is "
                                       f"held by another query (pid {os.getpid()} on host ")
        assert f"for stream parquet {tmp_path / 'in'}" in str(e.value)
        other = StreamConfig.from_dict(dict(  # another checkpoint, the same state
            input={"path": str(tmp_path / "in")}, stream={"model": start_model},
            output={"dir": str(tmp_path / "out2"), "state": cfg.output.state}))
        with pytest.raises(ConcurrentWriteError, match="is held by another query"):
            run_stream(spark, other)
        assert first.query.isActive  # the refused ones touched nothing of it
        first.query.processAllAvailable()
    finally:
        first.stop()
    assert saved_state(spark, cfg)["batchId"] == 0
    again = start_stream(spark, cfg)  # the first one stopped: its directory is free
    try:
        assert again.query.isActive
    finally:
        again.stop()


def test_a_failed_query_releases_its_state_directory(spark, tmp_path, start_model):
    from minibatch_kmeans.app.stream_job import start_stream
    from minibatch_kmeans.app.stream_lock import StateDirLock

    cfg = config(tmp_path, start_model, handle_invalid="error", trigger="1 second")
    bad = blobs(71)
    bad[3, 0] = np.nan
    write_file(tmp_path / "in", 0, bad)
    running = start_stream(spark, cfg)
    try:
        with pytest.raises(Exception):
            running.query.awaitTermination(120)
        deadline = time.time() + 30  # the watcher sees the query end, without stop()
        while running.lock.held and time.time() < deadline:
            time.sleep(0.1)
        assert not running.lock.held
        StateDirLock(cfg.output.state).acquire().release()
    finally:
        running.stop()
    with pytest.raises(InvalidInputError, match="1 invalid rows"):  # run_stream, the same
        run_stream(spark, cfg)
    StateDirLock(cfg.output.state).acquire().release()
