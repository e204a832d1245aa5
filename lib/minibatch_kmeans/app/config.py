"""Job configuration: YAML loaded with ``yaml.safe_load`` into frozen dataclasses.

A config file has these sections::

    spark:    {app_name, master, conf: {name: value}}     # master only for a local session
    input:    {path, format: parquet, features: {inputCols: [...]} or {featuresCol: name},
               weightCol}
    model:    {k, maxIter, tol, seed, initMode, ...}      # MiniBatchKMeans Params by name
    output:   {dir, model, summary, plot}                 # model/summary/plot default under dir
    logging:  {level}
    compare:  {mllib: {solver, ...}, sample_size, local_max_mb, references,
               trajectory_points, handle_invalid}         # jobs/compare.py only
    tune:     {k: [...], batch_sizes, holdout_fraction, sample_size}  # jobs/tune.py only

Every field is validated: a bad value or an unknown key raises :class:`ConfigError`
naming the field path, the value given and what was expected. ``--set key=value``
overrides use dotted keys (``model.k=20``, ``spark.conf.spark.sql.shuffle.partitions=8``)
and values parsed as YAML, so numbers, booleans, null and ``[lists]`` work.

Spark settings whose names contain key, secret, token or password are never shown, in
logs, reprs or error messages.

Examples
--------
>>> cfg = Config.from_dict({"input": {"path": "out/data/blobs",
...                                   "features": {"inputCols": ["x0", "x1"]}},
...                         "model": {"k": 3}, "output": {"dir": "out/train"}})
>>> cfg.model["k"], cfg.output.model, cfg.output.plot
(3, 'out/train/model', 'out/train/convergence.png')
>>> sorted(cfg.estimator_params())
['inputCols', 'k']
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import (TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple)

import yaml

from ..errors import ConfigError
from ..paths import is_remote

if TYPE_CHECKING:
    from ..tables.quality import QualityRules
from ..evaluate.holdout import SILHOUETTE_ROWS
from ..spark.session import redact

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("parquet", "delta")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MISSING = object()


# -- the dataclasses ------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class SparkConfig:
    """How to get a Spark session.

    Attributes
    ----------
    app_name : str
    master : str or None
        Used only when no session is active and the process was not launched by
        spark-submit or Spark Connect (the embedded local default).
    conf : mapping of str to str
        Extra settings for a session the job builds itself. Secret-looking values are
        redacted from the repr.
    """

    app_name: str = "minibatch-kmeans"
    master: Optional[str] = None
    conf: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __repr__(self) -> str:
        conf = ", ".join(f"{k!r}: {redact(k, v)!r}" for k, v in self.conf.items())
        return f"SparkConfig(app_name={self.app_name!r}, master={self.master!r}, conf={{{conf}}})"

    def describe(self) -> str:
        """The jobs' log line for this section, secrets redacted."""
        return (f"spark: app_name={self.app_name}, master={self.master or '(session)'}"
                + "".join(f", {k}={redact(k, v)}" for k, v in sorted(self.conf.items())))


@dataclass(frozen=True)
class InputConfig:
    """Where the training table is and which columns hold the features.

    Exactly one of ``path`` (a Spark path) and ``table`` (a catalog table name) is set, and
    for training exactly one of ``input_cols`` (numeric columns) and ``features_col`` (a
    Vector or ``array<double>`` column). ``version`` (an integer >= 0) or ``timestamp``
    (ISO 8601 text; without a zone, the Spark session's) reads an earlier version of a
    Delta table: at most one, and only with ``format="delta"``.
    """

    path: Optional[str]
    format: str = "parquet"
    input_cols: Optional[Tuple[str, ...]] = None
    features_col: Optional[str] = None
    weight_col: Optional[str] = None
    table: Optional[str] = None
    version: Optional[int] = None
    timestamp: Optional[str] = None
    #: Delta only: just the rows appended after this version (a monitoring slice).
    since_version: Optional[int] = None

    def describe(self) -> str:
        """The path or table, and any time travel: "t @version 3"."""
        when = "".join(f" @{k} {v}" for k, v in (("since_version", self.since_version),
                                                  ("version", self.version),
                                                  ("timestamp", self.timestamp))
                       if v is not None)
        return (self.table or self.path) + when

    def read_options(self) -> dict:
        """Keyword arguments of :func:`minibatch_kmeans.tables.io.read_table` beyond path and
        format, when set."""
        return {k: getattr(self, k) for k in ("table", "version", "timestamp",
                                              "since_version")
                if getattr(self, k) is not None}


@dataclass(frozen=True)
class OutputConfig:
    """Where the job writes.

    Attributes
    ----------
    dir : str
        Any Spark path (local, ``dbfs:/``, ``s3a://``...).
    format : {"parquet", "delta"}
        Format of the output tables.
    model : str or None
        Spark path of the saved model (train: default ``<dir>/model``).
    centers, metrics, quality, quarantine, predictions : str or None
        Output tables (Spark paths), each partitioned by ``run_id`` so that a re-run
        replaces its own rows. Train writes centers, metrics, quality and quarantine
        (defaults ``<dir>/<name>``); score writes predictions, quality and quarantine.
        None skips a table; the quarantine table is written only when rows are invalid.
    summary, plot, quality_report : str or None
        Driver-local files: the JSON summary, the convergence PNG and the JSON quality
        report (defaults ``<dir>/summary.json``, ``<dir>/convergence.png`` and
        ``<dir>/quality.json`` when ``dir`` is local or ``dbfs:/``, which is read through
        the ``/dbfs`` mount); None skips them.
    """

    dir: str
    model: Optional[str]
    summary: Optional[str]
    plot: Optional[str]
    format: str = "parquet"
    centers: Optional[str] = None
    metrics: Optional[str] = None
    quality: Optional[str] = None
    quarantine: Optional[str] = None
    predictions: Optional[str] = None
    quality_report: Optional[str] = None
    #: Stream: the model state after every micro-batch, and Spark's checkpointLocation.
    state: Optional[str] = None
    checkpoint: Optional[str] = None


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class CompareConfig:
    """What ``jobs/compare.py`` passes to
    :func:`minibatch_kmeans.evaluate.compare.compare_with_mllib` besides the model section
    (which configures our side, and k, seed and maxIter for both).

    Attributes
    ----------
    mllib : mapping
        MLlib ``KMeans`` Params (``solver``, ``maxIter``, ``tol``, ``initMode``,
        ``initSteps``, ``maxBlockSizeInMB``); ``solver`` defaults to ``block``.
    sample_size : int
        Rows for silhouette, ARI/NMI and the PCA picture (at most 100,000 by default).
    local_max_mb : int
        Run the scikit-learn references when the features fit in this many MiB on the
        driver (0: never).
    references : tuple of str
        Which references: ``sklearn_minibatch`` and/or ``sklearn_kmeans``.
    trajectory_points : int
        Intermediate center sets of ours given a full-data cost (the cost/time curve).
    handle_invalid : {"error", "skip"}
    """

    mllib: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sample_size: int = 100_000
    local_max_mb: int = 1024
    references: Tuple[str, ...] = ("sklearn_minibatch", "sklearn_kmeans")
    trajectory_points: int = 12
    handle_invalid: str = "error"


