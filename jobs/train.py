r"""Train mini-batch k-means on a table, as a YAML config says.

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

import sys
from typing import List, Optional

from minibatch_kmeans.app.cli import config_job
from minibatch_kmeans.app.config import load_config
from minibatch_kmeans.app.train_job import run_train


def run(spark, cfg, args):
    return run_train(spark, cfg, config_path=args.conf)


def main(argv: Optional[List[str]] = None) -> int:
    return config_job("train", __doc__, load_config, run, argv, default_conf="conf/local.yaml",
                      example="model.k=30",
                      run_id_help="name of this run (overrides run_id in the config); with "
                                  "model.checkpointDir, a re-run with the same id resumes "
                                  "the fit")


if __name__ == "__main__":
    sys.exit(main())
