"""The scoring job's config (``jobs/score.py``): :class:`ScoreConfig`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from . import values as val
from .files import read_yaml
from .sections import (InputConfig, LoggingConfig, OutputConfig, SparkConfig, default_quality,
                       parse_input, parse_logging, parse_output, parse_quality, parse_run_id,
                       parse_spark)

if TYPE_CHECKING:
    from ...tables.quality import QualityRules

def load_score_config(path: str, overrides: Sequence[str] = ()) -> "ScoreConfig":
    """The validated config of ``jobs/score.py`` (sections run_id, spark, input, scoring,
    quality, output, logging)."""
    return parse_score_config(read_yaml(path, overrides))


SCORE_OUTPUTS = ({"predictions": "predictions", "quality": "quality",
                  "quarantine": "quarantine"},
                 {"quality_report": "quality.json"})


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
    quality: "QualityRules" = field(default_factory=lambda: default_quality())
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run_id: Optional[str] = None

    @classmethod
    def from_dict(cls, raw: Any) -> "ScoreConfig":
        return parse_score_config(raw)

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
    s = val.Section("scoring", raw, ("model", "id_columns", "ignore_columns", "prediction_col",
                                     "distance_col"))
    ids = s.get("id_columns", None)
    ignore = s.get("ignore_columns", None)
    sc = ScoringConfig(
        val.string("scoring.model", s.get("model")),
        val.names("scoring.id_columns", ids) if ids else (),
        val.names("scoring.ignore_columns", ignore) if ignore else (),
        val.string("scoring.prediction_col", s.get("prediction_col", "prediction")),
        val.string("scoring.distance_col", s.get("distance_col", "distance")))
    ids = {c.lower() for c in sc.id_columns}  # Spark resolves names without case
    taken = [c for c in (sc.prediction_col, sc.distance_col, "run_id") if c.lower() in ids]
    if sc.prediction_col.lower() == sc.distance_col.lower() or taken:
        val.fail("scoring", {"prediction_col": sc.prediction_col, "distance_col":
                             sc.distance_col}, "distinct output column names that are not id "
                 "columns or run_id")
    return sc


def parse_score_config(raw) -> ScoreConfig:
    s = val.Section("", raw, ("run_id", "spark", "input", "scoring", "quality", "output",
                              "logging"),
                    hints={"model": "put the model path under scoring.model"})
    return ScoreConfig(parse_input(s.get("input"), features=False),
                       parse_output(s.get("output"), SCORE_OUTPUTS),
                       _parse_scoring(s.get("scoring")),
                       parse_spark(s.get("spark", None)),
                       parse_quality(s.get("quality", None)),
                       parse_logging(s.get("logging", None)),
                       parse_run_id("run_id", s.get("run_id", None)))