@dataclass(frozen=True)
class TuneConfig:
    """What ``jobs/tune.py`` passes to :func:`minibatch_kmeans.lifecycle.tune.choose_k` besides the
    model section (whose k it replaces by the grid).

    Attributes
    ----------
    k : tuple of int
        The grid: distinct values >= 2, increasing (required by jobs/tune.py).
    batch_sizes : tuple of int or None
        Batch sizes to try for every k (None: model.batchSize).
    holdout_fraction : float
        Share of the rows held out for the cost and silhouette, in (0, 1).
    sample_size : int
        Holdout rows (at most) for the silhouette.
    """

    k: Tuple[int, ...] = ()
    batch_sizes: Optional[Tuple[int, ...]] = None
    holdout_fraction: float = 0.2
    sample_size: int = SILHOUETTE_ROWS


@dataclass(frozen=True)
class Config:
    """A validated job configuration. Build it with :func:`load_config` or
    :meth:`Config.from_dict`, which validate; the constructor does not."""

    input: InputConfig
    output: OutputConfig
    spark: SparkConfig = field(default_factory=SparkConfig)
    model: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    #: Names one run of a job (``run_id`` in the file, or ``--run-id``): a train job
    #: resumes its checkpoint, and a scoring job replaces its own output, for the same id.
    run_id: Optional[str] = None
    quality: "QualityRules" = field(default_factory=lambda: _default_quality())
    tune: TuneConfig = field(default_factory=TuneConfig)
    #: MLflow tracking and registry; None (no ``mlflow:`` section) logs nothing.
    mlflow: Optional["MlflowConfig"] = None

    @classmethod
    def from_dict(cls, raw: Any) -> "Config":
        """Validate a parsed YAML document (a mapping) field by field."""
        return _parse_config(raw)

    def estimator_params(self) -> Dict[str, Any]:
        """Keyword arguments for ``MiniBatchKMeans(**params)``: the model section plus
        the input's feature and weight columns."""
        params = {k: _thaw(v) for k, v in self.model.items()}
        if self.input.input_cols is not None:
            params["inputCols"] = list(self.input.input_cols)
        if self.input.features_col is not None:
            params["featuresCol"] = self.input.features_col
        if self.input.weight_col is not None:
            params["weightCol"] = self.input.weight_col
        return params

    def describe(self) -> List[str]:
        """Lines that say what the job will do, secrets redacted (for the log)."""
        feats = (f"inputCols {list(self.input.input_cols)}" if self.input.input_cols
                 else f"featuresCol {self.input.features_col!r}")
        model = ", ".join(f"{k}={_short(v)}" for k, v in self.model.items()) or "defaults"
        return [
            self.spark.describe(),
            f"input: {self.input.format} {self.input.describe()}, {feats}"
            + (f", weightCol {self.input.weight_col!r}" if self.input.weight_col else ""),
            f"model: {model}",
            f"output: model {self.output.model}, summary {self.output.summary}, "
            f"plot {self.output.plot}",
        ]


def _thaw(value):
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _short(value) -> str:
    text = repr(_thaw(value))
    return text if len(text) <= 60 else text[:57] + "..."


# -- loading --------------------------------------------------------------------------


def load_config(path: str, overrides: Sequence[str] = (), parse=None) -> Config:
    """Load a YAML job config, apply ``key=value`` overrides, validate.

    Parameters
    ----------
    path : str
        A YAML file (parsed with ``yaml.safe_load``: no Python tags).
    overrides : sequence of str
        ``"dotted.key=value"`` strings (from ``--set``), applied in order; values are
        parsed as YAML (``model.k=20``, ``model.initialCenters=[[0, 0], [1, 1]]``).

    Raises
    ------
    ConfigError
        The file is missing or not valid YAML, an override is malformed, or a field is
        invalid or unknown.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: {e.strerror or e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML (safe subset): "
                          f"{_one_line(e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections, got "
                          f"{_type(raw)}")
    for item in overrides:
        apply_override(raw, item)
    return (parse or _parse_config)(raw)


def run_id_override(run_id: Optional[str]) -> List[str]:
    """The ``--set`` override for a job's ``--run-id`` (validated like the file's run_id;
    quoted, so that 2026-11-24 stays text)."""
    return [] if not run_id else [f"run_id={json.dumps(run_id)}"]


def load_score_config(path: str, overrides: Sequence[str] = ()) -> "ScoreConfig":
    """:func:`load_config` for ``jobs/score.py`` (sections run_id, spark, input, scoring,
    quality, output, logging)."""
    return load_config(path, overrides, _parse_score_config)


def load_stream_config(path: str, overrides: Sequence[str] = ()) -> "StreamConfig":
    """:func:`load_config` for ``jobs/stream.py`` (sections spark, input, model, stream,
    quality, mlflow, output, logging)."""
    return load_config(path, overrides, _parse_stream_config)


def load_monitor_config(path: str, overrides: Sequence[str] = ()) -> "MonitorConfig":
    """:func:`load_config` for ``jobs/monitor.py`` (sections run_id, spark, input, model,
    quality, mlflow, monitor, output, logging)."""
    return load_config(path, overrides, _parse_monitor_config)


def apply_override(raw: Dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override to a raw config mapping (mutates ``raw``).

    Keys under ``spark.conf`` keep their dots: ``spark.conf.spark.sql.shuffle.partitions=8``
    sets the Spark setting ``spark.sql.shuffle.partitions``.
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is invalid: expected key=value, e.g. model.k=20")
    parts = key.split(".")
    if parts[:2] == ["spark", "conf"] and len(parts) > 2:
        parts = ["spark", "conf", ".".join(parts[2:])]
    if any(not p for p in parts):
        raise ConfigError(f"override key {key!r} is invalid: expected dotted names such as "
                          "model.k")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        detail = "" if _is_secret(key) else f" ({_one_line(e)})"
        raise ConfigError(f"override {key}={redact(key, text)} is invalid: the value is not "
                          f"valid YAML{detail}") from None
    node = raw
    for i, name in enumerate(parts[:-1]):
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[:i + 1])
            raise ConfigError(f"override {key}=... cannot be applied: {where} is "
                              f"{_type(child)}, not a mapping")
        node = child
    node[parts[-1]] = value


def configure_logging(level: str = "INFO") -> None:
    """Jobs configure logging (libraries only log): a timestamped line per record on
    stderr at ``level``; py4j and matplotlib only from WARNING."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    for name in ("minibatch_kmeans", "minibatch_kmeans_jobs"):
        logging.getLogger(name).setLevel(level)
    for name in ("py4j", "matplotlib"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


# -- validation -----------------------------------------------------------------------


def _type(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _one_line(e) -> str:
    return " ".join(str(e).split())


def _is_secret(name: str) -> bool:
    return redact(name, "") != ""


def _fail(path: str, value, expected: str, secret: bool = False) -> None:
    shown = "*********(redacted)" if secret else repr(value)
    raise ConfigError(f"{path}={shown} is invalid: expected {expected}")


class _Section:
    """Reads the keys of one mapping; unknown keys are errors."""

    def __init__(self, path: str, raw, known: Sequence[str],
                 hints: Optional[Mapping[str, str]] = None):
        self.path = path
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path or 'the config'} is {_type(raw)} ({raw!r}): expected a "
                              f"mapping with keys {list(known)}")
        for key in raw:
            if key not in known:
                hint = (hints or {}).get(key)
                raise ConfigError(f"{self.sub(key)} is not a known key: expected one of "
                                  f"{list(known)}" + (f" ({hint})" if hint else ""))
        self.raw = raw

    def sub(self, key) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def get(self, key, default=_MISSING):
        if key not in self.raw:
            if default is _MISSING:
                raise ConfigError(f"{self.sub(key)} is missing: it is required")
            return default
        return self.raw[key]

    def has(self, key) -> bool:
        return key in self.raw


