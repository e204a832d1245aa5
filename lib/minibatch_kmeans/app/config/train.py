"""The training job's config (also read by jobs/compare.py and jobs/tune.py):
:class:`Config`, its compare and tune sections, and :func:`load_config`."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...evaluate.compare import MAX_SAMPLE_ROWS, WARM_UP_ROWS
from ...evaluate.holdout import SILHOUETTE_ROWS
from ...spark.params import HANDLE_INVALID
from . import values as val
from .files import read_yaml
from .sections import (InputConfig, LoggingConfig, MlflowConfig, OutputConfig, SparkConfig,
                       default_quality, parse_input, parse_logging, parse_mlflow, parse_model,
                       parse_output, parse_quality, parse_run_id, parse_spark)

if TYPE_CHECKING:
    from ...tables.quality import QualityRules

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
    warm_up_rows : int
        Rows of each side's untimed warm-up fit before the timed ones (0: none).
    repeats : int
        Timed fits per side, in turn; each side's time is their median.
    """

    mllib: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sample_size: int = 100_000
    local_max_mb: int = 1024
    references: Tuple[str, ...] = ("sklearn_minibatch", "sklearn_kmeans")
    trajectory_points: int = 12
    handle_invalid: str = "error"
    warm_up_rows: int = WARM_UP_ROWS
    repeats: int = 1


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
    quality: "QualityRules" = field(default_factory=lambda: default_quality())
    tune: TuneConfig = field(default_factory=TuneConfig)
    #: MLflow tracking and registry; None (no ``mlflow:`` section) logs nothing.
    mlflow: Optional["MlflowConfig"] = None

    @classmethod
    def from_dict(cls, raw: Any) -> "Config":
        """Validate a parsed YAML document (a mapping) field by field."""
        return parse_config(raw)

    def estimator_params(self) -> Dict[str, Any]:
        """Keyword arguments for ``MiniBatchKMeans(**params)``: the model section plus
        the input's feature and weight columns."""
        params = {k: val.thaw(v) for k, v in self.model.items()}
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
        model = ", ".join(f"{k}={val.short(v)}" for k, v in self.model.items()) or "defaults"
        return [
            self.spark.describe(),
            f"input: {self.input.format} {self.input.describe()}, {feats}"
            + (f", weightCol {self.input.weight_col!r}" if self.input.weight_col else ""),
            f"model: {model}",
            f"output: model {self.output.model}, summary {self.output.summary}, "
            f"plot {self.output.plot}",
        ]


def load_config(path: str, overrides: Sequence[str] = ()) -> Config:
    """The training job's validated config (also jobs/compare.py's and jobs/tune.py's):
    the YAML file with its ``--set`` overrides (:func:`~.files.read_yaml`), every field
    checked; ConfigError names a field that is invalid or unknown."""
    return parse_config(read_yaml(path, overrides))


_MLLIB_RULES = {
    "solver": lambda p, v: val.choice(p, v, ("auto", "row", "block")),
    "maxIter": lambda p, v: val.integer(p, v, 1),
    "tol": lambda p, v: val.number(p, v, 0.0),
    "initMode": lambda p, v: val.choice(p, v, ("k-means||", "random")),
    "initSteps": lambda p, v: val.integer(p, v, 1),
    "maxBlockSizeInMB": lambda p, v: val.number(p, v, 0.0),
}


def _references(path: str, value) -> Tuple[str, ...]:
    known = CompareConfig.references
    if not isinstance(value, list) or any(v not in known for v in value):
        val.fail(path, value, f"a list of some of {list(known)} (or [] for none)")
    return tuple(value)


def _parse_compare(raw) -> CompareConfig:
    s = val.Section("compare", raw, ("mllib", "sample_size", "local_max_mb", "references",
                                     "trajectory_points", "handle_invalid", "warm_up_rows",
                                     "repeats"))
    m = val.Section("compare.mllib", s.get("mllib", None), tuple(_MLLIB_RULES),
                    hints={"k": "k is shared: set model.k", "seed": "set model.seed",
                           "weightCol": "set input.weightCol"})
    mllib = {name: _MLLIB_RULES[name](f"compare.mllib.{name}", value)
             for name, value in m.raw.items()}
    d = CompareConfig()
    return CompareConfig(
        MappingProxyType(mllib),
        val.integer("compare.sample_size", s.get("sample_size", d.sample_size), 2,
                    maximum=MAX_SAMPLE_ROWS),
        val.integer("compare.local_max_mb", s.get("local_max_mb", d.local_max_mb), 0,
                    expected="an integer >= 0 (0 never runs the scikit-learn references)"),
        _references("compare.references", s.get("references", list(d.references))),
        val.integer("compare.trajectory_points",
                    s.get("trajectory_points", d.trajectory_points), 1),
        val.choice("compare.handle_invalid", s.get("handle_invalid", d.handle_invalid),
                   HANDLE_INVALID),
        val.integer("compare.warm_up_rows", s.get("warm_up_rows", d.warm_up_rows), 0,
                    expected="an integer >= 0 (0: no warm-up fits)"),
        val.integer("compare.repeats", s.get("repeats", d.repeats), 1))


def _parse_tune(raw) -> TuneConfig:
    s = val.Section("tune", raw, ("k", "batch_sizes", "holdout_fraction", "sample_size"),
                    hints={"seed": "set model.seed", "batchSize": "set tune.batch_sizes"})
    d = TuneConfig()
    k = val.int_list("tune.k", s.get("k"), 2, True) if s.has("k") else d.k
    sizes = s.get("batch_sizes", None)
    fraction = val.number("tune.holdout_fraction", s.get("holdout_fraction", d.holdout_fraction))
    if not 0 < fraction < 1:
        val.fail("tune.holdout_fraction", s.get("holdout_fraction"), "a number between 0 and 1 "
                 "(exclusive)")
    batch_sizes = None if sizes is None else val.int_list("tune.batch_sizes", sizes, 1, False)
    sample_size = val.integer("tune.sample_size", s.get("sample_size", d.sample_size), 2,
                              maximum=MAX_SAMPLE_ROWS)
    return TuneConfig(k, batch_sizes, fraction, sample_size)


def parse_config(raw) -> Config:
    s = val.Section("", raw, ("run_id", "spark", "input", "model", "output", "logging",
                              "compare", "quality", "tune", "mlflow"))
    run_id = parse_run_id("run_id", s.get("run_id", None))
    spark = parse_spark(s.get("spark", None))
    inp = parse_input(s.get("input"))
    model = parse_model(s.get("model", None), inp.input_cols)
    out = parse_output(s.get("output"))
    log = parse_logging(s.get("logging", None))
    return Config(inp, out, spark, model, log, _parse_compare(s.get("compare", None)),
                  run_id, parse_quality(s.get("quality", None)),
                  _parse_tune(s.get("tune", None)), parse_mlflow(s.get("mlflow", None)))
