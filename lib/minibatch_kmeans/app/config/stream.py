"""The streaming job's config (``jobs/stream.py``): :class:`StreamConfig`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import ConfigError
from ...ml.params import TIME_UNITS, UPDATE_RULES, discount_rule
from ...spark.params import HANDLE_INVALID
from ...tables import kafka
from . import values as val
from .files import read_yaml
from .sections import (InputConfig, LoggingConfig, MlflowConfig, OutputConfig, SparkConfig,
                       default_quality, parse_input, parse_logging, parse_mlflow, parse_model,
                       parse_output, parse_quality, parse_spark)
from .train import Config

if TYPE_CHECKING:
    from ...tables.quality import QualityRules

def load_stream_config(path: str, overrides: Sequence[str] = ()) -> "StreamConfig":
    """The validated config of ``jobs/stream.py`` (sections spark, input, model, stream,
    quality, mlflow, output, logging)."""
    return parse_stream_config(read_yaml(path, overrides))


#: Stream outputs (Spark paths; predictions, metrics and quarantine may be catalog table
#: names): key -> default name under output.dir.
STREAM_OUTPUTS = ({"model": "model", "state": "state", "checkpoint": "checkpoint",
                   "predictions": "predictions", "metrics": "metrics",
                   "quarantine": "quarantine"}, {})


TRIGGERS = ("available_now", "once")

#: What a stream reads: a Parquet directory, a Delta table, or a Kafka topic.
STREAM_FORMATS = ("parquet", "delta", "kafka")


_INTERVAL = re.compile(r"^\d+(\.\d+)?\s*(milliseconds?|seconds?|minutes?|hours?|days?)$")


@dataclass(frozen=True)
class KafkaInput(InputConfig):
    """``input:`` with ``format: kafka``: the topic(s) to read and where the brokers are,
    and the feature columns (fields of ``stream.value_schema``)."""

    bootstrap_servers: str = ""
    topics: Tuple[str, ...] = ()

    def describe(self) -> str:
        """The stream's source as its state records it: the topic(s), not the brokers
        (a cluster that gains a broker is the same source)."""
        return "topic " + ",".join(self.topics)

    def read_options(self) -> dict:
        return {}


_SERVER = re.compile(r"^[A-Za-z0-9._-]+:(\d{1,5})$|^\[[0-9A-Fa-f:.]+\]:(\d{1,5})$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _name_list(path: str, value, check, expected: str) -> Tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(
            isinstance(v, str) and check(v.strip()) for v in items):
        val.fail(path, value, expected)
    return tuple(v.strip() for v in items)


def parse_kafka_input(raw: dict, features: bool = True) -> KafkaInput:
    """The input section of a Kafka stream: format, bootstrap_servers, topic, and (to fit
    a first model) features and weightCol."""
    hints = {k: "a Kafka input is input.bootstrap_servers and input.topic"
             for k in ("path", "table")}
    hints.update({k: "a Kafka stream starts at stream.starting_offsets"
                  for k in ("version", "timestamp", "since_version")})
    keys = ["format", "bootstrap_servers", "topic"] + (["features", "weightCol"] if features
                                                       else [])
    if not features:
        hints.update({k: "the saved model's feature schema names the feature columns"
                      for k in ("features", "weightCol")})
    s = val.Section("input", raw, keys, hints)
    servers = _name_list(
        "input.bootstrap_servers", s.get("bootstrap_servers"),
        lambda v: bool(m := _SERVER.match(v)) and 0 < int(m.group(1) or m.group(2)) < 65536,
        "host:port, several separated by commas (or a list), e.g. broker1:9092,broker2:9092")
    topics = _name_list("input.topic", s.get("topic"), _TOPIC.match,
                        "a topic name (letters, digits, '.', '_', '-'), or a list of them")
    cols, col, weight = None, None, None
    if features:
        f = val.Section("input.features", s.get("features"), ("inputCols", "featuresCol"))
        if f.has("inputCols") == f.has("featuresCol"):
            raise ConfigError("input.features must set exactly one of inputCols (numeric "
                              "fields of stream.value_schema) and featuresCol (an array "
                              "field); got " + ("both" if f.has("inputCols") else "neither"))
        cols = (val.names("input.features.inputCols", f.get("inputCols"))
                if f.has("inputCols") else None)
        col = (val.string("input.features.featuresCol", f.get("featuresCol"))
               if f.has("featuresCol") else None)
        weight = val.string("input.weightCol", s.get("weightCol", None), allow_none=True)
    return KafkaInput(None, "kafka", cols, col, weight, bootstrap_servers=",".join(servers),
                      topics=topics)


def _check_kafka_columns(inp: KafkaInput, st: "StreamSettings") -> None:
    """The feature, weight and id columns against stream.value_schema's fields."""
    fields = dict(kafka.schema_fields(st.value_schema, st.value_format == "json"))
    declared = f"stream.value_schema declares {list(fields)}"
    for name in inp.input_cols or ():
        if name not in fields:
            raise ConfigError(f"input.features.inputCols names {name!r}, not a field of the "
                              f"events: {declared}")
        if not kafka.is_numeric(fields[name]):
            raise ConfigError(f"input.features.inputCols names {name!r}, declared "
                              f"{fields[name]} in stream.value_schema: expected a number "
                              "type (double, float, int, bigint, decimal)")
    if inp.features_col and not kafka.is_numeric_array(fields.get(inp.features_col, "")):
        raise ConfigError(f"input.features.featuresCol={inp.features_col!r} is not an array "
                          f"of numbers in stream.value_schema ({declared}): expected e.g. "
                          f"'{inp.features_col} array<double>'")
    if inp.weight_col and not kafka.is_numeric(fields.get(inp.weight_col, "")):
        raise ConfigError(f"input.weightCol={inp.weight_col!r} is not a number field of "
                          f"stream.value_schema ({declared})")
    unknown = [c for c in st.id_columns if c not in fields and c not in kafka.KAFKA_TYPES]
    if unknown:
        raise ConfigError(f"stream.id_columns names {unknown}: expected fields of the events "
                          f"({declared}) or the stream's Kafka columns "
                          f"{list(kafka.KAFKA_COLUMNS)}")


