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

import sys
from typing import List, Optional

from minibatch_kmeans.app.cli import config_job
from minibatch_kmeans.app.config import load_score_config
from minibatch_kmeans.app.outputs import require_run_id
from minibatch_kmeans.app.score_job import run_score


def check(cfg):
    require_run_id(cfg.run_id, "the scoring job")


def run(spark, cfg, args):
    return run_score(spark, cfg)


def main(argv: Optional[List[str]] = None) -> int:
    return config_job("score", __doc__, load_score_config, run, argv,
                      default_conf="conf/score.yaml", example="input.version=3",
                      run_id_help="names this run's output partition (overrides run_id in "
                                  "the config)", check=check)


if __name__ == "__main__":
    sys.exit(main())
