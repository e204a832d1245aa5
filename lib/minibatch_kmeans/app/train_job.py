"""The training job (``jobs/train.py``): read the table, run the quality gate, fit, save the
model, write the run's centers and metrics tables, summary and convergence plot, and with
an ``mlflow:`` section register the model with its holdout metrics."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import InvalidInputError
from ..evaluate.holdout import holdout_split
from ..evaluate.report import plot_convergence, summary_table, write_json
from ..ml.estimator import MiniBatchKMeans
from ..paths import local_copies
from ..tables.quality import check_quality, report_top
from .outputs import (default_run_id, read_input, registry_module, write_model_tables,
                      write_quality_outputs)

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`run_train` did: the summary it wrote (the model's and the job's keys)."""

    summary: Dict[str, Any]
    model_path: str
    plot_path: Optional[str] = None
    code: int = 0

    def text(self) -> str:
        """The job's printed summary table and where the model went."""
        return (summary_table(self.summary) + f"\n\nmodel saved to {self.model_path}"
                + (f"; convergence plot at {self.plot_path}" if self.plot_path else ""))


def run_train(spark, cfg, run_id: Optional[str] = None,
              config_path: Optional[str] = None) -> TrainResult:
    """Everything ``jobs/train.py`` does under ``cfg``
    (:class:`~minibatch_kmeans.app.config.Config`), in ``spark``."""
    run_id = run_id or cfg.run_id or default_run_id()
    out, source = cfg.output, cfg.input.describe()
    df = read_input(spark, cfg.input)
    estimator = MiniBatchKMeans(**cfg.estimator_params())
    if estimator.getCheckpointDir() and cfg.run_id:  # one checkpoint directory per run
        estimator.setCheckpointDir(f"{estimator.getCheckpointDir().rstrip('/')}/{cfg.run_id}")
    if estimator.getCheckpointDir():
        logger.info("checkpoints in %s", estimator.getCheckpointDir())
    spec = estimator.featureSpec(df)
    quality = check_quality(df, spec, cfg.quality, estimator.getDistanceMeasure() == "cosine",
                            what=f"training table {source}")
    report = write_quality_outputs(spark, quality, out, run_id, source)
    quality.raise_if_failed()
    if quality.invalid_rows and estimator.getHandleInvalid() == "error":
        raise InvalidInputError(
            f"training table {source} has {quality.invalid_rows} invalid rows "
            f"({report_top(report)}); expected none with model.handleInvalid=error "
            "(set it to skip to train on the valid rows"
            + (f"; they are in {out.quarantine}" if out.quarantine else "") + ")")
    rows, holdout = quality.valid(), None
    if cfg.mlflow is not None:  # held-out rows for the registered metrics
        rows, holdout = holdout_split(rows, cfg.mlflow.holdout_fraction,
                                      estimator.getSeed(), cols=list(spec.columns))
    t0 = time.perf_counter()
    model = estimator.fit(rows)
    fit_seconds = time.perf_counter() - t0
    model.write().overwrite().save(out.model)
    logger.info("saved model to %s", out.model)
    summary = model.summary.as_dict()
    summary.update(runId=run_id, configPath=config_path, inputPath=source,
                   inputRows=report["rows"], invalidRows=report["invalidRows"],
                   jobFitSeconds=fit_seconds, modelPath=out.model,
                   summaryPath=out.summary, plotPath=out.plot)
    write_model_tables(spark, model, summary, out, run_id)
    if out.plot:
        plot_convergence(summary["history"], out.plot,
                         title=f"k={summary['k']}, {summary['numRows']:,} rows, batch "
                               f"{summary['batchSize']:,}: {summary['numSteps']} steps "
                               f"({summary['stopReason']})")
    if cfg.mlflow is not None:
        with local_copies([out.plot] if out.plot else []) as pngs:  # MLflow logs local files
            mv = registry_module().track_training(
                cfg.mlflow, model, holdout, summary, run_id=run_id, training_table=source,
                delta_version=cfg.input.version, pngs=pngs)
        summary.update(registeredModel=cfg.mlflow.model_name,
                       registeredVersion=str(mv.version))
    if out.summary:
        write_json(summary, out.summary)
    return TrainResult(summary, out.model, out.plot)
