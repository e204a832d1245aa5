"""The sections every job config shares (spark, input, model, output, quality, logging,
mlflow, run_id): their dataclasses and parsers."""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from ...errors import ConfigError, InvalidParamError
from ...spark.params import PARAM_RULES
from ...redaction import redact, redact_text
from . import values as val
from .files import LOG_LEVELS

if TYPE_CHECKING:
    from ...tables.quality import QualityRules

INPUT_FORMATS = ("parquet", "delta")


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
        Output tables, each a Spark path or a catalog table name (``main.default.scores``:
        no ``/`` and no scheme), partitioned by ``run_id`` so that a re-run replaces its
        own rows. Train writes centers, metrics, quality and quarantine
        (defaults ``<dir>/<name>``); score writes predictions, quality and quarantine.
        None skips a table; the quarantine table is written only when rows are invalid.
    summary, plot, quality_report : str or None
        Report files: the JSON summary, the convergence PNG and the JSON quality report
        (defaults ``<dir>/summary.json``, ``<dir>/convergence.png`` and
        ``<dir>/quality.json``, next to the outputs); any path or URI (:func:`report_file`);
        None skips them.
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


def parse_spark(raw) -> SparkConfig:
    s = val.Section("spark", raw, ("app_name", "master", "conf"))
    app = val.string("spark.app_name", s.get("app_name", "minibatch-kmeans"))
    master = val.string("spark.master", s.get("master", None), allow_none=True)
    conf_raw = s.get("conf", None)
    if conf_raw is None:
        conf_raw = {}
    if not isinstance(conf_raw, dict):
        val.fail("spark.conf", conf_raw, "a mapping of Spark setting names to values")
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
            val.fail(path, value, "a string, number or boolean", secret=val.is_secret(name))
        conf[name] = value
    return SparkConfig(app, master, MappingProxyType(conf))


def parse_input(raw, features: bool = True) -> InputConfig:
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
    s = val.Section("input", raw, keys, hints)
    if s.has("path") and s.has("table"):
        raise ConfigError("input.path and input.table are both set: expected exactly one (a "
                          "path, or a catalog table name)")
    if not s.has("path") and not s.has("table"):
        raise ConfigError("input.path is missing: set input.path (a path) or input.table (a "
                          "catalog table name)")
    path = val.string("input.path", s.get("path")) if s.has("path") else None
    table = val.string("input.table", s.get("table")) if s.has("table") else None
    fmt = val.choice("input.format", s.get("format", "parquet"), INPUT_FORMATS,
                     fold=str.lower)
    version = val.integer("input.version", s.get("version", None), 0, allow_none=True)
    timestamp = s.get("timestamp", None)
    if timestamp is not None:
        from datetime import date, datetime

        if isinstance(timestamp, (datetime, date)):  # YAML reads unquoted timestamps
            timestamp = timestamp.isoformat()
        try:
            text = timestamp.strip()
            datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
        except (AttributeError, ValueError):
            val.fail("input.timestamp", s.get("timestamp"), "an ISO 8601 timestamp such as "
                     "2024-05-01T12:00:00Z (without a zone: the Spark session's), or null")
    if version is not None and timestamp is not None:
        raise ConfigError(f"input.version={version!r} and input.timestamp={timestamp!r} are "
                          "both set: expected at most one")
    if (version is not None or timestamp is not None) and fmt != "delta":
        key = "input.version" if version is not None else "input.timestamp"
        raise ConfigError(f"{key} is set but input.format={fmt!r}: reading an earlier version "
                          "needs format delta")
    since = val.integer("input.since_version", s.get("since_version", None), 0, allow_none=True)
    if since is not None and fmt != "delta":
        raise ConfigError(f"input.since_version is set but input.format={fmt!r}: the rows "
                          "appended after a version need format delta")
    if since is not None and version is not None and since >= version:
        raise ConfigError(f"input.since_version={since} is not before input.version="
                          f"{version}: expected an earlier version")
    where = dict(table=table, version=version, timestamp=timestamp, since_version=since)
    if not features:
        return InputConfig(path, fmt, **where)
    f = val.Section("input.features", s.get("features"), ("inputCols", "featuresCol"))
    if f.has("inputCols") == f.has("featuresCol"):
        raise ConfigError("input.features must set exactly one of inputCols (a list of "
                          "numeric columns) and featuresCol (a Vector or array column); got "
                          + ("both" if f.has("inputCols") else "neither"))
    input_cols = val.names("input.features.inputCols", f.get("inputCols")) \
        if f.has("inputCols") else None
    features_col = val.string("input.features.featuresCol", f.get("featuresCol")) \
        if f.has("featuresCol") else None
    weight_col = val.string("input.weightCol", s.get("weightCol", None), allow_none=True)
    return InputConfig(path, fmt, input_cols, features_col, weight_col, **where)


