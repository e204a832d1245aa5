"""The scoring job (``jobs/score.py``): load the model, check the table against its feature
schema, run the quality gate, and write the valid rows' ids, cluster and distance for the
run id (a re-run replaces its own partition)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import InvalidInputError
from ..ml.estimator import MiniBatchKMeansModel
from ..spark.features import select_named
from ..tables.quality import check_feature_schema, check_quality
from .outputs import read_input, require_run_id, write_quality_outputs, write_run_table

logger = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """What :func:`run_score` wrote."""

    run_id: str
    source: str
    model: str
    report: Dict[str, Any]
    seconds: float
    predictions: str
    quarantine: Optional[str] = None
    quality_report: Optional[str] = None
    code: int = 0

    def text(self) -> str:
        """The job's printed line: rows scored, where the predictions (and bad rows) went."""
        r = self.report
        return (f"scored {r['validRows']:,} rows of {self.source} with {self.model} in "
                f"{self.seconds:.1f} s: predictions in {self.predictions} "
                f"(run_id={self.run_id})"
                + (f"; {r['invalidRows']:,} invalid rows in {self.quarantine}"
                   if r["invalidRows"] else "")
                + (f"; quality report {self.quality_report}" if self.quality_report else ""))


def run_score(spark, cfg, run_id: Optional[str] = None) -> ScoreResult:
    """Everything ``jobs/score.py`` does under ``cfg``
    (:class:`~minibatch_kmeans.app.config.ScoreConfig`), in ``spark``."""
    run_id = require_run_id(run_id or cfg.run_id, "the scoring job")
    sc, out = cfg.scoring, cfg.output
    source = cfg.input.describe()
    t0 = time.perf_counter()
    model = MiniBatchKMeansModel.load(sc.model)
    df = read_input(spark, cfg.input)
    what = f"scoring table {source}"
    if model.featureSchema is None:
        logger.warning("model %s has no feature schema: the table's features are not "
                       "checked against training", sc.model)
    else:
        check_feature_schema(df, model.featureSchema, model.inputSchema,
                             ignore=[*sc.id_columns, *sc.ignore_columns], what=what)
    missing = [c for c in sc.id_columns if c not in df.columns]
    if missing:
        raise InvalidInputError(f"{what} lacks the id column(s) {missing} named in "
                                f"scoring.id_columns; columns are {sorted(df.columns)}")
    spec = model.featureSpec(df, withWeight=False)
    result = check_quality(df, spec, cfg.quality, model.getDistanceMeasure() == "cosine",
                           what=what)
    report = write_quality_outputs(spark, result, out, run_id, source)
    result.raise_if_failed()
    scorer = (model.copy().setHandleInvalid("error").setPredictionCol(sc.prediction_col)
              .setDistanceCol(sc.distance_col))
    # the ids and features alone: other input columns never meet the output columns
    rows = select_named(result.valid(), [*sc.id_columns, *spec.columns])
    predictions = select_named(scorer.transform(rows),
                               [*sc.id_columns, sc.prediction_col, sc.distance_col])
    write_run_table(predictions, out.predictions, out.format, run_id)
    return ScoreResult(run_id, source, sc.model, report, time.perf_counter() - t0,
                       out.predictions, out.quarantine, out.quality_report)