@dataclass(frozen=True)
class StreamSettings:
    """The ``stream:`` section of ``jobs/stream.py``.

    Attributes
    ----------
    model : str or None
        The saved model the stream starts from (e.g. ``out/train/model``), or a registered
        version, ``models:/<name>@<alias>`` (``models:/blobs@champion``; needs the
        ``mlflow`` section). None: the first micro-batch with valid rows is fitted with
        the ``model:`` section's Params.
    trigger : str
        ``available_now`` (every row there now, in micro-batches, then stop: a scheduled
        job), ``once`` (one micro-batch), or an interval such as ``"30 seconds"`` (run
        until stopped or ``timeout_seconds``).
    timeout_seconds : float or None
        Stop the query gracefully after this long (interval triggers).
    max_files_per_trigger : int or None
        Files per micro-batch (Parquet directories and Delta tables).
    schema : str or None
        Parquet input: the files' schema as DDL; default the schema of the files present
        when the stream starts.
    starting_version : int or None
        Delta input: start with the rows committed from this version (default: the whole
        table, then what is appended).
    skip_change_commits : bool
        Delta input: skip commits that delete or overwrite rows instead of failing.
    starting_offsets : {"earliest", "latest"}
        Kafka input: where a new query starts in the topic (a query resuming from its
        checkpoint goes on from there): every retained event, or those that arrive after.
    value_format : {"json", "csv"}
        Kafka input: how the events' values are written.
    value_schema : str or None
        Kafka input (required): the value's fields as DDL, e.g. ``"id string, x0 double,
        x1 double"`` (CSV: in column order).
    max_offsets_per_trigger : int or None
        Kafka input: events per micro-batch (default: all there are).
    kafka_options : mapping of str to str
        Kafka input: more options of Spark's Kafka source, e.g.
        ``kafka.security.protocol`` or ``failOnDataLoss`` (:data:`KAFKA_OPTIONS`).
    decay_factor, half_life, time_unit, reseed_ratio
        :meth:`MiniBatchKMeansModel.partialFit`'s forgetting and re-seeding.
    handle_invalid : {"skip", "error"}
        "skip": invalid rows go to the quarantine table and the stream goes on; "error":
        a micro-batch with invalid rows stops the stream (exit 2) after they are written.
    id_columns : tuple of str
        Columns kept in the predictions table.
    register_every : int
        Register the model in MLflow every this many applied micro-batches (0: never).
    initial_weight : "model", "sizes" or float
        How much the start model weighs against new rows: "model", its ``weightSums``
        (rows visited over all training steps: epochs count again); "sizes", its
        training rows per cluster (``trainingInfo.clusterSizes``); a number, every
        center's weight.
    lease_seconds : float
        A state directory that is not driver-local (``s3a:``, ``abfss:``, ``hdfs:``,
        ``dbfs:``) is held by a lease renewed every third of this; a lease whose heartbeat
        is older is taken over (:mod:`minibatch_kmeans.app.stream_lock`).
    """

    model: Optional[str] = None
    trigger: str = "available_now"
    timeout_seconds: Optional[float] = None
    max_files_per_trigger: Optional[int] = None
    schema: Optional[str] = None
    starting_version: Optional[int] = None
    skip_change_commits: bool = False
    decay_factor: Optional[float] = None
    half_life: Optional[float] = None
    time_unit: str = "batches"
    reseed_ratio: float = 1e-8
    handle_invalid: str = "skip"
    id_columns: Tuple[str, ...] = ()
    register_every: int = 0
    initial_weight: Any = "model"
    starting_offsets: str = "earliest"
    value_format: str = "json"
    value_schema: Optional[str] = None
    max_offsets_per_trigger: Optional[int] = None
    kafka_options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    lease_seconds: float = 60.0

    def update_options(self) -> Dict[str, Any]:
        """partialFit's keyword arguments."""
        return {"decayFactor": self.decay_factor, "halfLife": self.half_life,
                "timeUnit": self.time_unit, "reseedRatio": self.reseed_ratio}


