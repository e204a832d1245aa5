"""The monitoring job (``jobs/monitor.py`` and the monitoring notebook): one slice of new
data under a :class:`~minibatch_kmeans.app.config.MonitorConfig`, in the steps
:mod:`minibatch_kmeans.lifecycle.monitor` describes, with its quality outputs, drift files
and MLflow run."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import mlflow

from ..lifecycle.drift import drift_report
from ..lifecycle.monitor import (KEPT, NO_DRIFT, OUTCOMES, PROMOTED, challenger_metrics, decide,
                                 drift_metrics, load_champion, register_challenger,
                                 train_challenger, write_drift_files)
from ..lifecycle.registry import tracking
from ..ml.estimator import MiniBatchKMeans
from ..paths import local_copies
from ..tables.quality import check_quality
from .outputs import read_input, write_quality_outputs

logger = logging.getLogger(__name__)


def run_params(cfg, champion_mv, source: str) -> Dict[str, Any]:
    """MLflow params of a monitoring run (from a :class:`~minibatch_kmeans.app.config.
    MonitorConfig`)."""
    m = cfg.monitor
    return {"input": source, "where": m.where, "model_name": cfg.mlflow.model_name,
            "champion_version": str(champion_mv.version), "thresholds": m.thresholds.as_dict(),
            "holdout_fraction": m.holdout_fraction, "min_improvement": m.min_improvement,
            "absolute_gate": {"max_cost_per_row": m.absolute_gate.max_cost_per_row,
                              "min_silhouette": m.absolute_gate.min_silhouette},
            "force_retrain": m.force_retrain, "challenger": dict(cfg.estimator_params())}


@dataclass
class MonitorResult:
    """What :func:`run_monitor` found and did."""

    #: the job's exit code: 0 whenever it did its job, else (``monitor.fail_on_drift``)
    #: the outcome's code
    code: int
    source: str
    report: Dict[str, Any]
    outcome: Dict[str, Any]
    report_path: Optional[str] = None
    #: NO_DRIFT, PROMOTED or KEPT (lifecycle.monitor)
    outcome_code: int = NO_DRIFT

    def text(self) -> str:
        """The job's printed summary: drift or not, reasons, outcome, exit code."""
        why = self.outcome["reasons"].get("why")
        return (f"{self.source}: {'drift' if self.report['drift'] else 'no drift'}"
                + "".join(f"\n  - {r}" for r in self.report["reasons"])
                + f"\n{self.outcome['outcome']}" + (f": {why}" if why else "")
                + f"\nexit {self.code}; report {self.report_path}")


def run_monitor(spark, cfg, run_id: str) -> MonitorResult:
    """Everything ``jobs/monitor.py`` does for one slice under ``cfg``
    (:class:`~minibatch_kmeans.app.config.MonitorConfig`), in the steps the module docstring
    lists; the notebooks call it too.

    The report files go where ``cfg`` says with ``{run_id}`` replaced by ``run_id``: by
    default ``<output.dir>/<run_id>/`` (quality.json, drift.json, drift.md, drift.png), so
    that monitors sharing an output directory write apart."""
    cfg = cfg.for_run(run_id)
    m, name, files = cfg.monitor, cfg.mlflow.model_name, cfg.drift_files
    paths = [files.json, files.markdown, files.png]
    source = cfg.input.describe() + (f" where {m.where}" if m.where else "")
    registry = tracking(cfg.mlflow.tracking_uri, cfg.mlflow.experiment,
                        registry_uri=cfg.mlflow.registry_uri, root=cfg.mlflow.root)
    champion_mv, champion, reference = load_champion(registry, name)  # no Spark needed
    df = read_input(spark, cfg.input)
    if m.where:
        df = df.where(m.where)
    params = cfg.estimator_params()
    est = MiniBatchKMeans(**params)
    spec = est.featureSpec(df)
    quality = check_quality(df, spec, cfg.quality, est.getDistanceMeasure() == "cosine",
                            what=f"new slice {source}")
    write_quality_outputs(spark, quality, cfg.output, run_id, source)
    quality.raise_if_failed()
    report = drift_report(champion, reference, df, m.thresholds, ignore=m.ignore_columns)
    write_drift_files(report, *paths)
    retrain = report["drift"] or m.force_retrain
    with registry.log_run(f"monitor-{run_id}", params=run_params(cfg, champion_mv, source),
                          metrics=drift_metrics(report),
                          tags={"job": "monitor", "run_id": run_id,
                                "drift": str(report["drift"]).lower(),
                                "drift.reasons": report["reasons"]}):
        if not retrain:
            outcome = {"outcome": OUTCOMES[NO_DRIFT], "reasons": {}}
            code = NO_DRIFT
        else:
            challenger = train_challenger(quality.valid(), params, champion, report["schema"],
                                          m.holdout_fraction, m.seed, m.sample_size)
            decision, reasons = decide(challenger.metrics, challenger.champion_metrics,
                                       m.min_improvement, m.absolute_gate,
                                       challenger.why_not_comparable)
            mlflow.log_metrics(challenger_metrics(challenger))
            trigger = "drift" if report["drift"] else "forced"
            mv, decision, reasons = register_challenger(
                registry, name, champion_mv, challenger, decision, reasons,
                tags={"trigger": trigger, "monitor_run_id": run_id}, training_table=source)
            code = PROMOTED if decision == "promoted" else KEPT
            outcome = {"outcome": f"{trigger}: challenger version {mv.version} {decision}",
                       "decision": decision, "version": str(mv.version), "reasons": reasons}
        outcome["code"] = code
        mlflow.set_tag("outcome", outcome["outcome"])
        write_drift_files(report, *paths, outcome=outcome)
        with local_copies([p for p in paths if p]) as local:  # MLflow logs local files
            for path in local:
                mlflow.log_artifact(path, "drift")
    publish_task_values(spark, {"outcome": outcome["outcome"], "drift": report["drift"],
                                "decision": outcome.get("decision", "none"),
                                "version": outcome.get("version")})
    return MonitorResult(code if m.fail_on_drift else 0, source, report, outcome,
                         files.markdown or files.json, code)


def publish_task_values(spark, values: Dict[str, Any]) -> bool:
    """On Databricks (``DATABRICKS_RUNTIME_VERSION`` set), the values as the task's values
    (``dbutils.jobs.taskValues``), for the job's later tasks and its run page; elsewhere
    nothing. Returns whether they were set; a failure is logged, never raised."""
    if not os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return False
    try:
        from pyspark.dbutils import DBUtils  # only on Databricks runtimes

        task_values = DBUtils(spark).jobs.taskValues
        for key, value in values.items():
            task_values.set(key=key, value=value)
        return True
    except Exception as e:  # noqa: BLE001 - a report only; the outcome is in the JSON and run
        logger.warning("could not set the task values %s: %s", sorted(values), e)
        return False