#: Estimator Params that belong to the input section, not the model section.
_INPUT_PARAMS = {"featuresCol": "input.features.featuresCol",
                 "inputCols": "input.features.inputCols", "weightCol": "input.weightCol"}


def parse_model(raw, input_cols) -> Mapping[str, Any]:
    """The model section: MiniBatchKMeans Params by name, each checked by its rule in
    :data:`~minibatch_kmeans.spark.params.PARAM_RULES`; initialCenters also against k and
    the input columns."""
    known = [n for n in PARAM_RULES if n not in _INPUT_PARAMS]
    hints = {k: f"set it as {where}" for k, where in _INPUT_PARAMS.items()}
    s = val.Section("model", raw, known, hints)
    out = {name: val.by_rule(f"model.{name}", PARAM_RULES[name][1], value)
           for name, value in s.raw.items()}
    _check_shape("model.initialCenters", out.get("initialCenters"), out.get("k"),
                 len(input_cols) if input_cols else None)
    return MappingProxyType({name: value for name, value in out.items() if value is not None})


def _check_shape(path: str, centers, k: Optional[int], n_cols: Optional[int]) -> None:
    if centers is None:
        return
    if k is not None and len(centers) != k:
        raise ConfigError(f"{path} has {len(centers)} rows: expected {k}, one per center "
                          f"(model.k={k})")
    if n_cols is not None and len(centers[0]) != n_cols:
        raise ConfigError(f"{path} has rows of {len(centers[0])} values: expected {n_cols}, "
                          "one per input column (input.features.inputCols)")


#: Output tables and report files of each job: key -> default name under output.dir.
TRAIN_OUTPUTS = ({"model": "model", "centers": "centers", "metrics": "metrics",
                  "quality": "quality", "quarantine": "quarantine"},
                 {"summary": "summary.json", "plot": "convergence.png",
                  "quality_report": "quality.json"})


OUTPUT_FORMATS = ("parquet", "delta")

#: Outputs that are folders, never catalog tables: the saved model and the stream's state
#: and checkpoint. The others are tables, each a path or a catalog table name.
PATH_OUTPUTS = ("model", "state", "checkpoint")


def check_table(path: str, value: str) -> str:
    """An output table, a path or a catalog table name (``main.default.scores``), told
    apart by :func:`~minibatch_kmeans.tables.io.table_name`; ConfigError naming ``path``
    when it is neither."""
    from ...tables.io import table_name

    try:
        table_name(value)
    except InvalidParamError as e:
        raise ConfigError(f"{path}: {e}") from None
    return value


def report_file(raw: Mapping[str, Any], key: str, base: str, name: str) -> Optional[str]:
    """The report file ``output.<key>`` (a small JSON, Markdown or PNG file): as given in
    ``raw`` (null skips it), else ``<base>/<name>``, next to the outputs in output.dir.
    Any path or URI: plain paths (``/Volumes/...`` too) are written with the driver's file
    I/O, URIs (``s3a://``, ``abfss://``, ``gs://``, ``hdfs://``, ``dbfs:``, ``file:``)
    through Hadoop's FileSystem (:func:`minibatch_kmeans.paths.write_file`)."""
    path = f"output.{key}"
    if key in raw:
        return val.string(path, raw[key], allow_none=True)
    return val.join_path(base, name)


def parse_output(raw, outputs=TRAIN_OUTPUTS) -> OutputConfig:
    tables, file_names = outputs
    s = val.Section("output", raw, ("dir", "format", *tables, *file_names))
    base = val.string("output.dir", s.get("dir"))
    fmt = val.choice("output.format", s.get("format", "parquet"), OUTPUT_FORMATS, fold=str.lower)
    paths = {key: val.string(f"output.{key}", s.get(key, val.join_path(base, name)),
                             allow_none=True)
             for key, name in tables.items()}
    for key, value in paths.items():
        if key not in PATH_OUTPUTS and value is not None:
            check_table(f"output.{key}", value)
    if "model" in paths and paths["model"] is None:
        val.fail("output.model", None, "a path for the saved model")
    files = {}
    for key, name in file_names.items():
        files[key] = report_file(s.raw, key, base, name)
    return OutputConfig(base, paths.get("model"), files.get("summary"), files.get("plot"),
                        fmt, paths.get("centers"), paths.get("metrics"), paths.get("quality"),
                        paths.get("quarantine"), paths.get("predictions"),
                        files.get("quality_report"), paths.get("state"),
                        paths.get("checkpoint"))