@dataclass(frozen=True)
class StreamConfig:
    """A validated streaming job configuration (:func:`load_stream_config`)."""

    input: InputConfig
    output: OutputConfig
    stream: StreamSettings
    spark: SparkConfig = field(default_factory=SparkConfig)
    model: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    quality: "QualityRules" = field(default_factory=lambda: default_quality())
    mlflow: Optional["MlflowConfig"] = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @classmethod
    def from_dict(cls, raw: Any) -> "StreamConfig":
        return parse_stream_config(raw)

    def estimator_params(self) -> Dict[str, Any]:
        """The first model's ``MiniBatchKMeans`` keyword arguments (no ``stream.model``)."""
        return Config.estimator_params(self)  # reads only .model and .input

    def describe(self) -> List[str]:
        st = self.stream
        start = st.model or ("fit on the first micro-batch: " + (", ".join(
            f"{k}={val.short(v)}" for k, v in self.model.items()) or "defaults"))
        forget = (f"halfLife {st.half_life} {st.time_unit}" if st.half_life is not None
                  else f"decayFactor {1.0 if st.decay_factor is None else st.decay_factor}"
                  + (" per row" if st.time_unit == "rows" else ""))
        return [
            self.spark.describe(),
            f"input: {self.input.format} stream {self.input.describe()}"
            + (f" at {self.input.bootstrap_servers}, {st.value_format} values "
               f"({st.value_schema}), starting offsets {st.starting_offsets}"
               if isinstance(self.input, KafkaInput) else ""),
            f"model: {start}",
            f"stream: trigger {st.trigger}, {forget}, reseedRatio {st.reseed_ratio}, "
            f"handleInvalid {st.handle_invalid}"
            + (f", register every {st.register_every} batches" if st.register_every else ""),
            f"output: {self.output.format}; model {self.output.model}, state "
            f"{self.output.state}, checkpoint {self.output.checkpoint}, predictions "
            f"{self.output.predictions}, metrics {self.output.metrics}",
        ]


