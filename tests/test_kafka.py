"""The streaming job reading a Kafka topic (``input.format: kafka``): its config keys and
their errors, and, against a real single-node Kafka broker (tests/kafka_broker.py), the
streamed model equal to partialFit on the same events, a replayed and a re-run stream
without duplicate predictions, and malformed events quarantined with their raw value."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import STREAM_CENTERS, moving_blobs, requires_kafka_jars
from kafka_broker import kafka_fixture, produce, requires_kafka_broker
from minibatch_kmeans import MiniBatchKMeansModel
from minibatch_kmeans.app.config import StreamConfig, load_stream_config
from minibatch_kmeans.app.stream_job import run_stream
from minibatch_kmeans.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "id string, a double, b double"

kafka = kafka_fixture("module")


def raw_config(root, topic="points", bootstrap="127.0.0.1:9092", model=None, quality=None,
               **stream):
    raw = {"input": {"format": "kafka", "bootstrap_servers": bootstrap, "topic": topic},
           "stream": dict({"value_schema": SCHEMA, "id_columns": ["id", "kafka_offset"]},
                          **stream),
           "output": {"dir": str(Path(root) / "out")}}
    if quality:
        raw["quality"] = quality
    if model is None:
        raw["input"]["features"] = {"inputCols": ["a", "b"]}
        raw["model"] = {"k": 3, "seed": 3}
    else:
        raw["stream"]["model"] = model
    return raw


# -- config --------------------------------------------------------------------------------

def test_kafka_config_keys(tmp_path):
    cfg = StreamConfig.from_dict(raw_config(
        tmp_path, topic=["p1", "p2"], bootstrap="b1:9092, b2:9093", starting_offsets="LATEST",
        value_format="csv", max_offsets_per_trigger=500,
        kafka_options={"kafka.security.protocol": "SASL_SSL", "failOnDataLoss": False}))
    assert cfg.input.format == "kafka" and cfg.input.topics == ("p1", "p2")
    assert cfg.input.bootstrap_servers == "b1:9092,b2:9093"
    assert cfg.input.describe() == "topic p1,p2"  # the state's source: not the brokers
    st = cfg.stream
    assert (st.starting_offsets, st.value_format, st.max_offsets_per_trigger) == \
        ("latest", "csv", 500)
    assert dict(st.kafka_options) == {"kafka.security.protocol": "SASL_SSL",
                                      "failOnDataLoss": "false"}
    assert "b1:9092,b2:9093, csv values" in "\n".join(cfg.describe())
    defaults = StreamConfig.from_dict(raw_config(tmp_path)).stream
    assert (defaults.starting_offsets, defaults.value_format) == ("earliest", "json")
    example = load_stream_config(str(ROOT / "conf" / "stream_kafka.yaml"))
    assert example.input.topics == ("points",) and example.stream.value_format == "json"


def _with(raw, section, **keys):
    raw[section].update(keys)
    return raw


@pytest.mark.parametrize("change, match", [
    (lambda r: r["stream"].pop("value_schema"), r"stream.value_schema is missing"),
    (lambda r: _with(r, "stream", value_schema="a, b double"),
     r"value_schema='a, b double' is not a JSON value schema: 'a' is not 'name type'"),
    (lambda r: _with(r, "stream", value_schema="id string, a dbl, b double"),
     r"'dbl' is not a Spark SQL type"),
    (lambda r: _with(r, "stream", value_schema="a double, a double, b double"),
     r"field 'a' is declared twice"),
    (lambda r: _with(r, "stream", value_format="csv", value_schema="a double, b array<double>"),
     r"CSV values have no nested types"),
    (lambda r: _with(r, "stream", value_format="avro"), r"stream.value_format='avro'"),
    (lambda r: _with(r, "stream", starting_offsets="beginning"),
     r"stream.starting_offsets='beginning'"),
    (lambda r: _with(r, "stream", max_offsets_per_trigger=0), r"max_offsets_per_trigger=0"),
    (lambda r: _with(r, "stream", value_schema="a double, b string"),
     r"inputCols names 'b', declared string in stream.value_schema: expected a number"),
    (lambda r: _with(r, "stream", value_schema="a double, c double"),
     r"inputCols names 'b', not a field of the events"),
    (lambda r: _with(r, "stream", id_columns=["uid"]), r"stream.id_columns names \['uid'\]"),
    (lambda r: _with(r, "stream", value_schema="a double, b double, kafka_offset long"),
     r"declares \['kafka_offset'\]: the stream adds columns of these names"),
    (lambda r: _with(r, "stream", schema="a double"),
     r"stream.schema is set but input.format='kafka': .* stream.value_schema"),
    (lambda r: _with(r, "stream", starting_version=1), r"starting_version .* delta input only"),
    (lambda r: _with(r, "stream", max_files_per_trigger=1),
     r"max_files_per_trigger .* set stream.max_offsets_per_trigger"),
    (lambda r: _with(r, "stream", kafka_options={"subscribe": "x"}),
     r"kafka_options.subscribe cannot be set here: set input.topic"),
    (lambda r: _with(r, "stream", kafka_options={"kafka.auto.offset.reset": "earliest"}),
     r"set stream.starting_offsets"),
    (lambda r: _with(r, "stream", kafka_options={"pollTimeout": 5}),
     r"kafka_options.pollTimeout is not an option of Spark's Kafka source"),
    (lambda r: _with(r, "stream", kafka_options=["kafka.x"]), r"stream.kafka_options"),
    (lambda r: _with(r, "stream", kafka_options={"kafka.sasl.jaas.config": None}),
     r"kafka.sasl.jaas.config"),
    (lambda r: _with(r, "stream", source="kafka"), r"write input.format: kafka"),
    (lambda r: r["input"].pop("topic"), r"input.topic is missing"),
    (lambda r: _with(r, "input", topic="no spaces"), r"input.topic='no spaces'"),
    (lambda r: _with(r, "input", bootstrap_servers="localhost"),
     r"input.bootstrap_servers='localhost' .* host:port"),
    (lambda r: _with(r, "input", bootstrap_servers="h:99999"), r"bootstrap_servers='h:99999'"),
    (lambda r: _with(r, "input", path="/data"),
     r"input.path is not a known key.*a Kafka input is input.bootstrap_servers"),
    (lambda r: _with(r, "input", version=3), r"input.version .*stream.starting_offsets"),
    (lambda r: _with(r, "input", format="kafkaa"), r"input.format='kafkaa'.*kafka"),
    (lambda r: _with(r, "input", features={"featuresCol": "a"}),
     r"featuresCol='a' is not an array of numbers"),
    (lambda r: _with(r, "input", weightCol="id"), r"input.weightCol='id' is not a number"),
])
def test_kafka_config_errors(tmp_path, change, match):
    raw = raw_config(tmp_path)
    change(raw)
    with pytest.raises(ConfigError, match=match):
        StreamConfig.from_dict(raw)


@pytest.mark.parametrize("stream, match", [
    ({"starting_offsets": "earliest"}, r"stream.starting_offsets is set but "
                                       r"input.format='parquet': it applies to kafka"),
    ({"value_schema": "a double"}, r"stream.value_schema is set but input.format='parquet'"),
    ({"kafka_options": {}}, r"stream.kafka_options is set"),
])
def test_kafka_keys_are_refused_for_file_input(tmp_path, stream, match):
    raw = {"input": {"path": str(tmp_path / "in"), "features": {"inputCols": ["a", "b"]}},
           "stream": stream, "output": {"dir": str(tmp_path / "out")}}
    with pytest.raises(ConfigError, match=match):
        StreamConfig.from_dict(raw)
    raw["stream"] = {}
    raw["input"]["topic"] = "points"
    with pytest.raises(ConfigError, match=r"input.topic is set but input.format='parquet'"):
        StreamConfig.from_dict(raw)


def test_a_model_feature_array_and_weight_are_fields_of_the_value(tmp_path):
    raw = raw_config(tmp_path, value_schema="id string, v array<double>, w double")
    raw["input"]["features"] = {"featuresCol": "v"}
    raw["input"]["weightCol"] = "w"
    assert StreamConfig.from_dict(raw).input.features_col == "v"


# -- a real broker -------------------------------------------------------------------------

def events(X, first_id):
    return [json.dumps({"id": f"e{first_id + i}", "a": float(a), "b": float(b)})
            for i, (a, b) in enumerate(X)]


@pytest.fixture(scope="module")
def start_model(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("kafka-model") / "m")
    model = MiniBatchKMeansModel(STREAM_CENTERS + 0.3, [50.0, 50.0, 50.0]).setInputCols(["a", "b"])
    model._set(k=3, dtype="float64")
    model.write().save(path)
    return path


def expected_model(spark, start_model, rows_by_id, predictions):
    """partialFit on the same rows, micro-batch by micro-batch (the predictions name each
    micro-batch's rows)."""
    model = MiniBatchKMeansModel.load(start_model)
    preds = predictions.toPandas()
    for _, batch in sorted(preds.groupby("batch_id")):
        rows = [rows_by_id[i] for i in sorted(batch["id"])]
        model = model.partialFit(spark.createDataFrame(rows, "a double, b double"))
    return model


@requires_kafka_jars
@requires_kafka_broker
@pytest.mark.slow
def test_stream_from_kafka_equals_partial_fit_and_replays_without_duplicates(
        spark, kafka, tmp_path, start_model):
    topic = "points-replay"
    X = [moving_blobs(100 + i, 0.3 * i, n=60) for i in range(3)]
    rows_by_id = {f"e{100 * i + j}": (float(a), float(b))
                  for i, x in enumerate(X) for j, (a, b) in enumerate(x)}
    produce(spark, kafka.bootstrap, topic, events(X[0], 0) + events(X[1], 100))
    cfg = StreamConfig.from_dict(raw_config(tmp_path, topic, kafka.bootstrap, start_model,
                                            max_offsets_per_trigger=50))
    first = run_stream(spark, cfg)  # 120 events, 50 a micro-batch
    assert first.applied == [0, 1, 2] and first.num_updates == 3

    # a crash after foreachBatch ran, before Spark committed the batch: replayed, skipped
    commits = Path(cfg.output.checkpoint) / "commits"
    for name in ("2", ".2.crc"):
        os.remove(commits / name)
    produce(spark, kafka.bootstrap, topic, events(X[2], 200))  # and new events meanwhile
    second = run_stream(spark, cfg)
    assert second.replayed == [2] and second.applied == [3, 4]
    preds = spark.read.parquet(cfg.output.predictions)
    assert preds.count() == preds.select("id").distinct().count() == 180
    assert preds.select("kafka_offset").distinct().count() == 180
    metrics = spark.read.parquet(cfg.output.metrics).toPandas()
    assert sorted(metrics["batch_id"]) == [0, 1, 2, 3, 4]
    assert metrics["rows"].sum() == 180

    expected = expected_model(spark, start_model, rows_by_id, preds)
    streamed = MiniBatchKMeansModel.load(cfg.output.model)
    assert streamed.numUpdates == expected.numUpdates == 5
    np.testing.assert_allclose(np.array(streamed.clusterCenters()),
                               np.array(expected.clusterCenters()), rtol=1e-10)
    np.testing.assert_allclose(streamed.weightSums, expected.weightSums, rtol=1e-10)
    assert run_stream(spark, cfg).batches == 0  # nothing new: nothing done


@requires_kafka_jars
@requires_kafka_broker
@pytest.mark.slow
def test_malformed_events_are_quarantined_with_their_raw_value(spark, kafka, tmp_path,
                                                               start_model):
    topic = "points-malformed"
    good = events(moving_blobs(7, n=80), 0)
    bad = ['{"id": "bad1", "a": 1.0, "b": ', "not json at all",
           '{"id": "bad3", "a": "one", "b": 2.0}', '{"id": "bad4", "a": 1.0}', None]
    produce(spark, kafka.bootstrap, topic, good[:40] + bad + good[40:])
    cfg = StreamConfig.from_dict(raw_config(tmp_path, topic, kafka.bootstrap, start_model,
                                            quality={"max_invalid_fraction": 0.1}))
    result = run_stream(spark, cfg)
    assert result.applied == [0]
    q = spark.read.parquet(cfg.output.quarantine).toPandas().sort_values("kafka_offset")
    assert q["kafka_offset"].tolist() == list(range(40, 45))
    assert q["kafka_value"].tolist() == bad  # the raw values, not lost
    reasons = q["reason"].tolist()
    assert reasons[0].startswith("kafka_value: malformed JSON") and "a: null" in reasons[0]
    assert reasons[1].startswith("kafka_value: malformed JSON")
    assert reasons[2] == "kafka_value: malformed JSON; a: null"  # not a number
    assert reasons[3] == "b: null"  # a feature missing
    assert reasons[4].startswith("kafka_value: null")
    assert q["kafka_malformed"].tolist() == [True, True, True, False, False]
    m = spark.read.parquet(cfg.output.metrics).first()
    assert (m["rows"], m["invalid_rows"], m["applied"]) == (85, 5, True)
    preds = spark.read.parquet(cfg.output.predictions)
    assert preds.count() == 80 and preds.where("id like 'bad%'").count() == 0


@requires_kafka_jars
@requires_kafka_broker
@pytest.mark.slow
def test_csv_values_fit_a_first_model(spark, kafka, tmp_path):
    topic = "points-csv"
    X = moving_blobs(11, n=90)
    values = [f"e{i},{a},{b}" for i, (a, b) in enumerate(X)] + ["e90,1.0"]
    produce(spark, kafka.bootstrap, topic, values)
    cfg = StreamConfig.from_dict(raw_config(tmp_path, topic, kafka.bootstrap,
                                            value_format="csv",
                                            quality={"max_invalid_fraction": 0.05}))
    result = run_stream(spark, cfg)
    assert result.applied == [0]
    model = MiniBatchKMeansModel.load(cfg.output.model)
    assert sorted(map(tuple, np.round(np.array(model.clusterCenters())))) == \
        sorted(map(tuple, STREAM_CENTERS))
    q = spark.read.parquet(cfg.output.quarantine).first()
    assert q["kafka_value"] == "e90,1.0" and q["reason"].startswith("kafka_value: malformed CSV")


@requires_kafka_jars
@requires_kafka_broker
@pytest.mark.slow
def test_killed_kafka_stream_restarts_without_duplicate_predictions(spark, kafka, tmp_path,
                                                                   start_model):
    """jobs/stream.py on a topic, SIGKILLed (Python and the JVM) once its state is past
    micro-batch 1, then started again: every event is predicted exactly once and the state
    counts every micro-batch once."""
    import time

    import yaml

    from test_jobs_stream import start, state_of
    from test_jobs_checkpoint import kill_group

    topic = "points-killed"
    X = [moving_blobs(300 + i, 0.2 * i, n=40) for i in range(6)]
    produce(spark, kafka.bootstrap, topic, [e for i, x in enumerate(X)
                                            for e in events(x, 100 * i)])
    raw = raw_config(tmp_path, topic, kafka.bootstrap, start_model, max_offsets_per_trigger=40)
    raw["spark"] = {"master": "local[2]", "conf": {"spark.driver.memory": "512m",
                                                    "spark.sql.shuffle.partitions": 2,
                                                    "spark.ui.enabled": False}}
    conf = tmp_path / "kafka.yaml"
    conf.write_text(yaml.safe_dump(raw))
    with open(tmp_path / "run1.log", "w") as log:
        proc = start(str(conf), log)
        try:
            deadline = time.time() + 300
            while (state_of(spark, tmp_path, "out") or {}).get("batchId", -1) < 1:
                assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
                assert time.time() < deadline, (tmp_path / "run1.log").read_text()[-3000:]
                time.sleep(0.05)
        finally:
            kill_group(proc)
    killed_at = state_of(spark, tmp_path, "out")["batchId"]
    with open(tmp_path / "run2.log", "w") as log:
        proc = start(str(conf), log)
        try:
            assert proc.wait(timeout=600) == 0, (tmp_path / "run2.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                kill_group(proc)
    state = state_of(spark, tmp_path, "out")
    assert state["batchId"] == 5 and state["applied"] == 6, (killed_at, state)
    preds = spark.read.parquet(str(tmp_path / "out" / "predictions"))
    assert preds.count() == preds.select("id").distinct().count() == 240
