"""Monitor the champion model on a new slice of data; retrain and promote on drift.

    python jobs/monitor.py --conf conf/monitor.yaml [--run-id 2026-11-24]
    python jobs/monitor.py --conf conf/monitor.yaml --set monitor.force_retrain=true

Loads the registered model's champion and its reference statistics, reads the new slice
(a table, a Delta version, a partition via ``monitor.where``), runs the data quality gate
(quarantine and report as in jobs/train.py), and writes a drift report (schema drift, PSI
and Kolmogorov-Smirnov per feature, Jensen-Shannon divergence of cluster proportions,
ratio of mean distance to the nearest center) as JSON, Markdown and PNG, logged with an
MLflow run. On drift, or with ``monitor.force_retrain``, it trains a challenger on the
slice (warm start from the champion when the schema is unchanged), compares both on the
same held-out rows, registers the challenger, promotes it when it wins (relative
threshold; the absolute gate when the champion cannot score the data) and records the
decision and its reasons on the run and the model version (see minibatch_kmeans.monitor).

Exit codes: 0 no drift (nothing retrained), 3 drift and the challenger promoted, 4 drift
and the champion kept, 2 bad configuration or input (no champion, a failed quality gate),
1 anything else. (With force_retrain and no drift: 3 or 4.)
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import List, Optional

import mlflow

from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans import monitor as mon
from minibatch_kmeans.cli import run_job
from minibatch_kmeans.config import (configure_logging, driver_path, load_monitor_config,
                                     run_id_override)
from minibatch_kmeans.drift import drift_report
from minibatch_kmeans.outputs import read_input, write_quality_outputs
from minibatch_kmeans.quality import check_quality
from minibatch_kmeans.registry import tracking
from minibatch_kmeans.spark.features import resolve
from minibatch_kmeans.spark.session import job_session

logger = logging.getLogger("minibatch_kmeans_jobs.monitor")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default="conf/monitor.yaml",
                        help="YAML monitoring config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field, e.g. --set "
                        "monitor.force_retrain=true (repeatable)")
    parser.add_argument("--run-id", help="names this run (quality outputs, MLflow run)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = load_monitor_config(args.conf, args.overrides + run_id_override(args.run_id))
    run_id = cfg.run_id or time.strftime("monitor-%Y%m%dT%H%M%SZ", time.gmtime())
    configure_logging(cfg.logging.level)
    for line in cfg.describe():
        logger.info("config %s", line)
    m, name, files = cfg.monitor, cfg.mlflow.model_name, cfg.drift_files
    paths = [driver_path(p) if p else None for p in (files.json, files.markdown, files.png)]
    source = cfg.input.describe() + (f" where {m.where}" if m.where else "")
    registry = tracking(cfg.mlflow.tracking_uri, cfg.mlflow.experiment,
                        registry_uri=cfg.mlflow.registry_uri, root=cfg.mlflow.root)
    champion_mv, champion, reference = mon.load_champion(registry, name)  # no Spark needed
    with job_session(cfg.spark.app_name, cfg.spark.master, cfg.spark.conf) as spark:
        df = read_input(spark, cfg.input)
        if m.where:
            df = df.where(m.where)
        params = cfg.estimator_params()
        est = MiniBatchKMeans(**params)
        spec = resolve(df, est.getFeaturesCol(), est._input_cols(), est._weight_col())
        quality = check_quality(df, spec, cfg.quality, est.getDistanceMeasure() == "cosine",
                                what=f"new slice {source}")
        write_quality_outputs(spark, quality, cfg.output, run_id, source)
        quality.raise_if_failed()
        report = drift_report(champion, reference, df, m.thresholds, ignore=m.ignore_columns)
        mon.write_drift_files(report, *paths)
        retrain = report["drift"] or m.force_retrain
        with registry.log_run(f"monitor-{run_id}", params=mon.run_params(cfg, champion_mv,
                                                                          source),
                              metrics=mon.drift_metrics(report),
                              tags={"job": "monitor", "run_id": run_id,
                                    "drift": str(report["drift"]).lower(),
                                    "drift.reasons": report["reasons"]}):
            if not retrain:
                outcome = {"outcome": mon.OUTCOMES[mon.NO_DRIFT], "reasons": {}}
                code = mon.NO_DRIFT
            else:
                challenger = mon.train_challenger(quality.valid(), params, champion,
                                                  report["schema"], m.holdout_fraction,
                                                  m.seed, m.sample_size)
                decision, reasons = mon.decide(challenger.metrics, challenger.champion_metrics,
                                               m.min_improvement, m.absolute_gate,
                                               challenger.why_not_comparable)
                mlflow.log_metrics(mon.challenger_metrics(challenger))
                trigger = "drift" if report["drift"] else "forced"
                mv, decision, reasons = mon.register_challenger(
                    registry, name, champion_mv, challenger, decision, reasons,
                    tags={"trigger": trigger, "monitor_run_id": run_id},
                    training_table=source)
                code = mon.PROMOTED if decision == "promoted" else mon.KEPT
                outcome = {"outcome": f"{trigger}: challenger version {mv.version} {decision}",
                           "decision": decision, "version": str(mv.version),
                           "reasons": reasons}
            mon.write_drift_files(report, *paths, outcome=outcome)
            for path in paths:
                if path:
                    mlflow.log_artifact(path, "drift")
    print(f"{source}: {'drift' if report['drift'] else 'no drift'}"
          + "".join(f"\n  - {r}" for r in report["reasons"])
          + f"\n{outcome['outcome']}"
          + (f": {outcome['reasons']['why']}" if outcome["reasons"].get("why") else "")
          + f"\nexit {code}; report {files.markdown or files.json}")
    return code


def main(argv: Optional[List[str]] = None) -> int:
    return run_job("monitor", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