def _string(path: str, value, allow_none: bool = False, nonempty: bool = True) -> Optional[str]:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or (nonempty and not value.strip()):
        _fail(path, value, "a non-empty string" + (" or null" if allow_none else ""))
    return value


def _choice(path: str, value, choices: Sequence[str], fold=None) -> str:
    key = fold(value) if (fold is not None and isinstance(value, str)) else value
    if key not in choices:
        _fail(path, value, f"one of {list(choices)}")
    return key


def _int(path: str, value, minimum: Optional[int] = None, allow_none: bool = False,
         expected: Optional[str] = None) -> Optional[int]:
    if value is None and allow_none:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok or (minimum is not None and value < minimum):
        _fail(path, value, expected or ("an integer" + (f" >= {minimum}" if minimum is not None
                                                         else "")
                                        + (" or null" if allow_none else "")))
    return value


def _number(path: str, value, minimum: Optional[float] = None,
            expected: Optional[str] = None) -> float:
    # YAML 1.1 reads 1e-4 (no dot) as a string: accept numeric strings for number fields.
    x = value
    if isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            x = None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) \
            or (minimum is not None and x < minimum):
        _fail(path, value, expected or ("a finite number"
                                        + (f" >= {minimum:g}" if minimum is not None else "")))
    return float(x)


def _bool(path: str, value) -> bool:
    if not isinstance(value, bool):
        _fail(path, value, "true or false")
    return value


def _names(path: str, value) -> Tuple[str, ...]:
    if not isinstance(value, list) or not value:
        _fail(path, value, "a non-empty list of column names")
    for i, v in enumerate(value):
        _string(f"{path}[{i}]", v)
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        _fail(path, value, f"distinct column names (repeated: {dupes})")
    return tuple(value)


def _matrix(path: str, value, rows: Optional[int], cols: Optional[int]):
    expected = "a list of k lists of n_features finite numbers, or null"
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        _fail(path, value, expected)
    width = len(value[0])
    for i, row in enumerate(value):
        if width == 0 or len(row) != width:
            _fail(f"{path}[{i}]", row, f"a non-empty list of numbers as long as the first row "
                                       f"({width})")
        for j, x in enumerate(row):
            _number(f"{path}[{i}][{j}]", x)
    if rows is not None and len(value) != rows:
        raise ConfigError(f"{path} has {len(value)} rows: expected {rows}, one per center "
                          f"(model.k={rows})")
    if cols is not None and width != cols:
        raise ConfigError(f"{path} has rows of {width} values: expected {cols}, one per input "
                          "column (input.features.inputCols)")
    return tuple(tuple(float(x) for x in r) for r in value)


# -- sections ---------------------------------------------------------------------------


def _parse_spark(raw) -> SparkConfig:
    s = _Section("spark", raw, ("app_name", "master", "conf"))
    app = _string("spark.app_name", s.get("app_name", "minibatch-kmeans"))
    master = _string("spark.master", s.get("master", None), allow_none=True)
    conf_raw = s.get("conf", None)
    if conf_raw is None:
        conf_raw = {}
    if not isinstance(conf_raw, dict):
        _fail("spark.conf", conf_raw, "a mapping of Spark setting names to values")
    conf: Dict[str, str] = {}
    for name, value in conf_raw.items():
        path = f"spark.conf.{name}"
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"spark.conf key {name!r} is invalid: expected a setting name "
                              "such as spark.sql.shuffle.partitions")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            _fail(path, value, "a string, number or boolean", secret=_is_secret(name))
        conf[name] = value
    return SparkConfig(app, master, MappingProxyType(conf))


def _parse_input(raw, features: bool = True) -> InputConfig:
    """The input section; without ``features`` (scoring: the model's feature schema says
    where they are) the features and weight keys are refused."""
    keys = ("path", "table", "format", "version", "timestamp", "since_version", "features",
            "weightCol")
    hints = {"inputCols": "put it under input.features",
             "featuresCol": "put it under input.features"}
    if not features:
        keys = keys[:6]
        hints = {k: "the saved model's feature schema names the feature columns"
                 for k in ("features", "weightCol", "inputCols", "featuresCol")}
    s = _Section("input", raw, keys, hints)
    if s.has("path") and s.has("table"):
        raise ConfigError("input.path and input.table are both set: expected exactly one (a "
                          "path, or a catalog table name)")
    if not s.has("path") and not s.has("table"):
        raise ConfigError("input.path is missing: set input.path (a path) or input.table (a "
                          "catalog table name)")
    path = _string("input.path", s.get("path")) if s.has("path") else None
    table = _string("input.table", s.get("table")) if s.has("table") else None
    fmt = _choice("input.format", s.get("format", "parquet"), INPUT_FORMATS,
                  fold=str.lower)
    version = _int("input.version", s.get("version", None), 0, allow_none=True)
    timestamp = s.get("timestamp", None)
    if timestamp is not None:
        from datetime import date, datetime

        if isinstance(timestamp, (datetime, date)):  # YAML reads unquoted timestamps
            timestamp = timestamp.isoformat()
        try:
            text = timestamp.strip()
            datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
        except (AttributeError, ValueError):
            _fail("input.timestamp", s.get("timestamp"), "an ISO 8601 timestamp such as "
                  "2024-05-01T12:00:00Z (without a zone: the Spark session's), or null")
    if version is not None and timestamp is not None:
        raise ConfigError(f"input.version={version!r} and input.timestamp={timestamp!r} are "
                          "both set: expected at most one")
    if (version is not None or timestamp is not None) and fmt != "delta":
        key = "input.version" if version is not None else "input.timestamp"
        raise ConfigError(f"{key} is set but input.format={fmt!r}: reading an earlier version "
                          "needs format delta")
    since = _int("input.since_version", s.get("since_version", None), 0, allow_none=True)
    if since is not None and fmt != "delta":
        raise ConfigError(f"input.since_version is set but input.format={fmt!r}: the rows "
                          "appended after a version need format delta")
    if since is not None and version is not None and since >= version:
        raise ConfigError(f"input.since_version={since} is not before input.version="
                          f"{version}: expected an earlier version")
    where = dict(table=table, version=version, timestamp=timestamp, since_version=since)
    if not features:
        return InputConfig(path, fmt, **where)
    f = _Section("input.features", s.get("features"), ("inputCols", "featuresCol"))
    if f.has("inputCols") == f.has("featuresCol"):
        raise ConfigError("input.features must set exactly one of inputCols (a list of "
                          "numeric columns) and featuresCol (a Vector or array column); got "
                          + ("both" if f.has("inputCols") else "neither"))
    input_cols = _names("input.features.inputCols", f.get("inputCols")) \
        if f.has("inputCols") else None
    features_col = _string("input.features.featuresCol", f.get("featuresCol")) \
        if f.has("featuresCol") else None
    weight_col = _string("input.weightCol", s.get("weightCol", None), allow_none=True)
    return InputConfig(path, fmt, input_cols, features_col, weight_col, **where)


