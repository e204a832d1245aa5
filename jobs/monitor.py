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
decision and its reasons on the run and the model version (see minibatch_kmeans.app.monitor_job).

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

from minibatch_kmeans.app.cli import run_job
from minibatch_kmeans.app.config import configure_logging, load_monitor_config, run_id_override
from minibatch_kmeans.app.monitor_job import run_monitor
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
    with job_session(cfg.spark.app_name, cfg.spark.master, cfg.spark.conf) as spark:
        result = run_monitor(spark, cfg, run_id)
    print(result.text())
    return result.code


def main(argv: Optional[List[str]] = None) -> int:
    return run_job("monitor", parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