def parse_quality(raw) -> "QualityRules":
    from ...tables.quality import QualityRules

    s = val.Section("quality", raw, ("expected_columns", "ranges", "min_rows",
                                     "max_invalid_fraction"))
    d = QualityRules()
    expected = s.get("expected_columns", None) or {}
    if not isinstance(expected, dict):
        val.fail("quality.expected_columns", expected, "a mapping of column name to Spark SQL "
                 "type (double, bigint, numeric...)")
    for name, typ in expected.items():
        val.string(f"quality.expected_columns.{name}", typ)
    ranges_raw = s.get("ranges", None) or {}
    if not isinstance(ranges_raw, dict):
        val.fail("quality.ranges", ranges_raw, "a mapping of feature column to [min, max]")
    ranges = {}
    for name, bounds in ranges_raw.items():
        path = f"quality.ranges.{name}"
        if not isinstance(bounds, list) or len(bounds) != 2 or bounds == [None, None]:
            val.fail(path, bounds, "[min, max] with null for an open end (not both null)")
        lo, hi = (None if b is None else val.number(f"{path}[{i}]", b)
                  for i, b in enumerate(bounds))
        if lo is not None and hi is not None and lo > hi:
            val.fail(path, bounds, "min <= max")
        ranges[str(name)] = (lo, hi)
    fraction = val.number("quality.max_invalid_fraction",
                          s.get("max_invalid_fraction", d.max_invalid_fraction), 0.0)
    if fraction > 1:
        val.fail("quality.max_invalid_fraction", fraction, "a fraction between 0 and 1")
    return QualityRules(MappingProxyType({str(k): v.lower() for k, v in expected.items()}),
                        MappingProxyType(ranges),
                        val.integer("quality.min_rows", s.get("min_rows", d.min_rows), 1), fraction)


def parse_logging(raw) -> LoggingConfig:
    s = val.Section("logging", raw, ("level",))
    return LoggingConfig(val.choice("logging.level", s.get("level", "INFO"), LOG_LEVELS,
                                    fold=str.upper))


@dataclass(frozen=True, repr=False)
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

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={redact_text(v) if isinstance(v, str) else v!r}"
                           for k, v in self.__dict__.items())
        return f"MlflowConfig({fields})"


def parse_mlflow(raw) -> Optional[MlflowConfig]:
    if raw is None:
        return None
    s = val.Section("mlflow", raw, ("tracking_uri", "registry_uri", "experiment", "model_name",
                                    "root", "holdout_fraction", "promote_first"))
    d = MlflowConfig()
    fraction = val.number("mlflow.holdout_fraction", s.get("holdout_fraction",
                                                           d.holdout_fraction), 0.0)
    if not 0 < fraction < 1:
        val.fail("mlflow.holdout_fraction", fraction, "a fraction between 0 and 1 (exclusive)")
    uris = {key: val.string(f"mlflow.{key}", s.get(key, None), allow_none=True)
            for key in ("tracking_uri", "registry_uri")}
    for key, uri in uris.items():
        _check_database_driver(f"mlflow.{key}", uri)
    return MlflowConfig(
        uris["tracking_uri"], uris["registry_uri"],
        val.string("mlflow.experiment", s.get("experiment", d.experiment)),
        val.string("mlflow.model_name", s.get("model_name", d.model_name)),
        val.string("mlflow.root", s.get("root", d.root)), fraction,
        val.boolean("mlflow.promote_first", s.get("promote_first", d.promote_first)))


#: The Python package SQLAlchemy needs for an MLflow database URI, by its scheme (the
#: dialect's default driver when the URI names none).
_DATABASE_DRIVERS = {"postgresql": ("psycopg2", "psycopg2-binary"),
                     "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
                     "postgresql+psycopg": ("psycopg", "psycopg[binary]"),
                     "mysql": ("MySQLdb", "mysqlclient"), "mysql+pymysql": ("pymysql", "pymysql"),
                     "mysql+mysqldb": ("MySQLdb", "mysqlclient"),
                     "mssql": ("pyodbc", "pyodbc"), "mssql+pyodbc": ("pyodbc", "pyodbc"),
                     "mssql+pymssql": ("pymssql", "pymssql")}


def _check_database_driver(path: str, uri: Optional[str]) -> None:
    """A database tracking or registry URI whose driver is not installed is refused now,
    before any training, rather than by MLflow after it."""
    import importlib.util

    scheme = (uri or "").split("://", 1)[0].lower() if "://" in (uri or "") else ""
    module, package = _DATABASE_DRIVERS.get(scheme, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        raise ConfigError(f"{path}={redact_text(uri)!r} needs the {module} module, which is "
                          f"not installed: pip install {package} (or use another store)")


def default_quality():
    from ...tables.quality import QualityRules

    return QualityRules()


def parse_run_id(path: str, value) -> Optional[str]:
    """A run id: letters, digits, ``.``, ``_``, ``-`` and ``=`` (it becomes a directory
    name and a partition value), or null."""
    if value is None:
        return None
    if isinstance(value, (int, datetime.date)) and not isinstance(value, bool):
        value = value.isoformat() if isinstance(value, datetime.date) else str(value)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}",
                                                      value):
        val.fail(path, value, "a string of letters, digits, '.', '_', '-' or '=' (at most 128, "
                 "starting with a letter or digit), or null")
    return value
