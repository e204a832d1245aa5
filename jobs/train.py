"""Train mini-batch k-means on a table, as a YAML config says.

    python jobs/train.py --conf conf/local.yaml [--set model.k=30 --set input.path=...]
    spark-submit --py-files dist/minibatch_kmeans.zip jobs/train.py --conf cluster.yaml \
        --run-id 2026-11-24

Reads the input table (Parquet or Delta, by path or table name, any Delta version), runs
the data quality gate (invalid rows to the quarantine table, a JSON report, thresholds),
fits :class:`minibatch_kmeans.MiniBatchKMeans` on the valid rows (one log line every few
steps; with ``model.checkpointDir``, checkpoints under ``<checkpointDir>/<run id>`` that a
re-run with the same run id resumes), saves the model (overwriting), writes the centers
and metrics tables for the run id, a JSON summary and a convergence plot, and prints a
summary table. Exit codes: 0 success, 2 bad configuration or input (including a failed
quality gate), 1 anything else.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import List, Optional

from minibatch_kmeans import MiniBatchKMeans
from minibatch_kmeans.app.cli import run_job
from minibatch_kmeans.app.config import configure_logging, load_config, run_id_override
from minibatch_kmeans.evaluate.holdout import holdout_split
from minibatch_kmeans.errors import InvalidInputError
from minibatch_kmeans.app.outputs import (default_run_id, read_input, registry_module,
                                          write_model_tables, write_quality_outputs)
from minibatch_kmeans.paths import driver_path
from minibatch_kmeans.tables.quality import check_quality, report_top
from minibatch_kmeans.evaluate.report import plot_convergence, summary_table, write_json
from minibatch_kmeans.spark.features import resolve
from minibatch_kmeans.spark.session import job_session

logger = logging.getLogger("minibatch_kmeans_jobs.train")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default="conf/local.yaml",
                        help="YAML job config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set model.k=30 (repeatable)")
    parser.add_argument("--run-id", dest="run_id", metavar="ID",
                        help="name of this run (overrides run_id in the config); with "
                             "model.checkpointDir, a re-run with the same id resumes the fit")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.conf, args.overrides + run_id_override(args.run_id))
    run_id = cfg.run_id or default_run_id()
    configure_logging(cfg.logging.level)
    for line in cfg.describe():
        logger.info("config %s", line)
    out, source = cfg.output, cfg.input.describe()
    with job_session(cfg.spark.app_name, cfg.spark.master, cfg.spark.conf) as spark:
        df = read_input(spark, cfg.input)
        estimator = MiniBatchKMeans(**cfg.estimator_params())
        if estimator.getCheckpointDir() and cfg.run_id:  # one checkpoint directory per run
            estimator.setCheckpointDir(f"{estimator.getCheckpointDir().rstrip('/')}/{cfg.run_id}")
        if estimator.getCheckpointDir():
            logger.info("checkpoints in %s", estimator.getCheckpointDir())
        spec = resolve(df, estimator.getFeaturesCol(), estimator._input_cols(),
                       estimator._weight_col())
        quality = check_quality(df, spec, cfg.quality,
                                estimator.getDistanceMeasure() == "cosine",
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
        summary.update(runId=run_id, configPath=args.conf, inputPath=source,
                       inputRows=report["rows"], invalidRows=report["invalidRows"],
                       jobFitSeconds=fit_seconds, modelPath=out.model,
                       summaryPath=out.summary, plotPath=out.plot)
        write_model_tables(spark, model, summary, out, run_id)
        if out.plot:
            plot_convergence(summary["history"], driver_path(out.plot),
                             title=f"k={summary['k']}, {summary['numRows']:,} rows, batch "
                                   f"{summary['batchSize']:,}: {summary['numSteps']} steps "
                                   f"({summary['stopReason']})")
        if cfg.mlflow is not None:
            mv = registry_module().track_training(
                cfg.mlflow, model, holdout, summary, run_id=run_id, training_table=source,
                delta_version=cfg.input.version,
                pngs=[driver_path(out.plot)] if out.plot else [])
            summary.update(registeredModel=cfg.mlflow.model_name,
                           registeredVersion=str(mv.version))
    if cfg.output.summary:
        write_json(summary, driver_path(out.summary))
    print(summary_table(summary))
    print(f"\nmodel saved to {cfg.output.model}"
          + (f"; convergence plot at {cfg.output.plot}" if cfg.output.plot else ""))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_job("train", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
