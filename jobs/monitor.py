"""Monitor the champion model on a new slice of data; retrain and promote on drift.

    python jobs/monitor.py --conf conf/monitor.yaml [--run-id 2026-11-24]
    python jobs/monitor.py --conf conf/monitor.yaml --set monitor.force_retrain=true

Loads the registered model's champion and its reference statistics, reads the new slice
(a table, a Delta version, a partition via ``monitor.where``), runs the data quality gate
(quarantine and report as in jobs/train.py), and writes a drift report (schema drift, PSI
and Kolmogorov-Smirnov per feature, Jensen-Shannon divergence of cluster proportions,
ratio of mean distance to the nearest center) as JSON, Markdown and PNG under
``<output.dir>/<run id>/``, logged with an MLflow run. On drift, or with ``monitor.force_retrain``, it trains a challenger on the
slice (warm start from the champion when the schema is unchanged), compares both on the
same held-out rows, registers the challenger, promotes it when it wins (relative
threshold; the absolute gate when the champion cannot score the data) and records the
decision and its reasons on the run and the model version (see minibatch_kmeans.app.monitor_job).

The outcome ("no drift", or the challenger promoted or kept) is printed and goes to
drift.json, the MLflow run's ``outcome`` tag and, on Databricks, the task's values.
Exit codes: 0 whenever the job did its job, whatever it found (as schedulers expect);
with ``--fail-on-drift`` (``monitor.fail_on_drift``) 3 for drift and the challenger
promoted, 4 for drift and the champion kept (also with force_retrain and no drift);
2 bad configuration or input (no champion, a failed quality gate); 1 anything else.
"""
from __future__ import annotations

import sys
import time
import uuid
from typing import List, Optional

from minibatch_kmeans.app.cli import config_job
from minibatch_kmeans.app.config import load_monitor_config
from minibatch_kmeans.app.monitor_job import run_monitor


def run(spark, cfg, args):
    # without a run id: the time and a random suffix, so that two runs started in the same
    # second still write their reports to two directories
    run_id = cfg.run_id or (time.strftime("monitor-%Y%m%dT%H%M%SZ-", time.gmtime())
                            + uuid.uuid4().hex[:8])
    return run_monitor(spark, cfg, run_id)


def main(argv: Optional[List[str]] = None) -> int:
    return config_job("monitor", __doc__, load_monitor_config, run, argv,
                      default_conf="conf/monitor.yaml", example="monitor.force_retrain=true",
                      flags={"--fail-on-drift": (
                          "monitor.fail_on_drift=true",
                          "exit 3 (drift, challenger promoted) or 4 (drift, champion kept) "
                          "instead of 0")},
                      exit_codes="exit codes: 0 the job did its job (drift or not); with "
                      "--fail-on-drift 3 drift and promoted, 4 drift and kept; 2 bad "
                      "arguments, configuration or input; 1 anything else",
                      run_id_help="names this run: its report directory <output.dir>/<run id>, "
                      "its partition of the quality tables, its MLflow run")


if __name__ == "__main__":
    sys.exit(main())