def _model_rules(input_cols) -> Dict[str, Callable[[str, Any, Dict[str, Any]], Any]]:
    from ..spark.params import (DISTANCES, DTYPES, FIT_MODES, HANDLE_INVALID, INIT_MODES,
                                INIT_SCOPES)
    from ..spark.prepare import STORAGES

    n_cols = len(input_cols) if input_cols else None
    return {
        "k": lambda p, v, m: _int(p, v, 2),
        "maxIter": lambda p, v, m: _int(p, v, 0),
        "tol": lambda p, v, m: _number(p, v, 0.0),
        "seed": lambda p, v, m: _int(p, v, allow_none=True),
        "initMode": lambda p, v, m: _choice(p, v, INIT_MODES),
        "initSteps": lambda p, v, m: _int(p, v, 1),
        "initScope": lambda p, v, m: _choice(p, v, INIT_SCOPES),
        "initRuns": lambda p, v, m: _int(
            p, v, 0, expected="an integer >= 0 (0: 3 runs for random init, else 1)"),
        "distanceMeasure": lambda p, v, m: _choice(p, v, DISTANCES),
        "batchSize": lambda p, v, m: _int(p, v, 1, allow_none=True),
        "fitMode": lambda p, v, m: _choice(p, v, FIT_MODES),
        "localSteps": lambda p, v, m: _int(p, v, 1),
        "initSize": lambda p, v, m: _int(p, v, 1, allow_none=True),
        "maxNoImprovement": lambda p, v, m: _int(
            p, v, 0, expected="an integer >= 0 (0 disables early stopping)"),
        "reassignmentRatio": lambda p, v, m: _number(
            p, v, 0.0, expected="a finite number >= 0 (0 disables reassignment)"),
        "handleInvalid": lambda p, v, m: _choice(p, v, HANDLE_INVALID),
        "initialCenters": lambda p, v, m: _matrix(p, v, m.get("k"), n_cols),
        "dtype": lambda p, v, m: _choice(p, v, DTYPES),
        "computeTrainingCost": lambda p, v, m: _bool(p, v),
        "prepareStorage": lambda p, v, m: _choice(p, v, STORAGES),
        "scratchDir": lambda p, v, m: _string(p, v, allow_none=True),
        "checkpointDir": lambda p, v, m: _string(p, v, allow_none=True),
        "checkpointInterval": lambda p, v, m: _int(
            p, v, 1, expected="an integer >= 1 (steps between checkpoints)"),
        "predictionCol": lambda p, v, m: _string(p, v),
        "distanceCol": lambda p, v, m: _string(p, v, allow_none=True),
    }


#: Estimator Params that belong to the input section, not the model section.
_INPUT_PARAMS = {"featuresCol": "input.features.featuresCol",
                 "inputCols": "input.features.inputCols", "weightCol": "input.weightCol"}


def _estimator_param_names() -> Tuple[str, ...]:
    from ..ml.estimator import MiniBatchKMeans

    return tuple(sorted(p.name for p in MiniBatchKMeans().params))


def _parse_model(raw, input_cols) -> Mapping[str, Any]:
    names = [n for n in _estimator_param_names() if n not in _INPUT_PARAMS]
    hints = {k: f"set it as {v}" for k, v in _INPUT_PARAMS.items()}
    s = _Section("model", raw, names, hints)
    rules = _model_rules(input_cols)
    out: Dict[str, Any] = {}
    # k first: initialCenters is checked against it.
    for name in sorted(s.raw, key=lambda n: n != "k"):
        value = s.raw[name]
        path = f"model.{name}"
        rule = rules.get(name)
        if rule is not None:
            value = rule(path, value, out)
        else:  # a Param this module has no rule for yet: the Param's own converter
            value = _convert_param(path, name, value)
        if value is not None:
            out[name] = value
    return MappingProxyType({name: out[name] for name in s.raw if name in out})


def _convert_param(path: str, name: str, value):
    from ..ml.estimator import MiniBatchKMeans

    param = MiniBatchKMeans().getParam(name)
    try:
        return param.typeConverter(value) if value is not None else None
    except (TypeError, ValueError):
        _fail(path, value, f"a value for the Param {name!r} ({param.doc})")


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


#: Output tables and driver-local files of each job: key -> default name under output.dir.
TRAIN_OUTPUTS = ({"model": "model", "centers": "centers", "metrics": "metrics",
                  "quality": "quality", "quarantine": "quarantine"},
                 {"summary": "summary.json", "plot": "convergence.png",
                  "quality_report": "quality.json"})
SCORE_OUTPUTS = ({"predictions": "predictions", "quality": "quality",
                  "quarantine": "quarantine"},
                 {"quality_report": "quality.json"})
OUTPUT_FORMATS = ("parquet", "delta")


def _parse_output(raw, outputs=TRAIN_OUTPUTS) -> OutputConfig:
    tables, file_names = outputs
    s = _Section("output", raw, ("dir", "format", *tables, *file_names))
    base = _string("output.dir", s.get("dir"))
    fmt = _choice("output.format", s.get("format", "parquet"), OUTPUT_FORMATS, fold=str.lower)
    paths = {key: _string(f"output.{key}", s.get(key, _join(base, name)), allow_none=True)
             for key, name in tables.items()}
    if "model" in paths and paths["model"] is None:
        _fail("output.model", None, "a path for the saved model")
    files = {}
    for key, name in file_names.items():
        path = f"output.{key}"
        if s.has(key):
            value = _string(path, s.get(key), allow_none=True)
        elif is_remote(base):
            raise ConfigError(
                f"{path} is missing: output.dir={base!r} is not on the driver's file "
                f"system, so set {path} to a local path (or dbfs:/), or to null to skip it")
        else:
            value = _join(base, name)
        if value is not None and is_remote(value):
            _fail(path, value, "a driver-local path (or dbfs:/, read through /dbfs), or null "
                               "to skip it")
        files[key] = value
    return OutputConfig(base, paths.get("model"), files.get("summary"), files.get("plot"),
                        fmt, paths.get("centers"), paths.get("metrics"), paths.get("quality"),
                        paths.get("quarantine"), paths.get("predictions"),
                        files.get("quality_report"), paths.get("state"),
                        paths.get("checkpoint"))