def _parse_stream_settings(raw, fmt: str) -> StreamSettings:
    keys = tuple(StreamSettings.__dataclass_fields__)
    s = val.Section("stream", raw, keys, hints={"source": "write input.format: kafka",
                                                "bootstrap_servers": "put it under input",
                                                "topic": "put it under input",
                                                "decayFactor": "write decay_factor",
                                                "halfLife": "write half_life"})
    d = StreamSettings()
    trigger = s.get("trigger", d.trigger)
    if not isinstance(trigger, str) or (trigger.lower() not in TRIGGERS
                                        and not _INTERVAL.match(trigger.strip())):
        val.fail("stream.trigger", trigger, "available_now, once, or an interval such as "
                 "'30 seconds'")
    trigger = trigger.lower() if trigger.lower() in TRIGGERS else trigger.strip()
    timeout = s.get("timeout_seconds", None)
    timeout = None if timeout is None else val.number("stream.timeout_seconds", timeout, 0.0)
    cap = val.integer("stream.max_files_per_trigger", s.get("max_files_per_trigger", None), 1,
                      allow_none=True)
    for key in ("starting_version", "skip_change_commits"):
        if s.has(key) and fmt != "delta":
            raise ConfigError(f"stream.{key} is set but input.format={fmt!r}: it applies to "
                              "delta input only"
                              + ("; a Kafka stream starts at stream.starting_offsets"
                                 if fmt == "kafka" else ""))
    if s.has("schema") and fmt != "parquet":
        raise ConfigError(f"stream.schema is set but input.format={fmt!r}: "
                          + ("a Kafka event's fields are stream.value_schema" if fmt == "kafka"
                             else "a Delta table's schema comes from its log"))
    kafka_settings = _kafka_settings(s, fmt)
    decay, half = (val.yaml_number(s.get(key, None)) for key in ("decay_factor", "half_life"))
    unit = s.get("time_unit", d.time_unit)
    discount_rule(decay, half, unit,
                  ("stream.decay_factor", "stream.half_life", "stream.time_unit"), ConfigError)
    ratio = val.by_rule("stream.reseed_ratio", UPDATE_RULES["reseedRatio"],
                        s.get("reseed_ratio", d.reseed_ratio))
    ids = s.get("id_columns", None)
    return StreamSettings(
        val.string("stream.model", s.get("model", None), allow_none=True), trigger, timeout, cap,
        val.string("stream.schema", s.get("schema", None), allow_none=True),
        val.integer("stream.starting_version", s.get("starting_version", None), 0, allow_none=True),
        val.boolean("stream.skip_change_commits", s.get("skip_change_commits", False)),
        None if decay is None else float(decay), None if half is None else float(half),
        TIME_UNITS[unit], ratio,
        val.choice("stream.handle_invalid", s.get("handle_invalid", d.handle_invalid),
                   HANDLE_INVALID, fold=str.lower),
        val.names("stream.id_columns", ids) if ids else (),
        val.integer("stream.register_every", s.get("register_every", 0), 0),
        _initial_weight(s.get("initial_weight", d.initial_weight)), **kafka_settings,
        lease_seconds=val.number("stream.lease_seconds",
                                 s.get("lease_seconds", d.lease_seconds), 3.0))


#: Keys of the stream section that apply to Kafka input only.
KAFKA_KEYS = ("starting_offsets", "value_format", "value_schema", "max_offsets_per_trigger",
              "kafka_options")

