"""The monitoring job's config (``jobs/monitor.py``): :class:`MonitorConfig`."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import ConfigError
from ...evaluate.holdout import SILHOUETTE_ROWS
from ...redaction import redact_text
from . import values as val
from .files import read_yaml
from .sections import (report_file, InputConfig, LoggingConfig, MlflowConfig, OutputConfig,
                       SparkConfig, default_quality, parse_input, parse_logging, parse_mlflow,
                       parse_model, parse_output, parse_quality, parse_run_id, parse_spark)
from .train import Config

if TYPE_CHECKING:
    from ...tables.quality import QualityRules

def load_monitor_config(path: str, overrides: Sequence[str] = ()) -> "MonitorConfig":
    """The validated config of ``jobs/monitor.py`` (sections run_id, spark, input, model,
    quality, mlflow, monitor, output, logging)."""
    return parse_monitor_config(read_yaml(path, overrides))


#: Stands for the run id in the monitor's report file paths; the defaults put each
#: run's files in its own directory, ``<output.dir>/<run id>/``, so that monitors sharing
#: an output directory never write the same file.
RUN_ID_FIELD = "{run_id}"

#: Monitor output tables (partitioned by run_id) and report files: key -> default
#: name under output.dir.
MONITOR_OUTPUTS = ({"quality": "quality", "quarantine": "quarantine"},
                   {"quality_report": RUN_ID_FIELD + "/quality.json"})


#: The drift report's files (any path or URI): key -> default name under output.dir.
DRIFT_FILES = {"drift_json": RUN_ID_FIELD + "/drift.json",
               "drift_md": RUN_ID_FIELD + "/drift.md", "drift_png": RUN_ID_FIELD + "/drift.png"}


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
    fail_on_drift : bool
        Exit 3 (drift, promoted) or 4 (drift, kept) instead of 0: by default the job exits 0
        whenever it did its job, as schedulers expect, and the outcome goes to its JSON,
        its MLflow run and (on Databricks) its task values.
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
    fail_on_drift: bool = False
    where: Optional[str] = None
    ignore_columns: Tuple[str, ...] = ()
    sample_size: int = SILHOUETTE_ROWS
    seed: int = 42


@dataclass(frozen=True)
class DriftFiles:
    """Driver-local files of the drift report (None skips one); ``{run_id}`` in a path
    stands for the run's id (:meth:`MonitorConfig.for_run`)."""

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
    quality: "QualityRules" = field(default_factory=lambda: default_quality())
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run_id: Optional[str] = None

    @classmethod
    def from_dict(cls, raw: Any) -> "MonitorConfig":
        return parse_monitor_config(raw)

    def for_run(self, run_id: str) -> "MonitorConfig":
        """This config with ``{run_id}`` in the report file paths (quality report,
        drift files) replaced by ``run_id``.

        Raises
        ------
        ConfigError
            ``run_id`` is not a valid run id (it names a directory).
        """
        run_id = parse_run_id("run_id", run_id)
        if run_id is None:
            raise ConfigError("run_id is None: expected the run's id, which names its "
                              "directory of report files")

        def fill(path):
            return None if path is None else path.replace(RUN_ID_FIELD, run_id)

        files = self.drift_files
        return replace(
            self, run_id=run_id,
            output=replace(self.output, quality_report=fill(self.output.quality_report)),
            drift_files=DriftFiles(fill(files.json), fill(files.markdown), fill(files.png)))

    def estimator_params(self) -> Dict[str, Any]:
        """The challenger's ``MiniBatchKMeans`` keyword arguments (model section plus the
        input's feature and weight columns), as :meth:`Config.estimator_params`."""
        return Config.estimator_params(self)  # reads only .model and .input

    def describe(self) -> List[str]:
        m = self.monitor
        model = ", ".join(f"{k}={val.short(v)}" for k, v in self.model.items()) or "defaults"
        return [
            self.spark.describe(),
            f"input: {self.input.format} {self.input.describe()}"
            + (f" where {m.where}" if m.where else ""),
            f"mlflow: {redact_text(self.mlflow.tracking_uri or '(local sqlite)')}, model "
            f"{self.mlflow.model_name!r}, experiment {self.mlflow.experiment!r}",
            f"monitor: thresholds {m.thresholds.as_dict()}, holdout {m.holdout_fraction}, "
            f"min_improvement {m.min_improvement}, gate {m.absolute_gate}, "
            f"force_retrain {m.force_retrain}, fail_on_drift {m.fail_on_drift}",
            f"challenger model: {model}",
            f"output: {self.output.dir}; drift report {self.drift_files}",
        ]