def _parse_quality(raw) -> "QualityRules":
    from ..tables.quality import QualityRules

    s = _Section("quality", raw, ("expected_columns", "ranges", "min_rows",
                                  "max_invalid_fraction"))
    d = QualityRules()
    expected = s.get("expected_columns", None) or {}
    if not isinstance(expected, dict):
        _fail("quality.expected_columns", expected, "a mapping of column name to Spark SQL "
                                                    "type (double, bigint, numeric...)")
    for name, typ in expected.items():
        _string(f"quality.expected_columns.{name}", typ)
    ranges_raw = s.get("ranges", None) or {}
    if not isinstance(ranges_raw, dict):
        _fail("quality.ranges", ranges_raw, "a mapping of feature column to [min, max]")
    ranges = {}
    for name, bounds in ranges_raw.items():
        path = f"quality.ranges.{name}"
        if not isinstance(bounds, list) or len(bounds) != 2 or bounds == [None, None]:
            _fail(path, bounds, "[min, max] with null for an open end (not both null)")
        lo, hi = (None if b is None else _number(f"{path}[{i}]", b)
                  for i, b in enumerate(bounds))
        if lo is not None and hi is not None and lo > hi:
            _fail(path, bounds, "min <= max")
        ranges[str(name)] = (lo, hi)
    fraction = _number("quality.max_invalid_fraction",
                       s.get("max_invalid_fraction", d.max_invalid_fraction), 0.0)
    if fraction > 1:
        _fail("quality.max_invalid_fraction", fraction, "a fraction between 0 and 1")
    return QualityRules(MappingProxyType({str(k): v.lower() for k, v in expected.items()}),
                        MappingProxyType(ranges),
                        _int("quality.min_rows", s.get("min_rows", d.min_rows), 1), fraction)


def _parse_logging(raw) -> LoggingConfig:
    s = _Section("logging", raw, ("level",))
    return LoggingConfig(_choice("logging.level", s.get("level", "INFO"), LOG_LEVELS,
                                 fold=str.upper))


_MLLIB_RULES = {
    "solver": lambda p, v: _choice(p, v, ("auto", "row", "block")),
    "maxIter": lambda p, v: _int(p, v, 1),
    "tol": lambda p, v: _number(p, v, 0.0),
    "initMode": lambda p, v: _choice(p, v, ("k-means||", "random")),
    "initSteps": lambda p, v: _int(p, v, 1),
    "maxBlockSizeInMB": lambda p, v: _number(p, v, 0.0),
}


def _references(path: str, value) -> Tuple[str, ...]:
    known = CompareConfig.references
    if not isinstance(value, list) or any(v not in known for v in value):
        _fail(path, value, f"a list of some of {list(known)} (or [] for none)")
    return tuple(value)


def _parse_compare(raw) -> CompareConfig:
    s = _Section("compare", raw, ("mllib", "sample_size", "local_max_mb", "references",
                                  "trajectory_points", "handle_invalid"))
    m = _Section("compare.mllib", s.get("mllib", None), tuple(_MLLIB_RULES),
                 hints={"k": "k is shared: set model.k", "seed": "set model.seed",
                        "weightCol": "set input.weightCol"})
    mllib = {name: _MLLIB_RULES[name](f"compare.mllib.{name}", value)
             for name, value in m.raw.items()}
    d = CompareConfig()
    return CompareConfig(
        MappingProxyType(mllib),
        _int("compare.sample_size", s.get("sample_size", d.sample_size), 2),
        _int("compare.local_max_mb", s.get("local_max_mb", d.local_max_mb), 0,
             expected="an integer >= 0 (0 never runs the scikit-learn references)"),
        _references("compare.references", s.get("references", list(d.references))),
        _int("compare.trajectory_points", s.get("trajectory_points", d.trajectory_points), 1),
        _choice("compare.handle_invalid", s.get("handle_invalid", d.handle_invalid),
                ("error", "skip")))


def _int_list(path: str, value, minimum: int, increasing: bool) -> Tuple[int, ...]:
    """A non-empty list of distinct integers >= minimum (increasing, if asked)."""
    expected = (f"a non-empty list of distinct integers >= {minimum}"
                + (" in increasing order, e.g. [5, 10, 15]" if increasing else ""))
    if not isinstance(value, list) or not value:
        _fail(path, value, expected)
    ints = [_int(f"{path}[{i}]", v, minimum) for i, v in enumerate(value)]
    if increasing:
        bad = any(b <= a for a, b in zip(ints, ints[1:]))
    else:
        bad = len(set(ints)) < len(ints)
    if bad:
        _fail(path, value, expected)
    return tuple(ints)


def _parse_tune(raw) -> TuneConfig:
    s = _Section("tune", raw, ("k", "batch_sizes", "holdout_fraction", "sample_size"),
                 hints={"seed": "set model.seed", "batchSize": "set tune.batch_sizes"})
    d = TuneConfig()
    k = _int_list("tune.k", s.get("k"), 2, True) if s.has("k") else d.k
    sizes = s.get("batch_sizes", None)
    fraction = _number("tune.holdout_fraction", s.get("holdout_fraction", d.holdout_fraction))
    if not 0 < fraction < 1:
        _fail("tune.holdout_fraction", s.get("holdout_fraction"), "a number between 0 and 1 "
                                                                  "(exclusive)")
    return TuneConfig(k, None if sizes is None else _int_list("tune.batch_sizes", sizes, 1,
                                                               False),
                      fraction, _int("tune.sample_size", s.get("sample_size", d.sample_size),
                                     2))


def _parse_config(raw) -> Config:
    s = _Section("", raw, ("run_id", "spark", "input", "model", "output", "logging",
                           "compare", "quality", "tune", "mlflow"))
    run_id = _run_id("run_id", s.get("run_id", None))
    spark = _parse_spark(s.get("spark", None))
    inp = _parse_input(s.get("input"))
    model = _parse_model(s.get("model", None), inp.input_cols)
    out = _parse_output(s.get("output"))
    log = _parse_logging(s.get("logging", None))
    return Config(inp, out, spark, model, log, _parse_compare(s.get("compare", None)),
                  run_id, _parse_quality(s.get("quality", None)),
                  _parse_tune(s.get("tune", None)), _parse_mlflow(s.get("mlflow", None)))


