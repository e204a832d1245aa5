"""The streaming job's config (``jobs/stream.py``): :class:`StreamConfig`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import ConfigError
from ...ml.params import TIME_UNITS, UPDATE_RULES, discount_rule
from ...spark.params import HANDLE_INVALID
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


#: Stream outputs (Spark paths): key -> default name under output.dir.
STREAM_OUTPUTS = ({"model": "model", "state": "state", "checkpoint": "checkpoint",
                   "predictions": "predictions", "metrics": "metrics",
                   "quarantine": "quarantine"}, {})


TRIGGERS = ("available_now", "once")


_INTERVAL = re.compile(r"^\d+(\.\d+)?\s*(milliseconds?|seconds?|minutes?|hours?|days?)$")


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
            f"input: {self.input.format} stream {self.input.describe()}",
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
    s = val.Section("stream", raw, keys, hints={"decayFactor": "write decay_factor",
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
                              "delta input only")
    if s.has("schema") and fmt != "parquet":
        raise ConfigError(f"stream.schema is set but input.format={fmt!r}: a Delta table's "
                          "schema comes from its log")
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
        _initial_weight(s.get("initial_weight", d.initial_weight)))


def _initial_weight(value):
    if isinstance(value, str) and value.lower() in ("model", "sizes"):
        return value.lower()
    return val.number("stream.initial_weight", value, 0.0,
                      expected="model, sizes, or a weight >= 0 for every center")


def parse_stream_config(raw) -> StreamConfig:
    s = val.Section("", raw, ("spark", "input", "model", "stream", "quality", "mlflow", "output",
                              "logging"),
                    hints={"run_id": "a stream is named by its output.state and "
                           "output.checkpoint"})
    stream_raw = s.get("stream", None)
    starts_from_model = isinstance(stream_raw, dict) and stream_raw.get("model") is not None
    if not starts_from_model and isinstance(s.get("input"), dict) \
            and "features" not in s.get("input"):
        raise ConfigError("input.features is missing: without stream.model the first "
                          "micro-batch is fitted, so name the feature columns (inputCols or "
                          "featuresCol), or set stream.model to a saved model")
    inp = parse_input(s.get("input"), features=not starts_from_model)
    if inp.version is not None or inp.timestamp is not None or inp.since_version is not None:
        raise ConfigError("input.version, input.timestamp and input.since_version do not "
                          "apply to a stream: set stream.starting_version")
    settings = _parse_stream_settings(stream_raw, inp.format)
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