#: Options of Spark's Kafka source that stream.kafka_options may set, beyond the Kafka
#: consumer's own settings (``kafka.<setting>``).
KAFKA_OPTIONS = ("failOnDataLoss", "minPartitions", "groupIdPrefix", "includeHeaders",
                 "kafkaConsumer.pollTimeoutMs", "fetchOffset.numRetries",
                 "fetchOffset.retryIntervalMs", "minOffsetsPerTrigger", "maxTriggerDelay")

#: Options the job sets itself, or that Spark's Kafka source refuses: the key to use.
_OWN_OPTIONS = {
    "subscribe": "set input.topic", "subscribepattern": "set input.topic",
    "assign": "set input.topic", "kafka.bootstrap.servers": "set input.bootstrap_servers",
    "startingoffsets": "set stream.starting_offsets",
    "startingoffsetsbytimestamp": "set stream.starting_offsets",
    "startingtimestamp": "set stream.starting_offsets",
    "endingoffsets": "a stream has no end offsets",
    "maxoffsetspertrigger": "set stream.max_offsets_per_trigger",
    "kafka.auto.offset.reset": "set stream.starting_offsets",
    "kafka.enable.auto.commit": "the offsets are in output.checkpoint",
    "kafka.key.deserializer": "values are parsed by stream.value_format",
    "kafka.value.deserializer": "values are parsed by stream.value_format",
    "kafka.interceptor.classes": "Spark's Kafka source does not allow it",
}


def _kafka_settings(s: val.Section, fmt: str) -> Dict[str, Any]:
    """The Kafka keys of the stream section (refused for other input)."""
    if fmt != "kafka":
        for key in KAFKA_KEYS:
            if s.has(key):
                raise ConfigError(f"stream.{key} is set but input.format={fmt!r}: it applies "
                                  "to kafka input only")
        return {}
    if s.has("max_files_per_trigger"):
        raise ConfigError("stream.max_files_per_trigger is set but input.format='kafka': a "
                          "Kafka stream has no files; set stream.max_offsets_per_trigger")
    value_format = val.choice("stream.value_format", s.get("value_format", "json"),
                              kafka.VALUE_FORMATS, fold=str.lower)
    if not s.has("value_schema"):
        raise ConfigError("stream.value_schema is missing: a Kafka input needs its values' "
                          "fields as DDL, e.g. 'id string, x0 double, x1 double'"
                          + (" (in column order)" if value_format == "csv" else ""))
    schema = val.string("stream.value_schema", s.get("value_schema"))
    try:
        fields = kafka.schema_fields(schema, nested=value_format == "json")
    except ValueError as e:
        raise ConfigError(f"stream.value_schema={schema!r} is not a {value_format.upper()} "
                          f"value schema: {e}; expected DDL such as 'id string, x0 double, "
                          "x1 double'") from None
    taken = [n for n, _ in fields if n in kafka.KAFKA_TYPES]
    if taken:
        raise ConfigError(f"stream.value_schema declares {taken}: the stream adds columns of "
                          f"these names ({sorted(kafka.KAFKA_TYPES)}); rename the fields")
    return dict(
        starting_offsets=val.choice("stream.starting_offsets",
                                    s.get("starting_offsets", "earliest"),
                                    kafka.STARTING_OFFSETS, fold=str.lower),
        value_format=value_format, value_schema=schema,
        max_offsets_per_trigger=val.integer("stream.max_offsets_per_trigger",
                                            s.get("max_offsets_per_trigger", None), 1,
                                            allow_none=True),
        kafka_options=_kafka_options(s.get("kafka_options", None)))


def _kafka_options(raw) -> Mapping[str, str]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        val.fail("stream.kafka_options", raw, "a mapping of Kafka source options to values, "
                 "e.g. {kafka.security.protocol: SASL_SSL}")
    out: Dict[str, str] = {}
    for key, value in raw.items():
        path = f"stream.kafka_options.{key}"
        hint = _OWN_OPTIONS.get(str(key).lower())
        if hint:
            raise ConfigError(f"{path} cannot be set here: {hint}")
        if not isinstance(key, str) or not (key.startswith("kafka.") or key in KAFKA_OPTIONS):
            raise ConfigError(f"{path} is not an option of Spark's Kafka source: expected a "
                              f"Kafka consumer setting (kafka.<name>) or one of "
                              f"{list(KAFKA_OPTIONS)}")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str) or not value:
            val.fail(path, value, "a non-empty string, number or boolean",
                     secret=val.is_secret(key) or "jaas" in key)
        out[key] = value
    return MappingProxyType(out)