@dataclass(frozen=True)
class MlflowConfig:
    """Where runs are tracked and models registered (``mlflow:``; needs the ``mlops``
    extra).

    Attributes
    ----------
    tracking_uri, registry_uri : str or None
        None: a local SQLite store under ``<root>/mlflow`` (the registry is the tracking
        store); on Databricks ``databricks``, and ``databricks-uc`` for Unity Catalog.
    experiment : str
    model_name : str
        Registered model name (``catalog.schema.name`` on Unity Catalog).
    root : str
        Folder of the default local store.
    holdout_fraction : float
        Train: rows held out (by content hash) for the holdout metrics and the reference
        statistics registered with the model.
    promote_first : bool
        Train: a registered model without a champion makes this version its champion.
    """

    tracking_uri: Optional[str] = None
    registry_uri: Optional[str] = None
    experiment: str = "minibatch-kmeans"
    model_name: str = "minibatch-kmeans"
    root: str = "out"
    holdout_fraction: float = 0.1
    promote_first: bool = True


def _parse_mlflow(raw) -> Optional[MlflowConfig]:
    if raw is None:
        return None
    s = _Section("mlflow", raw, ("tracking_uri", "registry_uri", "experiment", "model_name",
                                 "root", "holdout_fraction", "promote_first"))
    d = MlflowConfig()
    fraction = _number("mlflow.holdout_fraction", s.get("holdout_fraction",
                                                         d.holdout_fraction), 0.0)
    if not 0 < fraction < 1:
        _fail("mlflow.holdout_fraction", fraction, "a fraction between 0 and 1 (exclusive)")
    return MlflowConfig(
        _string("mlflow.tracking_uri", s.get("tracking_uri", None), allow_none=True),
        _string("mlflow.registry_uri", s.get("registry_uri", None), allow_none=True),
        _string("mlflow.experiment", s.get("experiment", d.experiment)),
        _string("mlflow.model_name", s.get("model_name", d.model_name)),
        _string("mlflow.root", s.get("root", d.root)), fraction,
        _bool("mlflow.promote_first", s.get("promote_first", d.promote_first)))


def _default_quality():
    from ..tables.quality import QualityRules

    return QualityRules()


@dataclass(frozen=True)
class ScoringConfig:
    """What ``jobs/score.py`` scores with.

    Attributes
    ----------
    model : str
        Spark path of a saved :class:`~minibatch_kmeans.MiniBatchKMeansModel`.
    id_columns : tuple of str
        Input columns kept in the predictions (and checked to exist).
    ignore_columns : tuple of str
        Columns of the scoring table that were not in the training table and are not
        features (otherwise a column added since training is an error).
    prediction_col, distance_col : str
        Output column names: the nearest center, and the distance to it (Euclidean, or
        cosine distance for a cosine model).
    """

    model: str
    id_columns: Tuple[str, ...] = ()
    ignore_columns: Tuple[str, ...] = ()
    prediction_col: str = "prediction"
    distance_col: str = "distance"


@dataclass(frozen=True)
class ScoreConfig:
    """A validated scoring job configuration (:func:`load_score_config`)."""

    input: InputConfig
    output: OutputConfig
    scoring: ScoringConfig
    spark: SparkConfig = field(default_factory=SparkConfig)
    quality: "QualityRules" = field(default_factory=lambda: _default_quality())
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run_id: Optional[str] = None

    @classmethod
    def from_dict(cls, raw: Any) -> "ScoreConfig":
        return _parse_score_config(raw)

    def describe(self) -> List[str]:
        return [
            self.spark.describe(),
            f"input: {self.input.format} {self.input.describe()}",
            f"model: {self.scoring.model}; ids {list(self.scoring.id_columns)}",
            f"output: {self.output.format} predictions {self.output.predictions}, "
            f"quarantine {self.output.quarantine}, quality report {self.output.quality_report}",
            f"run_id: {self.run_id}",
        ]


def _parse_scoring(raw) -> ScoringConfig:
    s = _Section("scoring", raw, ("model", "id_columns", "ignore_columns", "prediction_col",
                                  "distance_col"))
    ids = s.get("id_columns", None)
    ignore = s.get("ignore_columns", None)
    sc = ScoringConfig(
        _string("scoring.model", s.get("model")),
        _names("scoring.id_columns", ids) if ids else (),
        _names("scoring.ignore_columns", ignore) if ignore else (),
        _string("scoring.prediction_col", s.get("prediction_col", "prediction")),
        _string("scoring.distance_col", s.get("distance_col", "distance")))
    taken = [c for c in (sc.prediction_col, sc.distance_col, "run_id") if c in sc.id_columns]
    if sc.prediction_col == sc.distance_col or taken:
        _fail("scoring", {"prediction_col": sc.prediction_col, "distance_col":
                          sc.distance_col}, "distinct output column names that are not id "
                                            "columns or run_id")
    return sc


def _parse_score_config(raw) -> ScoreConfig:
    s = _Section("", raw, ("run_id", "spark", "input", "scoring", "quality", "output",
                           "logging"),
                 hints={"model": "put the model path under scoring.model"})
    return ScoreConfig(_parse_input(s.get("input"), features=False),
                       _parse_output(s.get("output"), SCORE_OUTPUTS),
                       _parse_scoring(s.get("scoring")),
                       _parse_spark(s.get("spark", None)),
                       _parse_quality(s.get("quality", None)),
                       _parse_logging(s.get("logging", None)),
                       _run_id("run_id", s.get("run_id", None)))


def _run_id(path: str, value) -> Optional[str]:
    """A run id: letters, digits, ``.``, ``_``, ``-`` and ``=`` (it becomes a directory
    name and a partition value), or null."""
    if value is None:
        return None
    if isinstance(value, (int, datetime.date)) and not isinstance(value, bool):
        value = value.isoformat() if isinstance(value, datetime.date) else str(value)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}",
                                                      value):
        _fail(path, value, "a string of letters, digits, '.', '_', '-' or '=' (at most 128, "
                           "starting with a letter or digit), or null")
    return value


# -- the monitoring job (jobs/monitor.py) -------------------------------------------------

#: Monitor output tables and driver-local files: key -> default name under output.dir.
MONITOR_OUTPUTS = ({"quality": "quality", "quarantine": "quarantine"},
                   {"quality_report": "quality.json"})
#: The drift report's driver-local files: key -> default name under output.dir.
DRIFT_FILES = {"drift_json": "drift.json", "drift_md": "drift.md", "drift_png": "drift.png"}


@dataclass(frozen=True)
class AbsoluteGate:
    """What a challenger must reach when the champion cannot score the new data (the
    schema changed): each bound that is set must hold (none set: never promoted)."""

    max_cost_per_row: Optional[float] = None
    min_silhouette: Optional[float] = None


