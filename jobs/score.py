"""Score a table with a saved model, as a YAML config says.

    python jobs/score.py --conf conf/score.yaml --run-id 2026-11-24
    spark-submit --py-files dist/minibatch_kmeans.zip jobs/score.py --conf score.yaml \\
        --run-id 2026-11-24

Loads the model, reads the table, checks its columns against the model's feature schema
(a feature removed, renamed or retyped, or a column added since training, is an error
naming the columns), runs the data quality gate (invalid rows go to the quarantine table
with a reason; a JSON report goes next to the output), and writes the valid rows' id
columns, prediction and distance to the nearest center, partitioned by run id: a re-run
with the same run id replaces its own predictions and never duplicates them.

Exit codes: 0 success, 2 bad configuration or input (including a failed quality gate),
1 anything else.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import List, Optional

from minibatch_kmeans import MiniBatchKMeansModel
from minibatch_kmeans.app.cli import run_job
from minibatch_kmeans.app.config import configure_logging, load_score_config, run_id_override
from minibatch_kmeans.app.outputs import (read_input, require_run_id, write_quality_outputs,
                                          write_run_table)
from minibatch_kmeans.errors import InvalidInputError
from minibatch_kmeans.tables.quality import check_feature_schema, check_quality
from minibatch_kmeans.spark.features import resolve
from minibatch_kmeans.spark.session import job_session

logger = logging.getLogger("minibatch_kmeans_jobs.score")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default="conf/score.yaml",
                        help="YAML scoring config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set input.version=3 (repeatable)")
    parser.add_argument("--run-id", help="names this run's output partition (overrides "
                                         "run_id in the config)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = load_score_config(args.conf, args.overrides + run_id_override(args.run_id))
    run_id = require_run_id(cfg.run_id, "the scoring job")
    configure_logging(cfg.logging.level)
    for line in cfg.describe():
        logger.info("config %s", line)
    sc, out = cfg.scoring, cfg.output
    source = cfg.input.describe()
    with job_session(cfg.spark.app_name, cfg.spark.master, cfg.spark.conf) as spark:
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
        spec = resolve(df, model.getFeaturesCol(), model._input_cols(),
                       n_features=model.numFeatures)
        result = check_quality(df, spec, cfg.quality, model.getDistanceMeasure() == "cosine",
                               what=what)
        report = write_quality_outputs(spark, result, out, run_id, source)
        result.raise_if_failed()
        scorer = (model.copy().setHandleInvalid("error").setPredictionCol(sc.prediction_col)
                  .setDistanceCol(sc.distance_col))
        predictions = scorer.transform(result.valid()).select(
            *sc.id_columns, sc.prediction_col, sc.distance_col)
        write_run_table(predictions, out.predictions, out.format, run_id)
        seconds = time.perf_counter() - t0
    print(f"scored {report['validRows']:,} rows of {source} with {sc.model} in "
          f"{seconds:.1f} s: predictions in {out.predictions} (run_id={run_id})"
          + (f"; {report['invalidRows']:,} invalid rows in {out.quarantine}"
             if report["invalidRows"] else "")
          + (f"; quality report {out.quality_report}" if out.quality_report else ""))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_job("score", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
