"""Compare MiniBatchKMeans with Spark MLlib KMeans on one table, as a YAML config says.

    python jobs/compare.py --conf conf/compare.yaml [--set model.k=30 --set input.path=...]
    spark-submit --py-files dist/minibatch_kmeans.zip jobs/compare.py --conf compare.yaml

Both models train on the same input, cached once before either clock starts (the model
section configures ours and gives k, seed and maxIter to both; compare.mllib configures
MLlib). Writes compare.json, compare.md and three PNGs (cost against seconds, cluster sizes,
a PCA picture) under output.dir, and prints the Markdown table. Exit codes: 0 success, 2
bad configuration or input, 1 anything else.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from minibatch_kmeans.app.cli import config_job
from minibatch_kmeans.app.compare_job import check_compare, run_compare
from minibatch_kmeans.app.config import load_config


def run(spark, cfg, args):
    return run_compare(spark, cfg)


def main(argv: Optional[List[str]] = None) -> int:
    return config_job("compare", __doc__, load_config, run, argv,
                      default_conf="conf/compare.yaml", example="model.k=30",
                      check=check_compare)


if __name__ == "__main__":
    sys.exit(main())