@dataclass(frozen=True)
class MonitorSettings:
    """The ``monitor:`` section of ``jobs/monitor.py``.

    Attributes
    ----------
    thresholds : DriftThresholds
        When a figure counts as drift (psi, ks_pvalue, ks_statistic, js, distance_ratio).
    holdout_fraction : float
        Share of the new slice held out (by a hash of the features) to judge champion and
        challenger; the challenger trains on the rest.
    min_improvement : float
        The challenger is promoted when its holdout cost per row is at most the champion's
        times ``1 - min_improvement``.
    absolute_gate : AbsoluteGate
        Judges the challenger alone when the champion cannot score the data.
    force_retrain : bool
        Train and judge a challenger even without drift.
    where : str or None
        SQL filter applied to the input after reading (a partition: ``day = '2026-11-24'``).
    ignore_columns : tuple of str
        Columns that may be new without counting as schema drift (ids, dates).
    sample_size : int
        Holdout rows (at most) for the silhouette.
    seed : int
        Seeds the holdout split (and the challenger unless model.seed is set).
    """

    thresholds: Any
    holdout_fraction: float = 0.2
    min_improvement: float = 0.02
    absolute_gate: AbsoluteGate = field(default_factory=AbsoluteGate)
    force_retrain: bool = False
    where: Optional[str] = None
    ignore_columns: Tuple[str, ...] = ()
    sample_size: int = SILHOUETTE_ROWS
    seed: int = 42


@dataclass(frozen=True)
class DriftFiles:
    """Driver-local files of the drift report (None skips one)."""

    json: Optional[str]
    markdown: Optional[str]
    png: Optional[str]


@dataclass(frozen=True)
class MonitorConfig:
    """A validated monitoring job configuration (:func:`load_monitor_config`)."""

    input: InputConfig
    output: OutputConfig
    drift_files: DriftFiles
    mlflow: "MlflowConfig"
    monitor: MonitorSettings
    spark: SparkConfig = field(default_factory=SparkConfig)
    model: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    quality: "QualityRules" = field(default_factory=lambda: _default_quality())
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run_id: Optional[str] = None

    @classmethod
    def from_dict(cls, raw: Any) -> "MonitorConfig":
        return _parse_monitor_config(raw)

    def estimator_params(self) -> Dict[str, Any]:
        """The challenger's ``MiniBatchKMeans`` keyword arguments (model section plus the
        input's feature and weight columns), as :meth:`Config.estimator_params`."""
        return Config.estimator_params(self)  # reads only .model and .input

    def describe(self) -> List[str]:
        m = self.monitor
        model = ", ".join(f"{k}={_short(v)}" for k, v in self.model.items()) or "defaults"
        return [
            self.spark.describe(),
            f"input: {self.input.format} {self.input.describe()}"
            + (f" where {m.where}" if m.where else ""),
            f"mlflow: {self.mlflow.tracking_uri or '(local sqlite)'}, model "
            f"{self.mlflow.model_name!r}, experiment {self.mlflow.experiment!r}",
            f"monitor: thresholds {m.thresholds.as_dict()}, holdout {m.holdout_fraction}, "
            f"min_improvement {m.min_improvement}, gate {m.absolute_gate}, "
            f"force_retrain {m.force_retrain}",
            f"challenger model: {model}",
            f"output: {self.output.dir}; drift report {self.drift_files}",
        ]


def _parse_thresholds(raw):
    from ..lifecycle.drift import DriftThresholds
    from ..errors import InvalidParamError

    names = tuple(DriftThresholds.__dataclass_fields__)
    s = _Section("monitor.thresholds", raw, names)
    d = DriftThresholds()
    values = {n: _number(f"monitor.thresholds.{n}", s.get(n, getattr(d, n))) for n in names}
    try:
        return DriftThresholds(**values)
    except InvalidParamError as e:
        raise ConfigError(f"monitor.thresholds: {e}") from None


def _parse_monitor_settings(raw) -> MonitorSettings:
    s = _Section("monitor", raw, ("thresholds", "holdout_fraction", "min_improvement",
                                  "absolute_gate", "force_retrain", "where",
                                  "ignore_columns", "sample_size", "seed"))
    d = MonitorSettings(None)
    fraction = _number("monitor.holdout_fraction", s.get("holdout_fraction",
                                                          d.holdout_fraction))
    if not 0 < fraction < 1:
        _fail("monitor.holdout_fraction", fraction, "a fraction between 0 and 1 (exclusive)")
    improvement = _number("monitor.min_improvement", s.get("min_improvement",
                                                            d.min_improvement))
    if not 0 <= improvement < 1:
        _fail("monitor.min_improvement", improvement, "a relative improvement in [0, 1), "
                                                      "e.g. 0.02 for 2%")
    g = _Section("monitor.absolute_gate", s.get("absolute_gate", None),
                 ("max_cost_per_row", "min_silhouette"))
    cost = g.get("max_cost_per_row", None)
    sil = g.get("min_silhouette", None)
    gate = AbsoluteGate(
        None if cost is None else _number("monitor.absolute_gate.max_cost_per_row", cost, 0.0),
        None if sil is None else _number("monitor.absolute_gate.min_silhouette", sil, -1.0))
    if gate.min_silhouette is not None and gate.min_silhouette > 1:
        _fail("monitor.absolute_gate.min_silhouette", sil, "a number in [-1, 1]")
    ignore = s.get("ignore_columns", None)
    return MonitorSettings(
        _parse_thresholds(s.get("thresholds", None)), fraction, improvement, gate,
        _bool("monitor.force_retrain", s.get("force_retrain", d.force_retrain)),
        _string("monitor.where", s.get("where", None), allow_none=True),
        _names("monitor.ignore_columns", ignore) if ignore else (),
        _int("monitor.sample_size", s.get("sample_size", d.sample_size), 2),
        _int("monitor.seed", s.get("seed", d.seed)))


def _parse_drift_files(raw) -> DriftFiles:
    raw = raw if isinstance(raw, dict) else {}
    base = raw.get("dir")
    files = {}
    for key, name in DRIFT_FILES.items():
        path = f"output.{key}"
        if key in raw:
            value = _string(path, raw[key], allow_none=True)
        elif is_remote(base):
            raise ConfigError(
                f"{path} is missing: output.dir={base!r} is not on the driver's file "
                f"system, so set {path} to a local path (or dbfs:/), or to null to skip it")
        else:
            value = _join(base, name)
        if value is not None and is_remote(value):
            _fail(path, value, "a driver-local path (or dbfs:/), or null to skip it")
        files[key] = value
    return DriftFiles(files["drift_json"], files["drift_md"], files["drift_png"])