def _parse_thresholds(raw):
    from ...lifecycle.drift import DriftThresholds
    from ...errors import InvalidParamError

    names = tuple(DriftThresholds.__dataclass_fields__)
    s = val.Section("monitor.thresholds", raw, names)
    d = DriftThresholds()
    values = {n: val.number(f"monitor.thresholds.{n}", s.get(n, getattr(d, n))) for n in names}
    try:
        return DriftThresholds(**values)
    except InvalidParamError as e:
        raise ConfigError(f"monitor.thresholds: {e}") from None


def _parse_monitor_settings(raw) -> MonitorSettings:
    s = val.Section("monitor", raw, ("thresholds", "holdout_fraction", "min_improvement",
                                     "absolute_gate", "force_retrain", "fail_on_drift",
                                     "where",
                                     "ignore_columns", "sample_size", "seed"))
    d = MonitorSettings(None)
    fraction = val.number("monitor.holdout_fraction", s.get("holdout_fraction",
                                                            d.holdout_fraction))
    if not 0 < fraction < 1:
        val.fail("monitor.holdout_fraction", fraction, "a fraction between 0 and 1 (exclusive)")
    improvement = val.number("monitor.min_improvement", s.get("min_improvement",
                                                              d.min_improvement))
    if not 0 <= improvement < 1:
        val.fail("monitor.min_improvement", improvement, "a relative improvement in [0, 1), "
                 "e.g. 0.02 for 2%")
    g = val.Section("monitor.absolute_gate", s.get("absolute_gate", None),
                    ("max_cost_per_row", "min_silhouette"))
    cost = g.get("max_cost_per_row", None)
    sil = g.get("min_silhouette", None)
    gate = AbsoluteGate(
        None if cost is None else val.number("monitor.absolute_gate.max_cost_per_row", cost, 0.0),
        None if sil is None else val.number("monitor.absolute_gate.min_silhouette", sil, -1.0))
    if gate.min_silhouette is not None and gate.min_silhouette > 1:
        val.fail("monitor.absolute_gate.min_silhouette", sil, "a number in [-1, 1]")
    ignore = s.get("ignore_columns", None)
    return MonitorSettings(
        _parse_thresholds(s.get("thresholds", None)), fraction, improvement, gate,
        val.boolean("monitor.force_retrain", s.get("force_retrain", d.force_retrain)),
        val.boolean("monitor.fail_on_drift", s.get("fail_on_drift", d.fail_on_drift)),
        val.string("monitor.where", s.get("where", None), allow_none=True),
        val.names("monitor.ignore_columns", ignore) if ignore else (),
        val.integer("monitor.sample_size", s.get("sample_size", d.sample_size), 2),
        val.integer("monitor.seed", s.get("seed", d.seed)))


def _parse_drift_files(raw) -> DriftFiles:
    raw = raw if isinstance(raw, dict) else {}
    base = raw.get("dir")
    return DriftFiles(*(report_file(raw, key, base, name) for key, name in DRIFT_FILES.items()))


def _check_run_fields(out: OutputConfig, files: DriftFiles) -> None:
    """Report file paths may hold ``{run_id}`` and no other ``{...}`` field."""
    for key, path in (("quality_report", out.quality_report), ("drift_json", files.json),
                      ("drift_md", files.markdown), ("drift_png", files.png)):
        if path is not None and ("{" in path.replace(RUN_ID_FIELD, "")
                                 or "}" in path.replace(RUN_ID_FIELD, "")):
            val.fail(f"output.{key}", path, "a path whose only field is "
                     f"{RUN_ID_FIELD} (the run's id), or null")


def parse_monitor_config(raw) -> MonitorConfig:
    s = val.Section("", raw, ("run_id", "spark", "input", "model", "quality", "mlflow",
                              "monitor", "output", "logging"),
                    hints={"thresholds": "put them under monitor.thresholds"})
    inp = parse_input(s.get("input"))
    model = parse_model(s.get("model", None), inp.input_cols)
    if "initialCenters" in model:
        raise ConfigError("model.initialCenters is set: expected it unset (the challenger "
                          "starts from the champion's centers when the schema is unchanged)")
    out_raw = s.get("output")
    if isinstance(out_raw, dict):
        out = parse_output({k: v for k, v in out_raw.items() if k not in DRIFT_FILES},
                           MONITOR_OUTPUTS)
        files = _parse_drift_files(out_raw)
        _check_run_fields(out, files)
    else:
        out = parse_output(out_raw, MONITOR_OUTPUTS)  # raises, naming the section
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
    return MonitorConfig(inp, out, files, parse_mlflow(ml_raw),
                         _parse_monitor_settings(s.get("monitor", None)),
                         parse_spark(s.get("spark", None)), model,
                         parse_quality(s.get("quality", None)),
                         parse_logging(s.get("logging", None)),
                         parse_run_id("run_id", s.get("run_id", None)))