def _not_kafka(raw):
    """``raw`` (the input section) after refusing Kafka keys without format kafka."""
    if isinstance(raw, dict):
        if raw.get("format") is not None:
            val.choice("input.format", raw["format"], STREAM_FORMATS, fold=str.lower)
        for key in ("bootstrap_servers", "topic"):
            if key in raw:
                raise ConfigError(f"input.{key} is set but input.format="
                                  f"{raw.get('format', 'parquet')!r}: set input.format: kafka "
                                  "to read a Kafka topic")
    return raw


def _initial_weight(value):
    if isinstance(value, str) and value.lower() in ("model", "sizes"):
        return value.lower()
    return val.number("stream.initial_weight", value, 0.0,
                      expected="model, sizes, or a weight >= 0 for every center")


def parse_stream_config(raw) -> StreamConfig:
    s = val.Section("", raw, ("spark", "input", "model", "stream", "quality", "mlflow", "output",
                              "logging"),
                    hints={"run_id": "a stream is named by its output.state and "
                           "output.checkpoint",
                           "kafka": "set input.format: kafka, input.bootstrap_servers and "
                           "input.topic, and the stream.value_* keys"})
    stream_raw = s.get("stream", None)
    starts_from_model = isinstance(stream_raw, dict) and stream_raw.get("model") is not None
    if not starts_from_model and isinstance(s.get("input"), dict) \
            and "features" not in s.get("input"):
        raise ConfigError("input.features is missing: without stream.model the first "
                          "micro-batch is fitted, so name the feature columns (inputCols or "
                          "featuresCol), or set stream.model to a saved model")
    raw_input = s.get("input")
    if isinstance(raw_input, dict) and str(raw_input.get("format", "")).lower() == "kafka":
        inp = parse_kafka_input(raw_input, features=not starts_from_model)
    else:
        inp = parse_input(_not_kafka(raw_input), features=not starts_from_model)
    if inp.version is not None or inp.timestamp is not None or inp.since_version is not None:
        raise ConfigError("input.version, input.timestamp and input.since_version do not "
                          "apply to a stream: set stream.starting_version")
    settings = _parse_stream_settings(stream_raw, inp.format)
    if isinstance(inp, KafkaInput):
        _check_kafka_columns(inp, settings)
    model = parse_model(s.get("model", None), inp.input_cols)
    if starts_from_model and model:
        raise ConfigError(f"model is set ({sorted(model)}) and so is stream.model: the stream "
                          "continues the saved model with its own Params; remove one")
    if "handleInvalid" in model:
        raise ConfigError("model.handleInvalid is set: the stream's is stream.handle_invalid")
    ml = parse_mlflow(s.get("mlflow", None))
    if settings.model and settings.model.startswith("models:/") and ml is None:
        raise ConfigError(f"stream.model={settings.model!r} names a registered model: it "
                          "needs an mlflow section (mlflow: {tracking_uri: ...})")
    if settings.register_every and ml is None:
        raise ConfigError(f"stream.register_every={settings.register_every} needs an mlflow "
                          "section (mlflow: {model_name: ...})")
    out = parse_output(s.get("output"), STREAM_OUTPUTS)
    for key in ("state", "checkpoint"):
        if getattr(out, key) is None:
            val.fail(f"output.{key}", None, "a path: the stream cannot resume without it")
    return StreamConfig(inp, out, settings, parse_spark(s.get("spark", None)), model,
                        parse_quality(s.get("quality", None)), ml,
                        parse_logging(s.get("logging", None)))