def _parse_monitor_config(raw) -> MonitorConfig:
    s = _Section("", raw, ("run_id", "spark", "input", "model", "quality", "mlflow",
                           "monitor", "output", "logging"),
                 hints={"thresholds": "put them under monitor.thresholds"})
    inp = _parse_input(s.get("input"))
    model = _parse_model(s.get("model", None), inp.input_cols)
    if "initialCenters" in model:
        raise ConfigError("model.initialCenters is set: expected it unset (the challenger "
                          "starts from the champion's centers when the schema is unchanged)")
    out_raw = s.get("output")
    if isinstance(out_raw, dict):
        out = _parse_output({k: v for k, v in out_raw.items() if k not in DRIFT_FILES},
                            MONITOR_OUTPUTS)
        files = _parse_drift_files(out_raw)
    else:
        out = _parse_output(out_raw, MONITOR_OUTPUTS)  # raises, naming the section
    ml_raw = s.get("mlflow")
    for key in ("holdout_fraction", "promote_first"):
        if isinstance(ml_raw, dict) and key in ml_raw:
            raise ConfigError(f"mlflow.{key} is not a known key of the monitoring job: "
                              "expected tracking_uri, registry_uri, experiment, model_name, "
                              "root" + (" (set monitor.holdout_fraction)"
                                        if key == "holdout_fraction" else ""))
    if ml_raw is None:
        raise ConfigError("mlflow is missing: the monitoring job needs the registry "
                          "(mlflow: {model_name: ...}, tracking_uri null for the local store)")
    return MonitorConfig(inp, out, files, _parse_mlflow(ml_raw),
                         _parse_monitor_settings(s.get("monitor", None)),
                         _parse_spark(s.get("spark", None)), model,
                         _parse_quality(s.get("quality", None)),
                         _parse_logging(s.get("logging", None)),
                         _run_id("run_id", s.get("run_id", None)))


# -- the streaming job (jobs/stream.py) ---------------------------------------------------

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
    quality: "QualityRules" = field(default_factory=lambda: _default_quality())
    mlflow: Optional["MlflowConfig"] = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @classmethod
    def from_dict(cls, raw: Any) -> "StreamConfig":
        return _parse_stream_config(raw)

    def estimator_params(self) -> Dict[str, Any]:
        """The first model's ``MiniBatchKMeans`` keyword arguments (no ``stream.model``)."""
        return Config.estimator_params(self)  # reads only .model and .input

    def describe(self) -> List[str]:
        st = self.stream
        start = st.model or ("fit on the first micro-batch: " + (", ".join(
            f"{k}={_short(v)}" for k, v in self.model.items()) or "defaults"))
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
    from ..ml.estimator import TIME_UNITS, discount_rule
    from ..errors import InvalidParamError

    keys = tuple(StreamSettings.__dataclass_fields__)
    s = _Section("stream", raw, keys, hints={"decayFactor": "write decay_factor",
                                             "halfLife": "write half_life"})
    d = StreamSettings()
    trigger = s.get("trigger", d.trigger)
    if not isinstance(trigger, str) or (trigger.lower() not in TRIGGERS
                                        and not _INTERVAL.match(trigger.strip())):
        _fail("stream.trigger", trigger, "available_now, once, or an interval such as "
                                         "'30 seconds'")
    trigger = trigger.lower() if trigger.lower() in TRIGGERS else trigger.strip()
    timeout = s.get("timeout_seconds", None)
    timeout = None if timeout is None else _number("stream.timeout_seconds", timeout, 0.0)
    cap = _int("stream.max_files_per_trigger", s.get("max_files_per_trigger", None), 1,
               allow_none=True)
    for key in ("starting_version", "skip_change_commits"):
        if s.has(key) and fmt != "delta":
            raise ConfigError(f"stream.{key} is set but input.format={fmt!r}: it applies to "
                              "delta input only")
    if s.has("schema") and fmt != "parquet":
        raise ConfigError(f"stream.schema is set but input.format={fmt!r}: a Delta table's "
                          "schema comes from its log")
    decay = s.get("decay_factor", None)
    half = s.get("half_life", None)
    decay = None if decay is None else _number("stream.decay_factor", decay)
    half = None if half is None else _number("stream.half_life", half)
    unit = s.get("time_unit", d.time_unit)
    ratio = _number("stream.reseed_ratio", s.get("reseed_ratio", d.reseed_ratio), 0.0)
    if not isinstance(unit, str) or unit not in TIME_UNITS:
        _fail("stream.time_unit", unit, "batches or rows")
    try:
        discount_rule(decay, half, unit)
    except InvalidParamError as e:
        raise ConfigError(f"stream: {e}".replace("decayFactor", "decay_factor")
                          .replace("halfLife", "half_life")) from None
    if ratio >= 1:
        _fail("stream.reseed_ratio", ratio, "a number in [0, 1); 0 never re-seeds")
    ids = s.get("id_columns", None)
    return StreamSettings(
        _string("stream.model", s.get("model", None), allow_none=True), trigger, timeout, cap,
        _string("stream.schema", s.get("schema", None), allow_none=True),
        _int("stream.starting_version", s.get("starting_version", None), 0, allow_none=True),
        _bool("stream.skip_change_commits", s.get("skip_change_commits", False)),
        decay, half, TIME_UNITS[unit], ratio,
        _choice("stream.handle_invalid", s.get("handle_invalid", d.handle_invalid),
                ("skip", "error"), fold=str.lower),
        _names("stream.id_columns", ids) if ids else (),
        _int("stream.register_every", s.get("register_every", 0), 0),
        _initial_weight(s.get("initial_weight", d.initial_weight)))


def _initial_weight(value):
    if isinstance(value, str) and value.lower() in ("model", "sizes"):
        return value.lower()
    return _number("stream.initial_weight", value, 0.0,
                   expected="model, sizes, or a weight >= 0 for every center")


def _parse_stream_config(raw) -> StreamConfig:
    s = _Section("", raw, ("spark", "input", "model", "stream", "quality", "mlflow", "output",
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
    inp = _parse_input(s.get("input"), features=not starts_from_model)
    if inp.version is not None or inp.timestamp is not None or inp.since_version is not None:
        raise ConfigError("input.version, input.timestamp and input.since_version do not "
                          "apply to a stream: set stream.starting_version")
    settings = _parse_stream_settings(stream_raw, inp.format)
    model = _parse_model(s.get("model", None), inp.input_cols)
    if starts_from_model and model:
        raise ConfigError(f"model is set ({sorted(model)}) and so is stream.model: the stream "
                          "continues the saved model with its own Params; remove one")
    if "handleInvalid" in model:
        raise ConfigError("model.handleInvalid is set: the stream's is stream.handle_invalid")
    ml = _parse_mlflow(s.get("mlflow", None))
    if settings.model and settings.model.startswith("models:/") and ml is None:
        raise ConfigError(f"stream.model={settings.model!r} names a registered model: it "
                          "needs an mlflow section (mlflow: {tracking_uri: ...})")
    if settings.register_every and ml is None:
        raise ConfigError(f"stream.register_every={settings.register_every} needs an mlflow "
                          "section (mlflow: {model_name: ...})")
    out = _parse_output(s.get("output"), STREAM_OUTPUTS)
    for key in ("state", "checkpoint"):
        if getattr(out, key) is None:
            _fail(f"output.{key}", None, "a path: the stream cannot resume without it")
    return StreamConfig(inp, out, settings, _parse_spark(s.get("spark", None)), model,
                        _parse_quality(s.get("quality", None)), ml,
                        _parse_logging(s.get("logging", None)))
